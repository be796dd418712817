"""TIPCap inputs: corpus readers, the on-disk embedding cache, the offline noun extractor."""

import json

import numpy as np
import pytest

pytest.importorskip("lemminflect")

from pixscribe.methods.tipcap.data import Problems, TrainingInputError, read_texts  # noqa: E402
from pixscribe.methods.tipcap.embed import EmbeddingCache, embed_cached, image_key, text_key  # noqa: E402
from pixscribe.methods.tipcap.nouns import extract_nouns  # noqa: E402


def test_read_texts_txt_jsonl_parquet_and_bad_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.txt").write_text("a cat on a mat\n\n  a dog in the park  \n")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"caption": "a red bus"}) + "\n{not json\n" + json.dumps({"caption": ["two birds", "", 3]}) + "\n"
        + json.dumps({"caption": None}) + "\n" + json.dumps([1, 2]) + "\n")
    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["a boat", None, "a kite"]}), tmp_path / "c.parquet")
    problems = Problems()
    texts = read_texts([tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.parquet"], problems=problems)
    assert texts == ["a cat on a mat", "a dog in the park", "a red bus", "two birds", "a boat", "a kite"]
    msgs = problems.messages
    assert len(msgs) == 4
    assert any("b.jsonl:2: not valid JSON" in m for m in msgs)
    assert any("b.jsonl:4: no text" in m for m in msgs) and any("b.jsonl:5: expected a JSON object" in m for m in msgs)
    assert any("c.parquet#row=1" in m for m in msgs)
    with pytest.raises(TrainingInputError, match="no column 'nope'"):
        read_texts([tmp_path / "c.parquet"], column="nope")
    with pytest.raises(TrainingInputError, match="missing.txt: text corpus file not found"):
        read_texts([tmp_path / "missing.txt"])
    with pytest.raises(TrainingInputError, match="unknown corpus type"):
        (tmp_path / "d.csv").write_text("x")
        read_texts([tmp_path / "d.csv"])


def test_the_caption_length_limit_applies_to_every_corpus_type(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    long = "a very long caption " * 3
    (tmp_path / "a.txt").write_text(f"a cat\n{long}\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"caption": ["a dog", long]}) + "\n")
    pq.write_table(pa.table({"text": ["a boat", long]}), tmp_path / "c.parquet")
    files = [tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.parquet"]
    problems = Problems()
    assert read_texts(files, problems=problems, max_chars=40) == ["a cat", "a dog", "a boat"]
    assert problems.count == 3 and all("over --max-text-chars 40" in m for m in problems.messages)
    assert len(read_texts(files, max_chars=80)) == 6  # a higher limit lets them in


def test_embedding_cache_is_resumable_and_keyed(tmp_path):
    calls = []

    def compute(batch):
        calls.append(list(batch))
        return np.array([[len(t), 1.0] for t in batch], dtype=np.float32)

    texts = [f"caption {i}" * (i + 1) for i in range(7)]
    cache = EmbeddingCache(tmp_path, "text", "fp1")
    out = embed_cached(((text_key(t), t) for t in texts[:5]), compute, cache, batch_size=2)
    assert [len(c) for c in calls] == [2, 2, 1] and len(out) == 5
    assert len(list(cache.dir.glob("part-*.npz"))) == 3 and not list(cache.dir.glob("*.tmp*"))
    # a new process (reopened cache) computes only the two missing texts
    calls.clear()
    again = EmbeddingCache(tmp_path, "text", "fp1")
    out = embed_cached(((text_key(t), t) for t in texts), compute, again, batch_size=4)
    assert calls == [texts[5:]]
    assert np.allclose(out[text_key(texts[6])], [len(texts[6]), 1.0])
    assert len(EmbeddingCache(tmp_path, "text", "fp2")) == 0  # another model: its own cache
    (again.dir / "part-000099.npz").write_bytes(b"garbage")  # a corrupt part is ignored, not fatal
    assert len(EmbeddingCache(tmp_path, "text", "fp1")) == 7
    assert image_key("k1", "/a.jpg") != image_key("k1", "/b.jpg") != image_key(None, "/b.jpg")


@pytest.mark.parametrize("caption,nouns", [
    ("A man riding a red motorcycle down the street.", ["man", "motorcycle", "street"]),
    ("Two dogs playing in the green grass near a fire hydrant", ["dog", "grass", "fire hydrant"]),
    ("a teddy bear sitting on a bed", ["teddy bear", "bed"]),
    ("a woman holding a frisbee in a park", ["woman", "frisbee", "park"]),
    ("a black and white photo of a person holding a camera", ["person", "camera"]),
    ("a man stands next to his bike", ["man", "bike"]),
    ("the sky is clear and the sun is bright", ["sky", "sun"]),
    ("a cup of coffee on a saucer next to a spoon", ["cup", "coffee", "saucer", "spoon"]),
    ("", []),
])
def test_extract_nouns(caption, nouns):
    assert extract_nouns(caption) == nouns


def test_extract_nouns_is_deterministic_and_deduplicated():
    cap = "a dog chasing another dog and two dogs near a dog house"
    assert extract_nouns(cap) == extract_nouns(cap) == ["dog", "dog house"]


def test_a_jsonl_line_over_the_bound_is_skipped_unread(tmp_path, monkeypatch):
    import pixscribe.methods.tipcap.data as D

    monkeypatch.setattr(D, "MAX_JSONL_LINE", 64)
    big = json.dumps({"caption": "x" * 200})
    (tmp_path / "b.jsonl").write_text(json.dumps({"caption": "a dog"}) + "\n" + big + "\n" + json.dumps({"caption": "a cat"}))
    problems = Problems()
    assert read_texts([tmp_path / "b.jsonl"], problems=problems) == ["a dog", "a cat"]
    assert problems.messages == [f"{tmp_path / 'b.jsonl'}:2: a line of {len(big) + 1} bytes is over the limit of 64 "
                                 "bytes (a jsonl row of a text corpus)"]
