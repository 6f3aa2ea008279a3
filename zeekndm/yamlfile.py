"""Strict YAML loading that remembers where every key came from.

PyYAML's SafeLoader silently keeps the last of two repeated keys and forgets line
numbers. Configuration errors must name `file:line` and the key path, so mappings are
loaded as `LocatedDict` (a plain dict that also knows the line of each key), and a
repeated key is an error on the spot.

A config file is also hostile input (it may be edited while `run` is active, and a
bad one must never stop the service), so every way YAML can fail or explode ends as a
`ConfigError` naming the file and line:

- the file must be a regular file of at most `MAX_CONFIG_BYTES` (`read_regular_file`:
  no FIFO that blocks, no symlink to /dev/zero);
- nesting deeper than `MAX_DEPTH` is refused while composing (deep recursion would
  otherwise raise RecursionError);
- anchors and aliases are allowed, but the document they expand to may hold at most
  `MAX_NODES` nodes ("billion laughs": a 1 KB file that expands to gigabytes);
- integers longer than `MAX_INT_DIGITS` digits, non-finite floats (`.inf`, `.nan`, or a
  literal that overflows to infinity) and non-scalar mapping keys are refused;
- any other failure while building a value becomes a ConfigError at that node's line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zeekndm.errors import ConfigError
from zeekndm.regularfile import read_regular_file

#: Largest config file read (a config with 20,000 internal networks is ~0.5 MB).
MAX_CONFIG_BYTES = 4 << 20
#: Deepest nesting of mappings and lists (the shipped config needs 5).
MAX_DEPTH = 64
#: Most nodes the document may expand to, aliases counted at every use.
MAX_NODES = 200_000
#: Longest integer literal (2**63 has 19 digits; Python refuses str->int past 4,300).
MAX_INT_DIGITS = 30


class LocatedDict(dict):
    """A dict from YAML that also records the 1-based line of itself and of each key."""

    __slots__ = ("file", "line", "key_lines")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.file: str | None = None
        self.line: int | None = None
        self.key_lines: dict[Any, int] = {}


class LocatedList(list):
    __slots__ = ("file", "line")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.file: str | None = None
        self.line: int | None = None


def _brief(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_yaml_text(text: str, filename: str | None = None) -> Any:
    """Parse YAML text strictly; syntax errors become ConfigError with file:line."""
    from zeekndm.yamlload import load_yaml_text as load

    return load(text, filename)


def load_trusted_yaml_text(text: str, filename: str | None = None) -> Any:
    """`load_yaml_text` for YAML shipped inside the package (same result, faster)."""
    from zeekndm.yamlload import load_trusted_yaml_text as load

    return load(text, filename)


def load_yaml_file(path: str | Path) -> Any:
    """Read and parse a YAML file (a regular file of at most MAX_CONFIG_BYTES)."""
    path = Path(path)
    try:
        data = read_regular_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError("cannot read: not UTF-8 text", file=str(path), line=line) from None
    return load_yaml_text(text, filename=str(path))


def line_of(data: Any, key: Any = None) -> int | None:
    """Best-known line of `key` inside `data` (or of `data` itself)."""
    if isinstance(data, LocatedDict):
        if key is not None and key in data.key_lines:
            return data.key_lines[key]
        return data.line
    return getattr(data, "line", None)


def file_of(data: Any) -> str | None:
    return getattr(data, "file", None)


class FieldReader:
    """Reads typed fields out of one mapping, collecting errors with file:line and key path.

    `take()` removes known keys; `finish()` reports whatever is left as unknown keys, so a
    misspelt `treshold:` is an error instead of a silent fall-back to the default.
    """

    REQUIRED = object()

    def __init__(
        self,
        data: Any,
        path: str,
        errors: list,
        *,
        file: str | None = None,
        error_cls: type = ConfigError,
    ) -> None:
        self.path = path
        self.errors = errors
        self.error_cls = error_cls
        self.file = file or file_of(data)
        self.ok = isinstance(data, Mapping)
        self.data = data if self.ok else {}
        if not self.ok and data is not None:
            self.fail(f"expected a mapping, got {type(data).__name__}", node=data)
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, message: str, *, name: str | None = None, node: Any = None) -> None:
        line = (
            line_of(self.data, name)
            if name is not None
            else line_of(node if node is not None else self.data)
        )
        self.errors.append(
            self.error_cls(
                message,
                file=self.file,
                line=line,
                key=self.key(name) if name else self.path or None,
            )
        )

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = None) -> Any:
        self._seen.add(name)
        return self.data.get(name, default)

    def take(
        self, name: str, types: type | tuple[type, ...], default: Any = REQUIRED, check=None
    ) -> Any:
        """Return data[name] if of `types` (bool is not an int here), else record an error."""
        self._seen.add(name)
        if name not in self.data:
            if default is FieldReader.REQUIRED:
                self.fail("required key is missing", name=None)
                self.errors[-1].key = self.key(name)
                return None
            return default
        value = self.data[name]
        if value is None and default is not FieldReader.REQUIRED:
            return default  # `key: null` / `key:` means "use the default"
        if not _is_instance(value, types):
            self.fail(
                f"expected {_type_names(types)}, got {type(value).__name__} {_brief(repr(value))}",
                name=name,
            )
            return default if default is not FieldReader.REQUIRED else None
        if check is not None:
            problem = check(value)
            if problem:
                self.fail(problem, name=name)
                return default if default is not FieldReader.REQUIRED else None
        return value

    def finish(self) -> None:
        for name in self.data:
            if name not in self._seen:
                valid = ", ".join(sorted(self._seen))
                self.fail(f"unknown key {name!r} (valid keys: {valid})", name=name)


def _is_instance(value: Any, types: type | tuple[type, ...]) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, types)


def _type_names(types: type | tuple[type, ...]) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {
        dict: "mapping",
        list: "list",
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
    }
    return " or ".join(names.get(t, t.__name__) for t in types)
