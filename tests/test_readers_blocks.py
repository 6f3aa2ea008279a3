"""The block-at-a-time reading path (used when a destination-port filter is set) must
give exactly what line-by-line parsing gives: same records, same bad lines and line
numbers, same header handling."""

from __future__ import annotations

import gzip
import io
import random

import pytest

from zeekndm.readers import ReadStats, read_flows
from zeekndm.synth import Traffic, write_zeek_tsv

WATCHED = {389, 636, 3268, 3269, 27017}


def big_log(records: int = 30_000, seed: int = 3) -> str:
    t = Traffic(seed=seed)
    t.background(records)
    t.scan("10.1.7.23", 27017, targets=140, start_offset=900.0, duration=180.0)
    out = io.StringIO()
    write_zeek_tsv(t.in_write_order(), out)
    return out.getvalue()


def read(path, dports):
    stats = ReadStats(str(path))
    flows = list(read_flows(path, stats, dports=dports, max_line_bytes=4096))
    return flows, stats


def compare(path):
    """Records on watched ports, bad lines and their numbers agree between both paths."""
    slow, slow_stats = read(path, None)
    fast, fast_stats = read(path, WATCHED)
    assert fast == [f for f in slow if f.dport in WATCHED]
    assert fast_stats.lines == slow_stats.lines
    assert fast_stats.records + fast_stats.filtered == slow_stats.records
    assert fast_stats.bad_by_reason == slow_stats.bad_by_reason
    assert fast_stats.samples == slow_stats.samples
    return fast_stats


def test_blocks_of_a_clean_log_filter_exactly_like_lines(tmp_path):
    path = tmp_path / "conn.log"
    path.write_text(big_log())
    stats = compare(path)
    assert stats.filtered > 20_000 and stats.bad_lines == 0


def test_bad_lines_anywhere_are_found_with_their_line_numbers(tmp_path):
    lines = big_log().splitlines(keepends=True)
    rng = random.Random(5)
    data = [i for i, line in enumerate(lines) if not line.startswith("#")]
    for i in rng.sample(data, 40):
        kind = rng.randrange(4)
        if kind == 0:
            lines[i] = lines[i].replace("\t", "\x00\t", 1)
        elif kind == 1:
            lines[i] = lines[i].rsplit("\t", 2)[0] + "\n"
        elif kind == 2:
            # a bad value is only looked for on watched ports (documented): put it there
            cols = lines[i].split("\t")
            cols[5], cols[3] = "27017", "not-a-number"
            lines[i] = "\t".join(cols)
        else:
            lines[i] = "x" * 10_000 + "\n"  # longer than the 4096-byte cap
    path = tmp_path / "conn.log"
    path.write_text("".join(lines))
    stats = compare(path)
    assert stats.bad_lines >= 20


def test_a_rotated_file_appended_mid_stream_resets_the_header(tmp_path):
    first = big_log(20_000, seed=1)
    second = big_log(20_000, seed=2)
    # the second file's columns in another order: only a header reset reads it right
    head, _, body = second.partition("#fields\t")
    fields_line, _, rest = body.partition("\n")
    path = tmp_path / "conn.log"
    path.write_text(first + head + "#fields\t" + fields_line + "\n" + rest)
    stats = compare(path)
    assert stats.bad_lines == 0


def test_gzip_and_a_last_line_without_newline(tmp_path):
    text = big_log(20_000).rstrip("\n")
    text = "\n".join(line for line in text.split("\n") if not line.startswith("#close"))
    path = tmp_path / "conn.log.gz"
    path.write_bytes(gzip.compress(text.encode()))
    compare(path)


@pytest.mark.parametrize("size", [1 << 20, (1 << 20) + 1, 3 << 20])
def test_a_huge_line_across_block_boundaries_is_one_bad_line(tmp_path, size):
    log = big_log(10_000)
    cut = log.index("\n", len(log) // 2) + 1
    path = tmp_path / "conn.log"
    path.write_text(log[:cut] + "y" * size + "\n" + log[cut:])
    stats = compare(path)
    assert stats.bad_by_reason == {"line too long": 1}
