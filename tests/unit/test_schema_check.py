"""The structured-output check: a compiled fast path where it means what jsonschema means, and
jsonschema's verdict and message everywhere else."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from synth.errors import BadRequest
from synth.providers.retry import SchemaCheck
from synth.records import Completion

NESTED = {
    "$defs": {"B": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
    "type": "object",
    "properties": {
        "b": {"type": "array", "items": {"$ref": "#/$defs/B"}},
        "c": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "when": {"type": "string", "format": "date-time"},
    },
    "required": ["b"],
}
TUPLES_2020 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "prefixItems": [{"type": "integer"}, {"type": "string"}],
    "items": False,
}
PRODUCT_2020 = {  # 2020-12 declared, but every keyword means what it meant in draft 7
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {"money": {"type": "object", "properties": {"amount": {"type": "number", "minimum": 0}}}},
    "type": "object",
    "additionalProperties": False,
    "required": ["b", "price"],
    "properties": {
        "b": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "integer"}}}, "maxItems": 2},
        "price": {"$ref": "#/$defs/money"},
        "c": {"type": "string", "enum": ["a", "b"]},
    },
}
REF_SIBLINGS_2020 = {  # $ref beside other keywords: applied together in 2020-12, ignored in draft 7
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {"n": {"type": "number"}},
    "type": "object",
    "properties": {"v": {"$ref": "#/$defs/n", "maximum": 3}},
}
SAMPLES: list[Any] = [
    {"b": [{"x": 1}], "price": {"amount": 2}},
    {"b": [{"x": 1}], "price": {"amount": -2}},
    {"b": [{"x": 1}, {"x": 2}, {"x": 3}], "price": {}},
    {"b": [], "price": {}, "extra": 1},
    {"b": [], "price": {}, "c": "z"},
    {"v": 5},
    {"v": 2},
    {"v": "x"},
    {"b": [{"x": 1}]},
    {"b": [{"x": "one"}]},
    {"b": []},
    {},
    {"b": [{"x": 1}], "c": 3},
    {"b": [{"x": 1}], "when": "not a date"},
    [1, "a"],
    [1, "a", 2],
    ["a", 1],
    "text",
    None,
]


def _verdict(check: SchemaCheck, schema: dict[str, Any], value: Any) -> str | None:
    return check.problem(Completion(request_id="r", parsed=copy.deepcopy(value)), check.validator(schema))


@pytest.mark.parametrize(
    ("schema", "fast"),
    [(NESTED, True), (TUPLES_2020, False), (PRODUCT_2020, True), (REF_SIBLINGS_2020, False)],
    ids=["draft7-like", "2020-12-keywords", "2020-12-as-draft7", "2020-12-ref-siblings"],
)
def test_fast_path_agrees_with_jsonschema(schema: dict[str, Any], fast: bool) -> None:
    check = SchemaCheck()
    v = check.validator(schema)
    assert (v.fast is not None) == fast  # keywords that changed meaning are left to jsonschema
    reference = SchemaCheck()
    object.__setattr__(reference.validator(schema), "fast", None)
    for value in SAMPLES:
        assert _verdict(check, schema, value) == _verdict(reference, schema, value), value


def test_fast_path_leaves_the_answer_unchanged_and_explains_failures() -> None:
    check = SchemaCheck()
    value = {"b": [{"x": 1}]}
    comp = Completion(request_id="r", parsed=value)
    assert check.problem(comp, check.validator(NESTED)) is None
    assert comp.parsed == {"b": [{"x": 1}]}  # no defaults filled in
    bad = Completion(request_id="r", parsed={"b": [{"x": "one"}]})
    assert check.problem(bad, check.validator(NESTED)) == "at b/0/x: 'one' is not of type 'integer'"


def test_validators_are_shared_by_identity_and_by_content() -> None:
    check = SchemaCheck()
    first = check.validator(NESTED)
    assert check.validator(NESTED) is first
    assert check.validator(copy.deepcopy(NESTED)) is first  # a fresh copy from another process


def test_an_invalid_schema_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="not a valid JSON Schema"):
        SchemaCheck().validator({"type": "no-such-type"})
