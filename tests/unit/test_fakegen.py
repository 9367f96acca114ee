"""fakegen: determinism across processes, schema validity over many seeds, embedding geometry."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from synth.fakegen import (
    estimate_tokens,
    fake_embedding,
    fake_instance,
    fake_text,
    fake_tool_call,
    material,
    prompt_tokens,
    rng_for,
)

SEEDS = range(150)


class Color(str, enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    street: str = Field(min_length=3, max_length=40)
    zip_code: str = Field(max_length=5)
    country: Literal["NL", "DE", "FR"] = "NL"


class Person(BaseModel):
    name: str
    age: int = Field(ge=0, le=120)
    score: float = Field(gt=0, lt=1)
    email: str | None = None
    id: uuid.UUID
    born: dt.date
    seen: dt.datetime
    favourite: Color
    tags: list[str] = Field(min_length=1, max_length=4)
    address: Address
    previous: list[Address] = Field(default_factory=list, max_length=2)
    extra: dict[str, int] = Field(default_factory=dict)
    pair: tuple[int, str]
    nickname: str | None = None


class Ledger(BaseModel):
    amount: Decimal
    level: Literal[1, 2, 3]
    labels: set[str]
    by_name: dict[str, Address]
    history: list[Address] | None = None
    ratio: float = Field(default=0.5, multiple_of=0.25, ge=0, le=1)
    count: int = Field(default=0, gt=-10, lt=-2)


class Tree(BaseModel):
    label: str
    children: list[Tree] = Field(default_factory=list)
    parent: Tree | None = None


HAND_WRITTEN = [
    {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": 5, "maximum": 5}},
        "required": ["a"],
        "additionalProperties": False,
    },
    {
        "type": "array",
        "items": {"type": "string", "enum": ["x", "y", "z"]},
        "minItems": 2,
        "maxItems": 3,
        "uniqueItems": True,
    },
    {"type": ["string", "null"], "minLength": 10, "maxLength": 12},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.01},
    {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "number",
        "minimum": 1,
        "exclusiveMaximum": True,
        "maximum": 2,
    },
    {"type": "integer", "multipleOf": 7, "minimum": 1, "maximum": 100},
    {"type": "string", "format": "email", "maxLength": 60},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "uri"},
    {"const": "fixed"},
    {
        "oneOf": [
            {"type": "object", "properties": {"kind": {"const": "a"}}, "required": ["kind"]},
            {
                "type": "object",
                "properties": {"kind": {"const": "b"}, "n": {"type": "integer"}},
                "required": ["kind", "n"],
            },
        ]
    },
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
        ]
    },
    {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "null"}}, "minProperties": 2},
    {"type": "object", "properties": {"x": {}}, "required": ["x"]},
    {
        "definitions": {"n": {"type": "integer", "minimum": -3, "maximum": -1}},
        "type": "array",
        "items": {"$ref": "#/definitions/n"},
        "minItems": 1,
    },
    {"type": "string", "minLength": 200},
    {"type": "string", "maxLength": 1},
]

PYDANTIC = [
    Person.model_json_schema(),
    Tree.model_json_schema(),
    Address.model_json_schema(),
    Ledger.model_json_schema(),
]


@pytest.mark.parametrize("schema", HAND_WRITTEN + PYDANTIC)
def test_instances_are_valid_over_many_seeds(schema: dict) -> None:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    outputs = set()
    for seed in SEEDS:
        inst = fake_instance(schema, rng_for(f"seed-{seed}"))
        errors = list(validator.iter_errors(inst))
        assert not errors, (seed, inst, errors[0].message)
        outputs.add(json.dumps(inst, sort_keys=True))
    if "const" not in schema and schema.get("properties", {}).get("a", {}).get("maximum") != 5:
        assert len(outputs) > 1  # not a constant answer


def test_pydantic_models_accept_their_own_fake_instances() -> None:
    optional_seen = {"email": 0, "nickname": 0}
    nested_depths = []
    person, ledger, tree = (m.model_json_schema() for m in (Person, Ledger, Tree))
    for seed in SEEDS:
        p = Person.model_validate(fake_instance(person, rng_for(str(seed))))
        assert isinstance(p.favourite, Color) and 1 <= len(p.tags) <= 4
        optional_seen["email"] += p.email is not None
        optional_seen["nickname"] += p.nickname is not None
        Ledger.model_validate(fake_instance(ledger, rng_for(str(seed))))
        t = Tree.model_validate(fake_instance(tree, rng_for(str(seed))))
        depth, node = 0, t
        while node.children:
            depth, node = depth + 1, node.children[0]
        nested_depths.append(depth)
    # optional fields: sometimes present, sometimes absent (about 70% present)
    assert 0 < optional_seen["email"] < len(SEEDS)
    assert 0 < optional_seen["nickname"] < len(SEEDS)
    # recursive models recurse, and terminate
    assert max(nested_depths) >= 2


def test_outputs_are_deterministic_across_processes() -> None:
    schema = Person.model_json_schema()
    code = (
        "import json,sys; from synth.fakegen import *; s=json.loads(sys.argv[1]); r=rng_for(material('m', s, 7));"
        "print(json.dumps([fake_instance(s, r), fake_text(r), fake_embedding('hello world', 16)]))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code, json.dumps(schema)], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    r = rng_for(material("m", schema, 7))
    here = json.dumps([fake_instance(schema, r), fake_text(r), fake_embedding("hello world", 16)])
    assert runs == {here + "\n"}


def test_material_ignores_key_order_and_distinguishes_values() -> None:
    assert material({"a": 1, "b": 2}, [1]) == material({"b": 2, "a": 1}, [1])
    assert material({"a": 1}) != material({"a": 2})
    assert rng_for("x").random() == rng_for("x").random() != rng_for("y").random()


def test_token_estimates() -> None:
    assert estimate_tokens("") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    msgs = [
        {"role": "system", "content": "x" * 40},
        {"role": "user", "content": [{"type": "text", "text": "y" * 8}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "z" * 12}}],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "2", "name": "f", "arguments": "z" * 4}]},
    ]
    assert prompt_tokens(msgs) == (10 + 4) + (2 + 4) + (1 + 4 + 3) + (1 + 4 + 1)


def test_fake_text_bounds_and_shape() -> None:
    rng = rng_for("text")
    for _ in range(200):
        t = fake_text(rng, min_words=5, max_words=30)
        assert 5 <= len(t.split()) <= 30
        assert t[0].isupper() and t.endswith(".")
    assert fake_text(rng, min_words=0, max_words=0) == ""


def test_fake_tool_call_args_match_parameters() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                    "required": ["city", "unit"],
                    "additionalProperties": False,
                },
            },
        },
        {"type": "function", "function": {"name": "noop"}},
    ]
    names = set()
    for seed in range(40):
        name, args = fake_tool_call(tools, rng_for(str(seed)))
        names.add(name)
        fn = next(t["function"] for t in tools if t["function"]["name"] == name)
        jsonschema.validate(json.loads(args), fn.get("parameters", {"type": "object"}))
    assert names == {"get_weather", "noop"}
    with pytest.raises(ValueError):
        fake_tool_call([], rng_for("x"))


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def test_embeddings_are_normalised_deterministic_and_meaningful() -> None:
    v = fake_embedding("The cat sat on the mat", 64)
    assert len(v) == 64 and math.isclose(math.sqrt(_cos(v, v)), 1.0, rel_tol=1e-9)
    assert v == fake_embedding("The cat sat on the mat", 64)
    assert len(fake_embedding("", 8)) == 8
    query = fake_embedding("solar panel efficiency in winter", 64)
    near = fake_embedding("winter efficiency of a solar panel roof", 64)
    far = fake_embedding("recipe for chocolate cake with cherries", 64)
    assert _cos(query, near) > 0.5 > _cos(query, far)
    assert _cos(fake_embedding("a b c"), fake_embedding("a b c d")) < 1.0


def test_unsupported_schemas_fail_clearly() -> None:
    with pytest.raises(ValueError, match="type"):
        fake_instance({"type": "tuple"}, rng_for("x"))
    with pytest.raises(ValueError, match="local"):
        fake_instance({"$ref": "http://example.com/s.json"}, rng_for("x"))
