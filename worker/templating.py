"""`{{ path }}` expressions in a job's text fields, rendered (CONTRACT §1 "Expressions").

Pure functions, no I/O: a template is read by `worker.expressions`, and each path walks the
variable context. The choices made where the contract is silent:

- `[N]` only indexes a list; on an object it is an error, never a lookup of the key "N".
- An undefined path names the whole expression, then the part that was missing and where:
  `{{custom.nope.id}}: "custom" is not defined (...)`, `{{custom.nope.id}}: custom has no key
  "nope" (available: ...)`, `{{a.b[3]}}: a.b has no item [3] (the list has 2 items)`,
  `{{a.s.x}}: a.s is a string, so it has no key "x"`.
- NaN and infinities (Python's json module parses them) render as `json.dumps` writes them by
  default: `NaN`, `Infinity`, `-Infinity`, alone and inside objects and arrays.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from worker.errors import TemplateError
from worker.expressions import Index, Key, canonical, field_prefix, parse, parse_path, quote_key

MAX_INDEX_DIGITS = 18  # an index with more digits is past the end of any list in memory
_AVAILABLE_KEYS_SHOWN = 10  # enough to spot a typo without flooding the message
_JSON_TYPES = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string"}


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
                    f"{field_prefix(field)}{part.path}: {exc.message}", field=field
                ) from None
        length += len(text)
        if max_chars is None or length <= max_chars:
            out.append(text)
        elif out:
            out.clear()  # over the cap: what was joined so far is never used
    if max_chars is not None and length > max_chars:
        raise TemplateError(
            f"{field_prefix(field)}renders to {length:,} characters, more than the limit of "
            f"{max_chars:,} for this field; read smaller variables, or fewer of them",
            field=field,
        )
    return "".join(out)


def lookup(context: Mapping[str, Any], path: str) -> Any:
    """Resolve one path (without braces, e.g. `custom.ticket.id`) in `context`.

    Raises:
        TemplateError: the path is malformed, or a key, index or container along it is missing.
    """
    return _resolve(context, parse_path(path).segments, None, braced=False)


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
                f"{field_prefix(field)}{_whole(segments, braced)}: "
                f"{quote_key(segment.name)} is not defined ({_defined(context)})",
                field=field,
            )
        elif not isinstance(value, Mapping):
            problem = f"is {_a_json_type(value)}, so it has no key {quote_key(segment.name)}"
        elif segment.name in value:
            value = value[segment.name]
            continue
        else:
            problem = f"has no key {quote_key(segment.name)} ({_available(value)})"
        # Name the whole expression (which one of the field's expressions failed) and the part
        # that resolved before the missing one (where to look in the variables).
        raise TemplateError(
            f"{field_prefix(field)}{_whole(segments, braced)}: "
            f"{canonical(segments[:depth])} {problem}",
            field=field,
        )
    return value


def _whole(segments: tuple[Key | Index, ...], braced: bool) -> str:
    path = canonical(segments)
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
        key if key.isascii() and key.isidentifier() else quote_key(key)
        for key in keys[:_AVAILABLE_KEYS_SHOWN]
    )
    more = len(keys) - _AVAILABLE_KEYS_SHOWN
    return shown + (f", and {more} more" if more > 0 else "")


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
