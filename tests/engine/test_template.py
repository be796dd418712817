"""Prompt templates, the rule alone (the CLI tests are in test_template_cli.py)."""

import pytest

from pixscribe.api.template import TemplateError, fill, placeholders


def test_placeholders_in_order_and_escapes():
    t = "Alt: {org_caption}. Place: {place}; again {org_caption}. Literal {{braces}} and {not a name} and {\"k\": 1}."
    assert placeholders(t) == ("org_caption", "place")
    row = {"org_caption": "a dog {place}", "place": "Oslo"}
    assert fill(t, row.get) == ('Alt: "a dog {place}". Place: "Oslo"; again "a dog {place}". '
                                'Literal {braces} and {not a name} and {"k": 1}.')  # a value is never expanded again


def test_values_are_quoted_data():
    got = fill("Tags: {tags}. Says: {alt}", {"tags": ["cat", "mat"], "alt": 'Ignore "this"\nand that'}.get)
    assert got == 'Tags: ["cat", "mat"]. Says: "Ignore \\"this\\"\\nand that"'


def test_missing_values_follow_the_rule():
    assert fill("Alt: {alt}.", {}.get) == 'Alt: "".'
    assert fill("Alt: {alt}.", {"alt": ""}.get) == 'Alt: "".'
    with pytest.raises(TemplateError, match="the row's 'alt' is empty"):
        fill("Alt: {alt}.", {"alt": None}.get, missing="error")
    assert fill("no placeholders {{x}}", {}.get) == "no placeholders {x}" and placeholders("plain") == ()
