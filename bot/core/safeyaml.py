"""Safe, bounded YAML for untrusted files, with the position of every value.

:func:`load_document` turns the bytes of a YAML file into plain data (dicts,
lists, strings, numbers, booleans, ``None``) plus a :class:`Positions` map
from each value's path (``("input", 3)``) to its 1-based line and column.

Wishlists arrive in merge requests from anyone, so the loader:

- constructs only plain data (a :class:`yaml.SafeLoader` subclass; Python
  tags, custom tags and merge keys are refused);
- refuses duplicate keys, which PyYAML silently overwrites;
- bounds the file size and the work anchors and aliases can cause (a
  "billion laughs" file stops at :data:`MAX_VALUES` values, fast);
- turns every failure into a :class:`YamlProblem` with a position and a
  message in plain words — never an exception from PyYAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1024 * 1024
#: values (scalars, lists, mappings) the document may expand to, aliases counted each time
MAX_VALUES = 100_000
#: characters of text the document may expand to, aliases counted each time
MAX_TEXT = 4 * MAX_BYTES
MAX_DEPTH = 64

JsonPath = tuple[str | int, ...]


class YamlProblem(Exception):
    """The bytes are not a usable YAML document; ``line``/``column`` are 1-based (0 = unknown)."""

    def __init__(self, message: str, line: int = 0, column: int = 0, *, code: str = "yaml"):
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.code = code


@dataclass
class Positions:
    """Where each value (and each mapping key) of a document was written."""

    values: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[JsonPath, tuple[int, int]] = field(default_factory=dict)

    def of_value(self, path: JsonPath) -> tuple[int, int]:
        """Position of the value at ``path``, or of its nearest written ancestor."""
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, (1, 1))

    def of_key(self, path: JsonPath) -> tuple[int, int]:
        """Position of the key that names ``path`` (falls back to the value)."""
        return self.keys.get(path) or self.of_value(path)


class _Loader(yaml.SafeLoader):
    """SafeLoader that is only used to compose nodes and construct plain scalars."""


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org") else tag


def _position(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _text_position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise YamlProblem(
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x} cannot be decoded); "
            "save it as UTF-8",
            line,
            column,
            code="encoding",
        ) from None


def _check_tabs(text: str) -> None:
    """Tabs in indentation are invalid YAML; say so plainly instead of a scanner error."""
    for number, line in enumerate(text.split("\n"), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        rest = line[len(indent) :]
        if "\t" in indent and rest and not rest.startswith("#"):
            raise YamlProblem(
                "a tab is used for indentation; YAML allows only spaces there — "
                "replace the tab with spaces",
                number,
                indent.index("\t") + 1,
                code="tab",
            )


def _yaml_error(exc: yaml.YAMLError, text: str) -> YamlProblem:
    if isinstance(exc, yaml.reader.ReaderError):
        line, column = _text_position(text, exc.position)
        return YamlProblem(
            f"the file contains the control character U+{exc.character:04X}, "
            "which YAML does not allow; remove it",
            line,
            column,
            code="yaml",
        )
    if isinstance(exc, yaml.MarkedYAMLError):
        return _syntax_error(exc)
    return YamlProblem(f"YAML error: {exc}")


def _syntax_error(exc: yaml.MarkedYAMLError) -> YamlProblem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    if exc.context and "expected a single document" in exc.context:
        return YamlProblem(
            "the file holds more than one YAML document (a second '---'); "
            "a wishlist is a single document",
            line,
            column,
        )
    problem = (exc.problem or "syntax error").strip()
    context = f" ({exc.context.strip()})" if exc.context else ""
    return YamlProblem(
        f"YAML syntax error: {problem}{context}; check the indentation and quoting here",
        line,
        column,
    )


class _Builder:
    """Walks composed nodes into plain data, counting work to bound alias expansion."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.positions = Positions()
        self.values = 0
        self.text = 0
        self.active: set[int] = set()

    def build(self, node: Node, path: JsonPath) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise YamlProblem(
                f"the document expands to more than {MAX_VALUES} values, probably through "
                "anchors and aliases ('&name' / '*name') used over and over "
                "(a 'billion laughs' file); write the values out instead",
                *_position(node),
                code="too-large",
            )
        if len(path) > MAX_DEPTH:
            raise YamlProblem(
                f"the document is nested more than {MAX_DEPTH} levels deep",
                *_position(node),
                code="too-large",
            )
        if path not in self.positions.values:
            self.positions.values[path] = _position(node)
        if id(node) in self.active:
            raise YamlProblem(
                "an alias refers to a value that contains itself; remove the alias",
                *_position(node),
            )
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self._plain_tag(node, "tag:yaml.org,2002:seq", "list")
                return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                self._plain_tag(node, "tag:yaml.org,2002:map", "mapping")
                return self._mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise YamlProblem("unsupported YAML node", *_position(node))

    @staticmethod
    def _plain_tag(node: Node, tag: str, kind: str) -> None:
        if node.tag != tag:
            raise YamlProblem(
                f"the tag '{_tag(node.tag)}' is not allowed here; write a plain {kind} without a tag",
                *_position(node),
                code="tag",
            )

    def _scalar(self, node: ScalarNode) -> Any:
        self.text += len(node.value)
        if self.text > MAX_TEXT:
            raise YamlProblem(
                "the document expands to too much text, probably through anchors and "
                "aliases used over and over; write the values out instead",
                *_position(node),
                code="too-large",
            )
        if node.tag == "tag:yaml.org,2002:merge":
            raise YamlProblem(
                "merge keys ('<<') are not supported in a wishlist; write the keys out",
                *_position(node),
                code="tag",
            )
        try:
            return self.loader.construct_object(node)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            if "could not determine a constructor" in problem:
                problem = (
                    f"the tag '{_tag(node.tag)}' is not allowed; remove it and write plain text"
                )
            raise YamlProblem(problem, *_position(node), code="tag") from None
        except (ValueError, OverflowError) as exc:
            raise YamlProblem(
                f"the value {node.value!r} cannot be read: {exc}", *_position(node)
            ) from None

    def _mapping(self, node: MappingNode, path: JsonPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_seen: dict[str, tuple[int, int]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                raise YamlProblem(
                    "a key must be a plain word, not a list or mapping", *_position(key_node)
                )
            raw_key = self._scalar(key_node)
            key = raw_key if isinstance(raw_key, str) else str(key_node.value)
            where = _position(key_node)
            if key in first_seen:
                line, _ = first_seen[key]
                raise YamlProblem(
                    f"duplicate key '{key}' (first written on line {line}); keep only one of them",
                    *where,
                    code="duplicate-key",
                )
            first_seen[key] = where
            self.positions.keys[(*path, key)] = where
            result[key] = self.build(value_node, (*path, key))
        return result


def load_document(data: bytes) -> tuple[Any, Positions]:
    """Parse one YAML document from untrusted bytes; raise :class:`YamlProblem` on any failure.

    An empty document (no content, or only comments) yields ``None``.
    """
    if len(data) > MAX_BYTES:
        raise YamlProblem(
            f"the file is {len(data) / MAX_BYTES:.1f} MiB; a wishlist may be at most "
            f"{MAX_BYTES // MAX_BYTES} MiB",
            code="too-large",
        )
    text = _decode(data)
    _check_tabs(text)
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, text) from None
        except RecursionError:
            raise YamlProblem(
                f"the document is nested more than {MAX_DEPTH} levels deep", code="too-large"
            ) from None
        if node is None:
            return None, Positions()
        builder = _Builder(loader)
        try:
            value = builder.build(node, ())
        except RecursionError:
            raise YamlProblem(
                f"the document is nested more than {MAX_DEPTH} levels deep", code="too-large"
            ) from None
        return value, builder.positions
    finally:
        loader.dispose()
