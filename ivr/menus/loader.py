"""Load `hotline.yaml` into a `HotlineConfig`, or refuse it with file, line, YAML path and reason."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from ivr.menus.checks import check_config
from ivr.menus.model import HotlineConfig

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    loc: Loc
    reason: str

    def format(self, file: str, line: int | None) -> str:
        where = f"{file}:{line}" if line else file
        return f"{where}: {dotted(self.loc) or '(top)'}: {self.reason}"


class ConfigError(Exception):
    """A config that must not go live. `problems` holds one formatted line per problem.
    `complete` is False when the settings themselves were refused: the whole-config checks
    (node references, reachability, translations, keys) need a config that parses, so more
    problems may show once these are fixed, and ops should be told so."""

    def __init__(self, problems: Sequence[str], complete: bool = True):
        super().__init__("\n".join(problems))
        self.problems = list(problems)
        self.complete = complete

    def summary(self) -> str:
        """'3 problem(s)', with the warning that the list may go on when it was cut short."""
        count = f"{len(self.problems)} problem(s)"
        if self.complete:
            return count
        return (
            f"{count} in the settings themselves (the whole-config checks - node references, "
            "reachability, translations, keys - run once these are fixed)"
        )


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a mapping's key: the path already ends in it
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; ops must hear about the first."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML's signature
        seen: dict[object, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key].start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep)


# Dates stay strings for pydantic to parse, so '2026-13-31' is reported with its place instead of
# crashing PyYAML's timestamp constructor.
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_config(path: str | Path) -> HotlineConfig:
    """Read and validate the config at `path`; raise ConfigError listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text (byte {exc.start}): save the file as UTF-8"]) from exc
    return parse_config(text, str(path))


def parse_config(text: str, filename: str = "<config>") -> HotlineConfig:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        tree = yaml.compose(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        reason = _yaml_reason(exc)
        place = _path_at(text, mark.line) if mark else ()
        opened = _unclosed_quote(text, mark.line) if mark else None
        if opened is not None:
            # YAML reads a quoted text on across lines until the next quote, and the error it
            # finally meets is far below (and often says "indentation"): name the quote's line.
            line, closed = opened
            where, place = f"{filename}:{line + 1}", _path_at(closed, line)
            problem = getattr(exc, "problem", None) or "a syntax error"
            reason = (
                "a quoted text is not closed on this line: end it with its quote"
                f" (YAML read on to line {mark.line + 1} and found: {problem})"
            )
        raise ConfigError([f"{where}: {dotted(place) + ': ' if place else ''}{reason}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"{filename}: the config must be a mapping at the top level"])
    try:
        config = HotlineConfig.model_validate(data)
    except ValidationError as exc:
        problems = [Problem(tuple(e["loc"]), _reason(e)) for e in exc.errors()]
        raise ConfigError(_format(problems, filename, tree), complete=False) from exc
    found = [Problem(loc, reason) for loc, reason in check_config(config)]
    if found:
        raise ConfigError(_format(found, filename, tree))
    return config


def _path_at(text: str, line: int) -> Loc:
    """The YAML path of what is on (0-based) `line`, for errors PyYAML reports by line only (a
    duplicate key). Empty when the text does not even parse as YAML nodes."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)  # nodes only: duplicates are no error here
    except yaml.YAMLError:
        return ()
    path: list[str | int] = []
    while isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        if isinstance(node, yaml.MappingNode):
            before = [(k, v) for k, v in node.value if k.start_mark.line <= line]
            if not before:
                break
            key, value = before[-1]
            path.append(key.value)
            if key.start_mark.line == line:
                break
            node = value
        else:
            before = [(i, v) for i, v in enumerate(node.value) if v.start_mark.line <= line]
            if not before:
                break
            index, node = before[-1]
            path.append(index)
    return tuple(path)


# A value that opens a quote: `key: "text`, `- 'text`.
_OPENS_QUOTE = re.compile(r"""^\s*(?:-\s+)?(?:[^\s#'"][^#'"]*?:\s+)?(["'])(.*)$""")


def _unclosed_quote(text: str, before: int) -> tuple[int, str] | None:
    """The first line before (0-based) `before` whose value opens a quote it does not close, and
    the text with that quote closed (so the line's YAML path can be found); None if none."""
    lines = text.splitlines()
    for number, line in enumerate(lines[: before + 1]):
        found = _OPENS_QUOTE.match(line)
        if not found:
            continue
        quote, rest = found.groups()
        # In "…" a backslash escapes; in '…' a doubled quote is one.
        body = re.sub(r"\\.", "", rest) if quote == '"' else rest.replace("''", "")
        if quote not in body:
            repaired = [*lines[:number], line.rstrip() + quote, *lines[number + 1 :]]
            return number, "\n".join(repaired[: number + 1])
    return None


# What a YAML syntax error usually means, for people who edit YAML by hand.
_YAML_HINTS = (
    ("expected <block end>", "indentation: this line does not line up with the block above it"),
    ("did not find expected key", "indentation: this line does not line up with the block above it"),
    (
        "mapping values are not allowed",
        "a ':' inside a text (put the whole text in quotes), or a line indented deeper than the one above it",
    ),
    ("found character '\\t'", "a tab: indent with spaces only"),
    ("found undefined alias", "a '*' at the start of a text: put the text in quotes"),
)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc)
    hint = next((h for marker, h in _YAML_HINTS if marker in problem), None)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    # PyYAML's context ("while parsing a block mapping") names the block's first line: where to
    # start looking when the line named is only where the parser noticed.
    detail = problem + (f"; in the block from line {context_mark.line + 1}" if context and context_mark else "")
    return f"{hint} (YAML: {detail})" if hint else detail


# Patterns of the model's fields, in words.
_PATTERNS = {
    r"^[0-9*#]$": "one phone key: 0-9, * or #",
    r"^[a-z][a-z0-9_]{0,47}$": "lower-case letters, digits and _, starting with a letter (at most 48)",
    r"^[a-z]{2,3}$": "a language id of 2-3 lower-case letters (ja, zh, en)",
    r"^[A-Z]{2}$": "a two-letter country code in capitals (JP)",
    r"^https://": "an https:// URL",
    r"^[a-z0-9][a-z0-9_-]{0,31}$": "lower-case letters, digits, _ and -, starting with a letter or digit (at most 32)",
    r"^\+[1-9]\d{6,14}$": "a phone number in E.164 form (+81…)",
}


def _reason(error: dict) -> str:
    message = error["msg"].removeprefix("Value error, ")
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown setting (typo?)"
    if kind == "union_tag_invalid":
        return f"unknown node type; {message.split('. ', 1)[-1]}"
    if kind == "string_pattern_mismatch":
        pattern = (error.get("ctx") or {}).get("pattern", "")
        return f"{error.get('input')!r} is not valid here: must be {_PATTERNS.get(pattern, f'like {pattern}')}"
    if kind == "string_type" and isinstance(error.get("input"), int | float) and not isinstance(error["input"], bool):
        return f'must be text: quote it, e.g. "{error["input"]}"'
    if kind in ("int_type", "float_type", "bool_type"):
        # The settings are strict: `true` is not 1 second, "3" is not 3 attempts.
        wanted = {"int_type": "a whole number", "float_type": "a number", "bool_type": "true or false"}[kind]
        given = error.get("input")
        shown = str(given).lower() if isinstance(given, bool) else repr(given)
        quoted = " (written in quotes, it is text)" if isinstance(given, str) and kind != "bool_type" else ""
        return f"must be {wanted}, not {shown}{quoted}"
    if kind.startswith("date_") or kind.startswith("time_"):
        return f"{error.get('input')!r} is not a real {kind.split('_')[0]}: {message}"
    return message


def _format(problems: list[Problem], filename: str, tree: yaml.Node | None) -> list[str]:
    out = []
    for problem in problems:
        line, loc = _resolve(tree, problem.loc)
        out.append(Problem(loc, problem.reason).format(filename, line))
    return out


def _resolve(node: yaml.Node | None, loc: Loc) -> tuple[int | None, Loc]:
    """The line of the deepest YAML node `loc` reaches, and `loc` without the parts pydantic adds
    that are not in the file (the node type tag of a discriminated union, say)."""
    line = node.start_mark.line + 1 if node is not None else None
    kept: list[str | int] = []
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            if match is None:
                if i == len(loc) - 1 or part == "[key]":
                    kept.append(part)  # a missing key is still the place to name
                continue
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            kept.append(part)
            continue
        kept.append(part)
        line = node.start_mark.line + 1
    return line, tuple(kept)
