"""Shared helpers of the pipeline and config loaders: parse a document, walk it.

Both loaders validate by hand so that every problem is reported at once,
each as ``{"path": "$.a.b[0].c", "message": "..."}``. ``Checker`` collects
those errors and offers typed getters that read one key of a mapping, report
what is wrong with it, and return a usable fallback so the walk can go on.

Conventions the getters share: a key set to ``null`` is the same as a key
left out; booleans are never accepted as numbers; integers are accepted
where a number (float) is expected; numbers must be finite.
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import msgspec
import yaml

try:  # libyaml's parser is much faster than the pure-Python one
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader

__all__ = [
    "Checker",
    "parse_document",
    "key_path",
    "index_path",
    "type_name",
    "suggest",
    "find_cycles",
    "reaches",
    "MAX_DEPTH",
    "depth_exceeds",
]

MAX_DEPTH = 64
"""How deeply lists and mappings may nest in a document (pipelines and configs need under 15)."""

_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_STR_TAG = "tag:yaml.org,2002:str"


class _StrictLoader(_BaseLoader):  # type: ignore[misc, unused-ignore]
    """Safe YAML loader that refuses duplicate keys instead of keeping the last,
    and keeps keys YAML 1.1 reads as booleans as the text written.

    An unquoted ``on``, ``off``, ``yes`` or ``no`` is a boolean in YAML 1.1,
    so GitHub's ``on:`` would become the key ``True``. No key of a pipeline
    or configuration is a boolean, so such a key stays the string written
    (``on``), and the loaders name it like any other key.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, Any]] = set()
            for index, (key_node, value_node) in enumerate(node.value):
                # Merge keys (`<<: *base`) may be overridden on purpose.
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                if key_node.tag == _BOOL_TAG:
                    key_node = yaml.ScalarNode(_STR_TAG, key_node.value, key_node.start_mark, key_node.end_mark)
                    node.value[index] = (key_node, value_node)
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


def key_path(base: str, key: str) -> str:
    """``$.a`` + ``b`` → ``$.a.b``; keys that are not identifiers become ``['x y']``."""
    if _SIMPLE_KEY.match(key):
        return f"{base}.{key}"
    return f"{base}[{key!r}]"


def index_path(base: str, index: int) -> str:
    """``$.a`` + 0 → ``$.a[0]``."""
    return f"{base}[{index}]"


def type_name(value: Any) -> str:
    """The YAML/JSON name of a value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def suggest(word: str, candidates: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or "" if none is close."""
    # Users often write snake_case where the YAML is kebab-case.
    dashed = word.replace("_", "-")
    if dashed != word and dashed in candidates:
        return f" (did you mean {dashed!r}?)"
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_document(
    source: str | bytes | os.PathLike[str], what: str
) -> tuple[Any, str, str | None]:
    """Parse YAML or JSON text (or the file at a path).

    Returns ``(data, text, error)``: the parsed value, the source text, and
    a message (with line and column for YAML) if the text is not valid.
    JSON is tried first when the text looks like a JSON object, since it is
    faster and YAML's parser stumbles on some valid JSON (tabs).
    """
    if isinstance(source, os.PathLike):
        try:
            with open(source, "rb") as file:
                source = file.read()
        except OSError as exc:
            return None, "", f"cannot read {what} file: {exc}"
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return None, "", f"not UTF-8 text: byte {exc.start} is invalid"
    text = source
    too_deep = f"nested deeper than {MAX_DEPTH} levels"
    if text.lstrip().startswith("{"):
        try:
            data = msgspec.json.decode(text)
        except msgspec.DecodeError:
            pass  # Let YAML parse it (or say where it is wrong, by line).
        except RecursionError:
            return None, text, f"invalid JSON: {too_deep}"
        else:
            return (None, text, f"invalid JSON: {too_deep}") if depth_exceeds(data, MAX_DEPTH) else (data, text, None)
    try:
        data = yaml.load(text, Loader=_StrictLoader)
        if depth_exceeds(data, MAX_DEPTH):
            return None, text, f"invalid YAML: {too_deep}"
        return data, text, None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        context = f" ({exc.context})" if exc.context and exc.problem else ""
        return None, text, f"invalid YAML{where}: {problem}{context}"
    except yaml.YAMLError as exc:
        return None, text, f"invalid YAML: {exc}"
    except RecursionError:
        return None, text, f"invalid YAML: {too_deep}"


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether lists and mappings nest deeper than ``limit`` in ``value``.

    Iterative; a YAML alias (the same object reached twice) is walked again
    only when reached deeper than before, so at most ``limit`` times.
    """
    pending: list[tuple[Any, int]] = [(value, 0)]
    deepest: dict[int, int] = {}
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (Mapping, list, tuple)):
            if depth >= limit:
                return True
            if deepest.get(id(item), -1) >= depth:
                continue
            deepest[id(item)] = depth
            children = item.values() if isinstance(item, Mapping) else item
            pending.extend((child, depth + 1) for child in children)
    return False


class Checker:
    """Collects errors while a loader walks raw data; typed getters for mapping keys."""

    def __init__(self) -> None:
        self.errors: list[dict[str, str]] = []

    def error(self, path: str, message: str) -> None:
        """Record one problem at ``path``."""
        self.errors.append({"path": path, "message": message})

    def mapping(
        self, value: Any, path: str, allowed: Collection[str] | None
    ) -> dict[str, Any] | None:
        """Check ``value`` is a mapping whose keys are all in ``allowed``.

        Returns its string-keyed entries (unknown and non-string keys are
        reported, with the nearest valid key suggested, and dropped), or
        None if it is not a mapping. ``allowed`` None accepts any string key.
        """
        if not isinstance(value, Mapping):
            self.error(path, f"must be a mapping, got {type_name(value)}")
            return None
        return self.entries(value, path, allowed)

    def entries(
        self, value: Mapping[Any, Any], path: str, allowed: Collection[str] | None = None
    ) -> dict[str, Any]:
        """The string-keyed entries of ``value``; others (and unknown keys) are reported."""
        result: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, bool):  # from a mapping given as such: YAML text keeps the word
                self.error(path, f"key {key!r} must be a string, got boolean (YAML 1.1 reads unquoted "
                                 "on/off/yes/no/true/false as booleans: quote the key)")  # fmt: skip
            elif not isinstance(key, str):
                self.error(path, f"key {key!r} must be a string, got {type_name(key)}")
            elif allowed is not None and key not in allowed:
                hint = suggest(key, allowed) or f" (expected one of: {', '.join(allowed)})"
                self.error(key_path(path, key), f"unknown key {key!r}{hint}")
            else:
                result[key] = item
        return result

    def required(self, data: Mapping[str, Any], key: str, path: str) -> Any:
        """``data[key]``, reporting ``is required`` at its path if absent or null."""
        value = data.get(key)
        if value is None:
            self.error(key_path(path, key), "is required")
        return value

    def string(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        default: str | None = None,
        non_empty: bool = False,
    ) -> str | None:
        """A string value; ``default`` if absent (or an error if ``required``)."""
        value = self.required(data, key, path) if required else data.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self.error(key_path(path, key), f"must be a string, got {type_name(value)}")
            return default
        if non_empty and not value.strip():
            self.error(key_path(path, key), "must not be empty")
        return value

    def integer(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        *,
        default: int | None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        """An integer within [minimum, maximum]; ``default`` if absent or invalid."""
        value = data.get(key)
        if value is None:
            return default
        where = key_path(path, key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(where, f"must be an integer, got {type_name(value)}")
            return default
        if minimum is not None and value < minimum:
            self.error(where, f"must be >= {minimum}")
        elif maximum is not None and value > maximum:
            self.error(where, f"must be <= {maximum}")
            return default
        return value

    def positive(
        self, data: Mapping[str, Any], key: str, path: str, *, default: float | None,
        maximum: float | None = None,
    ) -> float | None:
        """A finite number > 0 and <= ``maximum`` (fractions allowed) as a float; ``default`` if absent/invalid.

        The upper bound keeps absurd values (a timeout of 1e29 minutes) from
        being accepted now and overflowing later, when a deadline is formatted.
        """
        value = data.get(key)
        if value is None:
            return default
        where = key_path(path, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(where, f"must be a number, got {type_name(value)}")
            return default
        if not math.isfinite(value):
            self.error(where, "must be a finite number")
            return default
        if value <= 0:
            self.error(where, "must be > 0")
        elif maximum is not None and value > maximum:
            self.error(where, f"must be <= {maximum:g}")
            return default
        return float(value)

    def boolean(self, data: Mapping[str, Any], key: str, path: str, *, default: bool) -> bool:
        """A boolean; ``default`` if absent or invalid."""
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(key_path(path, key), f"must be true or false, got {type_name(value)}")
            return default
        return value

    def choice(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        choices: Collection[str],
        *,
        default: str,
    ) -> str:
        """One string of ``choices``; ``default`` if absent or invalid."""
        value = self.string(data, key, path)
        if value is None:
            return default
        if value not in choices:
            self.error(
                key_path(path, key),
                f"must be one of {', '.join(choices)}, got {value!r}{suggest(value, choices)}",
            )
            return default
        return value

    def string_list(self, data: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        """A list of non-empty strings (a single string counts as a list of one)."""
        return tuple(item for item, _ in self.string_items(data, key, path))

    def string_items(self, data: Mapping[str, Any], key: str, path: str) -> list[tuple[str, str]]:
        """Like ``string_list`` but each valid string comes with its own path."""
        value = data.get(key)
        where = key_path(path, key)
        if value is None:
            return []
        if isinstance(value, str):
            value, paths = [value], [where]
        elif isinstance(value, (list, tuple)):
            paths = [index_path(where, index) for index in range(len(value))]
        else:
            self.error(where, f"must be a list of strings, got {type_name(value)}")
            return []
        items = []
        for item, item_path in zip(value, paths):
            if not isinstance(item, str) or not item.strip():
                got = "an empty string" if isinstance(item, str) else type_name(item)
                self.error(item_path, f"must be a non-empty string, got {got}")
            else:
                items.append((item, item_path))
        return items

    def non_empty_list(self, value: Any, path: str, what: str) -> list[Any]:
        """``value`` if it is a non-empty list (of ``what``), else [] and an error."""
        if isinstance(value, list) and value:
            return value
        got = "an empty list" if isinstance(value, list) else type_name(value)
        self.error(path, f"must be a non-empty list of {what}, got {got}")
        return []

    def named(
        self, value: Any, path: str, pattern: re.Pattern[str], rule: str, what: str = "name"
    ) -> dict[str, Any]:
        """A mapping (null: empty) whose keys are names matching ``pattern``.

        Bad names are reported as ``invalid {what} 'x': {rule}`` but kept,
        so their values are still checked.
        """
        data = {} if value is None else self.mapping(value, path, None)
        for name in data or {}:
            if not pattern.match(name):
                self.error(key_path(path, name), f"invalid {what} {name!r}: {rule}")
        return data or {}

    def strings(self, value: Any, path: str, limit: int) -> list[tuple[str, str]]:
        """Every string inside nested lists and mappings, with its path.

        At most ``limit`` values are visited: YAML aliases can make a small
        document expand enormously, so past it an error is reported instead.
        """
        found: list[tuple[str, str]] = []
        pending: list[tuple[Any, str]] = [(value, path)]
        visited = 0
        while pending:
            item, where = pending.pop()
            visited += 1
            if visited > limit:
                self.error(path, f"too large: more than {limit} values")
                break
            if isinstance(item, str):
                found.append((item, where))
            elif isinstance(item, Mapping):
                pending.extend((v, key_path(where, str(k))) for k, v in item.items())
            elif isinstance(item, (list, tuple)):
                pending.extend((v, index_path(where, i)) for i, v in enumerate(item))
        found.reverse()  # document order (the stack reversed it)
        return found

    def scalar_text(self, value: Any, path: str) -> str:
        """A scalar as a string, the way a shell would see it (true, 3, 1.5, "" for null)."""
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, (datetime.date, datetime.time)):
            return value.isoformat()  # YAML reads 2024-01-31 as a date
        self.error(path, f"must be a string, number or boolean, got {type_name(value)}")
        return ""


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search of ``graph`` (node → successors).

    Each cycle is reported once, as its nodes in order with the first one
    repeated at the end (``["a", "b", "a"]``). Iterative, so deep graphs
    do not hit the recursion limit; linear in nodes plus edges.
    """
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in graph:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(graph[root]))]
        while stack:
            node, successors = stack[-1]
            nxt = next(successors, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                path = [name for name, _ in stack]
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state and nxt in graph:
                state[nxt] = 1
                stack.append((nxt, iter(graph[nxt])))
    return cycles


def reaches(graph: Mapping[str, Iterable[str]], start: str, target: str) -> bool:
    """Whether ``target`` can be reached from ``start`` by following edges."""
    pending, seen = list(graph.get(start, ())), {start}
    while pending:
        node = pending.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            pending.extend(graph.get(node, ()))
    return False
