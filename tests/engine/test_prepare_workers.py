"""Prepare workers (--prepare-workers): the processor runs in worker processes ahead of the
model. Their inputs are the in-thread inputs bit for bit (real processors, a batch of mixed
image sizes and modes), the captions are the same, and a worker's death is its batch's error,
never a hang or a lost row."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
from PIL import Image

from pixscribe.backends import GenerationRequest, Sampling
from pixscribe.backends.transformers_backend import TransformersBackend
from pixscribe.testing import sample_photo

S = Sampling(max_new_tokens=6)


def _mixed_requests() -> list[GenerationRequest]:
    """Images of different sizes, two in one request, greyscale, RGBA and palette images."""
    astronaut, cat, coffee = sample_photo("astronaut"), sample_photo("chelsea"), sample_photo("coffee")
    return [
        GenerationRequest.simple("Describe the image.", [astronaut], sampling=S),
        GenerationRequest.simple("What is it?", [cat.resize((200, 90))], sampling=S),
        GenerationRequest.simple("Compare the two pictures.", [coffee.resize((90, 260)), cat.convert("L")], sampling=S),
        GenerationRequest.simple("Describe.", [coffee.convert("RGBA").resize((333, 101))], system="Be brief.", sampling=S),
        GenerationRequest.simple("Colours?", [astronaut.resize((64, 48)).convert("P")], sampling=S),
    ]


def _assert_same_inputs(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def pairs(tiny_vlms, tiny_qwen_vlms):
    """Per family: (in-thread backend, backend with one prepare worker)."""
    out = {}
    for family, path in {**tiny_qwen_vlms, "llava": tiny_vlms["llava"]}.items():
        inline = TransformersBackend(str(path), device="cpu", dtype="fp32", prepare_workers=0, max_pixels=65_536)
        pooled = TransformersBackend(str(path), device="cpu", dtype="fp32", prepare_workers=1, max_pixels=65_536)
        out[family] = (inline.load(), pooled.load())
    yield out
    for a, b in out.values():
        a.close()
        b.close()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava"])
def test_worker_inputs_equal_in_thread_inputs(pairs, family):
    inline, pooled = pairs[family]
    assert inline.pool is None and inline.max_inflight_batches == 1
    assert pooled.pool is not None and len(pooled.pool.pids()) == 1 and pooled.max_inflight_batches == 2
    reqs = _mixed_requests()
    done = pooled.pool.batches
    a, b = inline.prepared(reqs), pooled.prepared(reqs)
    assert pooled.pool.batches == done + 1  # it came from the worker
    _assert_same_inputs(a, b)
    if family != "llava":  # dynamic resolution: every image has its own patch grid
        assert len({tuple(g) for g in a["image_grid_thw"].tolist()}) == 6
        assert a["pixel_values"].dtype == torch.float32
    # the worker runs the same processor classes, fast ones where transformers has them
    assert pooled.pool.info == inline.describe()["processor"]
    assert pooled.describe()["processor"]["image_processor_kind"] == "fast (torchvision)"
    text_only = [GenerationRequest.simple("Rewrite: a cat on a mat.", sampling=S),
                 GenerationRequest.simple("Shorter please: a red motorbike.", system="Be brief.", sampling=S)]
    _assert_same_inputs(inline.prepared(text_only), pooled.prepared(text_only))


def test_worker_inputs_in_bf16_equal_in_thread_cast(tiny_qwen_vlms):
    """The worker casts pixel values to the model's dtype itself: the same numbers as the cast here."""
    path = str(tiny_qwen_vlms["qwen2_5_vl"])
    inline = TransformersBackend(path, device="cpu", dtype="bf16", prepare_workers=0, max_pixels=65_536).load()
    pooled = TransformersBackend(path, device="cpu", dtype="bf16", prepare_workers=1, max_pixels=65_536).load()
    try:
        reqs = _mixed_requests()[:3]
        a, b = inline.prepared(reqs), pooled.prepared(reqs)
        assert b["pixel_values"].dtype == torch.bfloat16
        _assert_same_inputs(a, b)
        assert [r.text for r in inline.generate(reqs)] == [r.text for r in pooled.generate(reqs)]
    finally:
        inline.close()
        pooled.close()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_same_texts_and_counts_with_workers(pairs, family):
    inline, pooled = pairs[family]
    reqs = _mixed_requests()
    a, b = inline.generate(reqs), pooled.generate(reqs)
    assert all(r.ok and r.retries == 0 for r in a + b), [r.error for r in a + b]
    assert [r.text for r in a] == [r.text for r in b]
    assert [(r.tokens_in, r.tokens_out, r.truncated) for r in a] == [(r.tokens_in, r.tokens_out, r.truncated) for r in b]
    # max_batch_size chunks: each chunk prepared ahead, same answers
    pooled.max_batch_size = 2
    try:
        assert [r.text for r in pooled.generate(reqs)] == [r.text for r in a]
    finally:
        pooled.max_batch_size = None


def test_bad_image_is_its_rows_error_with_workers(pairs):
    import io

    inline, pooled = pairs["qwen2_5_vl"]
    buf = io.BytesIO()
    sample_photo("coffee").save(buf, "JPEG", quality=90)
    cut = Image.open(io.BytesIO(buf.getvalue()[:1500]))  # the header reads, the pixels fail at load time
    good = _mixed_requests()[:2]
    reqs = [good[0], GenerationRequest.simple("Describe.", [cut], sampling=S), good[1]]
    res = pooled.generate(reqs)
    assert res[1].error.startswith("generate: ") and "truncated" in res[1].error
    assert res[0].ok and res[2].ok and res[0].retries == res[2].retries == 1
    assert [res[0].text, res[2].text] == [r.text for r in inline.generate(good)]
    assert res[1].error == inline.generate(reqs)[1].error  # the same error as in-thread


class _Poison(Image.Image):
    """A valid image that kills the process that unpickles it: a row that kills its worker
    every time (as a decoder crash on one image would)."""

    def __reduce__(self):
        return (os._exit, (3,))


def test_a_row_that_kills_its_worker_is_that_rows_error(pairs):
    inline, pooled = pairs["qwen2_5_vl"]
    poison = Image.new("P", (40, 30))
    poison.__class__ = _Poison
    good = _mixed_requests()[:2]
    restarts = pooled.pool.restarts
    res = pooled.generate([good[0], GenerationRequest.simple("Describe.", [poison], sampling=S), good[1]])
    assert res[1].error.startswith("generate: the prepare worker (pid ") and "(exit status 3)" in res[1].error
    assert res[0].ok and res[2].ok and res[0].retries == 1
    assert [res[0].text, res[2].text] == [r.text for r in inline.generate(good)]
    assert pooled.pool.restarts == restarts + 2  # after the batch, and after the row alone
    assert pooled.generate(good)[0].ok  # and the restarted worker goes on


def test_a_killed_worker_fails_its_batch_which_is_retried(pairs):
    """SIGKILL while the worker holds a batch: the batch fails as a whole (no hang), its rows
    are retried alone on a new worker and succeed."""
    inline, pooled = pairs["llava"]
    (pid,) = pooled.pool.pids()
    reqs = _mixed_requests()[:3]
    os.kill(pid, signal.SIGSTOP)
    got: list = []
    t = threading.Thread(target=lambda: got.extend(pooled.generate(reqs)))
    t.start()
    try:
        deadline = time.monotonic() + 60
        while not pooled.pool._slots[0].busy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pooled.pool._slots[0].busy
    finally:
        os.kill(pid, signal.SIGKILL)
    t.join(timeout=300)
    assert not t.is_alive() and len(got) == 3
    assert all(r.ok and r.retries == 1 for r in got), [r.error for r in got]
    assert [r.text for r in got] == [r.text for r in inline.generate(reqs)]
    assert pooled.pool.pids() and pooled.pool.pids() != [pid]


def test_closing_the_backend_stops_its_workers(tiny_vlms):
    be = TransformersBackend(str(tiny_vlms["llava"]), device="cpu", prepare_workers=2).load()
    pids = be.pool.pids()
    procs = [s.proc for s in be.pool._slots]
    assert len(pids) == 2 and all(p.is_alive() for p in procs)
    be.close()
    assert not any(p.is_alive() for p in procs)
    res = be.generate([_mixed_requests()[0]])  # loads again, with new workers
    assert res[0].ok and be.pool.pids() and set(be.pool.pids()).isdisjoint(pids)
    be.close()


def test_defaults():
    from pixscribe.backends.transformers_backend import default_prepare_workers

    assert default_prepare_workers("cpu") == 0
    assert 1 <= default_prepare_workers("cuda") <= 4
    assert TransformersBackend("x", device="cpu").prepare_workers == 0
    # building one never fails for want of CUDA or torch: load() is where that is told
    assert TransformersBackend("x", device="cuda").prepare_workers == default_prepare_workers("cuda")
    assert TransformersBackend("x", device="cpu", prepare_workers=3).max_inflight_batches == 4
    with pytest.raises(ValueError):
        TransformersBackend("x", prepare_workers=-1)


def test_schema_requests_with_workers(pairs):
    """The JSON-schema path (parse, one stricter retry) runs through the workers too."""
    inline, pooled = pairs["llava"]
    schema = {"type": "object", "properties": {"objects": {"type": "array", "items": {"type": "string"}}},
              "required": ["objects"]}
    req = GenerationRequest.simple("List the objects.", [sample_photo("astronaut")], sampling=S, json_schema=schema)
    done = pooled.pool.batches
    a, b = inline.generate([req])[0], pooled.generate([req])[0]
    # random weights write no JSON: the same error as in-thread, after the same stricter retry
    assert b.error and b.error == a.error and b.retries == a.retries == 1
    assert pooled.pool.batches == done + 2  # the first try and the stricter retry


def test_a_text_model_starts_no_processes(tiny_llm):
    """Tokenizing is cheap: a text model prepares each batch on its own thread, outside the lock."""
    inline = TransformersBackend(str(tiny_llm), device="cpu", prepare_workers=0).load()
    ahead = TransformersBackend(str(tiny_llm), device="cpu", prepare_workers=2).load()
    reqs = [GenerationRequest.simple("Rewrite: a cat on a mat.", sampling=S),
            GenerationRequest.simple("Shorter: a man riding a red motorbike.", system="Be brief.", sampling=S)]
    assert ahead.pool is None and ahead.max_inflight_batches == 3 and ahead.describe()["prepare_workers"] == 0
    _assert_same_inputs(inline.prepared(reqs), ahead.prepared(reqs))
    assert [r.text for r in inline.generate(reqs)] == [r.text for r in ahead.generate(reqs)]


def test_the_engine_prepares_the_next_batch_while_one_generates(pairs, tmp_path, monkeypatch):
    """Through the real engine: the first batch's generate waits until a worker has prepared the
    second batch, which happens only because the engine hands it over while the first generates."""
    from pixscribe.config import RunConfig
    from pixscribe.engine.runner import Runner
    from pixscribe.testing.methods import method_with
    from pixscribe.testing import write_sample_photos

    _, pooled = pairs["qwen2_5_vl"]
    write_sample_photos(tmp_path / "in", ("astronaut", "chelsea", "coffee", "rocket"))
    real, seen = pooled.hf_model.generate, []
    before = pooled.pool.batches

    def generate(**kw):
        if not seen:  # the first batch: wait for the second one's inputs
            deadline = time.monotonic() + 120
            while pooled.pool.batches < before + 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            seen.append(pooled.pool.batches - before)
        return real(**kw)

    monkeypatch.setattr(pooled.hf_model, "generate", generate)
    cfg = RunConfig(inputs=[str(tmp_path / "in")], output=str(tmp_path / "out"), progress=False, batch_size=1,
                    vlm=pooled.model, device="cpu", max_pixels=65_536, max_new_tokens=4)
    s = Runner(cfg, method_with(cfg, pooled)).run()
    assert s.rows_written == 4 and s.error_rows == 0
    assert seen == [2]  # the second batch was prepared before the first one's generate ended
