"""The compiled core (`zeekndm._core`) and the pure-Python one read exactly alike: the same
records, bad lines, line numbers, skips and filtered counts, on every real capture, the
benchmark's inputs and odd shapes of lines; `zeekndm --version` names the core in use and
ZEEKNDM_CORE=python forces the pure-Python one."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys

import golden
import pytest
from conftest import use_core

from zeekndm.cli import watched_ports
from zeekndm.models import load_builtin_models
from zeekndm.readers import ReadStats, read_flows

DEFAULT_PORTS = watched_ports([m for m in load_builtin_models().values() if m.enabled])


def read(monkeypatch, core: str, path, dports, data: bytes | None = None, **kw):
    use_core(monkeypatch, core)
    stats = ReadStats(str(path))
    stream = None if data is None else io.BytesIO(data)
    flows = list(read_flows(path, stats, dports=dports, stream=stream, **kw))
    return flows, (
        stats.format,
        stats.lines,
        stats.records,
        dict(stats.bad_by_reason),
        stats.samples,
        dict(stats.skipped_by_reason),
        stats.filtered,
        stats.ignored,
        stats.unreadable,
    )


def same_on_both(monkeypatch, path, data: bytes | None = None, **kw):
    for dports in (None, DEFAULT_PORTS):
        slow = read(monkeypatch, "python", path, dports, data, **kw)
        fast = read(monkeypatch, "native", path, dports, data, **kw)
        assert fast == slow, path
    return slow


def _real_files() -> list[str]:
    base = golden.real_data()
    if not base.exists():
        return list(golden.REAL_INPUTS)
    return sorted(
        str(p.relative_to(base))
        for p in base.rglob("*")
        if p.is_file() and p.name != "SOURCES.md" and "honeypot" not in p.name
    )


@pytest.mark.parametrize("name", _real_files())
def test_every_real_capture_reads_the_same_on_both_cores(name, real, monkeypatch):
    path = real(name)
    if path.is_dir():
        pytest.skip("a directory")
    same_on_both(monkeypatch, path)


@pytest.mark.parametrize("name", sorted(golden.SYNTH_INPUTS))
def test_the_benchmark_inputs_read_the_same_on_both_cores(name, tmp_path, monkeypatch):
    same_on_both(monkeypatch, golden.synth_input(name, tmp_path))


TSV_HEAD = (
    b"#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
    b"#path\tconn\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\t"
    b"conn_state\tlocal_orig\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tbool\n"
)
ODD_TSV = [
    b"1700000000.5\tC1\t10.0.0.1\t40000\t45.0.0.1\t27017\ttcp\tS0\tT",
    b"1700000000.5\tC1\t10.0.0.01\t40000\t45.0.0.1\t27017\ttcp\tS0\tT",  # leading zero
    b"1700000000.5\tC1\t::ffff:10.0.0.1\t40000\t2001:db8::1\t27017\ttcp\tS0\t-",
    b"1.7e9\tC1\t10.0.0.1\t40000\t45.0.0.1\t27017\ttcp\tREJ\tF",  # exponent: Python decides
    b"1700000000\tC1\t10.0.0.1\t040000\t45.0.0.1\t27017\ttcp\tS0\tT",  # bad port
    b"1700000000\tC1\t10.0.0.1\t40000\t45.0.0.1\t080\ttcp\tS0\tT",  # unwatched, odd port
    b"1700000000\tC1\t10.0.0.1\t40000\t45.0.0.1\t27017\ttcp",  # wrong column count
    b"1700000000\tC1\t10.0.0.1\t40000\t45.0.0.1\t27017\ttcp\tS0\tT\r",
    b"99999999999999\tC1\t10.0.0.1\t40000\t45.0.0.1\t27017\ttcp\tS0\tT",  # milliseconds?
    b"1700000000\tC\xc3\xa9\t10.0.0.1\t40000\t45.0.0.1\t27017\ttcp\tS0\tT",  # UTF-8
    b"1700000000\tC1\t10.0.0.1\t40000\t45.0.0.1\t27\x00017\ttcp\tS0\tT",
    b"",
    b"   ",
    b" #close\t2024",
    b"1700000000\tC1\t10.0.0.1\t40000\t45.0.0.1\t443\tudp\tSF\tT",
    b"#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto",
    b"1700000001\t10.0.0.2\t1\t45.0.0.2\t27017\ticmp",
    b"#separator ,",
    b"1700000001,10.0.0.2,1,45.0.0.2,27017,tcp",
    b"x" * 5000,
]


def test_odd_tsv_lines_read_the_same_on_both_cores(monkeypatch):
    data = TSV_HEAD + b"\n".join(ODD_TSV * 50) + b"\n"
    flows, stats = same_on_both(monkeypatch, "odd.log", data, max_line_bytes=4096)
    assert stats[3]  # there were bad lines, and both cores counted them alike


def test_a_nul_non_ascii_byte_or_tab_anywhere_in_a_tsv_line_reads_the_same(monkeypatch):
    # the compiled scanner finds the separators, NUL and non-ASCII bytes a word (eight
    # bytes) at a time and the line's tail byte by byte: one at every offset of a line
    # (replacing a byte, or inserted) is decided as the Python parser decides it
    lines = []
    for port in (b"27017", b"443"):  # watched, and only shape-checked
        base = b"1700000000.5\tC1\t10.0.0.1\t40000\t45.0.0.1\t%s\ttcp\tS0\tT" % port
        for at in range(len(base) + 1):
            for odd in (b"\x00", b"\x80", b"\xff", b"\t"):
                lines.append(base[:at] + odd + base[at:])
                lines.append(base[:at] + odd + base[at + 1 :])
    data = TSV_HEAD + b"\n".join(lines) + b"\n"
    flows, stats = same_on_both(monkeypatch, "odd.log", data)
    assert stats[3] and flows  # bad lines and good records, alike on both cores


def test_tsv_times_of_every_precision_read_the_same_on_both_cores(monkeypatch):
    # the compiled scanner divides the digits by a power of ten when both are exact as
    # doubles (correctly rounded, as float() is) and parses the text otherwise: times
    # either side of that line (2**53, 22 decimals) read as Python reads them
    rng = random.Random(15)
    times = ["90071.99254740992", "90071.99254740993", "0.9007199254740993", "1." + "1" * 22]
    times += ["1." + "1" * 23, "0000001700000000.5", "253402300799.0", "1700000000.000000"]
    for _ in range(3000):
        whole = str(rng.randrange(min(10 ** rng.randint(1, 12), 253402300799)))
        frac = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 25)))
        times.append(whole + "." + frac if frac else whole)
    base = b"\tC1\t10.0.0.1\t40000\t45.0.0.1\t27017\ttcp\tS0\tT"
    data = TSV_HEAD + b"".join(t.encode() + base + b"\n" for t in times)
    flows, stats = same_on_both(monkeypatch, "times.log", data)
    assert len(flows) == len(times)  # every one a record, none handed to Python
    assert [f.ts for f in flows] == [float(t) for t in times]


ODD_EVE = [
    b'{"timestamp":"2024-01-01T00:00:00.000000+0000","flow_id":1,"event_type":"flow",'
    b'"src_ip":"10.0.0.1","src_port":1,"dest_ip":"45.0.0.1","dest_port":27017,"proto":"TCP",'
    b'"flow":{"pkts_toclient":0,"start":"2024-01-01T00:00:00.000000+0000"}}',
    b'{"event_type":"dns","dest_port":53,"x":1}',
    b'{"event_type": "dns", "dest_port": 53}',
    b'{"event_type":"flow","dest_port":80,"dest_port":27017}',
    b'{"event_type":"flow","dest_port":80,"src_port":1}',
    b'{"event_type":"flow","dest_port":080,"src_port":1}',
    b'{"event_type":"flow","dest_port":80,"src_port":1',
    b'{"event_type":"","dest_port":80}',
    b'{"event_type":"' + b"a" * 60 + b'","dest_port":80}',
    b'{"event_type":"alert","alert":{"signature":"x"}}',
    b"[1,2]",
    b"",
    b'{"event_type":"netflow","dest_port":443,"z":1}',
]


def test_odd_eve_lines_read_the_same_on_both_cores(monkeypatch):
    data = b"\n".join(ODD_EVE * 40) + b"\n"
    flows, stats = same_on_both(monkeypatch, "eve.json", data)
    assert stats[0] == "suricata_eve" and stats[5]


def _padded(at: int, rest: bytes) -> bytes:
    """An eve line whose `"event_type":"` key starts at byte `at` (a padding field first)."""
    head = b'{"pad":"'
    return head + b"x" * (at - len(head) - 2) + b'",' + rest


# Each line is malformed past what the prefilter looks at (a trailing comma, an address
# that is not one), so a line the prefilter passes over is only counted, while the same
# line parsed in full is a bad line: any difference between the two cores' prefilters
# shows in the counts.
_DNS = b'"event_type":"dns","dest_port":53,}'
_FLOW = (
    b'"event_type":"flow","src_ip":"10.0.0.x","src_port":1,"dest_ip":"45.0.0.1",'
    b'"dest_port":%d,"proto":"TCP","flow":{"pkts_toclient":0,'
    b'"start":"2024-01-01T00:00:00.000000+0000"}}'
)
TRICKY_PREFILTER_EVE = [
    # the event-type key ending on byte 400 is seen; one byte later it is not
    _padded(386, _DNS),
    _padded(387, _DNS),
    _padded(386, _FLOW % 8080),
    # the type's closing quote the last byte inside the 40-byte window, and just past it
    b'{"event_type":"' + b"t" * 39 + b'","dest_port":80,}',
    b'{"event_type":"' + b"t" * 40 + b'","dest_port":80,}',
    b'{"event_type":"","dest_port":80,}',
    # a byte order mark: the prefilter sees the line with it, then (after the JSON
    # parser refuses it) the line without it
    b"\xef\xbb\xbf{" + _DNS,
    b"\xef\xbb\xbf{" + _FLOW % 8080,
    b"\xef\xbb\xbf" + _padded(384, _DNS),
    # the port: unwatched and compact; last in its object; spaced; repeated; nested
    b"{" + _FLOW % 8080,
    b'{"event_type":"flow","src_ip":"x","dest_port":8080}',
    b'{"event_type":"flow","src_ip":"x","dest_port": 8080,"src_port":1}',
    b'{"event_type":"flow","src_ip":"x","dest_port":8080,"dest_port":8081,"src_port":1}',
    b'{"event_type":"flow","x":{"dest_port":27017},"src_ip":"x","dest_port":8080,"a":1}',
    b'{"event_type":"flow","src_ip":"x","dest_port":1234567,"src_port":1}',
    b'{"event_type":"flow","src_ip":"x","dest_port":0808,"src_port":1}',
    b'{"event_type":"flow","src_ip":"x","dest_port":8080,"src_port":1,"y":"\x00"}',
    b'{"event_type":"flow","src_ip":"x","dest_port":8080,"src_port":1} ',
    b'{"event_type":"flow","src_ip":"x","dest_port":8080,"src_port":1',
    # escaped or spaced keys are not the compact literal: parsed in full
    b'{"\\u0065vent_type":"dns","dest_port":53,}',
    b'{"event_type" :"dns","dest_port":53,}',
    # the first event-type literal is the event's own
    b'{"event_type":"alert","payload":"\\"event_type\\":\\"flow\\"","dest_port":1,}',
    b"{" + _FLOW % 8080 + b"\r",
    b"{" + _FLOW % 27017 + b"\r\r",
    b"{" + (_FLOW % 27017).replace(b"10.0.0.x", b"10.0.0.1") + b"\r",  # a record
]


def test_tricky_prefilter_lines_read_the_same_on_both_cores(monkeypatch):
    # the compiled scanner prefilters and hands the rest to `parse_scanned`, which does
    # not prefilter again: every line must end where the Python parser's `parse` puts it
    data = b"\n".join(TRICKY_PREFILTER_EVE * 30) + b"\n"
    flows, stats = same_on_both(monkeypatch, "eve.json", data)
    assert stats[0] == "suricata_eve" and flows
    assert stats[3] and stats[5] and stats[6]  # bad lines, skips and filtered lines


def test_tricky_prefilter_zeek_json_lines_read_the_same_on_both_cores(monkeypatch):
    line = (  # a bad address: parsed in full it is a bad line, filtered it is counted
        b'{"ts":1700000000.5,"uid":"C1","id.orig_h":"10.0.0.x","id.orig_p":1,'
        b'"id.resp_h":"45.0.0.1","id.resp_p":%s,"proto":"tcp","conn_state":"S0"}'
    )
    lines = [
        (line % b"27017").replace(b"10.0.0.x", b"10.0.0.1"),  # a record
        line % b"27017",
        line % b"8080",
        line % b"080",
        line.replace(b'"id.resp_p":%s,', b'"id.resp_p": 8080,'),
        b"\xef\xbb\xbf" + line % b"8080",
        (line % b"8080")[:-1],
        (line % b"8080") + b"\r",
        (line % b"8080").replace(b'"C1"', b'"C\x00"'),
        (line % b"8080") + b" ",
        (line % b"8080").replace(b'"uid"', b'"x":{"id.resp_p":27017},"uid"'),
    ]
    data = b"\n".join(lines * 30) + b"\n"
    flows, stats = same_on_both(monkeypatch, "conn.json", data)
    assert stats[0] == "zeek_json" and flows and stats[3] and stats[6]


def _version(env: dict) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "zeekndm", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    return out.stdout.strip()


def test_version_names_the_core_and_the_environment_forces_pure_python(monkeypatch):
    use_core(monkeypatch, "native")  # skips (or fails under CI) when it was not built
    assert "core: compiled (Rust" in _version({"ZEEKNDM_CORE": ""})
    assert "core: pure Python (forced by ZEEKNDM_CORE=python)" in _version(
        {"ZEEKNDM_CORE": "python"}
    )


@pytest.mark.parametrize("name", ["synth/mixed.conn.log", "synth/mixed.eve.json"])
def test_live_chunks_get_the_replay_prefilter_on_both_cores(name, tmp_path, monkeypatch):
    from zeekndm.readers import make_parser, parse_chunk, sniff_format

    path = golden.synth_input(name, tmp_path)
    lines = list(enumerate(path.read_bytes().split(b"\n")[:-1], start=1))
    replay = read(monkeypatch, "python", path, DEFAULT_PORTS)[0]
    for core_name in ("python", "native"):
        use_core(monkeypatch, core_name)
        parser = make_parser(sniff_format(b"\n".join(line for _, line in lines[:10])))
        parser.set_dport_filter(DEFAULT_PORTS)
        stats = ReadStats(str(path))
        got = []
        for at in range(0, len(lines), 700):  # chunks, as the follower hands them over
            got += [item for _, item in parse_chunk(parser, lines[at : at + 700], stats)]
        assert got == replay, core_name
        assert parser.filtered > len(lines) / 2 and stats.bad_lines == 0


def test_the_recorder_hook_hears_the_same_counts_on_both_cores(tmp_path, monkeypatch):
    # zeekndm tune builds its statistics from Detector.recorder over files read by either
    # core: both must tell it the same counted records with the same window counts
    from zeekndm.config import load_config
    from zeekndm.detect import Detector

    path = golden.synth_input("synth/storm-500x50.conn.log", tmp_path)
    heard = {}
    for core_name in ("python", "native"):
        flows = read(monkeypatch, core_name, path, DEFAULT_PORTS)[0]
        config = load_config(None)
        detector = Detector(config.enabled_models, config.classifier(), config.detector)
        detector.recorder = _Recorder(heard.setdefault(core_name, []))
        for f in flows:
            detector.observe(f)
    assert heard["native"] == heard["python"] and len(heard["python"]) > 10_000


class _Recorder:
    """A `Detector.recorder` that keeps every event it hears."""

    def __init__(self, events: list) -> None:
        self.events = events

    def counted(self, model, key, ts, outcome, window, distinct) -> None:
        self.events.append((model, key, ts, outcome, window, distinct))


# -- eve flow events parsed by the compiled scanner itself ------------------------------
# Each field of an ordinary flow event, with the values that take every branch of the
# Python parser (its fast path, its checked path, a bad line) and of the compiled one
# (parsed natively or handed back): None leaves the field out.
_EVE_FIELDS: dict[str, list] = {
    "timestamp": ['"2024-01-01T00:00:09.000000+0000"', None],
    "flow_id": [
        "1234567890123456",
        "0",
        "-7",
        "-0",
        "18446744073709551615",
        "99999999999999999999",
        '"12"',
        "1.5",
        "null",
        None,
        "true",
    ],
    "in_iface": ['"eth0"', '"\\u00e9th0"', '"\xc3\xa9th0"', "[1,{}]"],
    "event_type": ['"flow"', '"netflow"', '"dns"', "1"],
    "src_ip": ['"10.0.0.1"', '"10.0.0.01"', '"2001:db8::1"', '"::ffff:10.0.0.1"', '"x"', "5", None],
    "src_port": ["40000", "0", "65535", "65536", "-0", "-1", "4e4", "40000.0", '"1"', "true", None],
    "dest_ip": [
        '"45.0.0.1"',
        '"45.000.0.1"',
        '"2001:DB8::2"',
        '"2001:db8::2"',
        '"2001:0db8::2"',
        '"fe80::1%eth0"',
        '"::"',
        '"1:0:0:1::"',
        '"1::1:0:0:1"',
        '"::1.2.3.4"',
        None,
    ],
    "dest_port": ["27017", "80", "443", "3306", "1e2", None],
    "proto": [
        '"TCP"',
        '"tcp"',
        '"UDP"',
        '"udp"',
        '"ICMP"',
        '"IPv6-ICMP"',
        '"SCTP"',
        "6",
        "17",
        "1",
        "6.0",
        "true",
        "null",
        None,
    ],
    "icmp_type": ["8", None],
    "tcp": [
        '{"tcp_flags":"1b","tcp_flags_ts":"1b","tcp_flags_tc":"1b","syn":true}',
        '{"tcp_flags_ts":"02","tcp_flags_tc":"14"}',
        '{"tcp_flags_tc":"04"}',
        '{"tcp_flags_ts":"04","tcp_flags_tc":"12"}',
        '{"tcp_flags_ts":[],"tcp_flags_tc":"12"}',
        '{"tcp_flags_ts":5,"tcp_flags_tc":"12"}',
        '{"tcp_flags_ts":"zz","tcp_flags_tc":"12"}',
        '{"tcp_flags_tc":"18"}',
        '{"tcp_flags_tc":"1B"}',
        '{"tcp_flags_tc":"1"}',
        '{"tcp_flags_tc":24}',
        '{"tcp_flags_tc":"18","tcp_flags_tc":"04"}',
        "{}",
        "[]",
        '"1b"',
        None,
    ],
    "community_id": ['"1:abc+/="', "null", "3", None],
    "host": ['"sensor-1"', '"s\\"x"', "[]", None],
}
_EVE_FLOW_FIELDS: dict[str, list] = {
    "pkts_toserver": ["3", "0", '"x"', '""', "2.0", "true", "false", "null", "[1]", None],
    "pkts_toclient": ["2", "0", "-1", "null", '"2"', "2.5", "true", "{}", None],
    "bytes_toserver": ["180", "1e999", "1e308", "-", None],
    "start": [
        '"2024-01-01T00:00:00.000000+0000"',
        '"2023-11-14T22:13:20.066507-0500"',
        '"2024-02-29T23:59:59.999999+1400"',
        '"2023-02-29T00:00:00.000000+0000"',
        '"1970-01-01T00:00:00.000000+0000"',
        '"1970-01-01T00:00:00.000000+0100"',
        '"1969-12-31T23:00:00.000000-0100"',
        '"2024-01-01T00:00:00.000000-0000"',
        '"2024-01-01T00:00:00.000000+0007"',
        '"2024-01-01T00:00:00.000000+1415"',
        '"2024-01-01T24:00:00.000000+0000"',
        '"2024-01-01 00:00:00.000000+0000"',
        '"2024-01-01T00:00:00.000000+00:00"',
        '"2024-01-01T00:00:00.000000Z"',
        '"0000-01-01T00:00:00.000000+0000"',
        '"9999-12-31T23:59:59.999999-1400"',
        '"2300-01-01T00:00:00.000000+0000"',
        '"2024-13-01T00:00:00.000000+0000"',
        '"2024-01-01T00:00:60.000000+0000"',
        "1704067200",
        None,
    ],
    "state": ['"established"', '"closed"', '"new"', '"bypassed"', "[]", "1", None],
}


def _eve_line(rng, mutate: float) -> bytes:
    def pick(values):
        return values[0] if rng.random() > mutate else rng.choice(values)

    flow = {k: pick(v) for k, v in _EVE_FLOW_FIELDS.items()}
    top = {k: pick(v) for k, v in _EVE_FIELDS.items()}
    body = ",".join(f'"{k}":{v}' for k, v in flow.items() if v is not None)
    members = [f'"{k}":{v}' for k, v in top.items() if v is not None]
    members.insert(rng.randrange(len(members) + 1), '"flow":{' + body + "}")
    if rng.random() < 0.05:  # a key we read, twice
        members.append(rng.choice(members))
    text = "{" + ",".join(members) + "}"
    roll = rng.random()
    if roll < 0.03:
        text = text.replace(",", ", ").replace(":", ": ", 3)
    elif roll < 0.05:
        text = text[: rng.randrange(len(text))]
    elif roll < 0.07:
        text = text + rng.choice([" ", "\t", "x", "}", ","])
    elif roll < 0.09:
        text = text.replace('"flow":{', '"flow":{"deep":' + "[" * 70 + "]" * 70 + ",")
    elif roll < 0.1:
        text = text.replace('"tcp":', '"tcp": \t')
    return text.encode("utf-8", "surrogateescape")


@pytest.mark.parametrize("mutate", [0.0, 0.05, 0.3])
def test_generated_eve_flow_events_read_the_same_on_both_cores(monkeypatch, mutate):
    import random

    rng = random.Random(15 + int(mutate * 100))
    data = b"\n".join(_eve_line(rng, mutate) for _ in range(3000)) + b"\n"
    flows, stats = same_on_both(monkeypatch, "eve.json", data)
    assert stats[0] == "suricata_eve" and flows


def test_the_compiled_scanner_parses_ordinary_eve_flow_events_itself():
    # the native route is taken (records, not lines handed back) for ordinary events,
    # and an unusual one is handed back for the Python parser to read
    _core = pytest.importorskip("zeekndm._core")
    from zeekndm.flow import Flow, Outcome, Transport
    from zeekndm.readers.suricata_eve import SuricataEveParser

    ordinary = (
        b'{"timestamp":"x","flow_id":1,"event_type":"flow","src_ip":"10.0.0.1","src_port":1,'
        b'"dest_ip":"45.0.0.1","dest_port":22,"proto":"TCP","flow":{"pkts_toserver":3,'
        b'"pkts_toclient":2,"start":"2023-11-14T22:13:20.066507-0500","state":"closed"},'
        b'"tcp":{"tcp_flags_ts":"1b","tcp_flags_tc":"1e"},"host":"h"}'
    )
    odd = [
        ordinary.replace(b"10.0.0.1", b"2001:DB8::1"),  # not its normal form
        ordinary.replace(b"10.0.0.1", b"::ffff:10.0.0.1"),
        ordinary.replace(b'"TCP"', b'"ICMP"'),
        ordinary.replace(b'"host":"h"', b'"host":"h\\u00e9"'),
        ordinary.replace(b'"flow_id":1', b'"flow_id":"1"'),
    ]
    scanner = SuricataEveParser().native_scanner(_core)
    items, lines, *_ = scanner.scan(b"\n".join([ordinary, *odd]) + b"\n", 0, 1 << 20)
    assert type(items[0]) is Flow and [type(i) for i in items[1:]] == [int] * len(odd)
    v6 = ordinary.replace(b"10.0.0.1", b"2001:db8::1").replace(b"45.0.0.1", b"::")
    (flow,), *_ = scanner.scan(v6 + b"\n", 0, 1 << 20)
    assert type(flow) is Flow and (flow.src, flow.dst) == ("2001:db8::1", "::")
    assert items[0] == (
        1700018000.066507,
        "10.0.0.1",
        1,
        "45.0.0.1",
        22,
        Transport.TCP,
        Outcome.ABORTED,
        "1",
        None,
        "h",
        None,
        None,
    )


def test_ipv6_addresses_in_eve_flow_events_read_the_same_on_both_cores(monkeypatch):
    # every way of writing an IPv6 address: the compiled scanner takes only the normal
    # form the Python reader would write back (and gives it the same string)
    import ipaddress
    import random

    rng = random.Random(6)

    def address() -> str:
        groups = [rng.choice([0, 0, 0, 1, 0xFFFF, rng.randrange(65536)]) for _ in range(8)]
        a = ipaddress.IPv6Address(b"".join(g.to_bytes(2, "big") for g in groups))
        return rng.choice(
            [
                a.compressed,
                a.compressed,
                a.exploded,
                a.compressed.upper(),
                ":".join(f"{g:x}" for g in groups),
                f"{a.compressed}%eth0",
                f"::ffff:{rng.randrange(256)}.0.0.1",
            ]
        )

    line = (
        '{"event_type":"flow","src_ip":"%s","src_port":1,"dest_ip":"%s","dest_port":27017,'
        '"proto":"TCP","flow":{"pkts_toclient":0,"start":"2024-01-01T00:00:00.000000+0000"}}'
    )
    data = "\n".join(line % (address(), address()) for _ in range(4000)).encode() + b"\n"
    flows, stats = same_on_both(monkeypatch, "eve.json", data)
    assert len(flows) == 4000 and stats[3] == {}
