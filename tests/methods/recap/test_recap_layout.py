"""Several captions of one image are laid out for a prefix cache: every request of an image is
the same image first (no system message), then its own prompt last, so what differs comes at the
end on each backend: the OpenAI-compatible chat messages, vLLM offline's messages and the token
ids a transformers model gets. And the transformers path from the command line: three prompts,
three columns."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pixscribe.backends.base import Backend, GenerationResult
from pixscribe.backends.openai_backend import JpegMemo, encode_image, to_openai_messages
from pixscribe.backends.vllm_backend import to_vllm_messages
from pixscribe.methods.recap.captions import CaptionsStage
from pixscribe.record import Record
from pixscribe.testing import sample_photo, write_sample_photos
from test_e2e_cli import cli

PROMPTS = {"short": "Describe it in one line.", "long": "Describe it in detail.", "tags": "List tags."}


class _Idle(Backend):
    name, model = "idle", "idle"

    def _generate(self, requests):
        return [GenerationResult(text="x") for _ in requests]


def _requests(n: int = 1):
    rec = Record(id="a", source="astronaut.jpg")
    rec.image = sample_photo("astronaut")
    stage = CaptionsStage("recap", _Idle(), {"prompt": "unused", "max_new_tokens": 8, "temperature": 0.7,
                                             "top_p": 1.0}, PROMPTS, n)
    return rec, stage.requests_of(rec)


def test_an_images_requests_share_everything_but_the_last_text():
    rec, reqs = _requests(n=2)
    assert len(reqs) == 6 and all(q.images == [rec.image] and q.images[0] is rec.image for q in reqs)
    memo = JpegMemo(lambda img: encode_image(img, None, None))
    sent = [to_openai_messages(q.messages, q.images, memo) for q in reqs]
    assert memo.encodes == 1  # one JPEG for the image's six requests
    for msgs in sent:
        assert [m["role"] for m in msgs] == ["user"]  # no system message before the image
        parts = msgs[0]["content"]
        assert [p["type"] for p in parts] == ["image_url", "text"] and parts[0] == sent[0][0]["content"][0]
    assert [m[0]["content"][1]["text"] for m in sent] == [p for p in PROMPTS.values() for _ in range(2)]
    offline = [to_vllm_messages(q) for q in reqs]
    for msgs in offline:
        parts = msgs[0]["content"]
        assert [p["type"] for p in parts] == ["image_pil", "text"]
        assert parts[0]["image_pil"].tobytes() == offline[0][0]["content"][0]["image_pil"].tobytes()


def test_transformers_prompts_share_the_image_tokens_and_differ_after(tiny_vlms):
    from pixscribe.backends.transformers_backend import TransformersBackend
    from pixscribe.config import RunConfig

    _, reqs = _requests()
    be = TransformersBackend.from_config(RunConfig(vlm=str(tiny_vlms["llava"]), device="cpu", dtype="fp32"))
    enc = be.encode(reqs)
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(enc["input_ids"], enc["attention_mask"])]
    image_id = be.processor.tokenizer.convert_tokens_to_ids("<image>")
    last_image = max(i for i, t in enumerate(rows[0]) if t == image_id)
    common = 0
    while all(len(r) > common and r[common] == rows[0][common] for r in rows):
        common += 1
    assert common > last_image  # the whole image part is a shared prefix
    assert len({tuple(r[common:]) for r in rows}) == 3  # the prompts differ after it


@pytest.mark.parametrize("family", ["llava"])
def test_three_prompts_on_the_transformers_backend(tiny_vlms, tmp_path, family):
    write_sample_photos(tmp_path / "photos", ("astronaut", "coffee"))
    out = tmp_path / "out"
    cli("caption", str(tmp_path / "photos"), "-o", str(out), "--vlm", str(tiny_vlms[family]), "--device", "cpu",
        "--prompts", ",".join(f"{k}={v}" for k, v in PROMPTS.items()), "--max-new-tokens", "4", "--no-progress")
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 2
    for r in rows:
        assert r["error"] is None and r["re_caption_errors"] is None
        assert all(isinstance(r[f"re_caption_{k}"], str) for k in PROMPTS)
        assert r["caption"] == r["re_caption_short"]
