"""A spec is validated once, not once per record, and what it was validated against still counts."""

from __future__ import annotations

import pytest

from runner import mapping
from runner.mapping import MappingError, apply

LOOKUP_SPEC = {
    "fields": [
        {"target": "code", "source": "gl", "transform": {"name": "lookup", "table": "gl_account_charge"}},
    ]
}


def test_apply_validates_a_spec_once_for_many_records(monkeypatch: pytest.MonkeyPatch) -> None:
    mapping._validated.clear()
    calls = []
    real = mapping._problems
    monkeypatch.setattr(mapping, "_problems", lambda *a, **k: calls.append(1) or real(*a, **k))
    spec = {"fields": [{"target": "name", "source": "companyName", "required": True}]}

    payloads = [apply(spec, {"companyName": f"Co {n}"}).payload for n in range(5)]

    assert payloads[4] == {"name": "Co 4"}
    assert len(calls) == 1


def test_a_broken_spec_fails_every_record_not_only_the_first() -> None:
    spec = {"fields": [{"target": "name", "sourc": "companyName"}]}
    for _ in range(2):
        with pytest.raises(MappingError, match="unknown key 'sourc'"):
            apply(spec, {"companyName": "Co"})


def test_a_lookup_table_removed_since_makes_the_same_spec_fail() -> None:
    tables = {"gl_account_charge": {"4000": "Services"}}
    assert apply(LOOKUP_SPEC, {"gl": "4000"}, lookups=tables).payload == {"code": "Services"}
    with pytest.raises(MappingError, match="does not exist"):
        apply(LOOKUP_SPEC, {"gl": "4000"}, lookups={})


def test_a_tuple_where_a_list_belongs_is_not_taken_for_the_valid_list() -> None:
    good = {"fields": [{"target": "name", "source": ["companyName"]}]}
    bad = {"fields": [{"target": "name", "source": ("companyName",)}]}
    assert apply(good, {"companyName": "Co"}).payload == {"name": "Co"}
    with pytest.raises(MappingError, match="'source' must be"):
        apply(bad, {"companyName": "Co"})
