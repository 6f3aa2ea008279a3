"""The YAML loaders behind `zeekndm.yamlfile` (see there): PyYAML and its loader classes
are imported only when a YAML text is parsed, which a replay with no config file and the
shipped models' parse cached (`zeekndm.packagefiles.cached_parse`) never does."""

from __future__ import annotations

import math
from typing import Any

import yaml

from zeekndm.errors import ConfigError
from zeekndm.yamlfile import (
    MAX_DEPTH,
    MAX_INT_DIGITS,
    MAX_NODES,
    LocatedDict,
    LocatedList,
    _brief,
)


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
