"""OPcache inside PHP-FPM, read by the PHP agent: memory, hit rate, restarts, the effective directives
with the file that set each, and cached bytecode that no longer matches the source on disk.

    cachewarden_opcache_enabled{target="www"} 1
    cachewarden_opcache_validate_timestamps{target="www"} 0
    cachewarden_opcache_setting_info{target="www",directive="validate_timestamps",value="0",
                                     source="/etc/php/8.2/fpm/conf.d/99-opcache.ini"} 1
    cachewarden_opcache_scripts_stale{target="www"} 12
    cachewarden_opcache_drift_seconds{target="www"} 5400

States where OPcache cannot be read (extension not loaded, `opcache.enable=0`, `opcache.restrict_api`
excluding agent_dir, `opcache_get_status()` returning false) are reported through
cachewarden_opcache_enabled / _status_available / _api_restricted and a check, not raised: the
collection works, there is just nothing (or less) to measure. How stale/suspect/missing are decided is
in exporter.collectors.drift; cachewarden_opcache_drift_exact says whether they are exact (1,
validate_timestamps=1) or inferred (0). Cached scripts under a release directory other than the one
`release_symlink` points to are counted in cachewarden_opcache_scripts_outside_release, apart from
stale ones; that directory is resolved by the sidecar (exporter.collectors.opcache_preload), never
by a worker whose realpath cache may be old. Preloaded scripts are judged apart (they need an FPM
restart, not a reset), and with `opcache.file_cache` set its entries are scanned
(exporter.collectors.opcache_file_cache): with validate_timestamps=0 a cached script whose file-cache
entry is older than its source is stale, since that entry is what was loaded and what the next reset
or restart loads again. Paths only ever appear in checks and details (stale/suspect/missing/
outside_release lists for opcache.invalidate), never in labels.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from exporter.collectors import opcache_file_cache as file_cache
from exporter.collectors import opcache_preload as preload
from exporter.collectors.base import Check, Collector, Observation, Verdict
from exporter.collectors.drift import DriftReport, DriftTracker, ScriptRow
from exporter.collectors.fpm import pool_identity
from exporter.config import PhpFpmTarget
from exporter.findings import OpcacheFindings, ScriptProblem
from exporter.metrics import Samples, counter, gauge, info
from exporter.php import fastcgi
from exporter.php.agent import Agent, AgentError
from exporter.php.ini import Setting, attribute, ini_key
from exporter.php.pool_config import PoolConfigError, PoolSettings, read_config
from exporter.php.revision import as_label, read_disk_revision

log = logging.getLogger(__name__)

OPCACHE_ENABLED = gauge("cachewarden_opcache_enabled", "1 if OPcache caches scripts in this pool.")
OPCACHE_STATUS_AVAILABLE = gauge(
    "cachewarden_opcache_status_available", "1 if opcache_get_status() answered inside FPM."
)
OPCACHE_API_RESTRICTED = gauge(
    "cachewarden_opcache_api_restricted", "1 if opcache.restrict_api keeps the agent from the OPcache API."
)
OPCACHE_MEMORY_USED = gauge("cachewarden_opcache_memory_used_bytes", "Shared memory holding bytecode.")
OPCACHE_MEMORY_FREE = gauge("cachewarden_opcache_memory_free_bytes", "Shared memory still free.")
OPCACHE_MEMORY_WASTED = gauge(
    "cachewarden_opcache_memory_wasted_bytes", "Memory of invalidated scripts, reclaimed only by a restart."
)
OPCACHE_INTERNED_USED = gauge(
    "cachewarden_opcache_interned_strings_used_bytes", "Interned strings buffer used."
)
OPCACHE_INTERNED_FREE = gauge(
    "cachewarden_opcache_interned_strings_free_bytes", "Interned strings buffer free."
)
OPCACHE_CACHED_SCRIPTS = gauge(
    "cachewarden_opcache_cached_scripts", "Scripts in the cache (not OPcache's $PRELOAD$ pseudo-entry)."
)
OPCACHE_CACHED_KEYS = gauge(
    "cachewarden_opcache_cached_keys", "Hash table keys in use (scripts and aliases)."
)
OPCACHE_MAX_CACHED_KEYS = gauge(
    "cachewarden_opcache_max_cached_keys", "Hash table size (from opcache.max_accelerated_files)."
)
OPCACHE_HITS = counter("cachewarden_opcache_hits_total", "Script loads served from the cache.")
OPCACHE_MISSES = counter("cachewarden_opcache_misses_total", "Script loads that had to compile.")
OPCACHE_RESTARTS = counter("cachewarden_opcache_restarts_total", "OPcache restarts by cause.", ("cause",))
OPCACHE_START_TIME = gauge("cachewarden_opcache_start_time_seconds", "Unix time OPcache started.")
OPCACHE_LAST_RESTART = gauge(
    "cachewarden_opcache_last_restart_time_seconds", "Unix time of the last OPcache restart (0 if none)."
)
OPCACHE_VALIDATE_TIMESTAMPS = gauge(
    "cachewarden_opcache_validate_timestamps",
    "Effective opcache.validate_timestamps (0: never rechecks files).",
)
OPCACHE_REVALIDATE_FREQ = gauge(
    "cachewarden_opcache_revalidate_freq_seconds", "Effective opcache.revalidate_freq."
)
OPCACHE_SETTING_INFO = info(
    "cachewarden_opcache_setting_info",
    "An effective OPcache directive and the file that set it (php.ini, conf.d, pool, or default).",
    ("directive", "value", "source"),
)
OPCACHE_SCRIPTS_STALE = gauge(
    "cachewarden_opcache_scripts_stale", "Cached scripts known to be older than their source file."
)
OPCACHE_SCRIPTS_SUSPECT = gauge(
    "cachewarden_opcache_scripts_suspect", "Cached scripts whose source changed around caching time."
)
OPCACHE_SCRIPTS_MISSING = gauge(
    "cachewarden_opcache_scripts_missing", "Cached scripts whose source file no longer exists."
)
OPCACHE_SCRIPTS_OUTSIDE_RELEASE = gauge(
    "cachewarden_opcache_scripts_outside_release",
    "Cached scripts under a release directory other than the one release_symlink points to.",
)
OPCACHE_DRIFT_SECONDS = gauge(
    "cachewarden_opcache_drift_seconds",
    "Time since the source of the oldest known-stale cached script changed on disk (0 if none).",
)
OPCACHE_DRIFT_EXACT = gauge(
    "cachewarden_opcache_drift_exact", "1 if staleness is read from OPcache timestamps, 0 if inferred."
)
CODE_REVISION_INFO = info(
    "cachewarden_code_revision_info", "The code revision FPM runs and the one on disk.", ("running", "disk")
)
CODE_REVISION_DRIFT = gauge("cachewarden_code_revision_drift", "1 if FPM runs another revision than disk.")

RESTART_CAUSES = ("oom", "hash", "manual")
_MAX_LOGGED_WARNINGS = 100  # distinct PHP warnings remembered as already logged


def _pool_settings(target: PhpFpmTarget, running_pool: str | None) -> PoolSettings | None:
    """The pool section that applies to this target, for php_value attribution.

    Like the fpm collector, it goes by the name of the pool that answered (its status page), unless
    pool_name says otherwise.
    """
    if target.pool_config is None:
        return None
    config = read_config(target.pool_config, target.fpm_prefix)
    pools = list(config)
    name = target.pool_name or running_pool or (pools[0].name if len(pools) == 1 else target.name)
    try:
        return config.pool(name)
    except PoolConfigError as exc:
        raise PoolConfigError(f"{exc}; set pool_name") from None


def _served_from_file_cache(report: DriftReport, cached: list[str], stale_entries: list[str]) -> None:
    """Cached scripts whose file-cache entry is stale are stale themselves (validate_timestamps=0):
    OPcache never rewrites an entry, so the bytecode in memory was compiled when the entry was written
    or loaded from it, whatever the first-seen inference says after a reset or restart."""
    entries = set(stale_entries)
    if not entries:
        return
    known = set(report.stale)
    report.stale.extend(p for p in cached if p in entries and p not in known)
    report.suspect = [p for p in report.suspect if p not in entries]


def _cached_scripts(columns: dict[str, list[Any]]) -> Iterator[ScriptRow]:
    """The agent's column-wise script list as rows; unequal columns mean a broken answer."""
    if not columns:
        return iter(())
    fields = (columns[k] for k in ("path", "hits", "last_used", "timestamp", "mtime", "ctime", "memory"))
    return zip(*fields, strict=True)


class OpcacheCollector(Collector):
    kind = "opcache"
    metrics = (
        OPCACHE_ENABLED, OPCACHE_STATUS_AVAILABLE, OPCACHE_API_RESTRICTED, OPCACHE_MEMORY_USED,
        OPCACHE_MEMORY_FREE, OPCACHE_MEMORY_WASTED, OPCACHE_INTERNED_USED, OPCACHE_INTERNED_FREE,
        OPCACHE_CACHED_SCRIPTS, OPCACHE_CACHED_KEYS, OPCACHE_MAX_CACHED_KEYS, OPCACHE_HITS, OPCACHE_MISSES,
        OPCACHE_RESTARTS, OPCACHE_START_TIME, OPCACHE_LAST_RESTART, OPCACHE_VALIDATE_TIMESTAMPS,
        OPCACHE_REVALIDATE_FREQ, OPCACHE_SETTING_INFO, OPCACHE_SCRIPTS_STALE, OPCACHE_SCRIPTS_SUSPECT,
        OPCACHE_SCRIPTS_MISSING, OPCACHE_SCRIPTS_OUTSIDE_RELEASE, OPCACHE_DRIFT_SECONDS, OPCACHE_DRIFT_EXACT,
        CODE_REVISION_INFO, CODE_REVISION_DRIFT, *file_cache.METRICS, *preload.METRICS,
    )

    def __init__(self, target: PhpFpmTarget, agent: Agent, *, interval: float, timeout: float) -> None:
        super().__init__(target.name, interval=interval, timeout=timeout)
        self.config = target
        self.agent = agent
        self.drift = DriftTracker()
        self.file_cache = file_cache.FileCacheReader()
        self._logged_warnings: set[str] = set()

    async def collect(self) -> Observation:
        self.file_cache.start()
        try:
            reply = await self.agent.run("status", {})
        except BaseException:
            self.file_cache.abandon()
            raise
        result: dict[str, Any] = reply.result
        if isinstance(result, dict):
            result["pool"], result["workers"] = await pool_identity(self.agent.endpoint, self.config)
        warnings = list(reply.warnings)
        s = self.new_samples()
        checks: list[Check] = []
        details: dict[str, Any] = {}
        findings: list[OpcacheFindings] = []  # set by _lasting when the status could be read

        status = result.get("status")
        restricted = bool(result.get("restricted"))
        s.add(OPCACHE_API_RESTRICTED, 1 if restricted else 0)
        s.add(OPCACHE_STATUS_AVAILABLE, 1 if isinstance(status, dict) else 0)
        if not result.get("loaded"):
            # No directive of an extension that is not loaded means anything: none is reported.
            s.add(OPCACHE_ENABLED, 0)
            why = "the OPcache extension is not loaded in this pool"
            checks.append(Check("opcache.status", Verdict.NOTE, why))
        else:
            by_name = await self._settings(s, result, checks)
            if by_name["enable"].value == "1":
                checks.extend(self._agent_scripts_cached(by_name["file_update_protection"], result))
            if not isinstance(status, dict):
                s.add(OPCACHE_ENABLED, 1 if by_name["enable"].value == "1" else 0)
                why = ("opcache.restrict_api excludes agent_dir: put agent_dir under it to let cachewarden "
                       "read OPcache" if restricted else "opcache_get_status() returned false")
                checks.append(Check("opcache.status", Verdict.NOTE, f"OPcache status unavailable: {why}"))
            elif not status.get("opcache_enabled"):
                s.add(OPCACHE_ENABLED, 0)
                checks.append(Check("opcache.status", Verdict.NOTE,
                                    f"OPcache is disabled (opcache.enable={by_name['enable'].value} set by "
                                    f"{by_name['enable'].source}): no bytecode is cached, so none can drift"))
            else:
                s.add(OPCACHE_ENABLED, 1)
                self._statistics(s, status, checks)
                findings.append(await self._lasting(s, status, result, by_name, checks, details))
        if self.config.revision_file is not None:
            checks.append(await self._revision(s, self.config.revision_file, warnings))
        if warnings:
            checks.append(self._warnings_check(warnings))
        return Observation(s, checks, details, findings[0] if findings else None)

    def _warnings_check(self, warnings: list[str]) -> Check:
        """PHP warnings of the agent's runs: logged once each, listed in a NOTE every time."""
        distinct = list(dict.fromkeys(warnings))
        for w in distinct:
            if w not in self._logged_warnings and len(self._logged_warnings) < _MAX_LOGGED_WARNINGS:
                self._logged_warnings.add(w)
                log.warning("PHP warning in the agent run of %s/%s: %s", self.kind, self.target, w)
        return Check("opcache.agent_warnings", Verdict.NOTE,
                     f"{len(distinct)} PHP warning(s) while reading OPcache inside FPM",
                     tuple(distinct[:50]), len(distinct))

    def _agent_scripts_cached(self, protection: Setting, result: dict[str, Any]) -> list[Check]:
        """With file_update_protection=0 OPcache caches each agent script, unless agent_dir is blacklisted."""
        if protection.value != "0":
            return []
        probe = str(self.agent.agent_dir.resolve() / "cachewarden-0.php")
        if not isinstance(result.get("blacklist"), list):
            # opcache.restrict_api (or an OPcache that answers nothing) hides the blacklist: whether
            # the agent's scripts are cached is not known, which is no finding either way.
            return [Check("opcache.agent_cached", Verdict.NOTE,
                          f"opcache.file_update_protection=0 (set by {protection.source}) and the "
                          "blacklist cannot be read (opcache_get_configuration() is refused, e.g. by "
                          "opcache.restrict_api): not known whether OPcache caches every agent script; "
                          f"make sure {self.agent.agent_dir} is in the file named by "
                          "opcache.blacklist_filename")]
        blacklist = [str(entry) for entry in result["blacklist"]]
        if any(fnmatch.fnmatchcase(probe, entry.rstrip("*") + "*") for entry in blacklist):
            return [Check("opcache.agent_cached", Verdict.OK,
                          "opcache.file_update_protection=0, but agent_dir is in opcache.blacklist_filename")]
        return [Check("opcache.agent_cached", Verdict.PROBLEM,
                      f"opcache.file_update_protection=0 (set by {protection.source}): OPcache caches every "
                      "agent script cachewarden runs, so cached scripts and memory grow with each "
                      f"collection; add {self.agent.agent_dir} to the file named by "
                      "opcache.blacklist_filename")]

    async def _settings(self, s: Samples, result: dict[str, Any], checks: list[Check]) -> dict[str, Setting]:
        """The effective directives by name, exported with the file that set each."""
        running_pool = result.get("pool") if isinstance(result.get("pool"), str) else None
        try:
            pool = await asyncio.to_thread(_pool_settings, self.config, running_pool)
        except PoolConfigError as exc:
            checks.append(Check("opcache.pool_config", Verdict.PROBLEM, str(exc)))
            pool = None
        files: list[tuple[str, list[str]]] = []
        for path, lines in result.get("ini_files") or []:
            if lines is None:
                checks.append(Check("opcache.ini_unreadable", Verdict.NOTE,
                                    f"{path} is loaded by FPM but unreadable to it: a value it sets "
                                    "shows as set by an unknown source"))
            files.append((str(path), [str(x) for x in lines or []]))
        raw = result.get("directives") or {}
        directives = {str(k): "" if v is None else str(v) for k, v in raw.items()}
        settings = attribute(directives, files, pool)
        for st in settings:
            s.add_info(OPCACHE_SETTING_INFO, directive=st.directive, value=st.value, source=st.source)
        lines = tuple(f"{ini_key(st.directive)}={st.value} set by {st.source}" for st in settings)
        checks.append(Check("opcache.settings", Verdict.OK, "effective directives and their sources", lines))
        by_name = {st.directive: st for st in settings}
        s.add(OPCACHE_VALIDATE_TIMESTAMPS, 1 if by_name["validate_timestamps"].value == "1" else 0)
        freq = by_name["revalidate_freq"].value
        if freq.isdigit():
            s.add(OPCACHE_REVALIDATE_FREQ, int(freq))
        return by_name

    def _statistics(self, s: Samples, status: dict[str, Any], checks: list[Check]) -> None:
        mem = status.get("memory_usage") or {}
        interned = status.get("interned_strings_usage") or {}
        stats = status.get("opcache_statistics") or {}
        for spec, source, key in (
            (OPCACHE_MEMORY_USED, mem, "used_memory"),
            (OPCACHE_MEMORY_FREE, mem, "free_memory"),
            (OPCACHE_MEMORY_WASTED, mem, "wasted_memory"),
            (OPCACHE_INTERNED_USED, interned, "used_memory"),
            (OPCACHE_INTERNED_FREE, interned, "free_memory"),
            (OPCACHE_CACHED_KEYS, stats, "num_cached_keys"),
            (OPCACHE_MAX_CACHED_KEYS, stats, "max_cached_keys"),
            (OPCACHE_HITS, stats, "hits"),
            (OPCACHE_MISSES, stats, "misses"),
            (OPCACHE_START_TIME, stats, "start_time"),
            (OPCACHE_LAST_RESTART, stats, "last_restart_time"),
        ):
            if key in source:
                s.add(spec, float(source[key]))
        if "num_cached_scripts" in stats:  # OPcache counts its $PRELOAD$ pseudo-entry as a script
            pseudo = status.get("pseudo_entries")
            pseudo = pseudo if isinstance(pseudo, int) else 0
            s.add(OPCACHE_CACHED_SCRIPTS, float(stats["num_cached_scripts"]) - pseudo)
        for cause in RESTART_CAUSES:
            if f"{cause}_restarts" in stats:  # absent is not zero
                s.add(OPCACHE_RESTARTS, float(stats[f"{cause}_restarts"]), cause=cause)
        if status.get("cache_full"):
            checks.append(Check("opcache.full", Verdict.PROBLEM,
                                "OPcache is full: new scripts are compiled on every request until a restart "
                                "(raise opcache.memory_consumption or opcache.max_accelerated_files)"))

    async def _lasting(self, s: Samples, status: dict[str, Any], result: dict[str, Any],
                       by_name: dict[str, Setting], checks: list[Check],
                       details: dict[str, Any]) -> OpcacheFindings:
        """Shared memory, preloaded code and the file cache, each judged by what can replace it."""
        now = float(result["now"])
        release: preload.Release | None = None
        if self.config.release_symlink is not None:
            release = await asyncio.to_thread(preload.resolve_release, self.config.release_symlink)
            checks.extend(preload.release_checks(s, release, by_name["realpath_cache_ttl"], now))
        release_dir = release.directory if release else None
        details["release_dir"] = release_dir
        start_time = float((status.get("opcache_statistics") or {}).get("start_time", 0))
        preloaded: set[str] = set()
        preload_stale: tuple[str, ...] = ()
        if by_name["preload"].value:
            pre = preload.classify_preload(result.get("preload") or {}, start_time, release_dir)
            preloaded = set(pre.scripts)
            checks.extend(preload.preload_checks(s, pre, by_name["preload"], start_time, self.target))
            details["preload_stale"] = pre.stale
            preload_stale = tuple(pre.stale)
        fc_view: file_cache.FileCacheView | None = None
        if not by_name["file_cache"].value:
            self.file_cache.forget()
        else:
            sources = file_cache.source_times(status.get("scripts") or {})
            fc_scan = await self.file_cache.scan(by_name["file_cache"].value, sources, release_dir)
            fc_view = file_cache.FileCacheView(fc_scan, by_name["validate_timestamps"], by_name["file_cache"])
            checks.extend(file_cache.record(s, fc_view, now, release_dir is not None))
            details["file_cache"] = fc_view.details()
        vt = by_name["validate_timestamps"].value == "1"
        report, epoch = self._drift(s, status, now, vt, release_dir, preloaded, fc_view)
        checks.extend(self._drift_checks(report, by_name, epoch, fc_view, release_dir is not None))
        details.update(stale=report.stale, suspect=report.suspect, missing=report.missing,
                       outside_release=report.outside_release, exact=report.exact)
        return OpcacheFindings(
            scripts={ScriptProblem.STALE: tuple(report.stale), ScriptProblem.SUSPECT: tuple(report.suspect),
                     ScriptProblem.MISSING: tuple(report.missing),
                     ScriptProblem.OUTSIDE_RELEASE: tuple(report.outside_release)},
            file_cache=fc_view.findings(release_dir) if fc_view is not None else None,
            preload_stale=preload_stale, exact=report.exact)

    def _drift(
        self, s: Samples, status: dict[str, Any], now: float, vt: bool, release_dir: str | None,
        preloaded: set[str], fc_view: file_cache.FileCacheView | None,
    ) -> tuple[DriftReport, float]:
        stats = status.get("opcache_statistics") or {}
        epoch = max(float(stats.get("start_time", 0)), float(stats.get("last_restart_time", 0)))
        scripts: Iterator[ScriptRow] = _cached_scripts(status.get("scripts") or {})
        if preloaded:
            scripts = (row for row in scripts if row[0] not in preloaded)
        report = self.drift.update(
            scripts, now=now, cache_epoch=epoch, validate_timestamps=vt, release_dir=release_dir,
        )
        if fc_view is not None and fc_view.served_stale and fc_view.scan.complete:
            cached = [p for p in (status.get("scripts") or {}).get("path", []) if p not in preloaded]
            _served_from_file_cache(report, cached, fc_view.scan.stale)
        s.add(OPCACHE_SCRIPTS_STALE, len(report.stale))
        s.add(OPCACHE_SCRIPTS_SUSPECT, len(report.suspect))
        s.add(OPCACHE_SCRIPTS_MISSING, len(report.missing))
        s.add(OPCACHE_DRIFT_SECONDS, report.drift_seconds)
        s.add(OPCACHE_DRIFT_EXACT, 1 if report.exact else 0)
        if release_dir is not None:  # unknown, not zero, when the symlink cannot be resolved
            s.add(OPCACHE_SCRIPTS_OUTSIDE_RELEASE, len(report.outside_release))
        return report, epoch

    def _drift_checks(self, report: DriftReport, by_name: dict[str, Setting], epoch: float,
                      fc_view: file_cache.FileCacheView | None, with_release: bool) -> list[Check]:
        vt, freq = by_name["validate_timestamps"], by_name["revalidate_freq"]
        if report.exact:
            consequence = (f"FPM serves the old code until its next check (revalidate_freq={freq.value} "
                           f"set by {freq.source})")
        else:
            consequence = ("code changed on disk is not being served: "
                           f"validate_timestamps=0 set by {vt.source}")
            if fc_view is not None and set(report.stale) & set(fc_view.scan.stale):
                fc = fc_view.file_cache
                consequence += (f", and their entries in opcache.file_cache={fc.value} (set by {fc.source}) "
                                "are older than the source too: the file cache survives opcache_reset() "
                                "and FPM restarts, so neither helps; opcache.invalidate does")
        checks = [
            Check.from_items("opcache.stale", report.stale,
                             "no cached script is known to be older than its source",
                             "{n} cached script(s) older than their source: " + consequence),
            Check.from_items("opcache.missing", report.missing,
                             "every cached script still exists on disk",
                             "{n} cached script(s) whose file is gone are still served"),
        ]
        if report.suspect:
            started = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            summary = (f"{len(report.suspect)} cached script(s) changed on disk after OPcache (re)started "
                       f"at {started}")
            if report.exact:
                verdict, summary = Verdict.NOTE, summary + "; whether FPM serves the new version is unknown"
            else:
                # One fresh look (cachewarden check) can only ever see a deploy as suspect: with nothing
                # rechecking files, that is the incident itself, not a curiosity.
                verdict = Verdict.PROBLEM
                summary += (": code changed on disk may not be served: validate_timestamps=0 set by "
                            f"{vt.source}; ")
                if fc_view is not None:
                    # A reset would load them straight back from the file cache.
                    summary += (f"opcache.invalidate (cachewarden heal opcache.invalidate --target "
                                f"{self.target}) to be sure: it drops their opcache.file_cache entries too, "
                                "a reset does not")
                else:
                    summary += (f"opcache.reset (cachewarden heal opcache.reset --target {self.target}) "
                                "to be sure")
            checks.append(Check("opcache.suspect", verdict, summary,
                                tuple(sorted(report.suspect)[:50]), len(report.suspect)))
        if with_release:
            link = self.config.release_symlink
            checks.append(Check.from_items(
                "opcache.outside_release", report.outside_release,
                f"every cached release script belongs to the release {link} points to",
                "{n} cached script(s) belong to a release " + f"{link} no longer points to"))
        return checks

    async def _revision(self, s: Samples, path: Path, warnings: list[str]) -> Check:
        disk_raw = await asyncio.to_thread(read_disk_revision, path)
        try:
            reply = await self.agent.run("revision", {"path": str(path)})
            running_raw = reply.result.get("value") if isinstance(reply.result, dict) else None
            warnings.extend(reply.warnings)
        except (AgentError, fastcgi.FastCGIError) as exc:
            # The status part of this collection stands; only the running revision is unknown.
            log.info("revision of %s/%s unreadable through FPM: %s", self.kind, self.target, exc)
            running_raw = None
        running, disk = as_label(running_raw), as_label(disk_raw)
        s.add_info(CODE_REVISION_INFO, running=running, disk=disk)
        drift = running_raw is not None and disk_raw is not None and running != disk
        s.add(CODE_REVISION_DRIFT, 1 if drift else 0)
        if running_raw is None or disk_raw is None:
            return Check("code.revision", Verdict.NOTE, f"revision unknown (running {running}, disk {disk})")
        if drift:
            return Check("code.revision", Verdict.PROBLEM,
                         f"FPM runs revision {running} but {path} on disk says {disk}")
        return Check("code.revision", Verdict.OK, f"FPM runs revision {running}, the one on disk")
