"""Structured output helpers: request fields per server, parse/repair/validate, the
one-stricter-retry policy (with a scripted backend; the HTTP path is in
test_openai_backend.py)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest
from pydantic import BaseModel

from pixscribe.backends.base import GenerationRequest, GenerationResult, Sampling
from pixscribe.backends.structured import (
    SchemaError,
    agenerate_one_with_schema,
    check_reply,
    example_for,
    generate_with_schema,
    parse_json,
    request_fields,
    response_format,
    schema_of,
    stricter_request,
    validate,
)


class Region(BaseModel):
    label: str
    box: list[float]


class Regions(BaseModel):
    regions: list[Region]
    count: int


SCHEMA = schema_of(Regions)


def test_request_fields_per_server():
    rf = request_fields(SCHEMA)
    assert rf == {"response_format": {"type": "json_schema", "json_schema": {"name": "Regions", "schema": SCHEMA, "strict": True}}}
    assert request_fields(SCHEMA, "sglang") == rf
    assert request_fields(SCHEMA, "vllm") == {"structured_outputs": {"json": SCHEMA}}
    with pytest.raises(ValueError, match="vLLM >= 0.12 ignores guided_json.*response_format"):
        request_fields(SCHEMA, "vllm-legacy")  # removed: real vLLM >= 0.12 answers it unconstrained
    assert request_fields(SCHEMA, "none") == {} and request_fields(None) == {}
    with pytest.raises(ValueError, match="response_format"):
        request_fields(SCHEMA, "tgi")
    assert response_format({"type": "object", "title": "my schema!"})["json_schema"]["name"] == "my_schema"


def test_parse_json_repairs_common_breakage():
    assert parse_json('{"a": 1}') == ({"a": 1}, False)
    assert parse_json('```json\n{"a": 1}\n```') == ({"a": 1}, False)
    assert parse_json("{'a': 1, 'b': [1, 2,],}") == ({"a": 1, "b": [1, 2]}, True)
    assert parse_json('{"a": "unterminated') == ({"a": "unterminated"}, True)
    with pytest.raises(SchemaError, match="could not be repaired"):
        parse_json("Sure, here is the caption you wanted.")


@pytest.mark.parametrize("depth", [600, 5000])
def test_replies_json_repair_cannot_read_are_schema_errors(depth):
    """json-repair raises on deep nesting ("Input nesting exceeds the supported parser recursion
    depth" near 600 levels; json itself past ~1000): a schema error, never an exception."""
    with pytest.raises(SchemaError, match="not JSON|not valid JSON"):
        parse_json("[" * depth)


def test_a_repair_never_turns_an_object_into_a_list():
    """vLLM 0.32's cut extraction reply: json-repair reads it as the list ["objects"]."""
    with pytest.raises(SchemaError, match="json-repair read list from a reply that opens '{'"):
        parse_json('{"objects"' + "\n" * 10)


def test_cut_replies_are_truncated_errors_never_repaired():
    schema = {"type": "object", "properties": {"objects": {"type": "array", "items": {"type": "string"}}},
              "required": ["objects"]}
    cut_json, cut_prose = '{"objects": ["cat", "do', "Sure! The objects are a cat and a"
    complete = '{"objects": ["cat"]}'
    run = ScriptedRun([cut_json, cut_prose, complete, "[" * 600], [cut_prose, '{"objects": ["x"]}'])
    cut = {0, 1, 2}  # the first three replies come back cut at the limit (finish_reason=length)
    real = run.__call__

    def call(requests):
        out = real(requests)
        for i, r in enumerate(out):
            r.truncated = len(run.calls) == 1 and i in cut or len(run.calls) == 2 and i == 0
        return out

    reqs = [GenerationRequest.simple(f"q{i}", json_schema=schema, sampling=Sampling(max_new_tokens=8))
            for i in range(4)]
    res = generate_with_schema(reqs, call)
    assert res[0].error.startswith("truncated: the reply was cut at max_new_tokens=8 (finish_reason=length) before "
                                   "its JSON was complete") and res[0].parsed is None and res[0].retries == 0
    # prose cut at the limit gets the stricter retry first; cut again, it is a truncated error
    assert res[1].error.startswith("truncated: ") and "not JSON" in res[1].error and res[1].retries == 1
    assert res[2].ok and res[2].parsed == {"objects": ["cat"]}  # complete JSON as it stands counts
    assert res[3].ok and res[3].parsed == {"objects": ["x"]} and res[3].retries == 1  # json-repair raised: stricter
    assert len(run.calls[1]) == 2 and all(STRICT in r.messages[0]["content"][0]["text"] for r in run.calls[1])


STRICT = "Reply with one JSON value only"


def test_validate_with_schema_and_pydantic_model():
    good = {"regions": [{"label": "cat", "box": [0, 0, 1, 1]}], "count": 1}
    assert validate(good, SCHEMA) == good
    assert validate(good, SCHEMA, Regions) == {"regions": [{"label": "cat", "box": [0.0, 0.0, 1.0, 1.0]}], "count": 1}
    with pytest.raises(SchemaError, match="count"):
        validate({"regions": []}, SCHEMA)
    with pytest.raises(SchemaError, match=r"regions\[0\]\.box|box"):
        validate({"regions": [{"label": "cat", "box": "wide"}], "count": 1}, SCHEMA)
    assert check_reply("{'regions': [], 'count': 0,}", SCHEMA) == ({"regions": [], "count": 0}, True)


def test_builtin_validator_when_jsonschema_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    s = {"type": "object", "properties": {"n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}}},
         "required": ["n"], "additionalProperties": False}
    assert validate({"n": 2, "tags": ["a"]}, s) == {"n": 2, "tags": ["a"]}
    for bad, why in [({}, "required"), ({"n": True}, "integer"), ({"n": 1, "x": 0}, "unexpected"), ({"n": 1, "tags": [3]}, "string")]:
        with pytest.raises(SchemaError, match=why):
            validate(bad, s)


def test_stricter_request_spells_out_schema_at_temperature_zero():
    req = GenerationRequest.simple("List regions.", system="You are terse.", json_schema=SCHEMA,
                                   sampling=Sampling(temperature=0.9, top_p=0.8, max_new_tokens=50))
    strict = stricter_request(req, "count is a required property")
    assert strict.sampling.temperature == 0.0 and strict.sampling.top_p == 1.0 and strict.sampling.max_new_tokens == 50
    sys_parts = strict.messages[0]["content"]
    assert sys_parts[0]["text"] == "You are terse."
    assert json.dumps(SCHEMA, sort_keys=True) in sys_parts[-1]["text"] and "count is a required" in sys_parts[-1]["text"]
    assert len(req.messages[0]["content"]) == 1 and req.sampling.temperature == 0.9  # original untouched
    plain = stricter_request(GenerationRequest.simple("x", json_schema=SCHEMA))
    assert plain.messages[0]["role"] == "system" and plain.messages[1]["role"] == "user"


class ScriptedRun:
    """A fake batch backend replying from a script, recording what it was asked."""

    def __init__(self, *rounds: list[str | None]):
        self.rounds = list(rounds)
        self.calls: list[list[GenerationRequest]] = []

    def __call__(self, requests):
        self.calls.append(requests)
        replies = self.rounds.pop(0)
        assert len(replies) == len(requests)
        return [GenerationResult(text=t, tokens_in=10, tokens_out=5) if t is not None else GenerationResult(error="model: boom")
                for t in replies]


def test_generate_with_schema_repairs_retries_once_then_fails():
    good = json.dumps({"regions": [], "count": 0})
    run = ScriptedRun(
        [good, "{'regions': [], 'count': 3,}", '{"wrong": 1}', "no json here", None],
        [good, '{"still": "wrong"}'],
    )
    requests = [GenerationRequest.simple(f"q{i}", json_schema=SCHEMA, sampling=Sampling(temperature=0.5)) for i in range(5)]
    res = generate_with_schema(requests, run, Regions)
    assert len(run.calls) == 2 and len(run.calls[1]) == 2  # only the two bad replies are retried
    assert all(r.sampling.temperature == 0.0 for r in run.calls[1])
    assert res[0].parsed == {"regions": [], "count": 0} and res[0].retries == 0
    assert res[1].parsed == {"regions": [], "count": 3} and json.loads(res[1].text) == res[1].parsed
    assert res[2].ok and res[2].retries == 1 and res[2].tokens_in == 20
    assert res[3].error.startswith("schema: ") and "stricter retry" in res[3].error and res[3].retries == 1
    assert res[4].error == "model: boom"  # a model error is not a schema problem: not retried


def test_async_one_request_policy():
    calls = []

    async def run(req):
        calls.append(req)
        return GenerationResult(text='{"wrong": 1}' if len(calls) == 1 else '{"regions": [], "count": 1}')

    res = asyncio.run(agenerate_one_with_schema(GenerationRequest.simple("q", json_schema=SCHEMA), run))
    assert res.parsed == {"regions": [], "count": 1} and res.retries == 1 and len(calls) == 2


def test_example_for_is_valid_for_its_schema():
    for s in (SCHEMA, {"type": "object", "properties": {"e": {"enum": ["a", "b"]}, "s": {"type": "string", "minLength": 3}}},
              {"type": "array", "items": {"type": "integer"}, "minItems": 2}):
        assert validate(example_for(s), s) is not None


def test_a_schema_is_checked_once_not_on_every_reply(monkeypatch):
    import jsonschema

    from pixscribe.backends import structured

    s = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "title": "once"}
    checks = []
    real = jsonschema.Draft202012Validator.check_schema
    monkeypatch.setattr(jsonschema.Draft202012Validator, "check_schema",
                        classmethod(lambda cls, sc: (checks.append(1), real.__func__(cls, sc))[1]))
    structured._validator.cache_clear()
    for n in range(5):
        assert validate({"n": n}, s) == {"n": n}
    with pytest.raises(SchemaError, match=r"\$\.n: 'x' is not of type 'integer'"):
        validate({"n": "x"}, s)
    assert len(checks) == 1
    with pytest.raises(SchemaError, match="JSON schema is itself invalid"):
        validate({"n": 1}, {"type": "object", "properties": {"n": {"type": 12}}})
