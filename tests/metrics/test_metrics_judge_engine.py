"""The judged-metric engine (metrics/judge.py): a transcript of every exchange replays a run exactly
and for free (with no model at all), the cache, image hashes in keys, and the transcript's hash."""

import hashlib
import json

import pytest
from PIL import Image

from pixscribe.backends.base import Backend, GenerationRequest, GenerationResult, Sampling
from pixscribe.metrics.judge import (CachedJudge, JudgeCache, ReplayBackend, Transcript, TranscriptError, make_judge,
                                     request_key)


class Counting(Backend):
    """Answers ``"<n>: <last user text>"``; counts what it was asked."""

    name = "counting"

    def __init__(self, model="m1", fail=()):
        super().__init__()
        self.model = model
        self.asked: list[str] = []
        self.fail = set(fail)

    def _generate(self, requests):
        out = []
        for r in requests:
            text = r.messages[-1]["content"][-1]["text"]
            self.asked.append(text)
            out.append(GenerationResult(error="http: 500") if text in self.fail
                       else GenerationResult(text=f"{len(self.asked)}: {text}"))
        return out


def reqs(*texts, images=None):
    return [GenerationRequest.simple(t, images, system="judge this", sampling=Sampling(max_new_tokens=8)) for t in texts]


def test_transcript_replays_exactly_without_a_model(tmp_path):
    b = Counting(fail={"c"})
    j = CachedJudge(b, JudgeCache(tmp_path / "c.sqlite3"))
    first = j.ask(reqs("a", "b", "a", "c"))
    assert [r.text for r in first] == ["1: a", "2: b", "1: a", None] and b.asked == ["a", "b", "c"]
    info = j.write_transcript(tmp_path / "t.jsonl")
    raw = (tmp_path / "t.jsonl").read_bytes()
    assert info == {"path": str(tmp_path / "t.jsonl"), "sha256": hashlib.sha256(raw).hexdigest(), "exchanges": 2}
    lines = [json.loads(x) for x in raw.decode().splitlines()]
    assert lines[0]["judge"] == {"backend": "counting", "model": "m1", "revision": None}
    assert sorted(e["answer"] for e in lines[1:]) == ["1: a", "2: b"]  # the failure is not kept
    assert lines[1]["messages"][0]["content"][0]["text"] == "judge this" and lines[1]["sampling"]["max_new_tokens"] == 8

    replay = make_judge(None, replay=tmp_path / "t.jsonl")  # no model, no cache: the transcript is the judge
    assert isinstance(replay.backend, ReplayBackend) and replay.identity == j.identity
    again = replay.ask(reqs("a", "b", "a", "c"))
    assert [r.text for r in again[:3]] == ["1: a", "2: b", "1: a"]
    assert again[3].error.startswith("replay: this request is not in the transcript")
    assert (replay.replayed, replay.hits, replay.failures) == (3, 0, 1)
    # the replay's own transcript is the same file, byte for byte: the same hash in both reports
    assert replay.write_transcript(tmp_path / "t2.jsonl")["sha256"] == info["sha256"]


def test_replay_goes_before_cache_and_model_and_is_ignored_for_another_judge(tmp_path):
    b = Counting()
    j = CachedJudge(b)
    j.ask(reqs("a"))
    j.write_transcript(tmp_path / "t.jsonl")
    t = Transcript.read(tmp_path / "t.jsonl")
    b2 = Counting()
    j2 = CachedJudge(b2, JudgeCache(tmp_path / "c.sqlite3"), replay=t)
    assert [r.text for r in j2.ask(reqs("a", "new"))] == ["1: a", "1: new"]
    assert b2.asked == ["new"] and (j2.replayed, j2.misses) == (1, 1)
    j2.write_transcript(tmp_path / "t3.jsonl")  # both answers it used, replayed or generated
    assert set(Transcript.read(tmp_path / "t3.jsonl").exchanges) == {request_key(j2.identity, r) for r in reqs("a", "new")}
    other = CachedJudge(Counting(model="m2"), replay=t)  # another model's answers are not this judge's
    other.ask(reqs("a"))
    assert other.replayed == 0 and "is not this judge" in other.describe()["replay_ignored"]


def test_images_are_part_of_the_key(tmp_path):
    red, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    ident = {"backend": "b", "model": "m", "revision": None}
    k_red, k_blue = (request_key(ident, reqs("x", images=[im])[0]) for im in (red, blue))
    assert k_red != k_blue and k_red == request_key(ident, reqs("x", images=[red.copy()])[0])
    assert request_key(ident, reqs("x")[0]) not in (k_red, k_blue)
    j = CachedJudge(Counting())
    j.ask(reqs("x", images=[red]))
    j.write_transcript(tmp_path / "t.jsonl")
    e = list(Transcript.read(tmp_path / "t.jsonl").exchanges.values())[0]
    assert len(e["images"]) == 1 and len(e["images"][0]) == 64  # the hash, not the pixels


def test_bad_transcripts_are_named(tmp_path):
    with pytest.raises(TranscriptError, match="no such file"):
        Transcript.read(tmp_path / "none.jsonl")
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(TranscriptError, match="x.jsonl: not a judge transcript"):
        Transcript.read(tmp_path / "x.jsonl")
    (tmp_path / "y.jsonl").write_text('{"format": "pixscribe-judge-transcript", "judge": {}}\n{"key": "k"}\n')
    with pytest.raises(TranscriptError, match="y.jsonl:2: an exchange needs 'key' and 'answer'"):
        Transcript.read(tmp_path / "y.jsonl")
    with pytest.raises(ValueError, match="needs a judge: --judge MODEL .* or --judge-replay"):
        make_judge(None)
