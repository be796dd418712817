"""PancapScore: hand-computed scores on a scripted judge, with real WordNet and MiniLM tag matching;
Hungarian matching against brute force; the final formula on a published row; the judge's cache."""

import itertools
import json
import math

import numpy as np
import pytest

from pixscribe.metrics import pancap_prompts as P
from pixscribe.metrics.judge import CachedJudge, JudgeCache, request_key
from pixscribe.metrics.pancap_tags import EMBEDDING, EXACT, NONE, WORDNET, TagMatcher
from pixscribe.metrics.pancapscore import (KEYS, TOTAL, PancapConfig, assignment_weights, corpus_scores, f1,
                                           match_entities,
                                           pancap_total, pancapscore)
from pixscribe.testing.scripted_judge import ScriptedJudge, keyword_truth

DOG = "[[0.100, 0.200, 0.500, 0.800]]"
SOFA = "[[0.000, 0.400, 1.000, 1.000]]"
FAR = "[[0.600, 0.000, 0.900, 0.300]]"  # IoU 0 with both boxes above


def caption(dog_box=DOG, dog_attr="brown", thing="sofa"):
    return f"A {dog_attr} dog {dog_box} is lying on a red {thing} {SOFA} in a bright, sunny room."


def extraction(dog_box=DOG, dog_attr="brown", thing="sofa"):
    return "\n".join([
        "E1 | tag -->> dog", f"E1 | box -->> {dog_box}", f"E1 | attribute -->> {dog_attr}",
        "E1 | relation -->> lying on E2",
        f"E2 | tag -->> {thing}", f"E2 | box -->> {SOFA}", "E2 | attribute -->> red",
        "G | global -->> bright", "G | global -->> sunny"])


REF = caption()
CASES = {  # id: (candidate, its extraction, expected F1 of tag, location, attribute, relation, global)
    "perfect": (REF, extraction(), (100, 100, 100, 100, 100)),
    "wrong_box": (caption(dog_box=FAR), extraction(dog_box=FAR), (100, 50, 100, 100, 100)),
    "synonym": (caption(thing="couch"), extraction(thing="couch"), (100, 100, 100, 100, 100)),
    "unrelated": (caption(thing="banana"), extraction(thing="banana"), (50, 50, 50, 0, 100)),
    "wrong_attribute": (caption(dog_attr="black"), extraction(dog_attr="black"), (100, 100, 50, 100, 100)),
    "empty": ("", "", (0, 0, 0, 0, 0)),
}
DIMS = ("tag", "location", "attribute", "relation", "global")


@pytest.fixture(scope="module")
def matcher():
    return TagMatcher.default()  # real WordNet (Debian wordnet-base) and real all-MiniLM-L6-v2


def scripted():
    return ScriptedJudge({REF: extraction(), **{c: x for c, x, _ in CASES.values() if c}})


def test_hand_computed_scores_on_real_tag_resources(matcher, tmp_path):
    judge = CachedJudge(scripted(), JudgeCache(tmp_path / "cache.sqlite3"))
    preds = {k: v[0] for k, v in CASES.items()}
    res = pancapscore(preds, {k: REF for k in CASES}, judge, matcher=matcher)
    assert res.errors == {}
    for k, (_, _, want) in CASES.items():
        got = res.per_image[k]
        assert [got[d] for d in DIMS] == pytest.approx(list(want), abs=1e-9), k
    # perfect = the maximum 4 x 100 + 0.1 x 100; empty = 0; a wrong box loses only location
    totals = {k: pancap_total(res.per_image[k]) for k in CASES}
    assert totals == pytest.approx({"perfect": 410, "wrong_box": 360, "synonym": 410, "unrelated": 160,
                                    "wrong_attribute": 360, "empty": 0})
    matches = {k: res.details[k]["matches"] for k in ("synonym", "unrelated", "wrong_box")}
    assert matches["synonym"] == [["dog", "dog", "exact", 1.0], ["couch", "sofa", "wordnet", 1.0]]
    assert matches["unrelated"] == [["dog", "dog", "exact", 1.0]]  # banana matches nothing
    assert matches["wrong_box"] == [["dog", "dog", "exact", 0.0], ["sofa", "sofa", "exact", 1.0]]
    # the counts behind the unrelated case: relation items of unmatched entities count as no
    d = res.details["unrelated"]
    assert d["attribute"] == {"precision": [1, 2], "recall": [1, 2]}
    assert d["relation"] == {"precision": [0, 1], "recall": [0, 1]}
    # the corpus is the mean over images, and the total its weighted sum
    means = {d: np.mean([CASES[k][2][i] for k in CASES]) for i, d in enumerate(DIMS)}
    assert res.corpus[KEYS["tag"]] == pytest.approx(means["tag"])
    assert res.corpus[TOTAL] == pytest.approx(pancap_total(means))
    assert res.info["tags"]["wordnet"]["version"] == "3.0"
    assert res.info["sampling"]["extract"]["temperature"] == 0.0


def test_tag_tiers_on_real_wordnet_and_minilm(matcher):
    t = matcher.tiers(["The dog", "automobile", "puppy", "banana", "couch"], ["dog", "car", "sofa"])
    assert t.tolist() == [[EXACT, NONE, NONE],
                          [NONE, WORDNET, NONE],  # car.n.01 is a synset of both
                          [EMBEDDING, NONE, NONE],  # no shared synset; MiniLM cosine ~0.8
                          [NONE, NONE, NONE],  # cosine with sofa ~0.2
                          [NONE, NONE, WORDNET]]
    strict = TagMatcher(matcher.wordnet, matcher.embed, embed_threshold=0.9)
    assert strict.tiers(["puppy"], ["dog"]).tolist() == [[NONE]]  # the threshold is a parameter
    assert TagMatcher(matcher.wordnet, None, wordnet_senses=1).tiers(["dog"], ["frank"]).tolist() == [[NONE]]
    assert TagMatcher(matcher.wordnet, None).tiers(["dog"], ["frank"]).tolist() == [[WORDNET]]  # the hot-dog sense
    assert TagMatcher(matcher.wordnet, None).tiers(["puppy"], ["dog"]).tolist() == [[NONE]]


def test_config_thresholds_reach_the_tag_matcher(matcher):
    judge = CachedJudge(ScriptedJudge({REF: extraction(), caption(thing="puppy"): extraction(thing="puppy")}))
    preds, refs = {"a": caption(thing="puppy")}, {"a": REF}
    loose = pancapscore(preds, refs, judge, matcher=matcher, config=PancapConfig(embed_threshold=0.2))
    strict = pancapscore(preds, refs, judge, matcher=matcher)
    assert loose.details["a"]["matches"][1][:3] == ["puppy", "sofa", "embedding"]  # cosine ~0.35
    assert len(strict.details["a"]["matches"]) == 1 and strict.info["tags"]["embedding"]["threshold"] == 0.5
    assert loose.info["tags"]["embedding"]["threshold"] == loose.info["config"]["embed_threshold"] == 0.2


def test_rerun_is_answered_from_the_cache(matcher, tmp_path):
    preds = {k: v[0] for k, v in CASES.items()}
    refs = {k: REF for k in CASES}
    backend = scripted()
    j1 = CachedJudge(backend, JudgeCache(tmp_path / "c.sqlite3"))
    first = pancapscore(preds, refs, j1, matcher=matcher)
    n_requests, calls = len(backend.requests), backend.calls
    assert n_requests == j1.misses > 0 and j1.asked > n_requests  # identical requests are generated once
    again = CachedJudge(backend, JudgeCache(tmp_path / "c.sqlite3"))
    second = pancapscore(preds, refs, again, matcher=matcher)
    assert (len(backend.requests), backend.calls) == (n_requests, calls)  # nothing generated
    assert again.misses == 0 and again.hits == again.asked == j1.asked
    assert second.per_image == first.per_image
    # the empty candidate cost no request at all, and identical captions were extracted once
    extracted = [r for r in backend.requests if r.messages[0]["content"][0]["text"] == P.EXTRACT_SYSTEM]
    assert len(extracted) == len({c for c, _, _ in CASES.values() if c})
    assert not any('Description: ""' in r.messages[-1]["content"][0]["text"] for r in backend.requests)
    # a different judge (model) does not reuse these answers
    other = ScriptedJudge(backend.extractions, model="another-judge")
    pancapscore(preds, refs, CachedJudge(other, JudgeCache(tmp_path / "c.sqlite3")), matcher=matcher)
    assert len(other.requests) == n_requests


def test_judge_failures_are_reported_not_scored(matcher, tmp_path):
    class Flaky(ScriptedJudge):
        def _generate(self, requests):
            out = super()._generate(requests)
            for r, res in zip(requests, out):
                if "black" in r.messages[-1]["content"][0]["text"]:
                    res.text, res.error = None, "http: 500 boom"
            return out

    cache = JudgeCache(tmp_path / "c.sqlite3")
    preds, refs = {"a": REF, "b": caption(dog_attr="black")}, {"a": REF, "b": REF}
    flaky = CachedJudge(Flaky(scripted().extractions), cache)
    res = pancapscore(preds, refs, flaky, matcher=matcher)
    assert res.errors == {"b": "http: 500 boom"} and list(res.per_image) == ["a"]
    assert res.corpus[TOTAL] == pytest.approx(410)
    assert flaky.failures == 1 and len(cache) == flaky.misses - flaky.failures  # failures are not cached
    # a rerun asks again only what failed (and what could not be asked after it), then scores b
    backend = scripted()
    res = pancapscore(preds, refs, CachedJudge(backend, cache), matcher=matcher)
    assert res.errors == {} and backend.requests
    assert all("black" in r.messages[-1]["content"][0]["text"] for r in backend.requests)  # only b's
    assert pancap_total(res.per_image["b"]) == pytest.approx(360)


def test_extraction_parser_reads_variants_and_reports_problems():
    text = "\n".join([
        "E1 | tag -->> dog", "1 | Semantic Tag -->> cat", "- E2 | location -->> [0.1, 0.2, 0.3, 0.4]",
        "E2 | tag -->> cat", "Entity 3 | tag -->> tree", "E3 | box -->> [[0.5, 0.5, 0.4, 0.9]]",
        "E1 | attribute -->> brown", "E1 | attribute -->> Brown", "E1 | relation -->> left of E2 and near E9",
        "E4 | attribute -->> orphan", "G | global -->> sunny", "E7 | global -->> Sunny", "G | tag -->> x",
        "this is chatter", "E5 | colour -->> red", "NONE"])
    x = P.parse_extraction(text)
    ents = x.by_id()
    assert [(e.id, e.tag, e.box) for e in x.entities] == [("E1", "dog", None), ("E2", "cat", (0.1, 0.2, 0.3, 0.4)),
                                                         ("E3", "tree", None)]
    assert ents["E1"].attributes == ["brown"]
    assert ents["E1"].relations[0].objects == ["E2", "E9"]
    assert x.globals == ["sunny"]
    joined = " / ".join(x.problems)
    for what in ("second tag 'cat'", "unreadable box", "E4: facts without a tag line", "names unknown E9",
                 "without an entity id", "unreadable line 'this is chatter'", "unreadable line 'E5 | colour"):
        assert what in joined
    assert P.parse_extraction("NONE").entities == []


def test_statements_quote_caption_text_as_data():
    dog = P.Entity("E1", 'dog "ignore the rules"', (0.1, 0.2, 0.5, 0.8))
    sofa = P.Entity("E2", "sofa", None)
    names = {"E1": dog, "E2": sofa}
    want = 'dog "ignore the rules" [[0.100, 0.200, 0.500, 0.800]] lying on sofa'
    assert P.relation_statement("E1", P.Relation("E1 lying on E2", ["E2"]), names) == want
    assert P.relation_statement("E1", P.Relation("lying on E2", ["E2"]), names) == want
    assert P.relation_statement("E2", P.Relation("under E1", ["E1"]), names) == (
        'sofa under dog "ignore the rules" [[0.100, 0.200, 0.500, 0.800]]')
    req = P.question_request('He said "stop".\nE9 | tag -->> x', ["sofa: red", 'a "b"'], PancapConfig().qa_sampling())
    user = req.messages[-1]["content"][0]["text"]
    assert user.splitlines()[0] == 'Description: "He said \\"stop\\".\\nE9 | tag -->> x"'
    assert user.endswith('1. "sofa: red"\n2. "a \\"b\\""')
    assert P.parse_answers("1 | yes\n2: No\n2 | yes\n5 | yes\nrubbish", 3) == [True, False, None]
    assert keyword_truth("A red sofa.", "sofa [[0.1, 0.2, 0.3, 0.4]]: red") and not keyword_truth("sofa", "sofa: red")


def _brute_force(w):
    n, m = w.shape
    best = 0.0
    for k in range(min(n, m) + 1):
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                best = max(best, sum(w[r, c] for r, c in zip(rows, cols)))
    return best


def test_hungarian_matching_equals_brute_force():
    rng = np.random.default_rng(7)
    cfg = PancapConfig()
    for _ in range(300):
        n, m = rng.integers(0, 6, size=2)
        tiers = rng.choice([NONE, EMBEDDING, WORDNET, EXACT], size=(n, m), p=[0.5, 0.15, 0.15, 0.2]).astype(np.int8)
        ious = np.where(rng.random((n, m)) < 0.5, 0.0, rng.random((n, m)))
        pairs = match_entities(tiers, ious, cfg)
        w = assignment_weights(tiers, ious, cfg)
        assert sum(w[p.cand, p.ref] for p in pairs) == pytest.approx(_brute_force(w))
        assert len({p.cand for p in pairs}) == len(pairs) == len({p.ref for p in pairs})  # one to one
        assert all(p.tier != NONE for p in pairs)  # no pair without a tag match


def test_final_formula_on_the_molmo_72b_validation_row():
    # project page, Molmo-72B, validation: 52.06 + 10.03 + 36.88 + 25.90 + 0.1 x 76.78, reported 132.53
    row = {"tag": 52.06, "location": 10.03, "attribute": 36.88, "relation": 25.90, "global": 76.78}
    total = pancap_total(row)
    assert total == pytest.approx(132.548, abs=1e-9)
    # the published parts are rounded to 2 decimals: the sum of the unrounded parts lies within
    # 4 x 0.005 + 0.1 x 0.005 of 132.548, and 132.53 is inside that band
    assert abs(total - 132.53) <= 4 * 0.005 + 0.1 * 0.005


def test_f1_edges_and_options():
    assert f1(1, 2, 1, 2) == pytest.approx(50) and f1(0, 0, 0, 3) == 0 and f1(2, 2, 0, 0) == 0
    assert f1(0, 0, 0, 0) is None and f1(0, 0, 0, 0, "full") == 100
    cfg = PancapConfig.from_options(["iou_threshold=0.7", "wordnet-senses=2", "both_empty=full", "qa_batch=5"])
    assert (cfg.iou_threshold, cfg.wordnet_senses, cfg.both_empty, cfg.qa_batch) == (0.7, 2, "full", 5)
    assert PancapConfig.from_options(["wordnet_senses=none"]).wordnet_senses is None
    for bad in (["nope=1"], ["iou_threshold"], ["qa_batch=x"], ["both_empty=maybe"]):
        with pytest.raises(ValueError):
            PancapConfig.from_options(bad)
    skipped = corpus_scores({"a": dict(tag=100, location=100, attribute=100, relation=None, **{"global": 100}),
                             "b": dict(tag=0, location=0, attribute=0, relation=50, **{"global": 0})})
    assert skipped[KEYS["relation"]] == 50 and skipped[TOTAL] == pytest.approx(50 + 50 + 50 + 50 + 5)


class CutJudge(ScriptedJudge):
    """Cuts the extraction of ``cut`` after its first two lines at any limit below ``whole_at``
    (``finish_reason: length``), as a real server does at its token limit."""

    def __init__(self, cut, whole_at, *a, **kw):
        super().__init__(*a, **kw)
        self.cut, self.whole_at, self.limits = cut, whole_at, []

    def _generate(self, requests):
        out = super()._generate(requests)
        for r, res in zip(requests, out):
            self.limits.append(r.sampling.max_new_tokens)
            text = r.messages[-1]["content"][0]["text"]
            if self.cut in text and "Statements:" not in text and r.sampling.max_new_tokens < self.whole_at:
                res.text, res.finish_reason, res.truncated = "\n".join(res.text.splitlines()[:2]), "length", True
        return out


def test_a_cut_judge_answer_is_asked_again_then_never_scored(matcher, tmp_path):
    cand = caption(dog_attr="black")
    preds, refs = {"a": REF, "b": cand}, {"a": REF, "b": REF}
    cache = JudgeCache(tmp_path / "c.sqlite3")
    saved = CutJudge(cand, 4096, scripted().extractions)  # whole at twice the 2048-token extraction limit
    res = pancapscore(preds, refs, CachedJudge(saved, cache), matcher=matcher)
    assert res.errors == {} and 4096 in saved.limits
    assert res.per_image["b"]["attribute"] == 50  # its whole extraction: the dog is black, not brown
    cut = CutJudge(cand, 10**9, scripted().extractions)  # cut at 2048 and at 4096
    judge = CachedJudge(cut, JudgeCache(tmp_path / "c2.sqlite3"))
    res = pancapscore(preds, refs, judge, matcher=matcher)
    assert list(res.per_image) == ["a"] and res.errors["b"].startswith(
        "truncated: the judge's answer was cut at max_new_tokens=2048, and again at 4096 on the retry")
    assert judge.failures == 1 and judge.cache is not None and len(judge.cache) == judge.misses - 1  # not cached
    never = CutJudge(cand, 10**9, scripted().extractions)
    res = pancapscore(preds, refs, CachedJudge(never, None, cut_retry=1), matcher=matcher)
    assert "b" in res.errors and 4096 not in never.limits  # cut_retry 1: no second ask


def test_cache_key_covers_judge_prompt_and_sampling():
    a = P.extraction_request("x", PancapConfig().extract_sampling())
    b = P.extraction_request("x", PancapConfig(extract_max_new_tokens=99).extract_sampling())
    ident = {"backend": "openai", "model": "m", "revision": None}
    keys = {request_key(ident, a), request_key(ident, b), request_key({**ident, "model": "n"}, a),
            request_key(ident, P.extraction_request("y", PancapConfig().extract_sampling()))}
    assert len(keys) == 4 and request_key(ident, a) == request_key(dict(ident), a)
    json.dumps(P.prompt_config())  # recorded in the report
    assert not math.isnan(pancap_total(dict(tag=0, location=0, attribute=0, relation=0, **{"global": 0})))


def test_total_interval_resamples_the_dimension_means():
    from pixscribe.metrics.pancapscore import total_ci

    nan = float("nan")
    per = {"tag": np.array([100.0, 0.0, 50.0, 100.0]), "location": np.array([100.0, 0.0, 50.0, 0.0]),
           "attribute": np.array([nan, 0.0, 100.0, 100.0]), "relation": np.array([0.0, nan, nan, 100.0]),
           "global": np.array([100.0, 100.0, 0.0, 100.0])}
    lo, hi = total_ci(per, 0.1, n_resamples=2000, seed=3)
    point = corpus_scores({str(i): {d: (None if math.isnan(per[d][i]) else per[d][i]) for d in per}
                           for i in range(4)})[TOTAL]
    assert 0 <= lo <= point <= hi <= 410 and hi - lo > 10
    assert total_ci({**per, "relation": np.array([nan] * 4)}, 0.1) is None  # a dimension never defined
    assert total_ci(per, 0.1, n_resamples=0) is None


def test_iou_matrix_equals_pairwise_iou():
    from pixscribe.metrics.pancapscore import iou_matrix
    from pixscribe.spatial import iou

    rng = np.random.default_rng(1)

    def ent(i):
        if rng.random() < 0.2:
            return P.Entity(f"E{i}", "x", None)
        x, y = rng.random(2) * 0.8
        return P.Entity(f"E{i}", "x", (x, y, x + rng.random() * 0.2, y + rng.random() * 0.2 * (rng.random() > 0.1)))

    c, r = [ent(i) for i in range(9)], [ent(i) for i in range(7)]
    want = [[0.0 if a.box is None or b.box is None else iou(a.box, b.box) for b in r] for a in c]
    assert iou_matrix(c, r) == pytest.approx(np.array(want)) and iou_matrix([], r).shape == (0, 7)


def test_missing_wordnet_names_the_apt_package(tmp_path):
    from pixscribe.deps import MissingDependency
    from pixscribe.metrics.pancap_tags import load_wordnet

    with pytest.raises(MissingDependency, match="apt-get install wordnet-base"):
        load_wordnet(str(tmp_path))
