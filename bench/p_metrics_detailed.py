"""The judge-free detailed-caption metrics against their reference code, side by side in one run:
AMBER (generative) and CAPTURE (scoring from frozen parses) on N captions (default 5,000).

The references are not part of pixscribe: point at their checkouts, and run in an environment
where they import (spaCy with a pipeline named en_core_web_lg for AMBER; CAPTURE's package
and FactualSceneGraph). docs/metrics.md says how the checks here were set up.

    python bench/p_metrics_detailed.py --amber-ref AMBER --capture-ref CAPTURE/capture [--n 5000] [--seed 0]

Both sides get the same parts: nltk's perceptron tagger from NLTK_DATA, the spaCy pipeline
en_core_web_lg (pixscribe: ``SpacySimilarity``), all-MiniLM-L6-v2 as CAPTURE's encoder (on the
CPU; the reference's own would need CUDA). Data: seeded synthetic responses over the test
fixture's AMBER words (tests/data/amber/data, ids cycling over its 7 descriptions), and
seeded synthetic parses over a 300-word vocabulary. Prints seconds, the ratio, and whether
the numbers are equal (CAPTURE: max abs difference).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AMBER_DATA = ROOT / "tests" / "data" / "amber" / "data"
FILLER = "the a of on in with and near under behind is are two some small large bright dark old".split()


def amber_responses(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rel = json.loads((AMBER_DATA / "relation.json").read_text())
    words = sorted(set(rel) | {w for v in rel.values() for w in v}) + ["table", "kite", "bottle", "sky"]
    out = []
    for i in range(n):
        ws = [rng.choice(words) if rng.random() < 0.3 else rng.choice(FILLER) for _ in range(rng.randint(30, 70))]
        text = " ".join(ws)
        out.append({"id": 1 + i % 7, "response": ". ".join(s.capitalize() for s in text.split(" and ")) + "."})
    return out


def bench_amber(ref_dir: Path, n: int, seed: int) -> None:
    from pixscribe.metrics.amber import AmberData, amber
    from pixscribe.metrics.amber_text import NounExtractor, SpacySimilarity

    responses = amber_responses(n, seed)
    with tempfile.TemporaryDirectory() as tmp:
        resp = Path(tmp) / "responses.json"
        resp.write_text(json.dumps(responses))
        sys.path.insert(0, str(ref_dir))
        import inference  # AMBER's inference.py: loads en_core_web_lg at import

        inference.args = Namespace(word_association=str(AMBER_DATA / "relation.json"),
                                   safe_words=str(AMBER_DATA / "safe_words.txt"), inference_data=str(resp),
                                   annotation=str(AMBER_DATA / "annotations.json"),
                                   metrics=str(ref_dir / "data" / "metrics.txt"), similarity_score=0.8,
                                   evaluation_type="g")
        out = io.StringIO()
        t = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            inference.main(inference.args)
        t_ref = time.perf_counter() - t
    ref = {k.strip(":"): float(v) for k, v in (line.split() for line in out.getvalue().splitlines()
                                                if line.split() and line.split()[0] in ("CHAIR:", "Cover:", "Hal:", "Cog:"))}
    t = time.perf_counter()
    res = amber(responses, AmberData.load(AMBER_DATA), NounExtractor(), SpacySimilarity("en_core_web_lg"),
                evaluation_type="g")
    t_own = time.perf_counter() - t
    own = {"CHAIR": res.corpus["amber_chair"], "Cover": res.corpus["amber_cover"], "Hal": res.corpus["amber_hal"],
           "Cog": res.corpus["amber_cog"]}
    print(f"AMBER    {n} responses: reference {t_ref:.2f} s, pixscribe {t_own:.2f} s, {t_ref / t_own:.1f}x; "
          f"equal: {own == ref} ({own})")


def capture_parses(n: int, seed: int) -> tuple[dict, dict]:
    rng = random.Random(seed)
    nouns = [f"{a}{b}" for a in ("car", "tree", "dog", "cup", "house", "road", "sky", "man", "boat", "lamp")
             for b in ("", "s", " light", " table", " door")][:40] + ["automobile", "puppy", "mug", "building", "person"]
    adjs = ["red", "blue", "green", "small", "large", "old", "wooden", "bright", "dark", "shiny", "white", "tall"]
    rels = ["on", "near", "under", "behind", "next to", "holding", "in front of", "above"]

    def parse() -> dict:
        objs = rng.sample(nouns, rng.randint(3, 8))
        return {"objects": objs, "attributes": {o: rng.sample(adjs, rng.randint(0, 2)) for o in objs},
                "relations": [[rng.choice(objs), rng.choice(rels), rng.choice(objs)] for _ in range(rng.randint(1, 4))]}

    return {str(i): parse() for i in range(n)}, {str(i): [parse()] for i in range(n)}


def bench_capture(ref_dir: Path, n: int, seed: int) -> None:
    from pixscribe.metrics.capture import FIELDS, Parse, capture, sentence_encoder

    cands_json, refs_json = capture_parses(n, seed)
    sys.path.insert(0, str(ref_dir))
    import capture_metric.capture as C
    from sentence_transformers import SentenceTransformer

    from pixscribe.metrics.pancap_tags import minilm_path

    class CPU:
        def __init__(self, name: str):
            self.m = SentenceTransformer(minilm_path(), device="cpu", local_files_only=True)

        def to(self, device):
            return self

        def eval(self):
            return self

        def encode(self, *a, **k):
            return self.m.encode(*a, show_progress_bar=False, **k)

    C.SentenceTransformer = CPU
    C.mean = lambda xs: sum(float(x) for x in xs) / len(xs)  # its statistics.mean fails on float32 + float

    def conv(p):
        return (list(p["objects"]), {k: list(v) for k, v in p["attributes"].items()}, [tuple(r) for r in p["relations"]])

    ev = C.CAPTURE()
    ev.text_encoder.encode(["warm up"])
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        score, scores = ev.compute_score({k: [""] for k in refs_json}, {k: [""] for k in cands_json},
                                         prev_gt_parsed={k: [conv(p) for p in v] for k, v in refs_json.items()},
                                         prev_cand_parsed={k: [conv(v)] for k, v in cands_json.items()})
    t_ref = time.perf_counter() - t
    encode = sentence_encoder("minilm")
    encode(["warm up"])
    t = time.perf_counter()
    res = capture({k: Parse.from_json(v, k) for k, v in cands_json.items()},
                  {k: [Parse.from_json(x, k) for x in v] for k, v in refs_json.items()}, encode=encode)
    t_own = time.perf_counter() - t
    diff = max(abs(res.per_image[k]["capture"] - float(s)) for k, s in zip(refs_json, scores))
    print(f"CAPTURE  {n} captions: reference {t_ref:.2f} s, pixscribe {t_own:.2f} s, {t_ref / t_own:.1f}x; "
          f"corpus {res.score:.6f} vs {float(score):.6f}, max abs difference per image {diff:.1e}"
          f" ({len(FIELDS)} sub-scores each)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--amber-ref", type=Path, required=True, help="a checkout of junyangwang0410/AMBER")
    ap.add_argument("--capture-ref", type=Path, required=True, help="CAPTURE's capture/ folder (capture_metric)")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--capture-n", type=int, default=None, help="CAPTURE's count if not --n (its reference encodes "
                    "per image: hours for 5,000 on a loaded CPU)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    bench_amber(a.amber_ref, a.n, a.seed)
    bench_capture(a.capture_ref, a.capture_n or a.n, a.seed)


if __name__ == "__main__":
    main()
