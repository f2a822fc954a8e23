"""Healing: the guarded `/heal` webhook, heal plans and actions, and the `cachewarden heal` command.

A request (an Alertmanager notification or a manual call) passes the guards, is deduplicated, takes a
per-(action, target) lock, runs its plan's steps gentlest first, re-measures after each one through the
scheduler and stops as soon as the alert's condition is gone. Every request and run is audited.
"""
