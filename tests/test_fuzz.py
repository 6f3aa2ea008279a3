"""Bounded mutation fuzzing of the readers and the config loader (issue 9).

Each target takes valid inputs, applies random mutations (byte flips, hostile tokens at
random places, deleted and duplicated lines, numbers swapped for extreme values; for the
readers also gzip, truncated gzip and corrupt gzip) and checks the promises README
makes about bad input:

- readers: nothing but ReaderError (a file that cannot be read at all) escapes; every
  line is a record, a counted bad line, a counted skip, a line filtered by port or an
  ignored header/blank line; every record is a valid Flow (finite ts from 1970 to 9999,
  int ports 0-65535, normalised addresses, typed optional fields) or a notice Detection;
  and an ECS alert built from any record encodes as JSON;
- config loader: nothing but ConfigError escapes, and a config that loads has finite,
  bounded durations.

Hypothesis draws the mutations from a fixed seed, in rounds of a few examples, until the
time budget of the target is spent: `ZEEKNDM_FUZZ_SECONDS` (default 2.5 per target in
the suite; e.g. `ZEEKNDM_FUZZ_SECONDS=600 pytest tests/test_fuzz.py` for a long run) and
`ZEEKNDM_FUZZ_SEED` to explore other inputs. A failure prints the falsifying input.
"""

from __future__ import annotations

import gzip
import io
import ipaddress
import logging
import math
import os
import re
import tempfile
import time
from pathlib import Path

import orjson
import pytest
from conftest import REPO
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from test_readers import CONN_JSON, compact, eve_flow, header, row

from zeekndm import core
from zeekndm.config import MAX_SECONDS, load_config
from zeekndm.detection import Detection
from zeekndm.enrich import Observer, enrich
from zeekndm.errors import ConfigError, ReaderError
from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.models import load_builtin_models
from zeekndm.readers import ReadStats, read_flows
from zeekndm.readers.base import MAX_TS

BUDGET = float(os.environ.get("ZEEKNDM_FUZZ_SECONDS", "2.5"))
SEED = int(os.environ.get("ZEEKNDM_FUZZ_SEED", "20261201"))
#: The compiled core, compared with the pure-Python one on every fuzzed input (None when
#: it was not built: the fuzz then runs on the pure-Python core alone).
NATIVE = core.native
if NATIVE is None:
    try:
        from zeekndm import _core as NATIVE  # noqa: N811 - ZEEKNDM_CORE=python was set
    except ImportError:
        NATIVE = None
ROUND = 50  # examples per hypothesis run; rounds repeat until the budget is spent

NOTICE_DATA = REPO / "tests" / "data" / "notice"

READER_TOKENS = [
    b"9700000050", b"1713484795943", b"1e13", b"-1", b"nan", b"inf", b"-inf", b"1e400",
    b"253402300800", b"027017", b"27_017", b"65536", b"99999999999999999999999",
    b"18446744073709551616", b"::ffff:10.0.0.5", b"::ffff:127.0.0.1", b"fd00::5%eth0",
    b"fe80::1%", b"10.0.0.5%eth0", b"\x00", b"\xef\xbb\xbf", b"\xff\xfe", b'"', b"{", b"}",
    b"[" * 300, b'{"a":' * 40, b"\t", b"\n", b"\r", b"#fields\tts\tid.orig_h\tid.resp_p",
    b"#separator \\x2c", b"#path\tdns", b"#path\tconn", b"(empty)", b"-", b"true", b"null",
    b'"dest_port":80,', b'"id.resp_p":80,', b'"proto":6,', b'"proto":{"a":1},',
    b'"host":{"h":[1]},', b'"_path":"dns",', b'"event_type":"dns",', b'"note":"x",',
    b'"ts":1e300,', b'"zeekndm_distinct":1e300,', b'"p":9223372036854775807,', b"\xe2\x80\xae",
    b"9999-12-31T23:59:59.000000-1400", b"0001-01-01T00:00:00.000000+0100",
    b'"9999-12-31T23:59:59.000000-1400"', b'"1e13"', b'"027017"', b'{"x":[1]}', b"[1]",
    b'"::ffff:10.0.0.5"', b'"fd00::5%eth0"', b"1e300", b"2.5", b'"T"', b'"tcp"', b"17",
]  # fmt: skip
#: Values for one record field: each breaks a rule a Flow must keep.
COLUMN_TOKENS = [
    b"9700000050", b"1713484795943", b"1e13", b"-1", b"nan", b"inf", b"253402300800",
    b"027017", b"27_017", b"65536", b"18446744073709551616", b"::ffff:10.0.0.5",
    b"fd00::5%eth0", b"::FFFF:127.0.0.1", b'"::ffff:10.0.0.5"', b'"fd00::5%eth0"',
    b'"9999-12-31T23:59:59.000000-1400"', b'"0001-01-01T00:00:00.000000+0100"', b'"1e13"',
    b'"027017"', b'{"x":[1]}', b"[[[[1]]]]", b"1e300", b"2.5", b"true", b"null", b"6", b"17",
    b'"T"', b"9223372036854775807", b"", b"-", b"(empty)", b"\xef\xbb\xbf",
]  # fmt: skip
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?")
JSON_PAIR = re.compile(rb'"([^"]+)":("[^"]*"|[^,{}\[\]]+)')
FIELD = re.compile(rb'(?:^|[\t:,\n])("[^"\n]*"|[^\t:,\n{}\[\]"]+)')


def _seed_inputs() -> dict[str, list[bytes]]:
    tsv = header() + "".join(
        row(ts=f"17134847{i:02d}.5", **{"id__resp_h": f"203.0.113.{i}", "id__resp_p": p})
        for i, p in enumerate(["27017", "389", "80", "636", "27017", "53"])
    )
    tsv2 = tsv + header(path="conn") + row() + "#close\t2024-04-19-01-00-00\n"
    zeek_json = "".join(
        compact(dict(CONN_JSON, **{"id.resp_p": p, "ts": CONN_JSON["ts"] + i}))
        for i, p in enumerate([27017, 389, 80, 443])
    ) + compact(dict(CONN_JSON, _path="conn", _node_name="worker-1"))
    eve = (
        "".join(
            compact(eve_flow(dest_port=p, proto=proto))
            for p, proto in [(27017, "TCP"), (389, "UDP"), (80, "TCP"), (53, "UDP")]
        )
        + compact({"event_type": "dns", "src_ip": "10.0.0.1"})
        + compact(
            eve_flow(
                event_type="netflow", flow=None, netflow={"start": eve_flow()["flow"]["start"]}
            )
        )
    )
    return {
        "zeek_tsv": [tsv.encode(), tsv2.encode()],
        "zeek_json": [zeek_json.encode()],
        "suricata_eve": [eve.encode()],
        "zeek_notice": [(NOTICE_DATA / "notice.log").read_bytes(),
                        (NOTICE_DATA / "notice.json").read_bytes()],
    }  # fmt: skip


SEEDS = _seed_inputs()

# -- mutations ------------------------------------------------------------------------
mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.sampled_from(READER_TOKENS)),
    st.tuples(st.just("number"), st.integers(0, 200), st.sampled_from(READER_TOKENS)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 40)),
    st.tuples(st.just("dup_line"), st.integers(0, 100), st.integers(1, 3)),
    st.tuples(st.just("drop_line"), st.integers(0, 100), st.just(0)),
    st.tuples(st.just("field"), st.integers(0, 1 << 10), st.sampled_from(READER_TOKENS)),
    # a value of a record (TSV column, JSON value): the most productive mutation
    st.tuples(st.just("column"), st.integers(0, 1 << 12), st.sampled_from(COLUMN_TOKENS)),
    st.tuples(st.just("column"), st.integers(0, 1 << 12), st.sampled_from(COLUMN_TOKENS)),
    st.tuples(st.just("column"), st.integers(0, 1 << 12), st.sampled_from(COLUMN_TOKENS)),
)
container = st.one_of(
    st.just(("plain", 0.0)),
    st.just(("plain", 0.0)),
    st.just(("plain", 0.0)),
    st.just(("gzip", 0.0)),
    st.tuples(st.just("gzip-cut"), st.floats(0.0, 1.0)),
    st.tuples(st.just("gzip-flip"), st.floats(0.0, 1.0)),
)


def mutate(data: bytes, mutations: list[tuple]) -> bytes:
    for kind, at, arg in mutations:
        if kind == "flip" and data:
            i = at % len(data)
            data = data[:i] + bytes([arg]) + data[i + 1 :]
        elif kind == "insert":
            i = at % (len(data) + 1)
            data = data[:i] + arg + data[i:]
        elif kind == "number":
            found = list(NUMBER.finditer(data))
            if found:
                m = found[at % len(found)]
                data = data[: m.start()] + arg + data[m.end() :]
        elif kind == "delete" and data:
            i = at % len(data)
            data = data[:i] + data[i + arg :]
        elif kind == "column":
            lines = data.split(b"\n")
            records = [i for i, line in enumerate(lines) if line and line[:1] != b"#"]
            if records:
                i = records[at % len(records)]
                line = lines[i]
                if line[:1] == b"{":
                    pairs = list(JSON_PAIR.finditer(line))
                    if pairs:
                        m = pairs[(at >> 4) % len(pairs)]
                        line = line[: m.start(2)] + arg + line[m.end(2) :]
                else:
                    cols = line.split(b"\t")
                    cols[(at >> 4) % len(cols)] = arg
                    line = b"\t".join(cols)
                lines[i] = line
                data = b"\n".join(lines)
        elif kind == "field":  # one TSV column or JSON value replaced
            spans = [m.span(1) for m in FIELD.finditer(data)]
            if spans:
                start, end = spans[at % len(spans)]
                data = data[:start] + arg + data[end:]
        elif kind in ("dup_line", "drop_line"):
            lines = data.split(b"\n")
            i = at % len(lines)
            lines[i : i + 1] = [lines[i]] * (arg if kind == "dup_line" else 0)
            data = b"\n".join(lines)
    return data


def wrap(data: bytes, how: tuple[str, float]) -> bytes:
    kind, frac = how
    if kind == "plain":
        return data
    packed = gzip.compress(data)
    if kind == "gzip-cut":
        return packed[: int(len(packed) * frac)]
    if kind == "gzip-flip":
        i = min(len(packed) - 1, int(len(packed) * frac))
        return packed[:i] + bytes([packed[i] ^ 0x5A]) + packed[i + 1 :]
    return packed


def budgeted(check, strategy, round_size: int = ROUND) -> int:
    """Run `check` over `strategy` in seeded hypothesis rounds until BUDGET is spent;
    returns the number of examples run."""
    deadline = time.monotonic() + BUDGET
    rounds = 0
    while True:
        runner = settings(
            max_examples=round_size,
            deadline=None,
            database=None,
            phases=(Phase.generate, Phase.shrink),
            suppress_health_check=list(HealthCheck),
        )(seed(SEED + rounds)(given(strategy)(check)))
        runner()
        rounds += 1
        if time.monotonic() >= deadline:
            return rounds * round_size


# -- the reader properties ------------------------------------------------------------
MODEL = load_builtin_models()["mongodb_scan_internal_external"]


def check_flow(f: Flow) -> None:
    assert type(f) is Flow
    assert type(f.ts) is float and math.isfinite(f.ts) and 0.0 <= f.ts <= MAX_TS
    for port in (f.sport, f.dport):
        assert type(port) is int and 0 <= port <= 65535
    for addr in (f.src, f.dst):
        assert type(addr) is str and "%" not in addr
        ip = ipaddress.ip_address(addr)
        assert str(ip) == addr and not (ip.version == 6 and ip.ipv4_mapped)
    assert isinstance(f.transport, Transport) and isinstance(f.outcome, Outcome)
    for text in (f.uid, f.community_id, f.sensor):
        assert text is None or type(text) is str
    for flag in (f.local_orig, f.local_resp):
        assert flag is None or type(flag) is bool


def alert_of(item) -> dict:
    if isinstance(item, Flow):
        item = Detection(
            model=MODEL, source=item.src, state="start", severity="low", threshold=25,
            first_seen=item.ts, last_seen=item.ts, distinct_destinations=1, attempts=1,
            failures=1, successes=0, sample_destinations=(item.dst,), ports=(item.dport,),
            transports=(item.transport.value,), sensor=item.sensor,
        )  # fmt: skip
    return enrich(item, Observer("fuzz", "zeek")).doc


def _read_on(native, data: bytes, dports) -> tuple:
    """(items, counts) of one read through the given core (None: pure Python), or the
    ReaderError's message."""
    saved = core.native
    core.native = native
    try:
        stats = ReadStats("fuzz")
        try:
            items = list(read_flows("fuzz", stats, dports=dports, stream=io.BytesIO(data)))
        except ReaderError as exc:
            return str(exc), None
    finally:
        core.native = saved
    counts = (
        stats.lines, stats.records, dict(stats.bad_by_reason), stats.samples,
        dict(stats.skipped_by_reason), stats.filtered, stats.ignored, stats.unreadable,
    )  # fmt: skip
    return items, (stats, counts)


def check_read(data: bytes) -> None:
    """Every documented outcome holds, and the compiled core (when built) reads the
    mutated input exactly as the pure-Python one: records, bad lines, line numbers."""
    logging.getLogger("zeekndm").setLevel(logging.ERROR)  # thousands of bad-line warnings
    for dports in (None, {27017, 389}):
        items, result = _read_on(None, data, dports)
        if NATIVE is not None:
            fast = _read_on(NATIVE, data, dports)
            assert fast[0] == items and (fast[1] and fast[1][1]) == (result and result[1])
        if result is None:
            continue
        stats = result[0]
        assert len(items) == stats.records
        assert stats.lines == (
            stats.records + stats.bad_lines + stats.skipped + stats.filtered + stats.ignored
        ), stats
        for item in items:
            if isinstance(item, Flow):
                check_flow(item)
            else:
                assert isinstance(item, Detection)
            orjson.dumps(alert_of(item))


@pytest.mark.parametrize("fmt", sorted(SEEDS))
def test_fuzzed_logs_never_escape_the_documented_errors(fmt):
    strategy = st.tuples(
        st.sampled_from(SEEDS[fmt]), st.lists(mutation, max_size=4), container
    ).map(lambda t: wrap(mutate(t[0], t[1]), t[2]))
    try:
        assert budgeted(check_read, strategy) >= ROUND
    finally:
        logging.getLogger("zeekndm").setLevel(logging.NOTSET)


# -- the config loader ----------------------------------------------------------------
CONFIG_TOKENS = [
    b"&a ", b"*a", b"<<: *a\n", b"[" * 100, b"? [x]\n: 1\n", b".inf", b"-.inf", b".nan",
    b"9" * 5000, b"1" + b"0" * 400, b"1.0e+400", b"!!python/object:os.system ", b"!!binary ",
    b"!!timestamp ", b"\t", b": ", b"- ", b"{", b"}", b"'", b'"', b"\x00", b"\xff", b"~",
    b"0x1F", b"0o17", b"2001-01-01", b"yes", b"off", b"\n", b"\n  ", b"%YAML 1.1\n",
    b"--- ", b"...\n", b"@", b"`", b"|\n", b">\n", b"window: ", b"models:\n  x:\n",
    b"a: &a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b]\n",
]  # fmt: skip
CONFIG_SEEDS = [
    (REPO / "config" / "zeekndm.yaml").read_bytes(),
    b"detector:\n  allowed_lateness: 600\n  max_future: 3600\nmodels:\n"
    b"  mongodb_scan_internal_external:\n    threshold: {window: 600}\n"
    b"internal_networks: [10.0.0.0/8]\nlogging: {level: info, stats_interval: 30}\n",
]
config_mutation = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 1 << 14), st.sampled_from(CONFIG_TOKENS)),
    st.tuples(st.just("number"), st.integers(0, 100), st.sampled_from(CONFIG_TOKENS)),
    st.tuples(st.just("flip"), st.integers(0, 1 << 14), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 14), st.integers(1, 30)),
    st.tuples(st.just("dup_line"), st.integers(0, 200), st.integers(1, 3)),
)


def test_fuzzed_configs_raise_only_config_errors():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "zeekndm.yaml"

        def check(data: bytes) -> None:
            path.write_bytes(data)
            try:
                config = load_config(path)
            except ConfigError as exc:
                assert str(exc)
                return
            d = config.detector
            assert math.isfinite(d.allowed_lateness) and 0 <= d.allowed_lateness <= MAX_SECONDS
            assert math.isfinite(config.stats_interval)
            for m in config.models.values():
                assert math.isfinite(float(m.threshold.window))

        strategy = st.tuples(
            st.sampled_from(CONFIG_SEEDS), st.lists(config_mutation, min_size=1, max_size=4)
        ).map(lambda t: mutate(t[0], t[1]))
        assert budgeted(check, strategy, round_size=25) >= 25  # ~40 ms per config
