"""`zeekndm run`'s loop: set up, read, detect, deliver, commit, handle signals and reloads.

One thread, one loop: new complete lines come from the `Follower` (files, through
rotation) and from socket listeners (Suricata writing eve to us); each file gets its own
parser (`streams`); records go through the same detector, enricher and sinks as `replay`.
Then, at most every `commit_interval`, the loop delivers what is pending to every sink and,
only once all of it is acknowledged or spooled, commits the registry: file offsets,
detector state, header blocks, counters and NDJSON size together. That order is what makes
a crash safe: records after the last commit are read again and produce the same alerts
with the same ids, which the sinks recognise as already delivered. After an unexpected
error nothing is committed at all.

Signals: SIGTERM/SIGINT stop the loop (deliver, commit, exit 0); SIGHUP, or a change of
the config file, reloads models, thresholds and networks while keeping window state (a
config that does not validate is rejected with one log line and the old one stays), and
SIGHUP also reopens the alert file (logrotate's `postrotate`). Time comes from the clocks
given to the runner (`clock` for intervals, `wall` for timestamps), so tests can run the
loop fast without patching anything.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zeekndm.config import Config
from zeekndm.detect import Detector
from zeekndm.enrich import Observer
from zeekndm.errors import ZeekNDMError
from zeekndm.live.follow import Chunk, Follower, FollowTarget
from zeekndm.live.inputs import InputSpec, input_from_arg
from zeekndm.live.metrics import MetricsEndpoint, MetricsSnapshot
from zeekndm.live.registry import Registry, RegistryState, Totals
from zeekndm.live.service import Service
from zeekndm.live.streams import Streams, forced_formats
from zeekndm.models import watched_ports
from zeekndm.outputs import build_sinks, state_dir_for
from zeekndm.pipeline import Pipeline
from zeekndm.sinks.base import (
    InterruptibleSink,
    ReopenableSink,
    ResumableSink,
)
from zeekndm.statedir import refuse_world_writable

# The service's own lines (start, stats, stop) keep the logger name README quotes.
log = logging.getLogger("zeekndm.live")

POLL_INTERVAL = 1.0
"""Seconds between scans of the followed paths when no notification arrives."""

COMMIT_INTERVAL = 1.0
"""Seconds between registry commits (each after everything before it is delivered)."""

SOCKET_WAIT = 0.05
"""With socket inputs, how long one wait for file data may block the sockets."""

IDLE_SWEEP_AFTER = 60.0
"""Wall-clock seconds without any record after which event time is advanced by the idle
time, so that episodes still end when a sensor goes quiet."""


class LiveRunner(Service):
    """The run loop over `config`'s inputs plus `inputs` (command-line `--input` values)."""

    def __init__(
        self,
        config: Config,
        *,
        inputs: list[str] | None = None,
        output: str | None = None,
        elasticsearch_url: str | None = None,
        state_dir: str | None = None,
        stdout: Any = None,
        poll_interval: float = POLL_INTERVAL,
        commit_interval: float = COMMIT_INTERVAL,
        use_watchdog: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        models_spec: str | None = None,
    ) -> None:
        self.config = config
        self.models_spec = models_spec  # --models: survives a reload
        self.specs: list[InputSpec] = list(config.inputs) + [
            input_from_arg(a) for a in inputs or []
        ]
        if not self.specs:
            raise ZeekNDMError(
                "no inputs to follow: give --input PATH (a Zeek log directory, a log file or "
                "a unix socket) or list them under inputs: in the config"
            )
        self.output = output
        self.elasticsearch_url = elasticsearch_url
        self.state_dir = state_dir_for(config, state_dir)
        self.stdout = stdout
        self.poll_interval = poll_interval
        self.commit_interval = max(0.05, float(commit_interval))
        self.use_watchdog = use_watchdog
        self.clock = clock
        self.wall = wall
        self.stop_requested = False
        self.reload_requested = False
        self.reopen_requested = False
        self.totals = Totals()
        self._since_commit = 0
        self._commit_took = 0.0
        self.last_commit_wall: float | None = None
        self.metrics: MetricsEndpoint | None = None
        self._config_mtime = self._mtime(config.path)
        self.streams = Streams(
            config.sensor_name,
            config.models,
            clock,
            forced_formats(self.specs),
            notices=config.notices,
        )

    # -- lifecycle ------------------------------------------------------------------
    def run(self) -> int:
        refuse_world_writable(self.state_dir)
        registry = Registry(self.state_dir)
        registry.lock()
        try:
            return self._run(registry)
        finally:
            registry.unlock()

    def _run(self, registry: Registry) -> int:
        raw = registry.load()
        saved = RegistryState.from_dict(raw)
        config = self.config
        self.detector = self._restored_detector(saved)
        self.streams.set_dports(watched_ports(self.detector.models))
        self.totals = saved.totals
        self._notices_before = saved.totals.notices
        self.streams.remember(saved.streams)
        sinks = build_sinks(
            config,
            self.state_dir,
            output=self.output,
            elasticsearch_url=self.elasticsearch_url,
            stdout=self.stdout,
            allow_unreachable=True,
        )
        self._resume_outputs(sinks, saved.ndjson)
        self.pipeline = Pipeline(
            self.detector,
            sinks,
            Observer(hostname=config.sensor_name),
            event_time=config.event_time,
        )
        targets = [
            FollowTarget(s.path, s.patterns if s.is_dir else ())
            for s in self.specs
            if not s.is_socket
        ]
        self.listeners = self._open_listeners()
        self.follower = Follower(
            targets,
            state=saved.follow,
            poll_interval=self.poll_interval,
            use_watchdog=self.use_watchdog,
            max_open=sum(s.max_open_files for s in self.specs if not s.is_socket) or 1,
            wall=self.wall,
            spill_dir=str(self.state_dir),
        )
        self.registry = registry
        self.metrics = MetricsEndpoint(config.metrics_listen) if config.metrics_listen else None
        previous = self._install_signals()
        log.info(
            "zeekndm run: following %s; state in %s; %d model(s) enabled",
            "; ".join(s.describe() for s in self.specs),
            self.state_dir,
            len(self.detector.models),
        )
        self._log_effective_config(sinks)
        if raw:
            log.info(
                "resuming: %d file position(s) and %d tracked source(s) restored",
                len(saved.follow.files),
                self.detector.tracked_sources,
            )
        status = 0
        crashed = True
        try:
            self._loop()
            crashed = False
        finally:
            self._restore_signals(previous)
            if crashed:
                # Lines may have been read past the point where handling stopped: the
                # registry keeps the last commit, so they are all read again at the next
                # start (their alerts keep their ids), and none is skipped.
                log.error(
                    "stopping on an unexpected error; nothing is committed after it, "
                    "reading resumes at the last commit"
                )
            elif not self._commit_if_delivered(final=True):
                status = self._report_uncommitted()
            self.follower.close()
            for listener in self.listeners:
                listener.close()
            self.pipeline.close()
            self._log_stats(final=True)
            if self.metrics is not None:
                self.metrics.close()
        return status

    def _report_uncommitted(self) -> int:
        """Why the final commit was skipped, and the exit status that goes with it.

        Records the event clock holds (a jump in record time not yet confirmed by later
        records) are no failure: nothing may be committed past them, so they and the
        records after the last commit are read again at the next start, where later
        records confirm or refute the jump. Alerts no output settled are a failure."""
        held = self.pipeline.clock.holding
        if held:
            log.info(
                "%s waiting for event-time confirmation (a jump in record time) will be "
                "read again at the next start",
                _counted(held, "record"),
            )
        pending = self.pipeline.pending
        if not pending:
            return 0
        log.error(
            "%s could not be delivered to every output; the records that caused them "
            "will be read again at the next start",
            _counted(pending, "alert"),
        )
        return 1

    def _commit_due(self) -> None:
        self._commit_if_delivered()

    def _wake(self) -> None:
        follower = getattr(self, "follower", None)
        if follower is not None:
            follower.wake()

    def _apply_models(self, new: Config) -> None:
        self.detector.set_models(new.enabled_models, new.classifier())
        self.streams.set_models(new.models, new.notices)
        self.streams.set_dports(watched_ports(self.detector.models))

    def _restored_detector(self, saved: RegistryState) -> Detector:
        config = self.config
        detector = Detector(config.enabled_models, config.classifier(), config.detector)
        if saved.detector:
            try:
                detector.restore(saved.detector)
            except Exception as exc:  # noqa: BLE001 - any malformed snapshot: start empty
                log.warning(
                    "registry: the saved detector state cannot be used (%s: %s); starting "
                    "with empty windows",
                    type(exc).__name__,
                    exc,
                )
                detector = Detector(config.enabled_models, config.classifier(), config.detector)
        return detector

    def request_stop(self) -> None:
        """Stop the loop soon (from a signal handler or another thread). A delivery under
        way is cut short (its alerts are spooled), so a slow or dripping Elasticsearch
        cannot hold the stop; the final commit then covers them."""
        self.stop_requested = True
        pipeline = getattr(self, "pipeline", None)
        for sink in pipeline.sinks if pipeline is not None else ():
            if isinstance(sink, InterruptibleSink):
                sink.interrupt()
        follower = getattr(self, "follower", None)
        if follower is not None:
            follower.wake()

    def _loop(self) -> None:
        clock = self.clock
        now = clock()
        self._start_timers(now)
        last_record = now
        idle_base: float | None = None
        self._rate_mark = (now, self.totals.records)
        while not self.stop_requested:
            wait = SOCKET_WAIT if self.listeners else min(self.commit_interval, 0.5)
            chunks = self.follower.read(wait)
            got = self._handle_chunks(chunks)
            for listener in self.listeners:
                got += self._handle_socket(listener)
            now = clock()
            if got:
                last_record, idle_base = now, None
            elif now - last_record >= IDLE_SWEEP_AFTER and self.detector.max_ts > float("-inf"):
                if idle_base is None:
                    idle_base = self.detector.max_ts - (now - last_record)
                self.pipeline.add_detections(self.detector.advance(idle_base + now - last_record))
            self._housekeeping(now)

    # -- input -------------------------------------------------------------------------
    def _handle_chunks(self, chunks: list[Chunk]) -> int:
        n = 0
        streams = self.streams
        debug = log.isEnabledFor(logging.DEBUG)
        for chunk in chunks:
            if debug:
                span = f", lines {chunk.lines[0][0]}-{chunk.lines[-1][0]}" if chunk.lines else ""
                log.debug(
                    "read %d line(s) of %s%s%s%s%s",
                    len(chunk.lines),
                    chunk.path,
                    span,
                    " (new file)" if chunk.new_file else "",
                    " (truncated)" if chunk.reset else "",
                    " (finished)" if chunk.closed else "",
                )
            stream = streams.get(chunk.key)
            if stream is None or chunk.new_file or chunk.reset:
                resumed = not (chunk.new_file or chunk.reset)
                stream = streams.open(
                    chunk.key, chunk.path, self._first_lines(chunk, resumed), resumed
                )
            if stream is not None and chunk.lines:
                n += streams.feed(stream, chunk.lines, self.pipeline, self.totals, chunk.block)
            elif stream is None and chunk.lines:
                self.totals.bad_lines += len(chunk.lines)
            self._since_commit += len(chunk.lines)
            if chunk.closed:
                streams.close(chunk.key)
        return n

    def _first_lines(self, chunk: Chunk, resumed: bool) -> list[bytes]:
        """The file's first lines: from its start when resumed mid-file, else the chunk."""
        if not resumed:
            return [line for _, line in chunk.lines]
        try:
            return self.follower.head(chunk.key).split(b"\n")[:-1]
        except KeyError:
            return []

    def _open_listeners(self) -> list[Any]:
        sockets = [s for s in self.specs if s.is_socket]
        if not sockets:
            return []
        from zeekndm.live.listen import SocketListener

        listeners = []
        for spec in sockets:
            listener = SocketListener(
                spec.path,
                spec.type,
                max_clients=spec.max_clients,
                max_buffered_bytes=spec.max_buffered_bytes,
                idle_timeout=spec.idle_timeout,
            )
            listeners.append(listener)
            self.streams.add_socket(spec.path)
        return listeners

    def _handle_socket(self, listener: Any) -> int:
        lines = listener.read(0)
        if not lines:
            return 0
        log.debug("read %d line(s) from %s", len(lines), listener.path)
        stream = self.streams.get(f"socket:{listener.path}")
        first = stream.stats.lines
        stream.stats.lines += len(lines)
        self._since_commit += len(lines)
        return self.streams.feed(
            stream, list(enumerate(lines, first + 1)), self.pipeline, self.totals
        )

    # -- output and commit -------------------------------------------------------------
    def _commit_if_delivered(self, final: bool = False) -> bool:
        """Deliver what is pending; commit the registry only if every sink settled it."""
        if not self.pipeline.deliver(flush=True):
            return False
        if self._since_commit or final:
            self._commit()
        return True

    def _commit(self) -> None:
        started = self.clock()
        self.registry.commit(self._state().to_dict())
        self._commit_took = self.clock() - started
        self._since_commit = 0
        self.last_commit_wall = self.wall()

    def _state(self) -> RegistryState:
        follow = self.follower.follow_state()
        keys = {f.key for f in follow.files}
        totals = Totals(
            self.totals.records,
            self.totals.bad_lines,
            self._notices_before + self.pipeline.notices,
            self._alerts(),
        )
        positions = {
            str(sink.path): pos
            for sink in self.pipeline.sinks
            if isinstance(sink, ResumableSink) and (pos := sink.position()) is not None
        }
        return RegistryState(
            follow=follow,
            detector=self.detector.snapshot(),
            streams=self.streams.saved_headers(keys),
            totals=totals,
            ndjson=positions,
            committed_at=self.wall(),
        )

    def _alerts(self) -> Counter:
        """Alerts per model over every run: those committed before this start, plus ours."""
        return self.totals.alerts + self.pipeline.alerts_by_model

    def _reopen_outputs(self) -> None:
        """SIGHUP: reopen the alert files (logrotate renamed them), right after a commit,
        so no alert written to the old file is written again to the new one."""
        if not self._commit_if_delivered(final=True):
            return  # still undelivered: try again on the next turn of the loop
        reopened = False
        for sink in self.pipeline.sinks:
            if isinstance(sink, ReopenableSink):
                sink.reopen()
                reopened = True
        if reopened:
            self._commit()
        self.reopen_requested = False

    # -- operations -----------------------------------------------------------------
    def metrics_snapshot(self) -> MetricsSnapshot:
        """The numbers the metrics endpoint serves, taken in the loop's thread."""
        now = self.clock()
        records = self.streams.records_by_path()
        rates = self._rates(now, records)
        lag = self.follower.lag()
        spool_alerts, spool_bytes = self.spool_depth()
        retries, dead = self._output_series()
        return MetricsSnapshot(
            records=dict(records),
            records_per_second=rates,
            lag_bytes={x.path: x.bytes_behind for x in lag},
            lag_seconds={x.path: x.seconds_behind for x in lag},
            bad_lines=dict(self.streams.bad_lines_by_path_and_reason()),
            late_records=self.detector.stats.late_records,
            tracked_sources=self.detector.tracked_sources,
            alerts=dict(self.pipeline.alerts_by_model_state),
            spool_alerts=spool_alerts,
            spool_bytes=spool_bytes,
            retries=dict(retries),
            dead_letters=dict(dead),
            last_commit=self.last_commit_wall,
        )

    def _log_stats(self, final: bool = False) -> None:
        now = self.clock()
        then, records_then = getattr(self, "_rate_mark", (now, self.totals.records))
        rate = (self.totals.records - records_then) / max(now - then, 1e-9)
        self._rate_mark = (now, self.totals.records)
        lag = self.follower.lag() if not final else []
        lag_text = ", ".join(
            f"{Path(x.path).name} {x.bytes_behind}B/{x.seconds_behind:.0f}s" for x in lag
        )
        alerts = self._alerts()
        log.info(
            "%s: records=%d (%.0f/s) bad_lines=%d notices=%d late=%d tracked_sources=%d "
            "alerts={%s} pending=%d spool=%d lag=[%s]",
            "stopped" if final else "stats",
            self.totals.records,
            rate,
            self.totals.bad_lines,
            self.pipeline.notices,
            self.detector.stats.late_records,
            self.detector.tracked_sources,
            ", ".join(f"{m}: {n}" for m, n in sorted(alerts.items())),
            self.pipeline.pending,
            self.spool_depth()[0],
            lag_text,
        )


def _counted(n: int, word: str) -> str:
    """ "1 record", "2 records"."""
    return f"{n:,} {word if n == 1 else word + 's'}"
