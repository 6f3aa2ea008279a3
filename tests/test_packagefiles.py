"""The start-up cache of the shipped models' parse (`zeekndm.packagefiles.cached_parse`):
the same values as a fresh parse, and a fresh parse whenever anything changed."""

from __future__ import annotations

import os
import sys

from zeekndm.models import builtin_model_dicts, load_trusted_yaml_text
from zeekndm.packagefiles import cached_parse


def _same(a, b) -> None:
    """Equal, and of the same types with the same file/line records, all the way down."""
    assert type(a) is type(b)
    if isinstance(a, dict):
        if hasattr(a, "key_lines"):
            assert (a.file, a.line, a.key_lines) == (b.file, b.line, b.key_lines)
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list):
        assert (a.file, a.line, len(a)) == (b.file, b.line, len(b))
        for x, y in zip(a, b):
            _same(x, y)
    else:
        assert a == b


def test_the_shipped_models_read_back_as_parsed(monkeypatch):
    cached = builtin_model_dicts()
    cached_again = builtin_model_dicts()
    import zeekndm.packagefiles as packagefiles

    monkeypatch.setattr(packagefiles, "cached_parse", lambda folder, name, texts, parse: parse())
    fresh = builtin_model_dicts()
    assert len(fresh) > 10
    for name in fresh:
        _same(fresh[name], cached[name])
        _same(fresh[name], cached_again[name])
    assert cached_again is not cached  # a new copy each time, as a parse gives


def _counting(text_holder: list):
    calls = []

    def parse():
        calls.append(1)
        return {n: load_trusted_yaml_text(t, filename=n) for n, t in text_holder[0]}

    return parse, calls


def test_the_cache_is_a_fresh_parse_whenever_anything_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    texts = [("a.yaml", "x: 1\ny: [1, 2]\n")]
    holder = [texts]
    parse, calls = _counting(holder)
    first = cached_parse(tmp_path, "t", texts, parse)
    cache = tmp_path / "__pycache__" / f"t.{sys.implementation.cache_tag}.pickle"
    assert cache.is_file() and len(calls) == 1
    _same(cached_parse(tmp_path, "t", texts, parse), first)
    assert len(calls) == 1  # read back, not parsed
    # a changed text: parsed again (and the new value cached)
    holder[0] = changed = [("a.yaml", "x: 2\ny: [1, 2]\n")]
    assert cached_parse(tmp_path, "t", changed, parse)["a.yaml"]["x"] == 2
    assert len(calls) == 2
    assert cached_parse(tmp_path, "t", changed, parse)["a.yaml"]["x"] == 2
    assert len(calls) == 2
    # a renamed file with the same text is another key
    holder[0] = renamed = [("b.yaml", "x: 2\ny: [1, 2]\n")]
    assert list(cached_parse(tmp_path, "t", renamed, parse)) == ["b.yaml"]
    assert len(calls) == 3
    # a damaged cache, or one others may write, is not read
    cache.write_bytes(cache.read_bytes()[:40])
    assert list(cached_parse(tmp_path, "t", renamed, parse)) == ["b.yaml"]
    assert len(calls) == 4
    os.chmod(cache, 0o666)
    assert list(cached_parse(tmp_path, "t", renamed, parse)) == ["b.yaml"]
    assert len(calls) == 5
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]
    # the right key before a body that is no pickle: a plain parse, not a crash
    os.chmod(cache, 0o644)
    blob = cache.read_bytes()
    cache.write_bytes(blob[:32] + b"\x80\x05garbage")
    assert list(cached_parse(tmp_path, "t", renamed, parse)) == ["b.yaml"]
    assert len(calls) == 6


def test_no_cache_is_written_where_python_writes_no_bytecode(tmp_path, monkeypatch):
    """PYTHONDONTWRITEBYTECODE (or -B) asks Python to leave the package's folders alone:
    the parse cache beside the .pyc files obeys it too (and is still read if present)."""
    texts = [("a.yaml", "x: 1\n")]
    parse, calls = _counting([texts])
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert cached_parse(tmp_path, "t", texts, parse)["a.yaml"] == {"x": 1}
    assert not (tmp_path / "__pycache__").exists()
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    cached_parse(tmp_path, "t", texts, parse)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    assert cached_parse(tmp_path, "t", texts, parse)["a.yaml"] == {"x": 1}
    assert len(calls) == 2  # written once bytecode was allowed, then read back


def test_an_unwritable_folder_is_a_plain_parse(tmp_path):
    (tmp_path / "__pycache__").write_text("not a directory")
    texts = [("a.yaml", "x: 1\n")]
    parse, calls = _counting([texts])
    assert cached_parse(tmp_path, "t", texts, parse)["a.yaml"] == {"x": 1}
    assert cached_parse(tmp_path, "t", texts, parse)["a.yaml"] == {"x": 1}
    assert len(calls) == 2
