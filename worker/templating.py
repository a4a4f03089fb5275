r"""`{{ path }}` expressions in a job's text fields (CONTRACT §1 "Expressions").

Pure functions, no I/O, and nothing is ever evaluated: a small hand-written scanner reads each
expression as a path and walks the variable context with it.

Grammar, and the choices made where the contract is silent:

    template   := (text | "{{" ws path ws "}}")*
    path       := NAME (ws segment)*                    at most MAX_SEGMENTS parts in all
    segment    := "." ws NAME | "[" ws (INDEX | KEY) ws "]"
    NAME       := [A-Za-z_][A-Za-z0-9_]*                other keys need the ["..."] form
    INDEX      := [0-9]+                                leading zeros allowed, [007] is [7]
    KEY        := '"' ... '"' | "'" ... "'"             \\ \" \' are escapes in both; any
                                                        other backslash is kept as is
    ws         := [ \t\r\n\f\v]*

- The first `{{` always opens an expression: there is no escape for a literal `{{`. A `}}`
  outside an expression is literal text.
- `[N]` only indexes a list; on an object it is an error, never a lookup of the key "N".
- Errors print the path in canonical form: whitespace dropped, bracket keys in double quotes.
- An undefined path names the whole expression, then the part that was missing and where:
  `{{custom.nope.id}}: "custom" is not defined (...)`, `{{custom.nope.id}}: custom has no key
  "nope" (available: ...)`, `{{a.b[3]}}: a.b has no item [3] (the list has 2 items)`,
  `{{a.s.x}}: a.s is a string, so it has no key "x"`.
- Error positions are 1-based columns of the template (with a line number when it has several).
- NaN and infinities (Python's json module parses them) render as `json.dumps` writes them by
  default: `NaN`, `Infinity`, `-Infinity`, alone and inside objects and arrays.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from worker.errors import TemplateError

MAX_SEGMENTS = 64  # far deeper than any variable context; bounds the work one path can ask for
MAX_EXPRESSIONS = 1_000  # a text field with more is a mistake, not a ticket summary
MAX_INDEX_DIGITS = 18  # an index with more digits is past the end of any list in memory
_AVAILABLE_KEYS_SHOWN = 10  # enough to spot a typo without flooding the message
_SNIPPET_CHARS = 60  # how much of a bad expression an error message quotes
_WHITESPACE = frozenset(" \t\r\n\f\v")
_NAME_START = frozenset(string.ascii_letters + "_")
_NAME_CHARS = _NAME_START | frozenset(string.digits)
_DIGITS = frozenset(string.digits)
_ESCAPABLE = frozenset("\\\"'")
_JSON_TYPES = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string"}


@dataclass(frozen=True, slots=True)
class Key:
    """Reads key `name` of an object; `dotted` says it was written `.name`, not `["name"]`."""

    name: str
    dotted: bool = True


@dataclass(frozen=True, slots=True)
class Index:
    """Reads item `digits` (decimal, no leading zeros) of a list."""

    digits: str


@dataclass(frozen=True, slots=True)
class Expression:
    """One `{{ path }}`: its segments, the first being the root name."""

    segments: tuple[Key | Index, ...]

    @property
    def path(self) -> str:
        """The path in canonical form, e.g. `custom.existingTicket[0]["x-y"]`."""
        return _canonical(self.segments)


def parse(template: str, *, field: str | None = None) -> list[str | Expression]:
    """Split a template into literal text and expressions, in order.

    Raises:
        TemplateError: an expression is empty, malformed, too long or never closed, or the
            template holds more than MAX_EXPRESSIONS expressions.
    """
    parts: list[str | Expression] = []
    pos = count = 0
    while (start := template.find("{{", pos)) != -1:
        if start > pos:
            parts.append(template[pos:start])
        if (count := count + 1) > MAX_EXPRESSIONS:
            raise TemplateError(
                f"{_prefix(field)}a text holds at most {MAX_EXPRESSIONS} expressions", field=field
            )
        scanner = _Scanner(template, start, field=field, braced=True)
        parts.append(scanner.expression())
        pos = scanner.pos
    if pos < len(template):
        parts.append(template[pos:])
    return parts


def render(
    template: str,
    context: Mapping[str, Any],
    *,
    field: str | None = None,
    max_chars: int | None = None,
) -> str:
    """Replace every `{{ path }}` in `template` with its value from `context`, as `to_text`.

    Args:
        template: the text; without `{{` it is returned unchanged.
        context: the JSON-like variable context (`custom`, `email`, ...).
        field: the job field being rendered; it prefixes the message and is set on the error.
        max_chars: the longest text the field may render to. A few expressions reading one
            large variable can ask for far more text than the job carries; once the cap is
            passed nothing more is joined, and the rest is only measured (each distinct path is
            rendered once, so measuring costs no more than the job's own size).

    Raises:
        TemplateError: an expression is malformed (see `parse`), reads an undefined path,
            reads a value that is not JSON-like, or the text would be longer than `max_chars`
            (the message gives the field, the rendered length and the cap).
    """
    out: list[str] = []
    length = 0
    # A path repeated a thousand times is turned into text once.
    texts: dict[str, str] = {}
    for part in parse(template, field=field):
        if isinstance(part, str):
            text = part
        elif (text_of_path := texts.get(part.path)) is not None:
            text = text_of_path
        else:
            value = _resolve(context, part.segments, field)
            try:
                text = texts[part.path] = to_text(value)
            except TemplateError as exc:
                raise TemplateError(
                    f"{_prefix(field)}{part.path}: {exc.message}", field=field
                ) from None
        length += len(text)
        if max_chars is None or length <= max_chars:
            out.append(text)
        elif out:
            out.clear()  # over the cap: what was joined so far is never used
    if max_chars is not None and length > max_chars:
        raise TemplateError(
            f"{_prefix(field)}renders to {length:,} characters, more than the limit of "
            f"{max_chars:,} for this field; read smaller variables, or fewer of them",
            field=field,
        )
    return "".join(out)


def lookup(context: Mapping[str, Any], path: str) -> Any:
    """Resolve one path (without braces, e.g. `custom.ticket.id`) in `context`.

    Raises:
        TemplateError: the path is malformed, or a key, index or container along it is missing.
    """
    scanner = _Scanner(path, 0, field=None, braced=False)
    return _resolve(context, scanner.expression().segments, None, braced=False)


def to_text(value: Any) -> str:
    """Render a JSON-like value as the contract says.

    Strings as they are; `None` as ""; booleans as `true`/`false`; integers without a decimal
    point; floats as JSON (`1.5`, `2.0`, `1e+20`, `NaN`); objects and arrays as compact JSON.

    Raises:
        TemplateError: the value (or something inside it) is not JSON-like.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    try:
        if isinstance(value, int):
            return str(int(value))
        if isinstance(value, float):
            return json.dumps(value)
        if isinstance(value, dict | list | tuple):
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:  # a non-JSON type, a cycle, an int too long to print
        raise TemplateError(f"cannot render the value as text ({exc})") from None
    raise TemplateError(f"cannot render a value of type {type(value).__name__}")


class _Scanner:
    """Reads one path from `text` at `pos`, wrapped in `{{ }}` when `braced`."""

    def __init__(self, text: str, pos: int, *, field: str | None, braced: bool) -> None:
        self.text, self.pos, self.start, self.field, self.braced = text, pos, pos, field, braced

    def expression(self) -> Expression:
        if self.braced:
            self.pos += 2
            self._skip_whitespace()
            if self.text.startswith("}}", self.pos):
                self._fail("the expression is empty")
        segments: list[Key | Index] = [Key(self._name("a name"))]
        while True:
            self._skip_whitespace()
            if self._peek() == ".":
                self.pos += 1
                segment: Key | Index = Key(self._name('a name after "."'))
            elif self._peek() == "[":
                self.pos += 1
                segment = self._bracket()
            else:
                break
            if len(segments) == MAX_SEGMENTS:
                self._fail(f"a path has at most {MAX_SEGMENTS} parts")
            segments.append(segment)
        if not self.braced:
            if self.pos < len(self.text):
                self._expected('".", "[" or the end of the path')
        elif self.text.startswith("}}", self.pos):
            self.pos += 2
        else:
            hint = ' (a name with "-" needs the ["..."] form)' if self._peek() == "-" else ""
            self._expected(f'".", "[" or "}}}}"{hint}')
        return Expression(tuple(segments))

    def _bracket(self) -> Key | Index:
        self._skip_whitespace()
        first = self._peek()
        if first in ('"', "'"):
            segment: Key | Index = Key(self._string(first), dotted=False)
        elif first in _DIGITS:
            begin = self.pos
            while self._peek() in _DIGITS:
                self.pos += 1
            segment = Index(self.text[begin : self.pos].lstrip("0") or "0")
        else:
            self._expected('an index (0, 1, ...) or a quoted key after "["')
        self._skip_whitespace()
        if self._peek() != "]":
            self._expected('"]"')
        self.pos += 1
        return segment

    def _string(self, quote: str) -> str:
        opened, text, chars = self.pos, self.text, list[str]()
        self.pos += 1
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in _ESCAPABLE:
                char = text[self.pos + 1]
                self.pos += 1
            elif char == quote:
                self.pos += 1
                return "".join(chars)
            chars.append(char)
            self.pos += 1
        self.pos = opened
        return self._fail(f"the key opened with {quote} here is never closed")

    def _name(self, what: str) -> str:
        self._skip_whitespace()
        begin = self.pos
        if self._peek() not in _NAME_START:
            self._expected(what)
        while self._peek() in _NAME_CHARS:
            self.pos += 1
        return self.text[begin : self.pos]

    def _skip_whitespace(self) -> None:
        while self._peek() in _WHITESPACE:
            self.pos += 1

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _expected(self, what: str) -> NoReturn:
        if self.braced and self.pos >= len(self.text):
            column = self.start + 1
            self._fail(f'"{{{{" at column {column} has no closing "}}}}"', unclosed=True)
        found = json.dumps(self._peek(), ensure_ascii=False) if self._peek() else "the end"
        self._fail(f"expected {what}, found {found}")

    def _fail(self, detail: str, *, unclosed: bool = False) -> NoReturn:
        if self.braced:
            end = self.text.find("}}", self.start + 2)
            snippet = self.text[self.start : end + 2 if end != -1 else len(self.text)]
            if len(snippet) > _SNIPPET_CHARS:
                snippet = snippet[: _SNIPPET_CHARS - 1] + "…"
            what = f"{'unclosed' if unclosed else 'malformed'} expression {snippet}"
        else:
            what = f"malformed path {json.dumps(self.text, ensure_ascii=False)}"
        line = self.text.count("\n", 0, self.pos) + 1
        column = self.pos - (self.text.rfind("\n", 0, self.pos) + 1) + 1
        where = f"column {column}" if line == 1 else f"line {line}, column {column}"
        message = f"{what}: {detail}" if unclosed else f"{what} at {where}: {detail}"
        raise TemplateError(f"{_prefix(self.field)}{message}", field=self.field)


def _resolve(
    context: Mapping[str, Any],
    segments: tuple[Key | Index, ...],
    field: str | None,
    *,
    braced: bool = True,
) -> Any:
    value: Any = context
    for depth, segment in enumerate(segments):
        if isinstance(segment, Index):
            if isinstance(value, list | tuple):
                if len(segment.digits) <= MAX_INDEX_DIGITS and int(segment.digits) < len(value):
                    value = value[int(segment.digits)]
                    continue
                problem = f"has no item [{segment.digits}] ({_length(value)})"
            else:
                problem = (
                    f"is {_a_json_type(value)}, not a list, so it has no item [{segment.digits}]"
                )
        elif depth == 0:
            if isinstance(value, Mapping) and segment.name in value:
                value = value[segment.name]
                continue
            raise TemplateError(
                f"{_prefix(field)}{_whole(segments, braced)}: {_quote(segment.name)} is not "
                f"defined ({_defined(context)})",
                field=field,
            )
        elif not isinstance(value, Mapping):
            problem = f"is {_a_json_type(value)}, so it has no key {_quote(segment.name)}"
        elif segment.name in value:
            value = value[segment.name]
            continue
        else:
            problem = f"has no key {_quote(segment.name)} ({_available(value)})"
        # Name the whole expression (which one of the field's expressions failed) and the part
        # that resolved before the missing one (where to look in the variables).
        raise TemplateError(
            f"{_prefix(field)}{_whole(segments, braced)}: {_canonical(segments[:depth])} {problem}",
            field=field,
        )
    return value


def _whole(segments: tuple[Key | Index, ...], braced: bool) -> str:
    path = _canonical(segments)
    return f"{{{{{path}}}}}" if braced else path


def _defined(context: Mapping[str, Any]) -> str:
    return f"the variables are {_names(context)}" if context else "the job sets no variables"


def _length(items: list[Any] | tuple[Any, ...]) -> str:
    if not items:
        return "the list is empty"
    return f"the list has {len(items)} item{'' if len(items) == 1 else 's'}"


def _available(mapping: Mapping[Any, Any]) -> str:
    return f"available: {_names(mapping)}" if mapping else "the object is empty"


def _names(mapping: Mapping[Any, Any]) -> str:
    keys = sorted(str(key) for key in mapping)
    shown = ", ".join(
        key if key.isascii() and key.isidentifier() else _quote(key)
        for key in keys[:_AVAILABLE_KEYS_SHOWN]
    )
    more = len(keys) - _AVAILABLE_KEYS_SHOWN
    return shown + (f", and {more} more" if more > 0 else "")


def _canonical(segments: tuple[Key | Index, ...]) -> str:
    return "".join(
        f"[{s.digits}]"
        if isinstance(s, Index)
        else f".{s.name}"
        if s.dotted
        else f"[{_quote(s.name)}]"
        for s in segments
    ).removeprefix(".")


def _json_type(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "list"
    return (
        "object"
        if isinstance(value, Mapping)
        else _JSON_TYPES.get(type(value), type(value).__name__)
    )


def _a_json_type(value: Any) -> str:
    kind = _json_type(value)
    return kind if kind == "null" else f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _prefix(field: str | None) -> str:
    return f"{field}: " if field else ""
