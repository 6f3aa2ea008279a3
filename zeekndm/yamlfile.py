"""Strict YAML loading that remembers where every key came from.

PyYAML's SafeLoader silently keeps the last of two repeated keys and forgets line
numbers. Configuration errors must name `file:line` and the key path, so mappings are
loaded as `LocatedDict` (a plain dict that also knows the line of each key), and a
repeated key is an error on the spot.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from zeekndm.errors import ConfigError


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


class _StrictLoader(yaml.SafeLoader):
    filename: str | None = None


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.file = loader.filename
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result:
            raise ConfigError(
                f"duplicate key {key!r} (first at line {result.key_lines[key]})",
                file=loader.filename,
                line=line,
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_sequence(loader: _StrictLoader, node: yaml.SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.file = loader.filename
    result.line = node.start_mark.line + 1
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml_text(text: str, filename: str | None = None) -> Any:
    """Parse YAML text strictly; syntax errors become ConfigError with file:line."""

    class Loader(_StrictLoader):
        pass

    Loader.filename = filename
    try:
        loader = Loader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"invalid YAML: {exc.problem or exc}", file=filename, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=filename) from None


def load_yaml_file(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from None
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
                f"expected {_type_names(types)}, got {type(value).__name__} {value!r}", name=name
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
