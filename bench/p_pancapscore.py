"""PancapScore's own cost: 1,000 synthetic caption pairs with 20 entities each, judge scripted.

Each reference has 20 entities (a tag from a 60-noun vocabulary, a box, two attributes,
one relation) and 3 global items; its candidate keeps, renames to a WordNet synonym,
renames to an unrelated noun or drops each entity, jitters boxes and changes some
attributes. The judge is :class:`~pixscribe.testing.scripted_judge.ScriptedJudge`
(extractions known, statements answered by keyword containment), so the figures are the
metric's own work: parsing, real WordNet + MiniLM tag tiers, Hungarian matching,
statement building, answer parsing, and the on-disk cache.

    python bench/p_pancapscore.py [--pairs 1000] [--entities 20] [--seed 0]

Prints the one-time load of WordNet and MiniLM, the scoring time with and without the
SQLite cache, the time spent inside the scripted judge, a rerun answered from the cache,
and the matching alone. The scores themselves are of synthetic data: not a quality result.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from pixscribe.metrics import pancap_prompts as P
from pixscribe.metrics.judge import CachedJudge, JudgeCache
from pixscribe.metrics.pancap_tags import TagMatcher
from pixscribe.metrics.pancapscore import PancapConfig, iou_matrix, match_entities, pancapscore
from pixscribe.metrics.pancap_boxes import render_reference
from pixscribe.testing.scripted_judge import ScriptedJudge

NOUNS = ("dog cat horse bird cow sheep person child car bus truck bicycle boat train plane tree flower grass "
         "rock mountain river road building house window door table chair bench lamp clock cup bottle bowl plate "
         "book phone laptop bag umbrella hat shoe shirt fence sign pole wall floor ceiling cloud sky sun bridge "
         "kite ball box basket mirror pillow").split()
SYNONYMS = {"car": "automobile", "sofa": "couch", "child": "kid", "plane": "airplane", "road": "route",
            "cup": "mug", "bag": "bagful", "rock": "stone", "boat": "gravy boat", "person": "individual",
            "phone": "telephone", "hat": "chapeau", "lamp": "light", "stone": "rock"}
ATTRS = ("red blue green white black yellow wooden metal small large old new shiny wet striped round square "
         "broken tall short bright dark").split()
RELS = ("next to", "behind", "in front of", "above", "below", "left of", "right of", "on", "near")
GLOBALS = ("sunny daylight", "overcast sky", "night scene", "indoor lighting", "warm tones", "soft focus")


def _box(rng: random.Random) -> tuple[float, ...]:
    x, y = rng.uniform(0, 0.8), rng.uniform(0, 0.8)
    return (round(x, 3), round(y, 3), round(min(1, x + rng.uniform(0.05, 0.2)), 3), round(min(1, y + rng.uniform(0.05, 0.2)), 3))


def _jitter(b: tuple[float, ...], rng: random.Random, big: bool) -> tuple[float, ...]:
    d = 0.15 if big else 0.01
    x1, y1 = min(0.99, max(0, b[0] + rng.uniform(-d, d))), min(0.99, max(0, b[1] + rng.uniform(-d, d)))
    return (round(x1, 3), round(y1, 3), round(min(1, max(x1, b[2] + rng.uniform(-d, d))), 3),
            round(min(1, max(y1, b[3] + rng.uniform(-d, d))), 3))


def _render(ents: list[dict], globs: list[str]) -> tuple[str, str]:
    """(caption, the extraction the judge would write for it)."""
    parts, lines = [], []
    for i, e in enumerate(ents, 1):
        rel = f" {e['rel'][0]} the {ents[e['rel'][1]]['tag']}"
        parts.append(f"a {' '.join(e['attrs'])} {e['tag']} {render_reference(e['box'])}{rel}")
        lines += [f"E{i} | tag -->> {e['tag']}", f"E{i} | box -->> {render_reference(e['box'])}"]
        lines += [f"E{i} | attribute -->> {a}" for a in e["attrs"]]
        lines.append(f"E{i} | relation -->> {e['rel'][0]} E{e['rel'][1] + 1}")
    lines += [f"G | global -->> {g}" for g in globs]
    return "; ".join(parts) + ". " + ", ".join(globs) + ".", "\n".join(lines)


def synth(n_pairs: int, n_ent: int, seed: int) -> tuple[dict, dict, dict]:
    rng = random.Random(seed)
    preds, refs, extractions = {}, {}, {}
    for k in range(n_pairs):
        ref = [{"tag": rng.choice(NOUNS + ["sofa"]), "box": _box(rng), "attrs": rng.sample(ATTRS, 2),
                "rel": (rng.choice(RELS), rng.randrange(n_ent))} for _ in range(n_ent)]
        cand = []
        for e in ref:
            r = rng.random()
            tag = (e["tag"] if r < 0.7 else SYNONYMS.get(e["tag"], e["tag"]) if r < 0.8 else rng.choice(NOUNS))
            attrs = [a if rng.random() < 0.8 else rng.choice(ATTRS) for a in e["attrs"]]
            cand.append({"tag": tag, "box": _jitter(e["box"], rng, rng.random() < 0.3), "attrs": attrs, "rel": e["rel"]})
        globs = rng.sample(GLOBALS, 3)
        refs[str(k)], rx = _render(ref, globs)
        preds[str(k)], cx = _render(cand, globs[:2] + [rng.choice(GLOBALS)])
        extractions[refs[str(k)]] = rx
        extractions[preds[str(k)]] = cx
    return preds, refs, extractions


class TimedJudge(ScriptedJudge):
    """The scripted judge, timing its own answering (to subtract it from the metric's cost)."""

    seconds = 0.0

    def _generate(self, requests):
        t = time.perf_counter()
        try:
            return super()._generate(requests)
        finally:
            self.seconds += time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--entities", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    preds, refs, extractions = synth(a.pairs, a.entities, a.seed)
    t = time.perf_counter()
    matcher = TagMatcher.default()
    matcher.tiers(["dog"], ["dog"])
    print(f"load WordNet + MiniLM (once per process): {time.perf_counter() - t:.2f} s")

    judge = TimedJudge(extractions)
    t = time.perf_counter()
    res = pancapscore(preds, refs, CachedJudge(judge), matcher=matcher)
    total = time.perf_counter() - t
    n_req = len(judge.requests)
    n_stmt = sum(sum(v["precision"][1] + v["recall"][1] for k2, v in d.items() if k2 in ("attribute", "relation", "global"))
                 for d in res.details.values())
    print(f"{a.pairs} pairs x {a.entities} entities, no cache: {total:.2f} s total, {judge.seconds:.2f} s inside the "
          f"scripted judge -> metric's own cost {total - judge.seconds:.2f} s "
          f"({1000 * (total - judge.seconds) / a.pairs:.2f} ms/pair); {n_req} judge requests, {n_stmt} statements")

    with tempfile.TemporaryDirectory() as d:
        cache = Path(d) / "judge.sqlite3"
        judge2 = TimedJudge(extractions)
        t = time.perf_counter()
        pancapscore(preds, refs, CachedJudge(judge2, JudgeCache(cache)), matcher=matcher)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        again = CachedJudge(judge2, JudgeCache(cache))
        res2 = pancapscore(preds, refs, again, matcher=matcher)
        warm = time.perf_counter() - t
        size = cache.stat().st_size / 1e6
    assert res2.per_image == res.per_image and again.misses == 0
    print(f"with the SQLite cache: first run {cold:.2f} s ({cold - judge2.seconds:.2f} s without the judge), "
          f"rerun from the cache {warm:.2f} s ({again.hits} answers, 0 generated); cache file {size:.1f} MB")

    xs = [(P.parse_extraction(extractions[preds[k]]), P.parse_extraction(extractions[refs[k]])) for k in preds]
    mats = [(matcher.tiers([e.tag for e in c.entities], [e.tag for e in r.entities]), iou_matrix(c.entities, r.entities))
            for c, r in xs]
    t = time.perf_counter()
    for tiers, ious in mats:
        match_entities(tiers, ious, PancapConfig())
    hung = time.perf_counter() - t
    t = time.perf_counter()
    for c, r in xs:
        matcher.tiers([e.tag for e in c.entities], [e.tag for e in r.entities])
    tiers_s = time.perf_counter() - t
    print(f"matching alone: tag tiers {tiers_s:.2f} s, Hungarian {hung:.3f} s ({1e6 * hung / len(mats):.0f} us per "
          f"{a.entities}x{a.entities} pair)")
    print("corpus (synthetic data, not a quality result): "
          + ", ".join(f"{k} {v:.2f}" for k, v in res.corpus.items()))


if __name__ == "__main__":
    main()
