"""Pure parts of the admin API: merge patches, sensitive fields, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, Field

from tokenbroker.web.admin.schemas import merge_patch
from tokenbroker.web.admin.views import public_settings, sensitive_fields, timestamp

# RFC 7396 appendix A examples, as (target, patch, result).
MERGE_CASES: list[tuple[dict[str, object], dict[str, object], dict[str, object]]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), MERGE_CASES)
def test_merge_patch_follows_rfc_7396(
    target: dict[str, object], patch: dict[str, object], result: dict[str, object]
) -> None:
    assert merge_patch(target, patch) == result


def test_merge_patch_leaves_its_inputs_alone() -> None:
    target: dict[str, object] = {"a": {"b": 1}}
    merge_patch(target, {"a": {"b": 2}})
    assert target == {"a": {"b": 1}}


class Mixed(BaseModel):
    public: str
    secret: str = Field(json_schema_extra={"sensitive": True})
    not_quite: str = Field(json_schema_extra={"sensitive": "yes"})


def test_only_fields_marked_sensitive_true_are_sensitive() -> None:
    assert sensitive_fields(Mixed) == {"secret"}


def test_settings_of_a_type_that_cannot_be_loaded_are_not_shown() -> None:
    assert public_settings("no_such_type", {"password": "x"}) == {}


def test_timestamps_are_utc_with_a_z() -> None:
    east = timezone(timedelta(hours=2))
    assert timestamp(datetime(2026, 1, 2, 5, 4, 5, tzinfo=east)) == "2026-01-02T03:04:05Z"
    assert timestamp(datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)) == (
        "2026-01-02T03:04:05.250000Z"
    )
