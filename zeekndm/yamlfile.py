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

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

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


class _StrictLoader(yaml.SafeLoader):
    filename: str | None = None
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"nested more than {MAX_DEPTH} levels deep",
                    file=self.filename,
                    line=mark.line + 1,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ConfigError, yaml.YAMLError):
            raise
        except (
            ValueError,
            TypeError,
            OverflowError,
            RecursionError,
            KeyError,
            AttributeError,
            IndexError,
        ) as exc:
            raise ConfigError(
                f"invalid value: {_brief(exc)}", file=self.filename, line=node.start_mark.line + 1
            ) from None


def _brief(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    digits = sum(c.isdigit() for c in str(node.value))
    if digits > MAX_INT_DIGITS:
        raise ConfigError(
            f"integer with {digits} digits is out of range", file=loader.filename,
            line=node.start_mark.line + 1,
        )  # fmt: skip
    return yaml.SafeLoader.construct_yaml_int(loader, node)


def _construct_float(loader: _StrictLoader, node: yaml.ScalarNode) -> float:
    value = yaml.SafeLoader.construct_yaml_float(loader, node)
    if not math.isfinite(value):
        raise ConfigError(
            f"{node.value!s:.40} is not a finite number", file=loader.filename,
            line=node.start_mark.line + 1,
        )  # fmt: skip
    return value


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the document with every alias expanded, stopping past MAX_NODES.

    Composed YAML shares one node per anchor, so this is counted with a memo per node:
    linear in the file's own size however large the expansion is."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = (
            [n for pair in node.value for n in pair]
            if isinstance(node, yaml.MappingNode)
            else list(node.value)
        )
        if done:
            total = 1 + sum(sizes.get(id(c), 0) for c in children)
            sizes[id(node)] = min(total, MAX_NODES + 1)
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.file = loader.filename
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode) or isinstance(key, (list, dict)):
            raise ConfigError(
                "a mapping key must be a plain value, not a list or mapping",
                file=loader.filename,
                line=line,
            )
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
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load_yaml_text(text: str, filename: str | None = None) -> Any:
    """Parse YAML text strictly; syntax errors become ConfigError with file:line."""

    class Loader(_StrictLoader):
        pass

    Loader.filename = filename
    try:
        loader = Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if _expanded_size(node) > MAX_NODES:
                raise ConfigError(
                    f"the document expands to more than {MAX_NODES:,} values (aliases of "
                    "aliases?); refusing to build it",
                    file=filename,
                    line=node.start_mark.line + 1,
                )
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(
            f"invalid YAML: {_brief(exc.problem or exc)}", file=filename, line=line
        ) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"invalid YAML: {_brief(exc)}", file=filename, line=line) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {_brief(exc)}", file=filename, line=1) from None
    except RecursionError:
        raise ConfigError("invalid YAML: nested too deeply", file=filename, line=1) from None


class _TrustedLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's parser with the same strict constructors, for the package's own files
    (the 40-odd shipped models parse about 10x faster); user files keep _StrictLoader."""

    filename: str | None = None


_TrustedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_TrustedLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_trusted_yaml_text(text: str, filename: str | None = None) -> Any:
    """`load_yaml_text` for YAML shipped inside the package (same result, faster)."""

    class Loader(_TrustedLoader):
        pass

    Loader.filename = filename
    try:
        loader = Loader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=filename) from None


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
