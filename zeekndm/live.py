"""`zeekndm run`: follow a sensor's logs and detect as records arrive, as a service.

One thread, one loop: new complete lines come from the `Follower` (files, through
rotation) and from socket listeners (Suricata writing eve to us); each file gets its own
parser, found from its content like `replay` does; records go through the same detector,
enricher and sinks as `replay`. Then, at most every `flush_interval`, the loop delivers
what is pending to every sink and, only once all of it is acknowledged or spooled,
commits the registry: file offsets, detector state and NDJSON size together. That order
is what makes a crash safe: records after the last commit are read again and produce the
same alerts with the same ids, which the sinks recognise as already delivered.

Signals: SIGTERM/SIGINT stop the loop (deliver, commit, exit 0); SIGHUP, or a change of
the config file, reloads models, thresholds and networks while keeping window state; a
config that does not validate is rejected with one log line and the old one stays.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeekndm.checkpoint import Registry
from zeekndm.config import Config, load_config
from zeekndm.detect import Detector
from zeekndm.enrich import Observer
from zeekndm.errors import ZeekNDMError
from zeekndm.follow import Chunk, Follower, FollowTarget
from zeekndm.inputs import InputSpec, input_from_arg
from zeekndm.outputs import build_sinks, state_dir_for
from zeekndm.pipeline import Pipeline
from zeekndm.readers import ReadStats, make_parser, parse_line, sensor_type, sniff_format
from zeekndm.readers.base import LineParser

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
"""Seconds between scans of the followed paths when no notification arrives."""

SOCKET_WAIT = 0.05
"""With socket inputs, how long one wait for file data may block the sockets."""

IDLE_SWEEP_AFTER = 60.0
"""Wall-clock seconds without any record after which event time is advanced by the idle
time, so that episodes still end when a sensor goes quiet."""

BAD_LINE_LOGS_PER_MINUTE = 10
"""Per input file: more malformed lines than this in a minute are counted, not logged."""


class LiveReadStats(ReadStats):
    """ReadStats whose bad-line log is rate-limited, for files that grow for months."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._window_start = 0.0
        self._logged = 0
        self.suppressed = 0

    def _report(self, lineno: int, reason: str, detail: str) -> None:
        now = time.monotonic()
        if now - self._window_start >= 60.0:
            if self.suppressed:
                log.warning(
                    "%s: %d more bad lines in the last minute were not logged",
                    self.path,
                    self.suppressed,
                )
            self._window_start, self._logged, self.suppressed = now, 0, 0
        if self._logged >= BAD_LINE_LOGS_PER_MINUTE:
            self.suppressed += 1
            return
        self._logged += 1
        log.warning("%s:%d: %s%s", self.path, lineno, reason, f" ({detail})" if detail else "")


HEADER_MAX_LINES = 64
"""A Zeek header block longer than this is not remembered whole for a resume (Zeek's own
has 8 lines)."""


@dataclass
class _Stream:
    """One file being read (or one socket): its parser and counters.

    `header` is the Zeek TSV header block in force at the last line fed: a file can hold
    several blocks (logs concatenated, or appended to after a restart of Zeek), and a
    resume in the middle of a later block must prime the parser with that block, not with
    the file's first one. It is committed with the file's offset.
    """

    parser: LineParser | None
    stats: LiveReadStats
    observer: Observer
    header: list[bytes] = field(default_factory=list)
    in_header: bool = False

    def note_header(self, line: bytes) -> None:
        """Keep track of the header block a `#` line belongs to."""
        if not self.in_header:
            self.header = []
            self.in_header = True
        if len(self.header) < HEADER_MAX_LINES:
            self.header.append(line)


@dataclass
class _Totals:
    """Counters that survive restarts (they are committed with the offsets)."""

    records: int = 0
    bad_lines: int = 0
    notices: int = 0
    alerts: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "bad_lines": self.bad_lines,
            "notices": self.notices,
            "alerts": dict(self.alerts),
        }

    @classmethod
    def from_dict(cls, data: Any) -> _Totals:
        """The saved counters; a value of the wrong type is a warning and counts from 0
        (counters are for operators, never a reason not to start)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            log.warning("registry: totals is %s, not a mapping; counting from 0", _kind(data))
            return cls()

        def count(name: str) -> int:
            value = data.get(name, 0)
            if type(value) is int and value >= 0:
                return value
            log.warning("registry: totals.%s is %r, not a count; counting from 0", name, value)
            return 0

        alerts: Counter = Counter()
        raw = data.get("alerts", {})
        if isinstance(raw, dict):
            for k, v in raw.items():
                if type(v) is int and v >= 0:
                    alerts[str(k)] = v
                else:
                    log.warning("registry: totals.alerts.%s is %r, not a count; ignored", k, v)
        else:
            log.warning("registry: totals.alerts is %s, not a mapping; ignored", _kind(raw))
        return cls(count("records"), count("bad_lines"), count("notices"), alerts)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _none() -> None:
    return None


def _saved_headers(data: Any) -> dict[str, tuple[list[bytes], bool]]:
    """`streams` of the registry: per file key, the Zeek header block in force, and
    whether the commit fell inside it (more of its lines follow)."""
    out: dict[str, tuple[list[bytes], bool]] = {}
    if data is None:
        return out
    if not isinstance(data, dict):
        log.warning("registry: streams is %s, not a mapping; ignored", _kind(data))
        return out
    for key, entry in data.items():
        header = entry.get("header") if isinstance(entry, dict) else None
        if not isinstance(header, list) or not all(isinstance(h, str) for h in header):
            log.warning("registry: streams.%s is malformed; ignored", key)
            continue
        try:
            lines = [h.encode("latin-1") for h in header[:HEADER_MAX_LINES]]
        except UnicodeEncodeError:
            log.warning("registry: streams.%s is malformed; ignored", key)
            continue
        out[str(key)] = (lines, entry.get("open") is True)
    return out


def _saved_positions(data: Any) -> dict[str, int]:
    """`ndjson` of the registry: output path -> its size at the commit."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        log.warning("registry: ndjson is %s, not a mapping; ignored", _kind(data))
        return {}
    out = {}
    for path, offset in data.items():
        if type(offset) is int and offset >= 0:
            out[str(path)] = offset
        else:
            log.warning("registry: ndjson position of %s is %r; ignored", path, offset)
    return out


def run_live(args: Any, config: Config, env: Any) -> int:
    """The `run` command: returns the exit status."""
    runner = LiveRunner(
        config,
        inputs=list(getattr(args, "input", None) or []),
        output=getattr(args, "output", None),
        elasticsearch_url=getattr(args, "elasticsearch", None),
        state_dir=getattr(args, "state_dir", None),
        stdout=env.stdout_bytes,
    )
    runner.models_spec = getattr(args, "models", None)  # --models survives a reload
    return runner.run()


class LiveRunner:
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
        use_watchdog: bool = True,
    ) -> None:
        self.config = config
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
        self.use_watchdog = use_watchdog
        es = config.elasticsearch
        self.flush_interval = float(getattr(es, "flush_interval", 1.0) or 1.0)
        self.stop_requested = False
        self.reload_requested = False
        self._streams: dict[str, _Stream] = {}
        self._unrecognised: set[str] = set()
        self.totals = _Totals()
        self._since_commit = 0
        self._commit_took = 0.0
        self._config_mtime = self._mtime(config.path)
        self._saved_headers: dict[str, tuple[list[bytes], bool]] = {}

    # -- lifecycle ------------------------------------------------------------------
    def run(self) -> int:
        registry = Registry(self.state_dir)
        registry.lock()
        try:
            return self._run(registry)
        finally:
            registry.unlock()

    def _run(self, registry: Registry) -> int:
        saved = registry.load() or {}
        config = self.config
        self.detector = Detector(config.enabled_models, config.classifier(), config.detector)
        if saved.get("detector"):
            try:
                self.detector.restore(saved["detector"])
            except Exception as exc:  # noqa: BLE001 - any malformed snapshot: start empty
                log.warning(
                    "registry: the saved detector state cannot be used (%s: %s); starting "
                    "with empty windows",
                    type(exc).__name__,
                    exc,
                )
                self.detector = Detector(
                    config.enabled_models, config.classifier(), config.detector
                )
        self.totals = _Totals.from_dict(saved.get("totals"))
        self._saved_headers = _saved_headers(saved.get("streams"))
        sinks = build_sinks(
            config,
            self.state_dir,
            output=self.output,
            elasticsearch_url=self.elasticsearch_url,
            stdout=self.stdout,
            allow_unreachable=True,
        )
        self._resume_ndjson(sinks, _saved_positions(saved.get("ndjson")))
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
            state=saved.get("follow"),
            poll_interval=self.poll_interval,
            use_watchdog=self.use_watchdog,
            max_open=sum(s.max_open_files for s in self.specs if not s.is_socket) or 1,
        )
        self.registry = registry
        previous = self._install_signals()
        log.info(
            "zeekndm run: following %s; state in %s; %d model(s) enabled",
            "; ".join(s.describe() for s in self.specs),
            self.state_dir,
            len(self.detector.models),
        )
        if saved:
            log.info(
                "resuming: %d file position(s) and %d tracked source(s) restored",
                len(self.follower.state()["files"]),
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
                log.error(
                    "%d alerts could not be delivered to every output; the records that "
                    "caused them will be read again at the next start",
                    self.pipeline.pending,
                )
                status = 1
            self.follower.close()
            for listener in self.listeners:
                listener.close()
            self.pipeline.close()
            self._log_stats(final=True)
        return status

    def _loop(self) -> None:
        now = time.monotonic()
        next_flush = now + self.flush_interval
        next_stats = now + self.config.stats_interval
        next_config_check = now + 1.0
        last_record = now
        idle_base: float | None = None
        self._rate_mark = (now, self.totals.records)
        while not self.stop_requested:
            wait = SOCKET_WAIT if self.listeners else min(self.flush_interval, 0.5)
            chunks = self.follower.read(wait)
            got = self._handle_chunks(chunks)
            for listener in self.listeners:
                got += self._handle_socket(listener)
            now = time.monotonic()
            if got:
                last_record, idle_base = now, None
            elif now - last_record >= IDLE_SWEEP_AFTER and self.detector.max_ts > float("-inf"):
                if idle_base is None:
                    idle_base = self.detector.max_ts - (now - last_record)
                self.pipeline.add_detections(self.detector.advance(idle_base + now - last_record))
            if now >= next_flush:
                self._commit_if_delivered()
                # A huge window state makes commits slow: keep them under ~5% of the time.
                next_flush = time.monotonic() + max(self.flush_interval, 20 * self._commit_took)
            elif self.pipeline.pending:
                # Alerts go out as soon as they exist (they are few); the registry is
                # committed at the flush interval, after everything before it is settled.
                self.pipeline.deliver()
            if self.reload_requested or now >= next_config_check:
                self._maybe_reload()
                next_config_check = now + 1.0
            if now >= next_stats:
                self._log_stats()
                next_stats = now + self.config.stats_interval

    # -- input -------------------------------------------------------------------------
    def _handle_chunks(self, chunks: list[Chunk]) -> int:
        n = 0
        for chunk in chunks:
            stream = self._streams.get(chunk.key)
            if stream is None or chunk.new_file or chunk.reset:
                stream = self._open_stream(chunk)
            if stream is not None and chunk.lines:
                n += self._feed(stream, chunk.lines)
            elif stream is None and chunk.lines:
                self.totals.bad_lines += len(chunk.lines)
            self._since_commit += len(chunk.lines)
            if chunk.closed:
                self._streams.pop(chunk.key, None)
                self._unrecognised.discard(chunk.key)
        return n

    def _open_stream(self, chunk: Chunk) -> _Stream | None:
        """A parser for a file first seen (or truncated): format from its first lines.

        A file resumed in the middle (after a restart) gets its format, and a Zeek TSV
        parser its header, from the file's first bytes."""
        resumed = not (chunk.new_file or chunk.reset)
        if resumed:
            try:
                head_lines = self.follower.head(chunk.key).split(b"\n")[:-1]
            except KeyError:
                head_lines = []
        else:
            head_lines = [line for _, line in chunk.lines]
        head = b"\n".join([ln for ln in head_lines if ln.strip()][:10])
        fmt = self._forced_format(chunk.path)
        stats = LiveReadStats(chunk.path)
        if fmt is None:
            try:
                fmt = sniff_format(head, file=chunk.path)
            except ZeekNDMError as exc:
                if chunk.key not in self._unrecognised:
                    log.error("%s; its lines are not read", exc)
                    self._unrecognised.add(chunk.key)
                self._streams.pop(chunk.key, None)
                return None
        parser = make_parser(fmt)
        set_models = getattr(parser, "set_models", None)
        if set_models is not None:
            set_models(self.config.models)
        stream = _Stream(parser, stats, Observer(self.config.sensor_name, sensor_type(fmt)))
        if resumed:
            # The header block in force at the committed offset (a later block of a
            # concatenated log), else the file's first one.
            header, still_open = self._saved_headers.pop(chunk.key, (None, False))
            if header is None:
                header = []
                for line in head_lines:
                    if line.startswith(b"#"):
                        header.append(line)
                    elif line.strip():
                        break
            for line in header:
                stream.note_header(line)
                parse_line(parser, 0, line, stats)
            stream.in_header = still_open
        stats.format = fmt
        self._streams[chunk.key] = stream
        if not resumed:
            log.info("reading %s (%s)", chunk.path, fmt)
        return stream

    def _forced_format(self, path: str) -> str | None:
        real = os.path.realpath(path)
        for spec in self.specs:
            if spec.format is None or spec.is_socket:
                continue
            base = os.path.realpath(spec.path)
            if real == base or os.path.dirname(real) == base:
                return spec.format
        return None

    def _feed(self, stream: _Stream, lines: list[tuple[int, bytes]]) -> int:
        """Parse and detect; returns the number of records."""
        pipeline = self.pipeline
        pipeline.observer = stream.observer
        stats = stream.stats
        parser = stream.parser
        records = 0
        bad_before = stats.bad_lines
        for lineno, line in lines:
            if line[:1] == b"#":
                stream.note_header(line)
            elif stream.in_header and line.strip():
                stream.in_header = False
            try:
                item = parse_line(parser, lineno, line, stats)
                if item is None:
                    continue
                pipeline.push(item, stats, lineno)
            except Exception as exc:  # noqa: BLE001 - one line must never stop the service
                # A record that breaks a later stage (a bug, or a value nobody validated):
                # it is one bad line, counted and logged, and reading goes on.
                stats.add_bad(lineno, "record not processed", f"{type(exc).__name__}: {exc}")
                log.debug("%s:%d: record not processed", stats.path, lineno, exc_info=True)
                continue
            records += 1
        stats.records += records
        self.totals.records += records
        self.totals.bad_lines += stats.bad_lines - bad_before
        return records

    def _open_listeners(self) -> list[Any]:
        sockets = [s for s in self.specs if s.is_socket]
        if not sockets:
            return []
        from zeekndm.listen import SocketListener

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
            stats = LiveReadStats(spec.path)
            stats.format = "suricata_eve"
            self._streams[f"socket:{spec.path}"] = _Stream(
                make_parser("suricata_eve"),
                stats,
                Observer(self.config.sensor_name, "suricata"),
            )
        return listeners

    def _handle_socket(self, listener: Any) -> int:
        lines = listener.read(0)
        if not lines:
            return 0
        stream = self._streams[f"socket:{listener.path}"]
        first = stream.stats.lines
        stream.stats.lines += len(lines)
        self._since_commit += len(lines)
        return self._feed(stream, list(enumerate(lines, first + 1)))

    # -- output and commit -------------------------------------------------------------
    def _commit_if_delivered(self, final: bool = False) -> bool:
        """Deliver what is pending; commit the registry only if every sink settled it."""
        if not self.pipeline.deliver(flush=True):
            return False
        if self._since_commit or final:
            started = time.monotonic()
            self.registry.commit(self._state())
            self._commit_took = time.monotonic() - started
            self._since_commit = 0
        return True

    def _state(self) -> dict[str, Any]:
        totals = {**self.totals.as_dict(), "alerts": dict(self._alerts())}
        positions = {
            str(getattr(s, "path", "")): getattr(s, "position", _none)()
            for s in self.pipeline.sinks
        }
        follow = self.follower.state()
        keys = {e.get("key") for e in follow.get("files", [])}
        headers = {k: h for k, h in self._saved_headers.items() if k in keys}
        for key, stream in self._streams.items():
            if key in keys and stream.header:
                headers[key] = (stream.header, stream.in_header)
        return {
            "follow": follow,
            "detector": self.detector.snapshot(),
            "streams": {
                k: {"header": [ln.decode("latin-1") for ln in h], "open": is_open}
                for k, (h, is_open) in headers.items()
            },
            "totals": totals,
            "ndjson": {path: pos for path, pos in positions.items() if pos is not None},
            "committed_at": time.time(),
        }

    def _alerts(self) -> Counter:
        """Alerts per model over every run: those committed before this start, plus ours."""
        return self.totals.alerts + self.pipeline.alerts_by_model

    def _resume_ndjson(self, sinks: list[Any], saved: dict[str, Any]) -> None:
        for sink in sinks:
            if getattr(sink, "path", None) is None or not hasattr(sink, "skip_written_since"):
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

    # -- operations -----------------------------------------------------------------
    def _install_signals(self) -> dict[int, Any]:
        def stop(signum: int, frame: Any) -> None:
            self.stop_requested = True
            self.follower.wake()

        def reload(signum: int, frame: Any) -> None:
            self.reload_requested = True
            self.follower.wake()

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
            new = load_config(path).with_models(getattr(self, "models_spec", None))
        except ZeekNDMError as exc:
            log.error(
                "config reload rejected (%s): %s; the running config stays in force",
                why,
                str(exc).replace("\n", "; "),
            )
            return
        self.detector.set_models(new.enabled_models, new.classifier())
        for stream in self._streams.values():
            set_models = getattr(stream.parser, "set_models", None)
            if set_models is not None:
                set_models(new.models)
        for what in ("inputs", "elasticsearch", "ndjson_path", "state_dir", "detector"):
            if getattr(new, what) != getattr(self.config, what):
                log.warning("config reload: %s changed; restart zeekndm to apply it", what)
        self.config = new
        log.info(
            "config reloaded (%s): %d model(s) enabled: %s",
            why,
            len(self.detector.models),
            ", ".join(m.name for m in self.detector.models),
        )

    def _log_stats(self, final: bool = False) -> None:
        now = time.monotonic()
        then, records_then = getattr(self, "_rate_mark", (now, self.totals.records))
        rate = (self.totals.records - records_then) / max(now - then, 1e-9)
        self._rate_mark = (now, self.totals.records)
        lag = self.follower.lag() if not final else []
        lag_text = ", ".join(
            f"{Path(x.path).name} {x.bytes_behind}B/{x.seconds_behind:.0f}s" for x in lag
        )
        alerts = self._alerts()
        spool = sum(
            s.spool.count() for s in self.pipeline.sinks if getattr(s, "spool", None) is not None
        )
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
            spool,
            lag_text,
        )
