"""`tune --engine spark`: the per-source statistics on Apache Spark.

For archives beyond one machine. Zeek TSV logs (plain or gzipped) are loaded with zat's
`LogToSparkDF` conventions (its Spark schema from the log's own `#fields`/`#types`,
`spark.read.csv` with `#` comments and `-` as null, dots in column names turned into
`_`), then, per tuned model, the records on its ports are grouped by the model's tracked
key and each group goes through the same detector code as `replay` (one model, one key,
in file order) with the same recorder: so each key's `SourceStats` are the numbers the
local engine gives, and the same suggestion code runs on them.

zat's quirks, and what is done about them:
- `LogToSparkDF.create_dataframe` reads the header with a plain `open()` (no gzip) and
  loops forever on a file without `#fields`: tune reads the header itself (gzip-aware)
  and hands the names and types to zat's `build_spark_schema`;
- one header per file: a file whose `#fields` change part-way is split at each header
  block into temporary files first;
- `fillna` turns unset values into 0 / "-": not used, unset stays null (an unset
  `local_orig` is "not known", not false);
- Hadoop cannot open a path with ':' in it (all of zeekctl's archive names) and picks
  gzip by the `.gz` suffix: each file is read through a link with a plain name;
- `ts` is cast to a Spark timestamp (a float multiply truncated to microseconds, which
  can move a time by 1 µs): tune keeps `ts` the double Zeek wrote.

Where the numbers can differ from the local engine (documented, not hidden): a record
later than `allowed_lateness` behind *another* source's newest record (the local
detector drops it; a group only knows its own records); more tracked keys at once than
`max_tracked_sources` (the local detector evicts); the moment a key's idle track is
forgotten can fall on the other side of one sweep interval. The what-if needs the
time-ordered stream on one machine and is not computed by this engine. Zeek JSON and
eve.json are not read by it (zat's Spark loader is TSV only).
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from zeekndm.config import Config
from zeekndm.errors import ZeekNDMError
from zeekndm.models import Model
from zeekndm.tune_history import HistoryFile
from zeekndm.tune_stats import SourceStats, Span

log = logging.getLogger(__name__)

_COLUMNS = {
    "ts": ("ts",),
    "src": ("id_orig_h", "src"),
    "sport": ("id_orig_p", "src_port"),
    "dst": ("id_resp_h", "dst"),
    "dport": ("id_resp_p", "dst_port"),
    "proto": ("proto",),
    "conn_state": ("conn_state",),
    "uid": ("uid",),
    "community_id": ("community_id",),
    "sensor": ("_node_name", "_system_name"),
    "local_orig": ("local_orig",),
    "local_resp": ("local_resp",),
}
_REQUIRED = ("ts", "src", "sport", "dst", "dport", "proto")


def spark_session(master: str | None = None) -> Any:
    """A Spark session (a local one unless SPARK_MASTER / `master` says otherwise)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ZeekNDMError(
            "--engine spark needs pyspark: pip install 'zeekndm[spark]' (and a Java 17+ "
            "runtime on PATH or in JAVA_HOME)"
        ) from None
    builder = (
        SparkSession.builder.master(master or os.environ.get("SPARK_MASTER", "local[*]"))
        .appName("zeekndm-tune")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
    )
    try:
        return builder.getOrCreate()
    except Exception as exc:  # noqa: BLE001 - a JVM that cannot start: say why, one line
        raise ZeekNDMError(f"--engine spark: Spark did not start ({exc})") from None


def _open_text(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def header_blocks(path: Path) -> list[tuple[list[str], list[str], int]]:
    """(field names, types, data lines) of each header block of a Zeek TSV log."""
    blocks: list[tuple[list[str], list[str], int]] = []
    names: list[str] | None = None
    with _open_text(path) as f:
        for line in f:
            if line.startswith("#fields"):
                names = line.rstrip("\r\n").split("\t")[1:]
            elif line.startswith("#types") and names is not None:
                blocks.append((names, line.rstrip("\r\n").split("\t")[1:], 0))
            elif not line.startswith("#") and line.strip() and blocks:
                n, t, count = blocks[-1]
                blocks[-1] = (n, t, count + 1)
    if not blocks:
        raise ZeekNDMError(
            "not a Zeek TSV log (no #fields/#types header): --engine spark reads Zeek TSV "
            "through zat's LogToSparkDF; use --engine local for Zeek JSON and eve.json",
            file=str(path),
        )
    return blocks


def _split(path: Path, tmp: Path) -> list[Path]:
    """One plain file per header block (zat reads one header per file)."""
    out: list[Path] = []
    current = None
    header: list[str] = []
    with _open_text(path) as f:
        for line in f:
            if line.startswith("#separator") and current is not None:
                current.close()
                current = None
            if current is None and line.startswith("#"):
                header.append(line)
                if line.startswith("#types"):
                    target = tmp / f"{path.name}.{len(out)}.log"
                    out.append(target)
                    current = open(target, "w", encoding="utf-8")
                    current.writelines(header)
                    header = []
                continue
            if line.startswith("#fields") and current is not None:
                current.close()
                current = None
                header = [line]
                continue
            if current is not None:
                current.write(line)
    if current is not None:
        current.close()
    return out


def _safe_name(path: Path, tmp: Path, n: int) -> Path:
    """A link to `path` that Hadoop can open: zeekctl's names hold ':' (Hadoop refuses
    them as "relative path in absolute URI"), and Spark picks the decompressor by the
    .gz suffix, not by the content."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    link = tmp / f"part-{n:06d}.log{'.gz' if gz else ''}"
    try:
        os.symlink(path.resolve(), link)
    except OSError:
        shutil.copyfile(path, link)
    return link


def _frame(spark: Any, path: Path, names: list[str], types: list[str]) -> Any:
    """The records of one single-header Zeek TSV file as zat's LogToSparkDF reads them
    (its schema, its read options, its column names), ts kept a double."""
    from zat.log_to_sparkdf import LogToSparkDF

    schema = LogToSparkDF(spark).build_spark_schema(column_names=names, column_types=types)
    df = spark.read.csv(str(path), schema=schema, sep="\t", comment="#", nullValue="-")
    return df.toDF(*[c.replace(".", "_") for c in df.columns])


def _pick(columns: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for logical, names in _COLUMNS.items():
        out[logical] = next((n for n in names if n in columns), None)
    missing = [c for c in _REQUIRED if out[c] is None]
    if missing:
        raise ZeekNDMError(f"--engine spark: the log has no {', '.join(missing)} column")
    return out


def _rows(spark: Any, files: Sequence[HistoryFile], tmp: Path) -> Any:
    """One RDD of (order, ts, src, sport, dst, dport, proto, conn_state, uid,
    community_id, sensor, local_orig, local_resp) over every file, order = (file, row)."""
    from pyspark.sql import functions as F

    rdds = []
    order = 0
    for hf in files:
        blocks = header_blocks(hf.path)
        if len(blocks) == 1:
            parts = [(_safe_name(hf.path, tmp, order), blocks[0][0], blocks[0][1])]
        else:  # a header change part-way: zat would read it all with the first header
            pieces = _split(hf.path, tmp)
            parts = [(p, b[0], b[1]) for p, b in zip(pieces, blocks)]
        for path, names, types in parts:
            df = _frame(spark, path, names, types)
            cols = _pick(df.columns)
            picked = [F.col(c) if c else F.lit(None) for c in cols.values()]
            df = df.select(
                F.lit(order).alias("_f"), F.monotonically_increasing_id().alias("_r"), *picked
            )
            rdds.append(df.rdd.map(tuple))
            order += 1
    if not rdds:
        return spark.sparkContext.emptyRDD()
    return spark.sparkContext.union(rdds)


def _flow_maker():
    """Build a Flow from one Spark row exactly as the Zeek TSV reader does (None when a
    value the reader would refuse is missing or out of range)."""
    from zeekndm.flow import Flow, Outcome, Transport
    from zeekndm.readers.base import MAX_TS, MIN_TS, ZEEK_OUTCOME, ZEEK_TRANSPORT, AddressCache

    addresses = AddressCache()
    norm = addresses.normalise
    flag = {"T": True, "F": False}  # zat's schema reads Zeek bools as strings

    def make(row: tuple) -> Any:
        _, _, ts, src, sport, dst, dport, proto, state, uid, cid, sensor, lo, lr = row
        if ts is None or src is None or dst is None or sport is None or dport is None:
            return None
        if not (MIN_TS <= ts <= MAX_TS) or not (0 <= sport <= 65535 and 0 <= dport <= 65535):
            return None
        try:
            s, d = norm(src), norm(dst)
        except ValueError:
            return None
        return Flow(
            float(ts),
            s,
            int(sport),
            d,
            int(dport),
            ZEEK_TRANSPORT.get(proto, Transport.OTHER),
            ZEEK_OUTCOME.get(state, Outcome.UNKNOWN) if state is not None else Outcome.UNKNOWN,
            uid,
            cid,
            sensor,
            flag.get(lo),
            flag.get(lr),
        )

    return make


def _key_of(model: Model, flow: Any) -> Any:
    tb = model.track_by
    if tb == "source":
        return flow.src
    if tb == "source_destination":
        return (flow.src, flow.dst)
    if tb == "source_port":
        return (flow.src, flow.dport)
    return flow.dst


def _group_stats(model: Model, classifier: Any, settings: Any):
    """The per-group function: the detector (one model) over one key's records in file
    order, with tune's recorder."""

    def run(item: tuple[Any, Iterable[tuple]]) -> list[tuple[Any, SourceStats]]:
        from zeekndm.detect import Detector
        from zeekndm.tune_stats import StatsRecorder

        _, records = item
        detector = Detector([model], classifier, settings)
        recorder = StatsRecorder()
        detector.recorder = recorder
        for _, flow in sorted(records, key=lambda r: r[0]):
            detector.observe(flow)
        detector.finish()
        return list(recorder.sources.get(model.name, {}).items())

    return run


def _watches(model: Model):
    keys = {(t, p) for t, p in model.port_keys()}
    wide = [(r.transport, r.low, r.high) for r in model.ports if r.wide]
    icmp = set(model.icmp_types)

    def on_ports(flow: Any) -> bool:
        name = flow.transport.value
        if name == "icmp":
            return flow.sport in icmp
        if (name, flow.dport) in keys:
            return True
        return any(t == name and lo <= flow.dport <= hi for t, lo, hi in wide)

    return on_ports


def spark_stats(
    files: Sequence[HistoryFile], config: Config, models: Sequence[Model], request: Any
) -> tuple[dict[str, dict[Any, SourceStats]], Span | None, int, str]:
    """model name -> key -> SourceStats, the span, the record count and a note."""
    from zeekndm.models import watched_ports

    spark = spark_session()
    tmp = Path(tempfile.mkdtemp(prefix="zeekndm-tune-spark-"))
    try:
        rows = _rows(spark, files, tmp)
        make = _flow_maker()
        since = float("-inf") if request.since is None else request.since
        until = float("inf") if request.until is None else request.until
        flows = rows.map(lambda r: ((r[0], r[1]), make(r))).filter(
            lambda kv: kv[1] is not None and since <= kv[1].ts < until
        )
        dports = watched_ports(config.enabled_models)

        def seen(kv: tuple) -> tuple[float, float, int]:
            ts = kv[1].ts
            if dports is None or kv[1].dport in dports:
                return (ts, ts, 1)
            return (float("inf"), float("-inf"), 1)

        first, last, records = (
            rows.map(lambda r: ((r[0], r[1]), make(r)))
            .map(
                lambda kv: (
                    seen(kv)
                    if kv[1] is not None and since <= kv[1].ts < until
                    else (float("inf"), float("-inf"), 1)
                )
            )
            .fold(
                (float("inf"), float("-inf"), 0),
                lambda a, b: (min(a[0], b[0]), max(a[1], b[1]), a[2] + b[2]),
            )
        )
        span = Span(first, last) if last >= first else None
        classifier = config.classifier()
        settings = config.detector
        checks = [(m.name, _watches(m), m) for m in models]
        by_name = {m.name: m for m in models}

        def keys(kv: tuple) -> list:
            flow = kv[1]
            return [((name, _key_of(m, flow)), (kv[0], flow)) for name, on, m in checks if on(flow)]

        def run(item: tuple) -> list:
            (name, _), records = item
            return [
                (name, key, s)
                for key, s in _group_stats(by_name[name], classifier, settings)((None, records))
            ]

        got = flows.flatMap(keys).groupByKey().flatMap(run).collect()
        out: dict[str, dict[Any, SourceStats]] = {m.name: {} for m in models}
        for name, key, s in got:
            out[name][key] = s
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    note = (
        f"engine spark {spark.version} ({spark.sparkContext.master}): statistics per key on "
        "Spark; what-if not computed (it needs the time-ordered stream: use --engine local)"
    )
    return out, span, records, note
