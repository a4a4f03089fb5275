r"""`{{ path }}` expressions: the grammar, and the scanner that reads a template into text and
paths (CONTRACT §1 "Expressions"). Reading a path's value from the variables is
`worker.templating`'s.

Nothing is ever evaluated: a small hand-written scanner reads each expression as a path.

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
- Paths print in canonical form: whitespace dropped, bracket keys in double quotes.
- Error positions are 1-based columns of the template (with a line number when it has several).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from typing import NoReturn

from worker.errors import TemplateError

MAX_SEGMENTS = 64  # far deeper than any variable context; bounds the work one path can ask for
MAX_EXPRESSIONS = 1_000  # a text field with more is a mistake, not a ticket summary
_SNIPPET_CHARS = 60  # how much of a bad expression an error message quotes
_WHITESPACE = frozenset(" \t\r\n\f\v")
_NAME_START = frozenset(string.ascii_letters + "_")
_NAME_CHARS = _NAME_START | frozenset(string.digits)
_DIGITS = frozenset(string.digits)
_ESCAPABLE = frozenset("\\\"'")


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
        return canonical(self.segments)


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
                f"{field_prefix(field)}a text holds at most {MAX_EXPRESSIONS} expressions",
                field=field,
            )
        scanner = _Scanner(template, start, field=field, braced=True)
        parts.append(scanner.expression())
        pos = scanner.pos
    if pos < len(template):
        parts.append(template[pos:])
    return parts


def parse_path(path: str) -> Expression:
    """Read one path without braces, e.g. `custom.ticket.id`.

    Raises:
        TemplateError: the path is malformed.
    """
    return _Scanner(path, 0, field=None, braced=False).expression()


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
        raise TemplateError(f"{field_prefix(self.field)}{message}", field=self.field)


def canonical(segments: tuple[Key | Index, ...]) -> str:
    """A path as messages print it, e.g. `custom.existingTicket[0]["x-y"]`."""
    return "".join(
        f"[{s.digits}]"
        if isinstance(s, Index)
        else f".{s.name}"
        if s.dotted
        else f"[{quote_key(s.name)}]"
        for s in segments
    ).removeprefix(".")


def quote_key(key: str) -> str:
    """A key in double quotes, as a bracket segment prints it."""
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def field_prefix(field: str | None) -> str:
    """What starts a message about job field `field`: ``"summary: "``, or nothing."""
    return f"{field}: " if field else ""
