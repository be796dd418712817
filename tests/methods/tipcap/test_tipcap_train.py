"""TIPCap training and captioning on a tiny CLIP and a tiny GPT-2 (real architectures, built locally)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fixtures_tipcap import ANIMALS, WORLD, tiny_config

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _head(out):
    from safetensors.torch import load_file

    return load_file(str(out / "tipcap.safetensors"))


def test_loss_falls_and_the_model_directory_is_complete(tipcap_trained):
    rep = json.loads((tipcap_trained / "training.json").read_text())
    curve = [loss for _, loss in rep["training"]["curve"]]
    assert len(curve) == 150
    assert np.mean(curve[-10:]) < 0.5 * np.mean(curve[:10])
    assert rep["data"]["corpus_texts"] == len(WORLD) == rep["data"]["train_texts"]
    assert rep["settings"]["noise"] == "isotropic" and rep["settings"]["steps"] == 150
    assert rep["settings"]["lm"].endswith("gpt2") and rep["fingerprint"]
    assert rep["gap"]["estimated"]["method"] == "prior" and rep["gap"]["used"]["isotropic_sigma"] == pytest.approx(1.0)
    assert rep["training"]["nouns"]["texts_with_nouns"] == len(WORLD)
    for f in ("tipcap.json", "tipcap.safetensors", "gap.safetensors", "lm/model.safetensors", "lm/config.json",
              "checkpoint/model.safetensors", "checkpoint/optimizer.safetensors", "checkpoint/state.json"):
        assert (tipcap_trained / f).is_file(), f
    pickles = [p for p in tipcap_trained.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
    assert pickles == []


def test_prompt_changes_the_caption_and_no_prompt_is_a_no_op(tipcap_trained):
    from pixscribe.testing import sample_photos
    from pixscribe.methods.tipcap.captioner import TipCapCaptioner

    cap = TipCapCaptioner.load(tipcap_trained)
    images = list(sample_photos(("chelsea", "rocket")).values())
    emb = cap.embed(images)
    by_animal = {a: cap.caption_embeddings(emb, [[a, "grass"]] * 2) for a in ANIMALS}
    assert len({c for cs in by_animal.values() for c in cs}) >= 3  # the prompt steers the caption
    assert sum(all(a in c for c in cs) for a, cs in by_animal.items()) >= 2  # ...to the prompted object
    plain = cap.caption_embeddings(emb)
    assert plain == cap.caption_embeddings(emb, [None, None]) == cap.caption_embeddings(emb, [[], ""])
    # the no-op path: rows without a prompt get exactly the mapping network's prefix
    x = cap.model.gap.invert(torch.as_tensor(emb))
    pre = cap.model.mapper(x)
    ids, mask = cap.codec.prompts([["dog"], None])
    mixed = cap.model.prefix(x, ids, mask)
    assert torch.equal(mixed[1], pre[1]) and not torch.allclose(mixed[0], pre[0])
    assert torch.equal(cap.model.prompt(pre, None), pre)
    beams = TipCapCaptioner.load(tipcap_trained, num_beams=3).caption(images)
    assert len(beams) == 2 and all(isinstance(c, str) and c for c in beams)
    assert cap.timings["images"] > 0 and cap.timings["generation"] > 0 and cap.timings["clip"] > 0
    with pytest.raises(ValueError, match="prompts for 2 images"):
        cap.caption_embeddings(emb, [None])


def test_checkpoint_resumes_to_the_same_step_and_weights(tipcap_tiny, tmp_path):
    from pixscribe.methods.tipcap.train import TrainingMismatch, train

    kw = dict(noise="full", setting="4")  # learned covariance under the KL regulariser
    straight = train(tiny_config(tipcap_tiny, tmp_path / "a", steps=12, **kw))
    first = train(tiny_config(tipcap_tiny, tmp_path / "b", steps=6, **kw))
    assert first["training"]["steps"] == 6
    resumed = train(tiny_config(tipcap_tiny, tmp_path / "b", steps=12, **kw))
    assert resumed["training"]["start_step"] == 6 and resumed["training"]["steps"] == 12
    flat = [v for pt in resumed["training"]["curve"] for v in pt]
    assert flat == pytest.approx([v for pt in straight["training"]["curve"] for v in pt], rel=1e-5)
    a, b = _head(tmp_path / "a"), _head(tmp_path / "b")
    assert a.keys() == b.keys() and "gap.chol_diag" in a
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert straight["gap"]["used"]["learned"] and straight["gap"]["used"]["kl_to_prior"] > 0
    again = train(tiny_config(tipcap_tiny, tmp_path / "b", steps=12, **kw))  # already done: nothing to run
    assert again["training"]["start_step"] == 12
    with pytest.raises(TrainingMismatch, match="other settings"):
        train(tiny_config(tipcap_tiny, tmp_path / "b", steps=12, lr=1e-4, **kw))


def _pairs_table(tmp_path):
    from pixscribe.testing import write_sample_photos

    photos = write_sample_photos(tmp_path / "photos", names=("chelsea", "coffee", "rocket", "astronaut"))
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    rows = [{"path": str(p), "caption": [f"a photo of a {p.stem}", f"the {p.stem}"]} for p in photos]
    rows += [{"path": str(tmp_path / "photos" / "broken.jpg"), "caption": "a broken file"},
             {"path": str(photos[0]), "caption": ""}]
    table = tmp_path / "pairs.jsonl"
    table.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return table, tmp_path / "photos"


def test_paired_and_unpaired_settings_estimate_the_gap_from_real_photos(tipcap_tiny, tmp_path):
    from pixscribe.methods.tipcap.train import train

    table, photos = _pairs_table(tmp_path)
    rep = train(tiny_config(tipcap_tiny, tmp_path / "s1", steps=3, setting="1", pairs=[str(table)]))
    assert rep["gap"]["estimated"]["method"] == "paired"
    assert rep["data"]["pairs"] == 8 and rep["data"]["pair_images"] == 4
    assert rep["data"]["train_texts"] == len(WORLD) + 8
    assert rep["gap"]["estimated"]["cov_eig_min"] > 0 and rep["gap"]["estimated"]["shrinkage"] is not None
    skipped = " | ".join(rep["skipped"]["first"])
    assert rep["skipped"]["count"] == 2 and "broken.jpg" in skipped and "no caption" in skipped
    parts = sorted((tmp_path / "s1" / "_cache").glob("image-*/part-*.npz"))
    assert parts
    rep = train(tiny_config(tipcap_tiny, tmp_path / "s1", steps=5, setting="1", pairs=[str(table)]))
    assert sorted((tmp_path / "s1" / "_cache").glob("image-*/part-*.npz")) == parts  # cached: no image re-embedded
    assert rep["training"]["start_step"] == 3

    rep = train(tiny_config(tipcap_tiny, tmp_path / "s3", steps=3, setting="unpaired", images=[str(photos)]))
    assert rep["gap"]["estimated"]["method"] == "moments" and rep["data"]["unpaired_images"] == 4
    assert rep["skipped"]["count"] == 1 and "broken.jpg" in rep["skipped"]["first"][0]
    rep = train(tiny_config(tipcap_tiny, tmp_path / "s2", steps=3, setting="web", pairs=[str(table)]))
    assert rep["gap"]["used"]["learned"] and rep["gap"]["estimated"]["method"] == "paired"


def _cli(*args, cwd):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pixscribe.cli", "tipcap", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_trains_and_reports_bad_inputs(tipcap_tiny, tmp_path):
    base = ["--text", str(tipcap_tiny["corpus"]), "--clip", str(tipcap_tiny["clip"]), "--lm", str(tipcap_tiny["gpt2"]),
            "--lr", "3e-3", "--batch-size", "8", "--no-progress"]
    r = _cli("-o", str(tmp_path / "m"), "--steps", "3", "--noise", "isotropic", *base, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "trained 3 steps" in r.stderr
    rep = json.loads((tmp_path / "m" / "training.json").read_text())
    assert rep["settings"]["noise"] == "isotropic" and rep["settings"]["setting"] == "text"
    r = _cli("-o", str(tmp_path / "m2"), "--text", str(tmp_path / "missing.txt"), "--clip", "x", cwd=tmp_path)
    assert r.returncode == 2 and "missing.txt" in r.stderr and "not found" in r.stderr
    r = _cli("-o", str(tmp_path / "m3"), "--setting", "1", *base, cwd=tmp_path)
    assert r.returncode == 2 and "needs image-caption pairs" in r.stderr


def test_ctrl_c_checkpoints_the_current_step_and_a_rerun_resumes(tipcap_tiny, tmp_path, monkeypatch):
    import pixscribe.methods.tipcap.train as T
    from pixscribe.methods.tipcap.checkpoint import find_checkpoint, read_state

    real = T._step_loss

    def interrupted(model, codec, cfg, data, nouns, idx, step):
        if step == 4:
            raise KeyboardInterrupt
        return real(model, codec, cfg, data, nouns, idx, step)

    monkeypatch.setattr(T, "_step_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        T.train(tiny_config(tipcap_tiny, tmp_path / "m", steps=8))
    assert read_state(find_checkpoint(tmp_path / "m"))["step"] == 4
    assert not (tmp_path / "m" / "tipcap.json").exists()  # nothing exported from a half run
    monkeypatch.undo()
    rep = T.train(tiny_config(tipcap_tiny, tmp_path / "m", steps=8))
    assert rep["training"]["start_step"] == 4 and rep["training"]["steps"] == 8
    assert [s for s, _ in rep["training"]["curve"]] == list(range(1, 9))
