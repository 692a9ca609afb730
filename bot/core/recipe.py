"""The wishlist (recipe version 1 plus wishbot's extensions): load, check, compare.

:func:`load_wishlist` is pure: bytes and a display path in, a
:class:`~bot.core.model.Wishlist` (only when there is no error) and a list of
:class:`~bot.core.model.Problem` out. It checks, in order:

1. safe YAML (:mod:`bot.core.safeyaml`: size, encoding, tabs, duplicate keys,
   aliases, tags);
2. structure against ``schemas/wishlist.schema.json`` (the single source of
   truth), each error mapped to the offending node's ``path:line:col``;
3. meaning: every input parses as an image reference, duplicates (after
   normalisation) are warnings, ``output_format`` placeholders are known, no
   two inputs produce the same thin-image name, ``http://`` is a warning,
   platforms are known.

The production recipes contain harmless duplicates; the later copy is
dropped from :attr:`Wishlist.wishes` with a warning.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from bot.core.model import (
    DEFAULT_PLATFORM,
    Location,
    Platform,
    Problem,
    Severity,
    Wish,
    Wishlist,
)
from bot.core.reference import CREDENTIALS_HINT, ImageReference, ReferenceError, parse, redact
from bot.core.safeyaml import JsonPath, Positions, YamlProblem, load_document
from bot.core.schemas import load_schema

SCHEMA_FILE = "wishlist.schema.json"

#: the placeholders ``output_format`` may use (see reference/cvmfs-layout.md)
PLACEHOLDERS = ("scheme", "registry", "repository", "tag", "digest", "reference", "image")
_PLACEHOLDER_RE = re.compile(r"\$\(([^()]*)\)")

#: platforms wishbot knows how to ask a registry for
KNOWN_PLATFORMS = frozenset(
    {
        "linux/amd64",
        "linux/amd64/v2",
        "linux/amd64/v3",
        "linux/amd64/v4",
        "linux/arm64",
        "linux/arm64/v8",
        "linux/arm64/v9",
        "linux/arm/v5",
        "linux/arm/v6",
        "linux/arm/v7",
        "linux/386",
        "linux/ppc64le",
        "linux/s390x",
        "linux/riscv64",
        "linux/mips64le",
        "linux/loong64",
    }
)
_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm/v7",
    "armv7l": "arm/v7",
    "armv7": "arm/v7",
    "armv6l": "arm/v6",
    "i386": "386",
    "i686": "386",
    "x86": "386",
    "ppc64el": "ppc64le",
}

_TOP_KEYS = ("version", "user", "cvmfs_repo", "output_format", "input", "ignoreErrors", "platforms")
_EXAMPLES = {
    "version": "'version: 1'",
    "user": "'user: cvmfsunpacker'",
    "cvmfs_repo": "'cvmfs_repo: unpacked.cern.ch'",
    "output_format": "'output_format: https://gitlab-registry.cern.ch/unpacked/sync/$(image)'",
    "input": "'input:' followed by lines '  - registry.hub.docker.com/library/centos:7'",
    "image": "'image: registry.hub.docker.com/library/centos:7'",
}


# --- the schema -----------------------------------------------------------


@cache
def wishlist_schema_text() -> str:
    """The JSON Schema (2020-12) of the wishlist, as shipped in ``bot/schemas``."""
    return (resources.files("bot") / "schemas" / SCHEMA_FILE).read_text(encoding="utf-8")


def wishlist_schema() -> Mapping[str, Any]:
    return load_schema(SCHEMA_FILE)


@cache
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(wishlist_schema())


# --- output names ---------------------------------------------------------


def _placeholder_values(ref: ImageReference) -> dict[str, str]:
    return {
        "scheme": ref.scheme,
        "registry": ref.registry,
        "repository": ref.repository,
        "tag": ref.effective_tag or "",
        "digest": ref.digest or "",
        "reference": ref.reference,
        "image": ref.image,
    }


def output_name(output_format: str, ref: ImageReference) -> str:
    """Expand ``output_format``'s placeholders for one image: the thin image's name.

    Pass a concrete (wildcard-expanded, normalized) reference. The result is
    written like an input (it may start with ``https://``); :func:`parse` it to
    get an :class:`ImageReference`. Unknown placeholders are left as written
    (:func:`load_wishlist` reports them).
    """
    values = _placeholder_values(ref)
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), output_format)


# --- loading --------------------------------------------------------------


def load_wishlist(data: bytes, path: str) -> tuple[Wishlist | None, list[Problem]]:
    """Load and check a wishlist; the Wishlist is returned only when there is no error.

    Never raises for any input: every failure is a :class:`Problem` whose
    location is ``path`` plus the 1-based line and column of the offending node.
    """
    try:
        document, positions = load_document(data)
    except YamlProblem as exc:
        return None, [Problem("error", exc.message, Location(path, exc.line, exc.column), exc.code)]
    checker = _Checker(path, positions)
    wishlist = checker.check(document)
    problems = sorted(
        checker.problems, key=lambda p: (p.location.line, p.location.column, p.severity)
    )
    if any(p.severity == "error" for p in problems):
        return None, problems
    return wishlist, problems


def _kind(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean (true/false)"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} value"


_EXPECTED = {
    "string": "text",
    "array": "a list",
    "object": "a mapping (key: value)",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
}


def _describe(path: Sequence[str | int]) -> str:
    """Plain words for a place in the document: "'platforms' item 2 of input item 3"."""
    if not path:
        return "the wishlist"
    tokens: list[str] = []
    for index, part in enumerate(path):
        if isinstance(part, str):
            tokens.append(f"'{part}'")
        elif index and path[index - 1] == "input":
            tokens[-1] = f"input item {part + 1}"
        elif tokens:
            tokens[-1] = f"{tokens[-1]} item {part + 1}"
        else:
            tokens.append(f"item {part + 1}")
    return " of ".join(reversed(tokens))


def _yaml_value(value: Any) -> str:
    """A value as it would be written in YAML (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _short(json.dumps(value, ensure_ascii=False, default=str), 40)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Checker:
    def __init__(self, path: str, positions: Positions) -> None:
        self.path = path
        self.positions = positions
        self.problems: list[Problem] = []
        self.reported_missing: set[tuple[JsonPath, str]] = set()

    # -- helpers -----------------------------------------------------------
    def at_value(self, path: JsonPath) -> Location:
        return Location(self.path, *self.positions.of_value(path))

    def at_key(self, path: JsonPath) -> Location:
        return Location(self.path, *self.positions.of_key(path))

    def add(
        self,
        severity: Severity,
        message: str,
        location: Location,
        code: str,
        hint: str | None = None,
        image: str | None = None,
    ) -> None:
        self.problems.append(Problem(severity, message, location, code, hint, image))

    # -- the whole check ---------------------------------------------------
    def check(self, document: Any) -> Wishlist | None:
        if document is None:
            self.add(
                "error",
                "the wishlist is empty",
                Location(self.path, 1, 1),
                "empty",
                "write the keys version, user, cvmfs_repo, output_format and input",
            )
            return None
        if not isinstance(document, dict):
            self.add(
                "error",
                f"the wishlist must be a mapping of keys (version, user, cvmfs_repo, "
                f"output_format, input), not {_kind(document)}",
                self.at_value(()),
                "not-a-mapping",
            )
            return None
        for error in _validator().iter_errors(document):
            self.schema_error(error)
        return self.semantics(document)

    # -- structure (JSON Schema) -------------------------------------------
    def schema_error(self, error: jsonschema.ValidationError) -> None:
        path: JsonPath = tuple(error.absolute_path)
        what = _describe(path)
        where = self.at_value(path)
        explain = _SCHEMA_ERRORS.get(str(error.validator))
        if explain is None or not explain(self, error, path, what, where):
            self.add("error", f"{what}: {error.message}", where, "invalid")

    # each returns False when it has nothing better to say than the validator's message
    def unknown_keys(
        self, error: jsonschema.ValidationError, path: JsonPath, what: str, where: Location
    ) -> bool:
        instance: Any = error.instance
        if not isinstance(instance, dict):
            return False
        schema: Any = error.schema
        allowed = list(schema.get("properties", {}))
        for key in instance:
            if key in allowed:
                continue
            match = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = (
                f"did you mean '{match[0]}'?"
                if match
                else f"the keys allowed here are {', '.join(allowed)}"
            )
            inside = f" in {what}" if path else ""
            self.add(
                "error",
                f"unknown key '{_short(str(key), 60)}'{inside}",
                self.at_key((*path, key)),
                "unknown-key",
                hint,
            )
        return True

    def missing_keys(
        self, error: jsonschema.ValidationError, path: JsonPath, what: str, where: Location
    ) -> bool:
        instance: Any = error.instance
        if not isinstance(instance, dict):
            return False
        value: Any = error.validator_value
        for key in value:
            if key not in instance and (path, key) not in self.reported_missing:
                self.reported_missing.add((path, key))
                inside = f" in {what}" if path else ""
                example = _EXAMPLES.get(key)
                self.add(
                    "error",
                    f"missing key '{key}'{inside}",
                    where,
                    "missing-key",
                    f"add {example}" if example else None,
                )
        return True

    def wrong_type(
        self, error: jsonschema.ValidationError, path: JsonPath, what: str, where: Location
    ) -> bool:
        instance: Any = error.instance
        value: Any = error.validator_value
        expected = _EXPECTED.get(str(value), str(value))
        quote_hint = (
            "put the value in quotes"
            if value == "string" and isinstance(instance, bool | int | float)
            else None
        )
        if instance is None:
            message = f"{what} is empty; it must be {expected}"
        else:
            message = f"{what} must be {expected}, not {_kind(instance)}"
        self.add("error", message, where, "wrong-type", quote_hint)
        return True

    def bad_version(
        self, error: jsonschema.ValidationError, path: JsonPath, what: str, where: Location
    ) -> bool:
        if path != ("version",):
            return False
        instance: Any = error.instance
        if isinstance(instance, str) and instance.strip() == "1":
            message = "'version' must be the number 1, not the text '1'"
            hint = "remove the quotes"
        else:
            message = f"unsupported wishlist version {_yaml_value(instance)}"
            hint = "this wishbot reads version 1; write 'version: 1'"
        self.add("error", message, where, "bad-version", hint)
        return True

    def empty_value(
        self, error: jsonschema.ValidationError, path: JsonPath, what: str, where: Location
    ) -> bool:
        self.add("error", f"{what} is empty", where, "empty-value")
        return True

    def too_long(
        self, error: jsonschema.ValidationError, path: JsonPath, what: str, where: Location
    ) -> bool:
        instance: Any = error.instance
        value: Any = error.validator_value
        self.add(
            "error",
            f"{what} is too long ({len(instance)} characters; at most {value})",
            where,
            "too-long",
        )
        return True

    def no_match(
        self, error: jsonschema.ValidationError, path: JsonPath, what: str, where: Location
    ) -> bool:
        self.pattern_error(path, error.instance, where)
        return True

    def empty_list(
        self, error: jsonschema.ValidationError, path: JsonPath, what: str, where: Location
    ) -> bool:
        self.add("error", f"{what} is an empty list", where, "empty-value", None)
        return True

    def duplicates(
        self, error: jsonschema.ValidationError, path: JsonPath, what: str, where: Location
    ) -> bool:
        instance: Any = error.instance
        if not isinstance(instance, list):
            return False
        seen: dict[str, int] = {}
        for index, item in enumerate(instance):
            key = json.dumps(item, sort_keys=True, default=str)
            if key in seen:
                self.add(
                    "error",
                    f"{what} lists {_short(str(item), 60)!r} twice",
                    self.at_value((*path, index)),
                    "duplicate-value",
                    "remove one of them",
                )
            seen.setdefault(key, index)
        return True

    def alternatives(
        self, error: jsonschema.ValidationError, path: JsonPath, what: str, where: Location
    ) -> bool:
        self.alternatives_error(error, path, what, where)
        return True

    def read_as_mapping(self, instance: Any, what: str, where: Location) -> bool:
        """``- image:tag: `` or ``- host:5000/x:`` is YAML for a one-key mapping: say so."""
        if not isinstance(instance, dict) or len(instance) != 1:
            return False
        ((key, value),) = instance.items()
        if value is not None or key in ("image", "platforms"):
            return False
        self.add(
            "error",
            f"{what} was read as a mapping because '{_short(str(key))}' is followed "
            "by ': ' or ends with ':'",
            where,
            "wrong-type",
            "put the image reference in quotes, and check that a tag follows the ':'",
            image=str(key),
        )
        return True

    def alternatives_error(
        self, error: jsonschema.ValidationError, path: JsonPath, what: str, where: Location
    ) -> None:
        instance = error.instance
        if self.read_as_mapping(instance, what, where):
            return
        wanted = "object" if isinstance(instance, dict) else "string"
        branch_errors = [sub for sub in error.context or () if _branch_type(sub) == wanted]
        if isinstance(instance, str | dict) and branch_errors:
            for sub in branch_errors:
                self.schema_error(sub)
            return
        self.add(
            "error",
            f"{what} must be an image reference (text) or a mapping with 'image' "
            f"(and optionally 'platforms'), not {_kind(instance)}",
            where,
            "wrong-type",
        )

    def pattern_error(self, path: JsonPath, instance: Any, where: Location) -> None:
        text = _short(str(instance), 80)
        if path == ("user",):
            self.add("error", f"'user' '{text}' must be one word without spaces", where, "bad-user")
        elif path == ("cvmfs_repo",):
            self.add(
                "error",
                f"'cvmfs_repo' '{text}' is not a CernVM-FS repository name",
                where,
                "bad-repository",
                "write a name such as 'unpacked.cern.ch', optionally followed by '/subdir' "
                "(sub-directories may not start with '.')",
            )
        elif "platforms" in path:
            self.add(
                "error",
                f"platform '{text}' is not valid: write os/architecture[/variant] in lowercase",
                where,
                "bad-platform",
                "for example linux/amd64, linux/arm64 or linux/arm/v7",
            )
        else:
            self.add("error", f"{_describe(path)} '{text}' is not valid", where, "invalid")

    # -- meaning -------------------------------------------------------------
    def semantics(self, document: dict[str, Any]) -> Wishlist | None:
        output_format = document.get("output_format")
        format_ok = isinstance(output_format, str) and self.check_output_format(output_format)
        global_platforms = self.platforms(document.get("platforms"), ("platforms",))
        wishes = self.wishes(
            document.get("input"),
            global_platforms or (DEFAULT_PLATFORM,),
            output_format if format_ok and isinstance(output_format, str) else None,
        )
        if any(p.severity == "error" for p in self.problems):
            return None
        ignore = document.get("ignoreErrors") or []
        return Wishlist(
            path=self.path,
            version=int(document["version"]),
            user=str(document["user"]),
            cvmfs_repo=str(document["cvmfs_repo"]),
            output_format=str(output_format),
            wishes=tuple(wishes),
            ignore_errors=tuple(str(glob) for glob in ignore),
            platforms=global_platforms or (DEFAULT_PLATFORM,),
        )

    def wishes(
        self,
        inputs: Any,
        default_platforms: tuple[Platform, ...],
        output_format: str | None,
    ) -> list[Wish]:
        """The wishes of ``input`` (a warning when it is empty: it would remove everything)."""
        if not isinstance(inputs, list):
            return []
        if not inputs:
            self.add(
                "warning",
                "the input list is empty: every image this wishlist published "
                "would be scheduled for removal",
                self.at_value(("input",)),
                "empty-input",
            )
        return self.check_inputs(inputs, default_platforms, output_format)

    def check_output_format(self, output_format: str) -> bool:
        where = self.at_value(("output_format",))
        ok = True
        for match in _PLACEHOLDER_RE.finditer(output_format):
            name = match.group(1)
            if name in PLACEHOLDERS:
                continue
            ok = False
            close = difflib.get_close_matches(name.strip().lower(), PLACEHOLDERS, n=1)
            self.add(
                "error",
                f"unknown placeholder '$({_short(name, 40)})' in 'output_format'",
                where,
                "unknown-placeholder",
                f"did you mean '$({close[0]})'?"
                if close
                else "known placeholders: " + " ".join(f"$({p})" for p in PLACEHOLDERS),
            )
        for match in re.finditer(r"\$\{([^{}]*)\}", output_format):
            ok = False
            self.add(
                "error",
                f"'output_format' writes a placeholder as '${{{_short(match.group(1), 40)}}}'",
                where,
                "unknown-placeholder",
                f"write it with parentheses: '$({_short(match.group(1), 40)})'",
            )
        if "$(" in _PLACEHOLDER_RE.sub("", output_format):
            ok = False
            self.add(
                "error",
                "'output_format' has a '$(' without its closing ')'",
                where,
                "unknown-placeholder",
                "write placeholders as $(name), e.g. $(image)",
            )
        return ok

    def platforms(self, value: Any, path: JsonPath) -> tuple[Platform, ...] | None:
        """The platforms written at ``path`` (sorted), or None when absent or unusable."""
        if not isinstance(value, list) or not value:
            return None
        result: list[Platform] = []
        usable = True
        for index, item in enumerate(value):
            if not isinstance(item, str):
                usable = False
                continue
            try:
                platform = Platform.parse(item)
            except ValueError:
                usable = False  # the schema's pattern already reported it
                continue
            if str(platform) not in KNOWN_PLATFORMS:
                if re.fullmatch(r"[a-z0-9_]+/[a-z0-9_]+(?:/[a-z0-9]+)?", item):
                    self.add(
                        "error",
                        f"unknown platform '{_short(item, 60)}'",
                        self.at_value((*path, index)),
                        "unknown-platform",
                        _platform_hint(platform),
                    )
                usable = False
                continue
            result.append(platform)
        if not usable:
            return None
        return tuple(sorted(set(result)))

    def _bad_reference(self, text: str, shown: str, reason: str, where: Location) -> None:
        """An input that is not a reference; credentials in it are never echoed."""
        if CREDENTIALS_HINT in reason:
            self.add(
                "error",
                f"'{shown}' has credentials in the URL; they were not used",
                where,
                "credentials-in-reference",
                CREDENTIALS_HINT,
                image=redact(text),
            )
            return
        self.add(
            "error",
            f"invalid image reference '{shown}': {reason}",
            where,
            "bad-reference",
            image=redact(text),
        )

    def check_inputs(
        self,
        inputs: list[Any],
        default_platforms: tuple[Platform, ...],
        output_format: str | None,
    ) -> list[Wish]:
        wishes: list[Wish] = []
        first_of: dict[ImageReference, tuple[int, str]] = {}
        outputs: dict[str, tuple[int, str]] = {}
        for index, item in enumerate(inputs):
            found = self.input_item(index, item, default_platforms)
            if found is None:
                continue  # the schema reported it
            text, where, platforms = found
            ref = self.check_reference(text, where)
            if ref is None or not self.first_time(ref, text, where, first_of):
                continue
            if output_format is not None and not self.check_output(
                output_format, ref.normalized(), text, where, outputs
            ):
                continue
            if platforms is None:
                continue
            wishes.append(Wish(reference=ref, location=where, platforms=platforms, text=text))
        return wishes

    def input_item(
        self, index: int, item: Any, default_platforms: tuple[Platform, ...]
    ) -> tuple[str, Location, tuple[Platform, ...] | None] | None:
        """(reference text, where, platforms) of one input; None when the schema refused it."""
        if isinstance(item, str):
            return item, self.at_value(("input", index)), default_platforms
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            return None
        platforms: tuple[Platform, ...] | None = default_platforms
        if "platforms" in item:
            platforms = self.platforms(item["platforms"], ("input", index, "platforms"))
        return item["image"], self.at_value(("input", index, "image")), platforms

    def check_reference(self, text: str, where: Location) -> ImageReference | None:
        """The parsed reference, or None after reporting why it cannot be used."""
        shown = _short(redact(text))
        try:
            ref = parse(text)
        except ReferenceError as exc:
            self._bad_reference(text, shown, str(exc), where)
            return None
        if ref.is_wildcard and ref.digest is not None:
            self.add(
                "error",
                f"'{shown}' combines a wildcard tag with a digest",
                where,
                "bad-reference",
                "use either a tag pattern or a digest",
                image=text,
            )
            return None
        if ref.scheme == "http":
            self.add(
                "warning",
                f"'{shown}' is fetched over plain HTTP, unencrypted and unauthenticated",
                where,
                "insecure",
                "use https:// unless the registry is on a trusted network "
                "(the operator must also list it in insecure_registries)",
                image=text,
            )
        return ref

    def first_time(
        self,
        ref: ImageReference,
        text: str,
        where: Location,
        first_of: dict[ImageReference, tuple[int, str]],
    ) -> bool:
        """True the first time an image is listed; a warning (later entry ignored) after."""
        normal = ref.normalized()
        if normal not in first_of:
            first_of[normal] = (where.line, text)
            return True
        first_line, first_text = first_of[normal]
        same = "" if first_text == text else f" (as '{_short(first_text)}')"
        self.add(
            "warning",
            f"'{_short(redact(text))}' is listed twice: on line {first_line}{same} and on line "
            f"{where.line}; the later entry is ignored",
            where,
            "duplicate",
            "remove one of them",
            image=text,
        )
        return False

    def check_output(
        self,
        output_format: str,
        normal: ImageReference,
        text: str,
        where: Location,
        outputs: dict[str, tuple[int, str]],
    ) -> bool:
        shown = _short(text)
        name = output_name(output_format, normal)
        sample = normal.with_tag(normal.tag.replace("*", "0")) if normal.tag else normal
        try:
            parse(output_name(output_format, sample))
        except ReferenceError as exc:
            self.add(
                "error",
                f"the thin-image name '{_short(name)}' that 'output_format' gives "
                f"'{shown}' is not a valid image reference: {exc}",
                where,
                "bad-output-name",
                "change 'output_format'",
                image=text,
            )
            return False
        if name in outputs:
            other_line, other_text = outputs[name]
            self.add(
                "error",
                f"'{shown}' and '{_short(other_text)}' (line {other_line}) would both be "
                f"published as the thin image '{_short(name)}'",
                where,
                "output-collision",
                "make 'output_format' tell them apart (e.g. add $(registry)) or remove one",
                image=text,
            )
            return False
        outputs[name] = (where.line, text)
        return True


_SchemaExplainer = Callable[[_Checker, jsonschema.ValidationError, JsonPath, str, Location], bool]
#: JSON Schema validator -> the error people read
_SCHEMA_ERRORS: dict[str, _SchemaExplainer] = {
    "additionalProperties": _Checker.unknown_keys,
    "required": _Checker.missing_keys,
    "type": _Checker.wrong_type,
    "const": _Checker.bad_version,
    "minLength": _Checker.empty_value,
    "maxLength": _Checker.too_long,
    "pattern": _Checker.no_match,
    "minItems": _Checker.empty_list,
    "uniqueItems": _Checker.duplicates,
    "anyOf": _Checker.alternatives,
    "oneOf": _Checker.alternatives,
}


def _branch_type(error: jsonschema.ValidationError) -> str | None:
    """Which alternative of ``inputItem`` a sub-error belongs to ('string' or 'object')."""
    schema_path = list(error.relative_schema_path)
    if schema_path and schema_path[0] == 0:
        return "string"
    if schema_path and schema_path[0] == 1:
        return "object"
    return None


def _platform_hint(platform: Platform) -> str:
    arch = _ARCH_ALIASES.get(platform.architecture)
    if platform.os == "linux" and arch is not None:
        return f"did you mean 'linux/{arch}'?"
    close = difflib.get_close_matches(str(platform), sorted(KNOWN_PLATFORMS), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "known platforms: " + ", ".join(sorted(KNOWN_PLATFORMS))


# --- comparing two wishlists ----------------------------------------------


@dataclass(frozen=True)
class WishlistDiff:
    """What a change of the wishlist asks for, wish by wish (compared by :attr:`Wish.key`).

    ``added`` holds new and changed wishes (in the new file's order),
    ``removed`` the wishes no longer asked for (old order). When a setting that
    affects every wish changes (``changed_settings``: ``cvmfs_repo``,
    ``output_format`` or ``platforms``), every new wish counts as added.
    """

    added: tuple[Wish, ...] = ()
    removed: tuple[Wish, ...] = ()
    unchanged: tuple[Wish, ...] = ()
    changed_settings: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed_settings)


def _changed_settings(old: Wishlist, new: Wishlist) -> tuple[str, ...]:
    """The settings that affect every wish and differ between ``old`` and ``new``."""
    return tuple(
        name
        for name in ("cvmfs_repo", "output_format", "platforms")
        if getattr(old, name) != getattr(new, name)
    )


def diff_wishlists(old: Wishlist | None, new: Wishlist) -> WishlistDiff:
    """``old`` None (no base, or an unreadable one): every wish is added, none removed."""
    if old is None:
        return WishlistDiff(added=new.wishes)
    settings = _changed_settings(old, new)
    _kept, removed = _partition(old.wishes, {wish.key for wish in new.wishes})
    if settings:
        return WishlistDiff(added=new.wishes, removed=removed, changed_settings=settings)
    unchanged, added = _partition(new.wishes, {wish.key for wish in old.wishes})
    return WishlistDiff(added=added, removed=removed, unchanged=unchanged)


def _partition(
    wishes: Sequence[Wish], keys: set[object]
) -> tuple[tuple[Wish, ...], tuple[Wish, ...]]:
    """(the wishes whose key is in ``keys``, the others), each in order."""
    return (
        tuple(wish for wish in wishes if wish.key in keys),
        tuple(wish for wish in wishes if wish.key not in keys),
    )


# --- ignoreErrors ---------------------------------------------------------


def _spellings(image: str) -> set[str]:
    names = {image}
    try:
        ref = parse(image)
    except ReferenceError:
        return names
    for variant in (ref, ref.normalized()):
        names.update({str(variant), variant.url, variant.name})
    return names


def ignored_by(image: str, globs: Iterable[str]) -> str | None:
    """The first ``ignoreErrors`` glob that matches ``image`` (in any of its spellings)."""
    names = _spellings(image)
    for glob in globs:
        if any(fnmatch.fnmatchcase(name, glob) for name in names):
            return glob
    return None


def apply_ignore_errors(problems: Iterable[Problem], wishlist: Wishlist) -> list[Problem]:
    """Errors about inputs that match an ``ignoreErrors`` glob become warnings.

    A glob matches the input as written, its normal form, with or without
    ``https://``, or its name without tag (``fnmatch`` rules, case-sensitive).
    """
    result: list[Problem] = []
    for problem in problems:
        glob = (
            ignored_by(problem.image, wishlist.ignore_errors)
            if problem.severity == "error" and problem.image and wishlist.ignore_errors
            else None
        )
        if glob is None:
            result.append(problem)
            continue
        note = f"ignored because it matches ignoreErrors '{glob}'"
        hint = f"{problem.hint}; {note}" if problem.hint else note
        result.append(replace(problem, severity="warning", hint=hint))
    return result
