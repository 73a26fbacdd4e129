"""Bounded, strict YAML reading for scenario files, ``--set`` values and sweep grids.

PyYAML's safe loader is safe from code execution but not from every hostile file: anchors and
aliases share nodes, so ten lines can stand for a billion values once a sweep copies them (an
"alias bomb"); a key written twice silently keeps the last value; deep nesting overflows
Python's stack. :func:`load_yaml` reads a document with PyYAML's own composer and constructor and
refuses, naming the problem and never the text:

* a document larger than :data:`MAX_YAML_BYTES`, or whose values, with every alias expanded,
  exceed :data:`MAX_YAML_NODES` (counted on the composed node graph, shared nodes once per use,
  before anything is built), or that refers to itself;
* nesting deeper than the interpreter's stack allows;
* a mapping that names one key twice (merge keys ``<<`` keep their YAML meaning).

Numbers in YAML 1.2 exponent form without a dot (``1e9``, ``2E-3``), which YAML 1.1 reads as
strings, are read as floats, so the schema's strict number types see the number the user meant.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_NODES", "YamlError", "load_yaml"]

# A scenario is a few kilobytes; inline distributions and schedules of a few hundred thousand
# values stay well inside both bounds.
MAX_YAML_BYTES = 16 * 1024 * 1024
MAX_YAML_NODES = 2_000_000

_MERGE_TAG = "tag:yaml.org,2002:merge"
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class YamlError(ValueError):
    """A YAML document that is refused: ``line`` (1-based, or None) and a message without the
    document's text."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml parses, if installed
    """Safe loader that refuses duplicate keys and reads ``1e9`` as a float."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                if not isinstance(key_node, ScalarNode):
                    continue  # a non-scalar key: SafeConstructor refuses it itself if unhashable
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise YamlError(f"key {_short(key_node.value)!r} appears twice in one mapping",
                                    key_node.start_mark.line + 1)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _expanded_size(root) -> int:
    """Nodes of the document with every alias expanded, computed without expanding: a node's
    size is counted once (memoized by identity) and added wherever it is used. Raises YamlError
    on a node that contains itself. Iterative, so deep documents cannot overflow the stack."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        k = id(node)
        if done:
            on_path.discard(k)
            if isinstance(node, SequenceNode):
                children = node.value
            elif isinstance(node, MappingNode):
                children = [n for pair in node.value for n in pair]
            else:
                children = []
            total = 1 + sum(size[id(c)] for c in children)
            size[k] = total
            if total > MAX_YAML_NODES:
                raise YamlError(f"the document expands to more than {MAX_YAML_NODES:,} values (anchors and aliases "
                                "counted at every use)")
            continue
        if k in size:
            continue
        if k in on_path:
            raise YamlError("an alias refers to a node that contains it (a recursive document)",
                            node.start_mark.line + 1)
        on_path.add(k)
        stack.append((node, True))
        if isinstance(node, SequenceNode):
            stack.extend((c, False) for c in node.value if id(c) not in size)
        elif isinstance(node, MappingNode):
            stack.extend((c, False) for pair in node.value for c in pair if id(c) not in size)
    return size[id(root)]


def load_yaml(text: str) -> Any:
    """Parse one YAML document under the bounds above; raises :class:`YamlError` (a ValueError)
    whose message names the line and the problem, never the document's text."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlError(f"the document is larger than {MAX_YAML_BYTES // (1024 * 1024)} MiB")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = _short(str(getattr(e, "problem", None) or "not valid YAML"))
        if isinstance(e, yaml.reader.ReaderError):
            problem = "the text holds a character YAML does not allow (binary data?)"
        raise YamlError(f"invalid YAML ({problem})", mark.line + 1 if mark is not None else None) from None
    except RecursionError:
        raise YamlError("invalid YAML (nested too deeply)") from None
    finally:
        loader.dispose()
