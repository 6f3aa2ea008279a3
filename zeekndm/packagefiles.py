"""Where the package's own data files (shipped models, notice mappings, ATT&CK table) are.

`importlib.resources` (with `zipfile` and its readers: ~5 ms of every start-up) is only
needed when the package is not a plain directory, as in a zip; an ordinary install or a
checkout reads its files from the directory this module is in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_HERE = Path(__file__).parent


def package_files() -> Any:
    """The `zeekndm` package's files: its directory, else `importlib.resources.files`."""
    if _HERE.is_dir():
        return _HERE
    from importlib import resources

    return resources.files("zeekndm")


def shipped_yaml(folder_name: str, load: Any) -> Any:
    """The package folder `folder_name`'s `*.yaml` files, by name without the suffix,
    each parsed by `load(text, filename=...)`; the parse cached by `cached_parse`."""
    folder = package_files() / folder_name
    texts = [
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda p: p.name)
        if entry.name.endswith(".yaml")
    ]

    def parse() -> dict[str, Any]:
        return {
            name[: -len(".yaml")]: load(text, filename=f"zeekndm/{folder_name}/{name}")
            for name, text in texts
        }

    return cached_parse(folder, folder_name, texts, parse)


def cached_parse(folder: Any, name: str, texts: list[tuple[str, str]], parse: Any) -> Any:
    """`parse()` of the package's own `texts` ((file name, text) pairs read from
    `folder`), remembered in `folder/__pycache__/<name>.<tag>.pickle` between runs.

    The shipped models are 40-odd YAML files whose parse (~25 ms, plus ~12 ms to import
    PyYAML) is a tenth of a short replay's start-up; the pickle reads back in ~2 ms. It
    is used only when its key matches: a SHA-256 of the texts, of the parser's source
    (`yamlfile.py` and `yamlload.py`, which decide what the values look like), the
    package version and the Python build, so any edit to a file or to the parser is a
    fresh parse. Like the `.pyc` files beside it, it lives in the package's own
    directory, written (atomically) only where that is writable and only when Python
    writes bytecode (not under `PYTHONDONTWRITEBYTECODE` or `-B`), and read only if
    owned by the directory's owner and writable by no one else: whoever could change it
    could change the package's code. Anything wrong with it (absent, stale, unreadable,
    unwritable) means a plain parse.
    """
    import hashlib
    import os
    import pickle
    import sys

    from zeekndm import __version__

    key = hashlib.sha256()
    key.update(f"{__version__}\0{sys.version}\0{pickle.HIGHEST_PROTOCOL}\0".encode())
    for source in ("yamlfile.py", "yamlload.py"):
        key.update((_HERE / source).read_bytes())
    for file, text in texts:
        key.update(b"\0%d\0%s\0" % (len(file), file.encode()))
        key.update(text.encode("utf-8", "surrogatepass"))
    digest = key.digest()
    if not isinstance(folder, Path):  # a zip: no cache
        return parse()
    cache = folder / "__pycache__" / f"{name}.{sys.implementation.cache_tag}.pickle"
    try:
        with open(cache, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid == folder.stat().st_uid and not st.st_mode & 0o022:
                blob = f.read()
                if blob[:32] == digest:
                    return pickle.loads(blob[32:])
    except Exception:  # noqa: BLE001 - a damaged cache is only a slower start
        pass
    value = parse()
    if sys.dont_write_bytecode:  # PYTHONDONTWRITEBYTECODE / -B: no .pyc, and no cache
        return value
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(digest + pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
            os.replace(tmp, cache)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError:
        pass
    return value
