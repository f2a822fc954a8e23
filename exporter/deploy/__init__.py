"""`cachewarden deploy`: a release switch that leaves no stale cache behind, verified before it returns.

prepare (views of the new release compiled atomically, its `.env` read as Laravel reads it), switch
(the pipeline's own, or `--switch-command`), activate (exactly the changed bytecode invalidated in FPM,
a reload only when preloaded code needs it, warm-up), verify (wait until FPM serves the new revision
and nothing is stale). Every step is one of the heal's actions, run through the same guards.
"""
