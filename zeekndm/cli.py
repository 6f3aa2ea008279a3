"""Command line: `main()` turns errors into one line and an exit status; the sub-command
functions do the work. Only this module wires stages together and talks to the terminal.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import gc
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable

from zeekndm import __version__, core
from zeekndm.config import Config, load_config
from zeekndm.detect import Detector
from zeekndm.enrich import Observer
from zeekndm.errors import ConfigError, ZeekNDMError
from zeekndm.models import watched_ports
from zeekndm.outputs import build_sinks as _build_sinks
from zeekndm.outputs import elasticsearch_settings, opensearch_settings, state_dir_for
from zeekndm.pipeline import Pipeline

log = logging.getLogger("zeekndm")


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1  # runtime failure: unreadable input, undeliverable alerts, unreachable output
    USAGE = 2  # bad command line or invalid configuration
    INTERRUPTED = 130


@dataclass
class Environment:
    """Streams and clock, replaceable by tests (CLI tests run `main()` in-process)."""

    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], float] = time.monotonic
    #: What `replay -` reads (binary); None: the process's standard input.
    stdin: IO[bytes] | None = None

    @property
    def stdin_bytes(self) -> IO[bytes]:
        if self.stdin is not None:
            return self.stdin
        return sys.stdin.buffer

    @property
    def stdout_bytes(self) -> IO[bytes]:
        buffer = getattr(self.stdout, "buffer", None)
        if buffer is not None:
            self.stdout.flush()
            return buffer
        return _TextAsBytes(self.stdout)


class _TextAsBytes:
    """Adapter so the NDJSON sink can write bytes to a text stream (StringIO in tests)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        return self.stream.write(data.decode("utf-8"))

    def flush(self) -> None:
        self.stream.flush()


# -- argument definitions (one place) ------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zeekndm",
        description="Network Detection Models over Zeek conn.log and Suricata eve.json.",
    )
    parser.add_argument(
        "--version", action="version", version=f"zeekndm {__version__}, core: {core.describe()}"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", "-c", metavar="PATH", help="YAML config (default: built-in defaults)"
    )
    common.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    common.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override logging.level"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "replay",
        parents=[common],
        help="read log files once, detect, write alerts",
        description="Read Zeek conn.log (TSV/JSON, plain or .gz), Zeek notice.log or Suricata "
        "eve.json files in the order given, detect, and write one ECS alert per line. "
        "FILE may be - (standard input), a FIFO, or a directory: its conn*, eve* and "
        "notice* files are read oldest first (by modification time).",
        epilog="example: zeekndm replay demo/conn.log --output alerts.ndjson",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--output",
        "-o",
        metavar="PATH|-",
        help="NDJSON alerts (default: stdout); an existing file is replaced, see --append",
    )
    p.add_argument(
        "--append", action="store_true", help="append to the --output file instead of replacing it"
    )
    p.add_argument("--elasticsearch", metavar="URL", help="also index alerts into this cluster")
    p.add_argument(
        "--opensearch", metavar="URL", help="also index alerts into this OpenSearch cluster"
    )
    p.add_argument(
        "--format",
        default="auto",
        help="input format (default: detected from the content): "
        "zeek_tsv, zeek_json, suricata_eve, zeek_notice",
    )
    p.add_argument("--state-dir", metavar="DIR", help="spool/dead-letter directory for outputs")
    p.add_argument(
        "--models",
        metavar="NAME[,NAME...]|all",
        help="run only these models (or all shipped and configured ones), "
        "whatever the config enables",
    )
    p.add_argument(
        "--funnel",
        action="store_true",
        help="print every enabled model's funnel in the summary, not only those that saw records",
    )
    p.add_argument(
        "--parse-all",
        action="store_true",
        help="fully parse and validate every record, not only those on ports a model "
        "watches (slower; exact bad-line counts for the whole file)",
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "tune",
        parents=[common],
        help="show what each threshold would do on your own history, suggest, write a config",
        description="Read a history of connection logs (Zeek conn.log TSV/JSON, plain or "
        ".gz; Suricata eve.json; directories such as zeekctl's archive logs/YYYY-MM-DD/"
        "conn.*.log.gz, read in time order) through the same detector as replay, and show "
        "per model: sources seen, the distribution of each source's peak count, the top "
        "sources, a what-if table of candidate thresholds, and suggested thresholds with "
        "the reasoning.",
        epilog="example: zeekndm tune /opt/zeek/logs --since 2024-05-01 --until 2024-05-08 "
        "--output tuned.yaml --plot peaks.png",
    )
    p.add_argument("files", nargs="+", metavar="PATH")
    p.add_argument(
        "--models",
        metavar="NAME[,NAME...]|all",
        help="tune these models (default: the enabled ones); the overlay enables them",
    )
    p.add_argument("--since", metavar="T", help="keep records from T (ISO date/time or epoch s)")
    p.add_argument("--until", metavar="T", help="keep records before T")
    p.add_argument(
        "--output",
        "-o",
        metavar="OVERLAY.yaml",
        help="write the suggestions as a complete config for --config (discards commented out)",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png|DIR",
        help="draw each model's per-source peaks with the current and suggested thresholds",
    )
    p.add_argument("--json", action="store_true", help="print everything as one JSON document")
    p.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local (default) or spark: per-source statistics on Apache Spark "
        "(pip install 'zeekndm[spark]'; Zeek TSV logs; no what-if)",
    )
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "run",
        parents=[common],
        help="follow live logs beside a sensor (service mode)",
        epilog="example: zeekndm run -c /etc/zeekndm/zeekndm.yaml --input /opt/zeek/logs/current",
    )
    p.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="PATH|URL",
        help="a log file, a Zeek log directory, a unix socket (repeatable), or Kafka topics "
        "as kafka://BROKER[,BROKER]/TOPIC[,TOPIC]?group=NAME (options as in the config)",
    )
    p.add_argument("--output", "-o", metavar="PATH|-", help="NDJSON alerts (default: config)")
    p.add_argument("--elasticsearch", metavar="URL", help="also index alerts into this cluster")
    p.add_argument(
        "--opensearch", metavar="URL", help="also index alerts into this OpenSearch cluster"
    )
    p.add_argument("--state-dir", metavar="DIR", help="registry, snapshot and spool directory")
    p.add_argument(
        "--models",
        metavar="NAME[,NAME...]|all",
        help="run only these models (or all), whatever the config enables",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "rekey",
        parents=[common],
        help="copy an unkeyed Kafka topic into one keyed by source address (exactly once)",
        description="Consume a Kafka topic whose records are not keyed by source address "
        "(zeek-kafka's, for instance) and produce each record to --to keyed by its source, on "
        "the partition the input's partitioner gives it, so a zeekndm consumer group can "
        "share the keyed topic. Records and consumed offsets are committed in one Kafka "
        "transaction.",
        epilog="example: zeekndm rekey --input 'kafka://k1:9092/zeek?format=zeek_json' "
        "--to zeek-by-source",
    )
    p.add_argument(
        "--input",
        "-i",
        metavar="URL",
        help="the unkeyed topic as kafka://BROKER/TOPIC?... (default: the kafka input of the "
        "config)",
    )
    p.add_argument("--to", required=True, metavar="TOPIC", help="the keyed topic to produce to")
    p.add_argument(
        "--group",
        default="zeekndm-rekey",
        metavar="NAME",
        help="the consumer group of the rekey stage (default: zeekndm-rekey)",
    )
    p.add_argument(
        "--partitioner",
        choices=["murmur2", "crc32", "fnv1a"],
        help="how keys map to partitions (default: the input's partitioner, murmur2)",
    )
    p.add_argument("--state-dir", metavar="DIR", help="names this instance (transactional id)")
    p.set_defaults(func=cmd_rekey)

    p = sub.add_parser(
        "status",
        parents=[common],
        help="what a running or stopped `run` has done, read from its state directory",
        epilog="example: zeekndm status --state-dir /var/lib/zeekndm",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="the instance's state directory (default: the config's state_dir, else "
        "/var/lib/zeekndm)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "check-config",
        parents=[common],
        help="validate the config and print the effective configuration",
    )
    p.add_argument(
        "--test-output",
        action="store_true",
        help="also check that the configured outputs are reachable",
    )
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("models", parents=[common], help="list models with their MITRE mapping")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("schema", parents=[common], help="print the JSON Schema of a model file")
    p.add_argument(
        "--notice",
        action="store_true",
        help="the schema of a notice mapping (Zeek's own scan notices as alerts) instead",
    )
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser(
        "setup",
        parents=[common],
        help="install the index template, ILM policy, data stream and Kibana objects",
        description="Install what Elasticsearch and Kibana, or OpenSearch, need (idempotent). "
        "With no part named, every part is installed (the Kibana ones when a Kibana URL is "
        "known). On OpenSearch: the ISM policy, index template and data stream.",
        epilog="example: zeekndm setup --elasticsearch https://es:9200 --kibana https://kb:5601; "
        "zeekndm setup --opensearch https://os:9200",
    )
    p.add_argument("--elasticsearch", metavar="URL", help="replaces output.elasticsearch hosts")
    p.add_argument("--opensearch", metavar="URL", help="replaces output.opensearch hosts")
    p.add_argument(
        "--kibana",
        metavar="URL",
        help="Kibana's URL (default: from output.elasticsearch.cloud_id on Elastic Cloud)",
    )
    p.add_argument(
        "--kibana-space", metavar="SPACE", help="Kibana space id to install into (default: default)"
    )
    p.add_argument(
        "--template",
        action="store_true",
        help="the ILM policy, ingest pipeline, index template and data stream (on OpenSearch: "
        "the ISM policy, index template and data stream)",
    )
    p.add_argument(
        "--dashboards", action="store_true", help="the Kibana data view, search and dashboard"
    )
    p.add_argument(
        "--detection-rule",
        action="store_true",
        help="the Kibana Security rule promoting zeekndm alerts (and the External Alerts "
        "exception)",
    )
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("export", parents=[common], help="print an asset for manual installation")
    p.add_argument(
        "asset",
        choices=[
            "template",
            "ilm-policy",
            "ism-policy",
            "ingest-pipeline",
            "dashboards",
            "detection-rule",
        ],
        help="detection-rule: a Kibana Security rule that promotes zeekndm alerts; "
        "ism-policy: OpenSearch's Index State Management policy",
    )
    p.add_argument(
        "--opensearch",
        action="store_true",
        help="the OpenSearch variant: template for OpenSearch, dashboards for OpenSearch "
        "Dashboards (ism-policy is OpenSearch's anyway)",
    )
    p.set_defaults(func=cmd_export)
    return parser


# -- main ------------------------------------------------------------------------------
def main(argv: list[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed usage
        return int(exc.code) if isinstance(exc.code, int) else ExitStatus.USAGE
    try:
        return int(args.func(args, env))
    except KeyboardInterrupt:
        env.stderr.write("zeekndm: interrupted\n")
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        return ExitStatus.OK
    except ConfigError as exc:
        if args.debug:
            raise
        _error(env, exc)
        return ExitStatus.USAGE
    except ZeekNDMError as exc:
        if args.debug:
            raise
        _error(env, exc)
        return ExitStatus.ERROR
    except OSError as exc:
        if args.debug:
            raise
        env.stderr.write(f"zeekndm: error: {exc}\n")
        return ExitStatus.ERROR


def _error(env: Environment, exc: ZeekNDMError) -> None:
    lines = str(exc).splitlines() or [exc.__class__.__name__]
    if len(lines) == 1:
        env.stderr.write(f"zeekndm: error: {lines[0]}\n")
    else:
        env.stderr.write(f"zeekndm: {len(lines)} errors:\n")
        for line in lines:
            env.stderr.write(f"  {line}\n")


class JSONLogFormatter(logging.Formatter):
    """One JSON object per log line (`logging.format: json`), for journald → Filebeat/ELK."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "@timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["error.stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def _setup_logging(env: Environment, level: str, fmt: str = "text") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_zeekndm", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(env.stderr)
    handler._zeekndm = True  # type: ignore[attr-defined]
    handler.setFormatter(
        JSONLogFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    return config


def _state_dir(args: argparse.Namespace, config: Config) -> Path:
    return state_dir_for(config, getattr(args, "state_dir", None))


def build_sinks(
    args: argparse.Namespace,
    config: Config,
    env: Environment,
    state_dir: Path,
    default_stdout: bool = True,
) -> list[Any]:
    return _build_sinks(
        config,
        state_dir,
        output=getattr(args, "output", None),
        elasticsearch_url=getattr(args, "elasticsearch", None),
        opensearch_url=getattr(args, "opensearch", None),
        stdout=env.stdout_bytes if default_stdout else None,
    )


# -- replay ----------------------------------------------------------------------------
def plural(n: int, word: str, many: str | None = None) -> str:
    """ "1 record", "2 records", "1,000 bad lines"."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def replay_inputs(names: list[str]) -> list[str]:
    """The inputs of `replay`, in order: `-` stays (standard input), a directory becomes
    its logs (`readers.find_logs`); anything else must exist. Raises before any work."""
    from zeekndm.readers import LOG_PREFIXES, find_logs

    out: list[str] = []
    for name in names:
        if name == "-":
            out.append(name)
            continue
        path = Path(name)
        if path.is_dir():
            found = find_logs(path)
            if not found:
                prefixes = "*, ".join(LOG_PREFIXES)
                raise ZeekNDMError(f"directory holds no {prefixes}* logs", file=name)
            out.extend(str(p) for p in found)
        elif not os.path.exists(name):
            raise ZeekNDMError("no such file", file=name)
        else:
            out.append(name)
    return out


def cmd_replay(args: argparse.Namespace, env: Environment) -> int:
    from zeekndm.readers import EmptyInput, ReadStats, read_flows, sensor_type
    from zeekndm.sinks.ndjson import NDJSONSink

    config = _load(args).with_models(args.models)
    _setup_logging(env, args.log_level or "warning")
    files = replay_inputs(args.files)  # fail before doing any work, naming the file
    state_dir = _state_dir(args, config)
    sinks = build_sinks(args, config, env, state_dir)
    for sink in sinks:
        if isinstance(sink, NDJSONSink) and sink.path is not None:
            sink.dead_letter_path = state_dir / "dead-letter.ndjson"
            if not args.append:
                sink.truncate()  # a second replay must not duplicate the first one's alerts
    detector = Detector(config.enabled_models, config.classifier(), config.detector)
    pipeline = Pipeline(
        detector,
        sinks,
        Observer(hostname=config.sensor_name),
        event_time=config.event_time,
    )
    fmt = None if args.format == "auto" else args.format
    # Records on ports no model watches are only checked for shape, not parsed: on a
    # busy sensor's log that is most lines, and it makes a replay several times faster.
    dports = None if args.parse_all else watched_ports(detector.models)
    # Start-up made every long-lived object (models, config, the modules): out of the
    # cycle collector's way, so its passes over the records' young objects stay short.
    gc.freeze()
    started = env.clock()
    all_stats = []
    try:
        for f in files:
            label = "<stdin>" if f == "-" else f
            stats = ReadStats(label)
            all_stats.append(stats)
            pipeline.observer = Observer(config.sensor_name, sensor_type(fmt))
            stream = env.stdin_bytes if f == "-" else None
            try:
                flows = read_flows(
                    f,
                    stats,
                    fmt=fmt,
                    dports=dports,
                    models=config.models,
                    notices=config.notices,
                    stream=stream,
                )
            except EmptyInput as exc:
                log.warning("%s; going on with the other files", exc)
                stats.passed_over = "empty"
                continue
            pipeline.observer = Observer(config.sensor_name, sensor_type(stats.format))
            # straight from the reader (no next() first): so the compiled TSV path can
            # observe every block's records itself (Pipeline.push_many)
            pipeline.push_many(flows, stats)
        pipeline.finish_input()
        delivered = pipeline.deliver(flush=True)
    finally:
        pipeline.close()
    elapsed = max(env.clock() - started, 1e-9)
    _summary(env, all_stats, pipeline, elapsed, all_funnels=args.funnel)
    if _report_spooled(env, pipeline.sinks):
        return ExitStatus.ERROR
    if not delivered:
        env.stderr.write(
            f"zeekndm: error: {plural(pipeline.pending, 'alert')} could not be delivered to "
            "every output\n"
        )
        return ExitStatus.ERROR
    return ExitStatus.OK


def _report_spooled(env: Environment, sinks: list[Any]) -> bool:
    """Say so when alerts were only spooled (acknowledged to disk, not delivered): a
    replay whose cluster failed throughout has not delivered them. True if any wait."""
    from zeekndm.sinks.base import SpoolingSink

    waiting = False
    for sink in sinks:
        if not isinstance(sink, SpoolingSink):
            continue
        count, why = sink.undelivered()
        if count:
            waiting = True
            env.stderr.write(
                f"zeekndm: error: {plural(count, 'alert')} {'was' if count == 1 else 'were'} not "
                f"delivered to {sink.name} and {'waits' if count == 1 else 'wait'} in its spool "
                f"({why or 'no answer'}); the next replay or run with this state directory "
                "sends them\n"
            )
    return waiting


def _summary(
    env: Environment,
    all_stats: list,
    pipeline: Pipeline,
    elapsed: float,
    all_funnels: bool = False,
) -> None:
    records = sum(s.records + s.filtered for s in all_stats)
    w = env.stderr.write
    w(
        f"zeekndm replay: {plural(len(all_stats), 'file')}, {plural(records, 'record')} in "
        f"{elapsed:.2f} s ({records / elapsed:,.0f} records/s)\n"
    )
    for s in all_stats:
        if s.passed_over:
            w(f"  {s.path}: {s.passed_over}, not read\n")
            continue
        bad = ", ".join(f"{reason}: {n}" for reason, n in s.bad_by_reason.most_common())
        skipped = sum(s.skipped_by_reason.values())
        w(
            f"  {s.path}: {s.format or 'unknown'}, {plural(s.records + s.filtered, 'record')}"
            + (f" ({s.filtered:,} on unwatched ports not parsed)" if s.filtered else "")
            + f", {plural(s.bad_lines, 'bad line')}"
            + (f" ({bad})" if bad else "")
            + (f", {skipped:,} skipped" if skipped else "")
            + (f"; unreadable rest: {s.unreadable}" if s.unreadable else "")
            + "\n"
        )
    d = pipeline.detector.stats
    if d.late_records:
        w(
            f"  {plural(d.late_records, 'record was', 'records were')} later than the allowed "
            "lateness and not counted\n"
        )
    if d.local_disagreements:
        w(
            f"  Zeek's local_orig/local_resp disagree with internal_networks on "
            f"{plural(d.local_disagreements, 'record')} (e.g. {d.local_disagreement_example}); "
            "an address counts as internal when either says so (trust_local_fields)\n"
        )
    if d.dropped:
        w(f"  {plural(d.dropped, 'record')} to or from internal_networks.drop were ignored\n")
    _funnel(w, pipeline.detector, all_funnels)
    if pipeline.alerts_by_model:
        per_model = ", ".join(f"{m} {n}" for m, n in sorted(pipeline.alerts_by_model.items()))
        per_state = ", ".join(f"{s} {n}" for s, n in sorted(pipeline.alerts_by_state.items()))
        w(f"  alerts: {sum(pipeline.alerts_by_model.values())} ({per_model}; {per_state})\n")
    else:
        w("  alerts: 0\n")
    for sink, n in pipeline.rejected.items():
        w(f"  {plural(n, 'alert')} rejected by {sink} (see its dead-letter file)\n")


def _funnel(w: Callable[[str], Any], detector: Detector, show_all: bool) -> None:
    """Per model: records on its ports -> in its direction -> discarded -> counted, and
    its alerts, so "why did nothing fire" has an answer. Models that saw no record are
    summed up in one line unless `show_all`."""
    rows = []
    idle = []
    for m in detector.models:
        f = detector.stats.funnel.get(m.name)
        if f is None or (not f.on_ports and not show_all):
            idle.append(m.name)
            continue
        rows.append(
            f"    {m.name}: {f.on_ports:,} on its ports, {f.in_direction:,} {m.direction}, "
            f"{f.discarded:,} discarded, "
            + (f"{f.other_outcome:,} other outcome, " if f.other_outcome else "")
            + f"{f.counted:,} counted, {detector.stats.detections.get(m.name, 0)} alerts\n"
        )
    w(f"  models: {len(detector.models)} enabled\n")
    for row in rows:
        w(row)
    if idle:
        w(f"    {len(idle)} saw no record on their ports\n")


# -- tune ------------------------------------------------------------------------------
def cmd_tune(args: argparse.Namespace, env: Environment) -> int:
    from zeekndm.tune import TuneRequest, run_tune
    from zeekndm.tune_history import parse_time
    from zeekndm.tune_render import render_json, render_overlay, render_text

    config = _load(args)
    _setup_logging(env, args.log_level or "warning")
    since = None if args.since is None else parse_time(args.since, "--since")
    until = None if args.until is None else parse_time(args.until, "--until")
    if since is not None and until is not None and until <= since:
        raise ZeekNDMError("--until must be after --since")
    if args.output and not Path(args.output).resolve().parent.is_dir():
        raise ZeekNDMError("the directory of --output does not exist", file=args.output)
    if args.plot:
        from zeekndm.tune_plot import check_plot_target

        check_plot_target(args.plot)
    request = TuneRequest(
        args.files,
        config,
        models=args.models,
        since=since,
        until=until,
        engine=args.engine,
        what_if=args.engine == "local",
    )
    report = run_tune(request, clock=env.clock)
    elapsed = max(report.elapsed, 1e-9)
    env.stderr.write(
        f"zeekndm tune: {plural(len(report.files), 'file')}, {plural(report.records, 'record')} "
        f"in {elapsed:.2f} s ({report.records / elapsed:,.0f} records/s)\n"
    )
    written = []
    if args.output:
        Path(args.output).write_text(render_overlay(report), encoding="utf-8")
        written.append(f"overlay: {args.output}")
    if args.plot:
        from zeekndm.tune_plot import plot_report

        written.extend(f"plot: {p}" for p in plot_report(report, args.plot))
    if args.json:
        doc = render_json(report)
        doc["written"] = written
        env.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        render_text(report, env.stdout.write)
        for line in written:
            env.stdout.write(f"wrote {line}\n")
        if args.output:
            env.stdout.write(
                f"next: zeekndm check-config --config {args.output}; "
                f"zeekndm replay --config {args.output} ...\n"
            )
    return ExitStatus.OK


# -- run (live mode) -------------------------------------------------------------------
def cmd_run(args: argparse.Namespace, env: Environment) -> int:
    try:
        from zeekndm.live import run_live
    except ImportError as exc:  # pragma: no cover
        raise ZeekNDMError(f"live mode is not available: {exc}") from None
    config = _load(args).with_models(args.models)
    if args.opensearch:  # live mode builds its sinks from the config (outputs.build_sinks)
        opensearch = opensearch_settings(config, args.opensearch)
        config = dataclasses.replace(config, opensearch=opensearch)
    _setup_logging(env, args.log_level or config.log_level, config.log_format)
    return run_live(args, config, env)


def cmd_rekey(args: argparse.Namespace, env: Environment) -> int:
    from zeekndm.live.kafka.rekey import Rekeyer
    from zeekndm.live.kafka.spec import kafka_spec_from_url

    config = _load(args)
    _setup_logging(env, args.log_level or config.log_level, config.log_format)
    if args.input:
        spec = kafka_spec_from_url(args.input)
    else:
        kafka = [s for s in config.inputs if s.type == "kafka"]
        if len(kafka) != 1:
            raise ConfigError(
                "rekey needs --input kafka://BROKER/TOPIC or one kafka input in the config"
            )
        spec = kafka[0]
    rekeyer = Rekeyer(
        spec,
        args.to,
        group=args.group,
        partitioner=args.partitioner,
        state_dir=str(_state_dir(args, config)),
        stats_interval=config.stats_interval,
    )
    return rekeyer.run()


# -- config and models -----------------------------------------------------------------
def cmd_status(args: argparse.Namespace, env: Environment) -> int:
    from zeekndm.live.status import read_status

    config = _load(args)
    state_dir = _state_dir(args, config)
    if not state_dir.is_dir():
        raise ZeekNDMError(
            "no such state directory (has `zeekndm run` used it?)", file=str(state_dir)
        )
    status = read_status(state_dir)
    if args.json:
        env.stdout.write(json.dumps(status.to_dict(), indent=2) + "\n")
    else:
        for line in status.lines():
            env.stdout.write(line + "\n")
    return ExitStatus.OK


def _run_problems(config: Config, state_dir: Path) -> list[str]:
    """What would stop `zeekndm run` with this config (check-config warns about each)."""
    import importlib.util
    import os
    import stat

    problems = []
    if not config.inputs:
        problems.append(
            "no inputs configured: `zeekndm run` would stop at once unless given --input "
            "(add an inputs: section)"
        )
    probe = state_dir
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        mode = probe.stat().st_mode
    except OSError:
        mode = 0
    if probe == state_dir and mode & stat.S_IWOTH:
        problems.append(f"state_dir {state_dir} is writable by every user: `run` refuses it")
    elif not os.access(probe, os.W_OK | os.X_OK):
        problems.append(
            f"state_dir {state_dir} cannot be created or written by this user "
            f"({probe} is not writable): give --state-dir or state_dir:"
        )
    if config.metrics_listen and importlib.util.find_spec("prometheus_client") is None:
        problems.append(
            "metrics.listen is set but prometheus_client is not installed "
            "(pip install 'zeekndm[metrics]')"
        )
    return problems


def cmd_check_config(args: argparse.Namespace, env: Environment) -> int:
    config = _load(args)
    w = env.stdout.write
    state_dir = _state_dir(args, config)
    w(f"config: {config.path or '(built-in defaults)'}\n")
    w(f"internal_networks: {', '.join(config.internal_networks)}\n")
    for what in ("external", "drop", "proxies"):
        ranges = getattr(config.networks, what)
        if ranges:
            w(f"internal_networks.{what}: {', '.join(ranges)}\n")
    w(f"trust_local_fields: {str(config.trust_local_fields).lower()}\n")
    w(f"state_dir: {state_dir}{'' if config.state_dir else ' (default)'}\n")
    ndjson = config.ndjson_path
    w(f"output ndjson: {'disabled' if not ndjson else 'stdout' if ndjson == '-' else ndjson}\n")
    es = config.elasticsearch
    if es is not None:
        w(f"output elasticsearch: {', '.join(es.hosts)} (data stream {es.data_stream})\n")
    w(f"metrics: {config.metrics_listen or 'none'}\n")
    w(
        f"logging: level {config.log_level}, format {config.log_format}, "
        f"stats every {config.stats_interval:g} s\n"
    )
    if not config.inputs:
        w("input: none\n")
    for spec in config.inputs:
        w(f"input: {spec.describe()}\n")
    for m in config.models.values():
        levels = ", ".join(f"{s} {n}" for s, n in m.threshold.levels)
        state = "enabled" if m.enabled else "disabled"
        w(
            f"model {m.name} ({state}): {_match_text(m)}; {m.direction}; distinct "
            f"{m.count} per {m.track_by.replace('_', ' and ')} {levels} within "
            f"{m.threshold.window:g} s; update every {m.update_interval:g} s"
        )
        if m.discard_sources or m.discard_destinations:
            w(
                f"; discards {len(m.discard_sources)} source / {len(m.discard_destinations)} "
                "destination networks"
            )
        w("\n")
    for n in config.notices.values():
        levels = ", ".join(f"{s} {c}" for s, c in n.threshold.levels)
        state = "enabled" if n.enabled else "disabled"
        w(f"notice {n.notice} as {n.name} ({state}): {levels} within {n.threshold.window:g} s\n")
    if args.test_output:
        _setup_logging(env, args.log_level or "warning")
        sinks = build_sinks(
            argparse.Namespace(output=None, elasticsearch=None),
            config,
            env,
            _state_dir(args, config),
        )
        for sink in sinks:
            check = getattr(sink, "check", None)
            w(f"output {sink.name}: {check() if check else 'OK'}\n")
            sink.close()
    for problem in _run_problems(config, state_dir):
        env.stderr.write(f"zeekndm: warning: {problem}\n")
    w(f"OK: {len(config.enabled_models)} of {len(config.models)} models enabled\n")
    return ExitStatus.OK


def _match_text(m: Any) -> str:
    parts = [", ".join(str(p) for p in m.ports)] if m.ports else []
    if m.exclude_ports:
        parts.append("except " + ", ".join(str(p) for p in m.exclude_ports))
    if m.icmp_types:
        parts.append("ICMP types " + ", ".join(str(t) for t in m.icmp_types))
    outcomes = "/".join(m.outcome_names)
    text = ("ports " if m.ports else "") + " ".join(parts)
    return text + ("" if outcomes == "any" else f" ({outcomes} only)")


def model_summary(m: Any) -> dict[str, Any]:
    """What `zeekndm models --json` shows of one model: every field that shapes it."""
    t = m.threshold
    return {
        "name": m.name,
        "id": m.id,
        "title": m.title,
        "version": m.version,
        "enabled": m.enabled,
        "python_only": m.python_only,
        "match": {
            "ports": [str(p) for p in m.ports],
            "exclude_ports": [str(p) for p in m.exclude_ports],
            "icmp_types": list(m.icmp_types),
            "outcomes": m.outcome_names,
        },
        "ports": [str(p) for p in m.ports],
        "direction": m.direction,
        "track_by": m.track_by,
        "count": m.count,
        "thresholds": dict(t.levels),
        "window": t.window,
        "min_failure_ratio": t.min_failure_ratio,
        "idle_timeout": t.idle_timeout,
        "early": {
            "enabled": t.early.enabled,
            "distinct": t.early.distinct,
            "failure_ratio": t.early.failure_ratio,
        },
        "update_interval": m.update_interval,
        "raise_on_answer": m.raise_on_answer,
        "discards": {
            "sources": [str(n) for n in m.discard_sources],
            "destinations": [str(n) for n in m.discard_destinations],
            "source_ports": sorted(m.discard_source_ports),
        },
        "description": m.description,
        "what_to_look_for": m.what_to_look_for,
        "false_positives": list(m.false_positives),
        "threat": [
            {"tactic": e.tactic.id, "techniques": [t.id for t in e.techniques]} for e in m.threat
        ],
    }


def cmd_models(args: argparse.Namespace, env: Environment) -> int:
    config = _load(args)
    if args.json:
        out = [model_summary(m) for m in config.models.values()]
        env.stdout.write(json.dumps(out, indent=2) + "\n")
        return ExitStatus.OK
    for m in config.models.values():
        mitre = "; ".join(
            f"{t.id} {t.name} ({e.tactic.name}, {e.tactic.id})"
            for e in m.threat
            for t in e.techniques
        )
        flag = "" if m.enabled else " [disabled]"
        levels = ", ".join(f"{s} {n}" for s, n in m.threshold.levels)
        env.stdout.write(
            f"{m.name}{flag}\n  {m.title}\n  {_match_text(m)}; {m.direction}; distinct "
            f"{m.count} per {m.track_by.replace('_', ' and ')}: {levels} in "
            f"{m.threshold.window:g} s\n  MITRE ATT&CK: {mitre}\n"
        )
    return ExitStatus.OK


def cmd_schema(args: argparse.Namespace, env: Environment) -> int:
    from zeekndm.models import model_json_schema
    from zeekndm.notices import notice_json_schema

    schema = notice_json_schema() if args.notice else model_json_schema()
    env.stdout.write(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return ExitStatus.OK


# -- setup / export --------------------------------------------------------------------
def cmd_setup(args: argparse.Namespace, env: Environment) -> int:
    from zeekndm.setup import run_setup

    config = _load(args)
    _setup_logging(env, args.log_level or "warning")
    from zeekndm.sinks.elasticsearch import cloud_kibana_url

    es = elasticsearch_settings(config, args.elasticsearch)
    opensearch = opensearch_settings(config, args.opensearch)
    chosen = {
        part
        for part, flag in (
            ("template", args.template),
            ("dashboards", args.dashboards),
            ("detection-rule", args.detection_rule),
        )
        if flag
    }
    parts = chosen or {"template", "dashboards", "detection-rule"}
    if "template" in parts and es is None and opensearch is None:
        raise ConfigError(
            "no Elasticsearch or OpenSearch configured: pass --elasticsearch URL or "
            "--opensearch URL, or set output.elasticsearch or output.opensearch in the config"
        )
    kibana = args.kibana or cloud_kibana_url(getattr(es, "cloud_id", None))
    kibana_parts = parts & {"dashboards", "detection-rule"}
    if kibana_parts and not kibana:
        if chosen & kibana_parts:
            raise ConfigError(f"--{'/--'.join(sorted(chosen & kibana_parts))} needs --kibana URL")
        parts -= kibana_parts
        if es is not None:
            env.stderr.write(
                "zeekndm: no --kibana URL given: skipping the dashboards and the Security rule\n"
            )
    if opensearch is not None and "template" in parts:
        from zeekndm.setup_opensearch import run_opensearch_setup

        for line in run_opensearch_setup(opensearch):
            env.stdout.write(line + "\n")
        if not kibana:
            env.stdout.write(
                "opensearch dashboards: `zeekndm export dashboards --opensearch` prints the "
                "saved objects to import (Dashboards Management, Saved objects, Import)\n"
            )
    if es is not None or kibana:
        es_parts = parts if es is not None else parts - {"template"}
        for line in run_setup(es, kibana, es_parts, kibana_space=args.kibana_space):
            env.stdout.write(line + "\n")
    env.stdout.write("setup: OK\n")
    return ExitStatus.OK


def cmd_export(args: argparse.Namespace, env: Environment) -> int:
    from zeekndm.setup import export_asset

    config = _load(args)
    if args.asset == "ism-policy" or args.opensearch:
        from zeekndm.setup_opensearch import export_opensearch_asset

        text = export_opensearch_asset(args.asset, config.opensearch)
    else:
        text = export_asset(args.asset, config.elasticsearch)
    env.stdout.write(text.rstrip("\n") + "\n")
    return ExitStatus.OK
