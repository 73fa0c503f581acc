"""Forms generated from a settings schema, and the template helper's escaping."""

from __future__ import annotations

from typing import Literal

from multidict import MultiDict
from pydantic import BaseModel, Field

from tokenbroker.web.console.forms import (
    bound_claims_from_form,
    setting_specs,
    setting_value,
    settings_from_form,
)
from tokenbroker.web.console.html import Markup, attributes, render


class ExampleSettings(BaseModel):
    """A made-up credential type's settings, one field of each shape."""

    url: str
    retries: int = Field(default=2, ge=0, le=5)
    ratio: float = 0.5
    verify: bool = True
    mode: Literal["a", "b"] = "a"
    scopes: list[str] = Field(default_factory=list)
    note: str | None = None
    secret: str | None = Field(default=None, json_schema_extra={"sensitive": True})


def test_each_property_becomes_a_control_of_its_kind() -> None:
    specs = {s.name: s for s in setting_specs(ExampleSettings)}
    assert {n: s.kind for n, s in specs.items()} == {
        "url": "string",
        "retries": "integer",
        "ratio": "number",
        "verify": "boolean",
        "mode": "enum",
        "scopes": "list",
        "note": "string",
        "secret": "string",
    }
    assert specs["url"].required
    assert not specs["note"].required
    assert specs["mode"].options == ("a", "b")
    assert (specs["retries"].minimum, specs["retries"].maximum) == (0.0, 5.0)
    assert specs["secret"].sensitive


def test_the_form_turns_back_into_typed_settings() -> None:
    specs = setting_specs(ExampleSettings)
    form = MultiDict(
        {
            "settings.url": " https://x.example ",
            "settings.retries": "3",
            "settings.ratio": "0.25",
            "settings.mode": "b",
            "settings.scopes": "one\n\n two \n",
            "settings.note": "",
        }
    )
    assert settings_from_form(specs, form, patch=False) == {
        "url": "https://x.example",
        "retries": 3,
        "ratio": 0.25,
        "verify": False,
        "mode": "b",
        "scopes": ["one", "two"],
    }


def test_a_value_that_does_not_parse_is_sent_as_typed_for_the_schema_to_refuse() -> None:
    form = MultiDict({"settings.retries": "many"})
    settings = settings_from_form(setting_specs(ExampleSettings), form, patch=False)
    assert settings["retries"] == "many"


def test_in_a_patch_an_empty_field_is_removed_but_an_empty_sensitive_one_kept() -> None:
    form = MultiDict({"settings.url": "https://x.example", "settings.verify": "true"})
    patch = settings_from_form(setting_specs(ExampleSettings), form, patch=True)
    assert patch["note"] is None
    assert "secret" not in patch
    assert patch["verify"] is True


def test_a_sensitive_setting_is_never_put_back_into_the_form() -> None:
    secret = next(s for s in setting_specs(ExampleSettings) if s.name == "secret")
    assert setting_value(secret, {"secret": "s3cr3t"}) is None


def test_a_claim_on_several_rows_accepts_any_of_their_values() -> None:
    form = MultiDict(
        [
            ("claim", "env"),
            ("claim_value", "prod-*"),
            ("claim", ""),
            ("claim_value", ""),
            ("claim", "env"),
            ("claim_value", "stage"),
            ("claim", "/aud/0"),
            ("claim_value", "https://x"),
        ]
    )
    assert bound_claims_from_form(form) == {"env": ["prod-*", "stage"], "/aud/0": "https://x"}


def test_values_are_escaped_and_markup_is_not() -> None:
    evil = '"><script>alert(1)</script>'
    out = render('<a title="{t}">{body}</a>', t=evil, body=Markup("<b>ok</b>"))
    assert out == '<a title="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"><b>ok</b></a>'
    assert attributes(aria_label="x&y", required=True, hidden=False) == (
        ' aria-label="x&amp;y" required'
    )
