"""What every live loop does the same way, whatever it reads: the file runner
(`live/runner.py`) and the Kafka consumer (`live/kafka/consumer.py`) both inherit it.

Signals (SIGTERM/SIGINT stop, SIGHUP reloads the config and reopens the alert files),
config reload on SIGHUP or a changed file (a bad config is logged and the running one
stays in force), resuming the NDJSON output after a restart, the effective-config log at
start, and the spool depth the stats line and metrics report.

A subclass sets `config`, `models_spec`, `output`, `commit_interval`, `pipeline`,
`reload_requested`, `reopen_requested` and `_config_mtime`, implements `request_stop()`
and `_apply_models(new)` (hand a reloaded config's models to its detectors and readers),
and may override `_wake()` (interrupt a wait of its loop) and `_config_note()` (its own
part of the outputs line). Its loop calls `_start_timers(now)` once, then
`_housekeeping(now)` after each batch of input; `_commit_due()` is its commit (after
delivery), and `clock`, `metrics`, `metrics_snapshot()`, `_commit_took`,
`_reopen_outputs()` and `_log_stats()` are its own.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter
from typing import Any

from zeekndm.config import load_config
from zeekndm.errors import ZeekNDMError
from zeekndm.sinks.base import CountingSink, RemoteSink, ResumableSink, SpoolHolder

log = logging.getLogger("zeekndm.live")

#: The settings a reload cannot change in a running service.
RESTART_ONLY = ("inputs", "elasticsearch", "ndjson_path", "state_dir", "detector")


class Service:
    config: Any
    models_spec: Any
    output: Any
    commit_interval: float
    pipeline: Any
    reload_requested: bool
    reopen_requested: bool
    _config_mtime: int | None

    # -- hooks -------------------------------------------------------------------------
    def request_stop(self) -> None:
        raise NotImplementedError

    def _apply_models(self, new: Any) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        """Cut the loop's current wait short (a signal arrived)."""

    def _config_note(self) -> str:
        """This service's own part of the outputs line at start ('' for none)."""
        return ""

    def _commit_due(self) -> None:
        """The commit at the commit interval (only what every sink settled)."""
        raise NotImplementedError

    # -- the loop's periodic work ------------------------------------------------------
    def _start_timers(self, now: float) -> None:
        # The first commit comes right after the first batch is handled: after a restart
        # what is read again is persisted at once, not a whole interval later (a service
        # restarted often, or killed soon after it started, still makes progress).
        self._next_commit = now
        self._next_stats = now + self.config.stats_interval
        self._next_config_check = now + 1.0

    def _housekeeping(self, now: float) -> None:
        """After a batch of input: commit (at the interval) or deliver, SIGHUP's reopen,
        config reload, the stats line."""
        if now >= self._next_commit:
            self._commit_due()
            if self.metrics is not None:
                self.metrics.publish(self.metrics_snapshot())
            # A huge window state makes commits slow: keep them under ~5% of the time.
            self._next_commit = self.clock() + max(self.commit_interval, 20 * self._commit_took)
        elif self.pipeline.pending:
            # Alerts go out as soon as they exist (they are few); the registry is
            # committed at the commit interval, after everything before it is settled.
            self.pipeline.deliver()
        if self.reopen_requested:
            self._reopen_outputs()
        if self.reload_requested or now >= self._next_config_check:
            self._maybe_reload()
            self._next_config_check = now + 1.0
        if now >= self._next_stats:
            self._log_stats()
            self._next_stats = now + self.config.stats_interval

    # -- signals -----------------------------------------------------------------------
    def _install_signals(self) -> dict[int, Any]:
        def stop(signum: int, frame: Any) -> None:
            self.request_stop()

        def reload(signum: int, frame: Any) -> None:
            self.reload_requested = True
            self.reopen_requested = True
            self._wake()

        previous = {}
        try:
            for sig, handler in (
                (signal.SIGTERM, stop),
                (signal.SIGINT, stop),
                (signal.SIGHUP, reload),
            ):
                previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (embedded use): no signal handling
            log.debug("not in the main thread; signals are not handled")
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    # -- config reload -----------------------------------------------------------------
    @staticmethod
    def _mtime(path: str | None) -> int | None:
        if path is None:
            return None
        try:
            return os.stat(path).st_mtime_ns
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        path = self.config.path
        mtime = self._mtime(path)
        if not self.reload_requested and mtime == self._config_mtime:
            return
        why = "SIGHUP" if self.reload_requested else "the config file changed"
        self.reload_requested = False
        self._config_mtime = mtime
        if path is None:
            log.info("reload requested (%s) but no config file is in use", why)
            return
        try:
            new = load_config(path).with_models(self.models_spec)
        except ZeekNDMError as exc:
            log.error(
                "config reload rejected (%s): %s; the running config stays in force",
                why,
                str(exc).replace("\n", "; "),
            )
            return
        self._apply_models(new)
        for what in RESTART_ONLY:
            if getattr(new, what) != getattr(self.config, what):
                log.warning("config reload: %s changed; restart zeekndm to apply it", what)
        self.config = new
        log.info(
            "config reloaded (%s): %d model(s) enabled: %s",
            why,
            len(new.enabled_models),
            ", ".join(m.name for m in new.enabled_models),
        )

    # -- outputs -----------------------------------------------------------------------
    @staticmethod
    def _resume_outputs(sinks: list[Any], saved: dict[str, int]) -> None:
        for sink in sinks:
            if not isinstance(sink, ResumableSink) or sink.position() is None:
                continue
            offset = saved.get(str(sink.path))
            if offset is None:
                continue
            skipped = sink.skip_written_since(int(offset))
            if skipped:
                log.info(
                    "%d alerts were written to %s after the last commit; they will not be "
                    "written twice",
                    skipped,
                    sink.path,
                )

    def _log_effective_config(self, sinks: list[Any]) -> None:
        """At start, what is in force: outputs, state, models and their thresholds."""
        outputs = []
        for sink in sinks:
            if isinstance(sink, ResumableSink):
                position = sink.position()
                where = (
                    "stdout" if position is None else str(self.output or self.config.ndjson_path)
                )
            elif isinstance(sink, RemoteSink):
                where = sink.endpoint or "?"  # Elasticsearch or OpenSearch, redacted
            else:
                where = ""
            outputs.append(f"{sink.name} ({where})" if where else sink.name)
        note = self._config_note()
        log.info(
            "outputs: %s; commit every %.1f s; %smetrics: %s",
            "; ".join(outputs) or "none",
            self.commit_interval,
            f"{note}; " if note else "",
            self.config.metrics_listen or "none",
        )
        for m in self.config.enabled_models:
            levels = ", ".join(f"{s} {n}" for s, n in m.threshold.levels)
            log.info(
                "model %s: ports %s; %s within %g s",
                m.name,
                ", ".join(str(p) for p in m.ports),
                levels,
                m.threshold.window,
            )

    def spool_depth(self) -> tuple[int, int]:
        """(alerts, bytes) in the spools of the outputs that have one."""
        alerts = size = 0
        for sink in self.pipeline.sinks:
            if isinstance(sink, SpoolHolder) and sink.spool is not None:
                alerts += sink.spool.count()
                size += sink.spool.size
        return alerts, size

    # -- metrics -----------------------------------------------------------------------
    def _rates(self, now: float, records: Counter) -> dict[str, float]:
        """Records per second per input since the last metrics snapshot."""
        then, before = getattr(self, "_metrics_mark", (now, Counter()))
        span = max(now - then, 1e-9)
        self._metrics_mark = (now, records)
        return {k: (v - before.get(k, 0)) / span for k, v in records.items()}

    def _output_series(self) -> tuple[Counter, Counter]:
        """(retries, dead letters) per output. Every output has its series from the start
        (at 0), so rate() and alert rules work before the first retry or dead letter."""
        retries = Counter({sink.name: 0 for sink in self.pipeline.sinks})
        dead = Counter({sink.name: 0 for sink in self.pipeline.sinks})
        dead.update(self.pipeline.rejected)
        for sink in self.pipeline.sinks:
            if isinstance(sink, CountingSink):
                retries[sink.name] += sink.stats.get("retried", 0)
        return retries, dead
