"""`{{ path }}` expressions: rendering, lookup and every error message (CONTRACT §1)."""

from __future__ import annotations

import contextlib
import math
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import ErrorCode, TemplateError
from worker.expressions import MAX_EXPRESSIONS, MAX_SEGMENTS, Expression, Index, Key, parse
from worker.templating import lookup, render, to_text

CONTEXT: dict[str, Any] = {
    "custom": {
        "ticket": {"id": 4711, "summary": "Printer on fire"},
        "existingTicket": [{"id": 12, "summary": "VPN down"}],
        "noTickets": [],
        "deep": {"a": {"b": [[{"c": "bottom"}]]}},
        "flags": {"urgent": True, "spam": False, "none": None, "score": 1.5, "big": 1e20},
    },
    "email": {"subject": "Hello", "x-original-to": "help@msp.example", 'quo"te': "q"},
    "global": {"count": 3},
}


def render_error(template: str, context: dict[str, Any] | None = None) -> TemplateError:
    with pytest.raises(TemplateError) as caught:
        render(template, CONTEXT if context is None else context, field="summary")
    return caught.value


# --- the contract's examples -------------------------------------------------------------------


def test_a_dotted_path_renders_an_integer_without_a_decimal_point() -> None:
    assert render("{{custom.ticket.id}}", CONTEXT) == "4711"


def test_an_index_then_a_key_reads_into_a_list_of_objects() -> None:
    assert render("{{ custom.existingTicket[0].summary }}", CONTEXT) == "VPN down"


def test_a_bracket_key_reads_a_name_with_hyphens() -> None:
    assert render('{{email["x-original-to"]}}', CONTEXT) == "help@msp.example"


def test_an_expression_is_replaced_inside_surrounding_text() -> None:
    rendered = render("[Escalated] {{custom.existingTicket[0].summary}}", CONTEXT)
    assert rendered == "[Escalated] VPN down"


# --- grammar -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{custom.ticket.id}}",
        "{{ custom.ticket.id }}",
        "{{\tcustom . ticket\n.id }}",
        "{{ custom [ 'ticket' ] [\"id\"] }}",
        "{{custom['ticket'].id}}",
    ],
)
def test_whitespace_around_the_path_and_between_segments_is_ignored(template: str) -> None:
    assert render(template, CONTEXT) == "4711"


def test_single_and_double_quoted_keys_read_the_same_key() -> None:
    assert render("{{email['x-original-to']}}", CONTEXT) == "help@msp.example"


def test_a_backslash_escapes_a_quote_inside_a_key() -> None:
    assert render('{{ email["quo\\"te"] }}', CONTEXT) == "q"


def test_a_backslash_escapes_a_backslash_and_any_other_backslash_is_kept() -> None:
    context = {"k": {"a\\b": "one", "a\\nb": "two"}}
    assert render('{{ k["a\\\\b"] }}', context) == "one"
    assert render('{{ k["a\\b"] }}', context) == "one"
    assert render('{{ k["a\\nb"] }}', context) == "two"


def test_a_key_may_hold_braces_brackets_and_the_other_quote() -> None:
    context = {"k": {"}} ] ' {{": "odd"}}
    assert render('<{{ k["}} ] \' {{"] }}>', context) == "<odd>"


def test_an_empty_bracket_key_reads_the_empty_key() -> None:
    assert render('{{ k[""] }}', {"k": {"": "empty"}}) == "empty"


def test_leading_zeros_in_an_index_are_allowed() -> None:
    assert render("{{ custom.existingTicket[000].id }}", CONTEXT) == "12"


def test_nested_lists_and_objects_are_walked_to_the_bottom() -> None:
    assert render("{{custom.deep.a.b[0][0].c}}", CONTEXT) == "bottom"


def test_several_adjacent_expressions_all_render() -> None:
    assert render("{{global.count}}{{ global.count }}-{{email.subject}}", CONTEXT) == "33-Hello"


@pytest.mark.parametrize("text", ["", "plain text", "}}", "a }} b }}", "{ not } an {expression}"])
def test_text_without_an_opening_brace_pair_is_returned_unchanged(text: str) -> None:
    assert render(text, CONTEXT) == text


def test_parse_splits_text_and_expressions_in_order() -> None:
    parts = parse("a {{ b[0]['c d'] }} e")
    assert parts == [
        "a ",
        Expression((Key("b"), Index("0"), Key("c d", dotted=False))),
        " e",
    ]
    assert isinstance(parts[1], Expression)
    assert parts[1].path == 'b[0]["c d"]'


def test_lookup_resolves_a_bare_path() -> None:
    assert lookup(CONTEXT, " custom.existingTicket[0] ") == {"id": 12, "summary": "VPN down"}


def test_lookup_of_a_malformed_path_names_the_path_and_column() -> None:
    with pytest.raises(TemplateError) as caught:
        lookup(CONTEXT, "custom ticket")
    assert caught.value.message == (
        'malformed path "custom ticket" at column 8: '
        'expected ".", "[" or the end of the path, found "t"'
    )


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("as is {{ }}", "as is {{ }}"),
        ("", ""),
        (0, "0"),
        (-42, "-42"),
        (10**30, "1000000000000000000000000000000"),
        (True, "true"),
        (False, "false"),
        (1.5, "1.5"),
        (2.0, "2.0"),
        (1e20, "1e+20"),
        (-0.25, "-0.25"),
        (None, ""),
        ({"a": [1, "é", None], "b": {"c": True}}, '{"a":[1,"é",null],"b":{"c":true}}'),
        ([], "[]"),
        ({}, "{}"),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        ([math.nan], "[NaN]"),
    ],
)
def test_to_text_renders_each_json_type_as_the_contract_says(value: Any, text: str) -> None:
    assert to_text(value) == text


def test_booleans_null_and_floats_render_through_a_template() -> None:
    template = "{{custom.flags.urgent}}/{{custom.flags.spam}}/{{custom.flags.none}}/"
    template += "{{custom.flags.score}}/{{custom.flags.big}}"
    assert render(template, CONTEXT) == "true/false//1.5/1e+20"


def test_an_object_renders_as_compact_json() -> None:
    assert render("{{ custom.ticket }}", CONTEXT) == '{"id":4711,"summary":"Printer on fire"}'


def test_a_value_that_is_not_json_like_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="cannot render a value of type object"):
        to_text(object())
    error = render_error("{{ k }}", {"k": {"x": object()}})
    assert error.message.startswith("summary: k: cannot render the value as text")


# --- undefined paths ---------------------------------------------------------------------------


def test_missing_key_names_the_expression_the_path_that_resolved_and_the_key() -> None:
    error = render_error("{{ custom.ticket.idd }}")
    assert error.message == (
        'summary: {{custom.ticket.idd}}: custom.ticket has no key "idd" (available: id, summary)'
    )


def test_an_undefined_root_names_the_whole_expression_and_the_root() -> None:
    error = render_error("{{custom.nope.id}}", {})
    assert error.message == (
        'summary: {{custom.nope.id}}: "custom" is not defined (the job sets no variables)'
    )


def test_a_missing_key_of_a_defined_root_names_the_whole_expression_and_the_key() -> None:
    error = render_error("{{custom.nope.id}}", {"custom": {}})
    assert error.message == (
        'summary: {{custom.nope.id}}: custom has no key "nope" (the object is empty)'
    )


def test_index_out_of_range_names_the_expression_the_list_and_its_length() -> None:
    error = render_error("[Escalated] {{custom.noTickets[0].summary}}")
    assert error.message == (
        "summary: {{custom.noTickets[0].summary}}: custom.noTickets has no item [0] "
        "(the list is empty)"
    )


def test_a_huge_index_is_out_of_range_and_printed_as_written() -> None:
    error = render_error("{{ custom.existingTicket[99999999999999999999999999] }}")
    assert error.message == (
        "summary: {{custom.existingTicket[99999999999999999999999999]}}: "
        "custom.existingTicket has no item [99999999999999999999999999] (the list has 1 item)"
    )


def test_indexing_an_object_is_an_error_not_a_key_lookup() -> None:
    error = render_error("{{ custom.ticket[0] }}", {"custom": {"ticket": {"0": "zero"}}})
    assert error.message == (
        "summary: {{custom.ticket[0]}}: custom.ticket is an object, not a list, "
        "so it has no item [0]"
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{email.subject[0]}}", "email.subject is a string, not a list, so it has no item [0]"),
        ("{{global.count[1]}}", "global.count is a number, not a list, so it has no item [1]"),
        (
            "{{custom.flags.urgent[0]}}",
            "custom.flags.urgent is a boolean, not a list, so it has no item [0]",
        ),
        (
            "{{custom.flags.none[0]}}",
            "custom.flags.none is null, not a list, so it has no item [0]",
        ),
    ],
)
def test_indexing_a_scalar_names_its_json_type(template: str, message: str) -> None:
    assert render_error(template).message == f"summary: {template}: {message}"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{email.subject.x}}", 'email.subject is a string, so it has no key "x"'),
        ("{{custom.noTickets.x}}", 'custom.noTickets is a list, so it has no key "x"'),
        ("{{global.count['x']}}", 'global.count is a number, so it has no key "x"'),
        ("{{custom.flags.none.x}}", 'custom.flags.none is null, so it has no key "x"'),
        ("{{custom.flags.spam.x}}", 'custom.flags.spam is a boolean, so it has no key "x"'),
    ],
)
def test_reading_a_key_of_a_list_or_scalar_names_its_json_type(template: str, message: str) -> None:
    whole = template.replace("'", '"')  # the expression is printed in canonical form
    assert render_error(template).message == f"summary: {whole}: {message}"


def test_the_expression_and_the_failing_part_are_printed_in_canonical_form() -> None:
    error = render_error("{{ custom . deep [ 'a' ] . b [ 00 ] [ 3 ] . c }}")
    assert error.message == (
        'summary: {{custom.deep["a"].b[0][3].c}}: custom.deep["a"].b[0] has no item [3] '
        "(the list has 1 item)"
    )


def test_a_missing_root_lists_the_variables_that_exist() -> None:
    error = render_error("{{ cutsom.ticket }}")
    assert error.message == (
        'summary: {{cutsom.ticket}}: "cutsom" is not defined '
        "(the variables are custom, email, global)"
    )


def test_the_second_of_two_expressions_is_the_one_named_when_it_fails() -> None:
    error = render_error("{{custom.ticket.id}} / {{custom.ticket.owner}}")
    assert error.message == (
        'summary: {{custom.ticket.owner}}: custom.ticket has no key "owner" '
        "(available: id, summary)"
    )


def test_the_available_keys_are_sorted_quoted_when_needed_and_capped_at_ten() -> None:
    context = {"o": {f"k{n:02}": n for n in range(12)} | {"a-b": 1}}
    error = render_error("{{ o.x }}", context)
    shown = '"a-b", k00, k01, k02, k03, k04, k05, k06, k07, k08'
    assert error.message == (
        f'summary: {{{{o.x}}}}: o has no key "x" (available: {shown}, and 3 more)'
    )


def test_a_missing_key_of_an_empty_object_says_it_is_empty() -> None:
    error = render_error('{{ o["a\\"b"] }}', {"o": {}})
    assert error.message == ('summary: {{o["a\\"b"]}}: o has no key "a\\"b" (the object is empty)')


def test_the_error_carries_the_field_and_the_template_error_code() -> None:
    error = render_error("{{ nope }}")
    assert error.field == "summary"
    assert error.to_dict()["code"] == ErrorCode.TEMPLATE_ERROR
    assert error.to_dict()["retryable"] is False


def test_without_a_field_the_message_has_no_prefix() -> None:
    with pytest.raises(TemplateError) as caught:
        render("{{ nope }}", {})
    assert caught.value.message == '{{nope}}: "nope" is not defined (the job sets no variables)'
    assert caught.value.field is None


# --- malformed expressions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ }}", "{{ }} at column 4: the expression is empty"),
        ("{{}}", "{{}} at column 3: the expression is empty"),
        ("{{ a..b }}", '{{ a..b }} at column 6: expected a name after ".", found "."'),
        ("{{ 1abc }}", '{{ 1abc }} at column 4: expected a name, found "1"'),
        ("{{ a.1 }}", '{{ a.1 }} at column 6: expected a name after ".", found "1"'),
        (
            "{{ a[-1] }}",
            '{{ a[-1] }} at column 6: expected an index (0, 1, ...) or a quoted key after "[", '
            'found "-"',
        ),
        (
            "{{ a[x] }}",
            '{{ a[x] }} at column 6: expected an index (0, 1, ...) or a quoted key after "[", '
            'found "x"',
        ),
        ("{{ a[0 }}", '{{ a[0 }} at column 8: expected "]", found "}"'),
        ("{{ a b }}", '{{ a b }} at column 6: expected ".", "[" or "}}", found "b"'),
        ("{{ a } }}", '{{ a } }} at column 6: expected ".", "[" or "}}", found "}"'),
        (
            "{{__import__('os')}}",
            '{{__import__(\'os\')}} at column 13: expected ".", "[" or "}}", found "("',
        ),
        (
            "{{ email.x-original-to }}",
            '{{ email.x-original-to }} at column 11: expected ".", "[" or "}}" '
            '(a name with "-" needs the ["..."] form), found "-"',
        ),
        ("{{ é }}", '{{ é }} at column 4: expected a name, found "é"'),
        ("{{ {{ a }} }}", '{{ {{ a }} at column 4: expected a name, found "{"'),
        ('{{ a["x }}', '{{ a["x }} at column 6: the key opened with " here is never closed'),
    ],
)
def test_a_malformed_expression_names_the_expression_and_what_was_expected(
    template: str, message: str
) -> None:
    assert render_error(template).message == f"summary: malformed expression {message}"


def test_the_position_of_a_malformed_expression_counts_lines_in_long_text() -> None:
    error = render_error("Hello,\n  see {{ a.1 }}")
    assert error.message == (
        "summary: malformed expression {{ a.1 }} at line 2, column 12: "
        'expected a name after ".", found "1"'
    )


def test_a_long_malformed_expression_is_quoted_shortened() -> None:
    error = render_error("{{ a." + "b" * 100 + "! }}")
    assert error.message.startswith("summary: malformed expression {{ a.bbbb")
    assert "b…" in error.message


@pytest.mark.parametrize(
    ("template", "expression"),
    [("{{", "{{"), ("Dear {{ email.subject", "{{ email.subject"), ("{{ a[0", "{{ a[0")],
)
def test_an_opening_brace_pair_without_a_closing_pair_is_an_error(
    template: str, expression: str
) -> None:
    column = template.index("{{") + 1
    assert render_error(template).message == (
        f"summary: unclosed expression {expression}: "
        f'"{{{{" at column {column} has no closing "}}}}"'
    )


# --- limits ------------------------------------------------------------------------------------


def test_a_path_of_the_maximum_length_is_allowed_and_a_longer_one_is_not() -> None:
    context: dict[str, Any] = {"a": 0}
    for _ in range(MAX_SEGMENTS - 1):
        context = {"a": context}
    assert render("{{ " + ".".join(["a"] * MAX_SEGMENTS) + " }}", context) == "0"
    error = render_error("{{ " + ".".join(["a"] * (MAX_SEGMENTS + 1)) + " }}", context)
    assert f"a path has at most {MAX_SEGMENTS} parts" in error.message


def test_a_template_with_too_many_expressions_is_an_error() -> None:
    assert render("{{ a }}" * MAX_EXPRESSIONS, {"a": "x"}) == "x" * MAX_EXPRESSIONS
    error = render_error("{{ a }}" * (MAX_EXPRESSIONS + 1), {"a": "x"})
    assert error.message == f"summary: a text holds at most {MAX_EXPRESSIONS} expressions"


# --- rendered size -----------------------------------------------------------------------------

# A 5 KB template that reads one 200,000-character variable 125 times: 25,000,000 characters.
AMPLIFIED = "{{ custom.big }}" * 125
BIG: dict[str, Any] = {"custom": {"big": "x" * 200_000}}


def test_a_field_rendering_past_its_cap_is_a_template_error_naming_field_length_and_cap() -> None:
    with pytest.raises(TemplateError) as caught:
        render(AMPLIFIED, BIG, field="details", max_chars=320_000)

    assert caught.value.field == "details"
    assert caught.value.code is ErrorCode.TEMPLATE_ERROR
    assert caught.value.message.startswith(
        "details: renders to 25,000,000 characters, more than the limit of 320,000 for this field"
    )


def test_a_field_rendering_past_its_cap_never_builds_the_long_text() -> None:
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError):
            render(AMPLIFIED, BIG, field="details", max_chars=320_000)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # The variable is in memory already; the work may hold a few copies of the cap, never the
    # 25 MB the expressions ask for.
    assert peak_bytes < 2_000_000


def test_a_text_exactly_at_its_cap_renders_and_one_character_more_does_not() -> None:
    context = {"custom": {"part": "ab"}}

    assert render("{{custom.part}}" * 5, context, max_chars=10) == "ab" * 5
    with pytest.raises(TemplateError, match="renders to 11 characters, more than the limit of 10"):
        render("{{custom.part}}" * 5 + "!", context, max_chars=10)


def test_an_undefined_path_after_the_cap_is_passed_is_still_reported() -> None:
    with pytest.raises(TemplateError, match=r"\{\{custom.nope\}\}"):
        render("{{custom.big}}{{custom.nope}}", BIG, field="details", max_chars=10)


# --- properties --------------------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
WHITESPACE = st.sampled_from(["", "", " ", "  ", "\t", "\n"])


def json_values(keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
        max_leaves=20,
    )


CONTEXTS = st.dictionaries(NAMES, json_values(NAMES | st.text(max_size=6)), min_size=1, max_size=4)
FEW_KEYS = st.sampled_from(["a", "b", "x-y", ""])
SMALL_CONTEXTS = st.dictionaries(st.sampled_from(["a", "b"]), json_values(FEW_KEYS), max_size=2)


def written_key(key: str, data: st.DataObject) -> str:
    """One way a user may write a key: `.name` when it is a name, else a quoted bracket key."""
    space = data.draw(WHITESPACE)
    if key.isascii() and key.isidentifier() and data.draw(st.booleans()):
        return f".{space}{key}"
    quote = data.draw(st.sampled_from(['"', "'"]))
    escaped = key.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return f"[{space}{quote}{escaped}{quote}{data.draw(WHITESPACE)}]"


@settings(deadline=None)
@given(context=CONTEXTS, data=st.data())
def test_a_path_drawn_from_the_context_renders_the_value_it_points_at(
    context: dict[str, Any], data: st.DataObject
) -> None:
    root = data.draw(st.sampled_from(sorted(context)))
    value, path = context[root], root
    while isinstance(value, dict | list) and len(value) > 0 and data.draw(st.booleans()):
        path += data.draw(WHITESPACE)
        if isinstance(value, dict):
            key = data.draw(st.sampled_from(sorted(value)))
            path, value = path + written_key(key, data), value[key]
        else:
            index = data.draw(st.integers(0, len(value) - 1))
            path, value = path + f"[{data.draw(WHITESPACE)}{index}]", value[index]
    template = "{{" + data.draw(WHITESPACE) + path + data.draw(WHITESPACE) + "}}"
    assert render(template, context) == to_text(value)
    assert lookup(context, path) is value


def reference_lookup(context: dict[str, Any], steps: list[str | int]) -> tuple[bool, Any]:
    """The contract's semantics, written as plainly as possible: (found, value)."""
    value: Any = context
    for step in steps:
        in_list = isinstance(step, int) and isinstance(value, list) and step < len(value)
        in_object = isinstance(step, str) and isinstance(value, dict) and step in value
        if not (in_list or in_object):
            return False, None
        value = value[step]
    return True, value


@settings(deadline=None)
@given(
    context=SMALL_CONTEXTS,
    root=st.sampled_from(["a", "b", "c"]),
    steps=st.lists(FEW_KEYS | st.integers(0, 3), max_size=5),
    data=st.data(),
)
def test_a_random_path_renders_its_value_or_raises_a_template_error_naming_it(
    context: dict[str, Any], root: str, steps: list[str | int], data: st.DataObject
) -> None:
    written = [f"[{step}]" if isinstance(step, int) else written_key(step, data) for step in steps]
    path = root + "".join(written)
    found, value = reference_lookup(context, [root, *steps])
    if found:
        assert render("{{" + path + "}}", context) == to_text(value)
    else:
        with pytest.raises(TemplateError) as caught:
            render("{{" + path + "}}", context, field="details")
        # The message names the whole expression, then the part that resolved last.
        canonical = [root]
        canonical += [canonical_step(step, text) for step, text in zip(steps, written, strict=True)]
        missing = next(
            n for n in range(len(steps) + 1) if not reference_lookup(context, [root, *steps[:n]])[0]
        )
        whole = "{{" + "".join(canonical) + "}}"
        if missing == 0:
            expected = f'details: {whole}: "{root}" is not defined'
        else:
            expected = f"details: {whole}: {''.join(canonical[:missing])} "
        assert caught.value.message.startswith(expected)
        assert caught.value.field == "details"


def canonical_step(step: str | int, written: str) -> str:
    """How an error message prints one step: `[N]`, `.name`, or `["key"]` with escapes."""
    if isinstance(step, int):
        return f"[{step}]"
    if written.startswith("."):
        return f".{step}"
    return '["' + step.replace("\\", "\\\\").replace('"', '\\"') + '"]'


TRICKY = st.sampled_from(list("{}[].'\"\\ \t\n-_a0é\x00"))
GARBAGE = st.text(alphabet=TRICKY | st.characters(), max_size=40)


@given(text=GARBAGE)
def test_any_text_renders_or_raises_only_a_template_error(text: str) -> None:
    for template in (text, "{{" + text, "{{" + text + "}}", "{{ custom" + text):
        with contextlib.suppress(TemplateError):
            render(template, CONTEXT)
    with contextlib.suppress(TemplateError):
        lookup(CONTEXT, text)


@given(text=st.text().filter(lambda text: "{{" not in text))
def test_text_without_an_opening_brace_pair_always_renders_unchanged(text: str) -> None:
    assert render(text, CONTEXT) == text
