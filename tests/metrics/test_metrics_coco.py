"""Tokenizer and BLEU/ROUGE-L/CIDEr-D against pycocoevalcap (Java PTBTokenizer included)."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fixtures_metrics import varied_captions, varied_sets
from pixscribe.metrics.coco import _lcs, _popcount, coco_scores
from pixscribe.metrics.tokenize import PUNCTUATIONS, ptb_tokenize, ptb_tokenize_line

pce = pytest.importorskip("pycocoevalcap")
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java is needed for pycocoevalcap's PTBTokenizer")

EXTRA = [
    "A man's dog (brown) isn't \"happy\" -- really... colour centre theatre.",
    "It costs $3.50, about 1,000 people; 3.5% of them e-mail me!",
    "Don't can't won't I'm we'll they're y'all gonna cannot 'tis",
    "Café naïve résumé — the em-dash – en-dash 😀 emoji “curly” ‘single’ …",
    "Two-year-old well-known U.S.A. Mr. Smith vs. Dr. Who etc. 1/2 ½ a*b & &amp; {braces} [square]",
    "WORD ALL CAPS. Ünïcödé İstanbul ß",
    "it's 5 o'clock 'quoted' ``tex'' 90's '90s rock'n'roll",
    "#hashtag @user http://example.com/x?y=1 www.foo.org 10:30 3:2 12-3 1990s",
    "© ® ° × € £ ¥ ¢ § ¶ • ™ ← → ★ ♥ ✓ ~ ^ | = + _ # @ * / < >",
    "and/or a/b x+y 2+2=4 c++ 100°C 5×3 €20 £5 20€ 3rd 1st 2nd",
    "---- --- - – — ― .... . . . ?! !? ?? ... .. ;; ::",
    "don’t dog’s ‘hi’ l'amour d'or y'know c'mon ma'am dogs' kids' 'em 'til '90s 'tis 'twas lemme gimme wanna gotta",
    "i.e. e.g. a.m. p.m. Inc. Co. St. Jr. No. 5 U.K. A. B. x. Ok. Mt. Everest Ave. ft. lb. oz. approx. 3",
    "Ph.D. USA. A.B.C Dr.Who end.Start word.word 3.a a.3 .5 0.5. 5.",
    "He said \"hi\" and \"bye\". (\"quoted\") \"(x)\" '(y)' I'm 'I'm' O'Neil O'Brien d'Artagnan",
    "ÀÉÎÕÜ ĀĒĪŌŪ Ωμέγα Привет 日本語 한국어 العربية עברית हिन्दी ǅ",
    "a man on a bike with a.",
    "A dog",
    "two cats near a b.",
    "The end",
]


def _java_raw(lines: list[str], tmp_path: Path) -> list[str]:
    """The raw PTBTokenizer output, run exactly as pycocoevalcap runs it."""
    jar = Path(pce.__path__[0]) / "tokenizer" / "stanford-corenlp-3.4.1.jar"
    f = tmp_path / "in.txt"
    f.write_text("\n".join(lines), encoding="utf-8")
    out = subprocess.run(["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines",
                          "-lowerCase", str(f)], capture_output=True, check=True).stdout.decode()
    return out.split("\n")


def _assert_equal_to_pycocoevalcap(gts, res, corpus, per):
    """Our corpus and per-image BLEU-1..4 / ROUGE-L / CIDEr-D equal pycocoevalcap's on the same tokens."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    b, bl = Bleu(4).compute_score(gts, res, verbose=0)
    r, rl = Rouge().compute_score(gts, res)
    c, cl = Cider().compute_score(gts, res)
    for k in range(4):
        assert corpus[f"bleu_{k + 1}"] == pytest.approx(b[k], abs=1e-6)
        np.testing.assert_allclose(per[f"bleu_{k + 1}"], bl[k], atol=1e-6)
    assert corpus["rouge_l"] == pytest.approx(r, abs=1e-6)
    np.testing.assert_allclose(per["rouge_l"], rl, atol=1e-6)
    assert corpus["cider_d"] == pytest.approx(c, abs=1e-6)
    np.testing.assert_allclose(per["cider_d"], cl, atol=1e-6)


@needs_java
def test_tokenizer_equals_pycocoevalcap_ptbtokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    caps = varied_captions(400, seed=11) + EXTRA
    data = {str(i // 3): [] for i in range(len(caps))}
    for i, c in enumerate(caps):
        data[str(i // 3)].append({"caption": c})
    ref = PTBTokenizer().tokenize(data)
    mine = ptb_tokenize(data)
    assert mine == ref


@needs_java
def test_raw_tokens_match_java_token_for_token(tmp_path):
    """Raw token streams (before punctuation removal) agree, except the documented boundary:
    CoreNLP sometimes emits an extra sentence-final '.' after an abbreviation, depending on
    the next line; '.' is removed by pycocoevalcap, so the final output is unaffected."""
    lines = varied_captions(300, seed=5) + EXTRA
    java = _java_raw(lines, tmp_path)
    exact = 0
    for k, (line, j) in enumerate(zip(lines, java)):
        mine = ptb_tokenize_line(line, follow=lines[k + 1] if k + 1 < len(lines) else "")
        jt = j.rstrip().split(" ") if j.strip() else []
        if mine == jt:
            exact += 1
        else:
            assert [t for t in mine if t != "."] == [t for t in jt if t != "."], (line, mine, jt)
    assert exact >= 0.95 * len(lines)  # measured: 309 of 320 exact; the rest differ only in "."


def test_tokenizer_rules_without_java():
    t = lambda s: " ".join(x for x in ptb_tokenize_line(s) if x not in PUNCTUATIONS)  # noqa: E731
    assert t("A man's dog isn't (brown).") == "a man 's dog is n't -lrb- brown -rrb-"
    assert t("1,000 people paid $3.50, 50% of it") == "1,000 people paid $ 3.50 50 % of it"
    assert t("Don't gonna cannot can't won't") == "do n't gon na can not ca n't wo n't"
    assert t("a well-known 3-year-old's e-mail") == "a well-known 3-year-old 's e-mail"
    assert t("Café “naïve” — ok… 😀") == "café naïve ok"
    assert t("the U.S. team and Mr. Smith vs. Dr. Who") == "the u.s. team and mr. smith vs. dr. who"
    assert t("½ rock'n'roll o'clock") == "1/2 rock 'n' roll o'clock"


def test_lcs_bitparallel_matches_dp():
    import random

    rng = random.Random(0)

    def dp(a, b):
        L = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                L[i][j] = L[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(L[i - 1][j], L[i][j - 1])
        return L[-1][-1]

    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 12))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 12))]
        assert _lcs(a, b) == dp(a, b)


def test_popcount_fallback():
    v = np.array([0, 1, 3, 2**63, 2**64 - 1, 0x0F0F], dtype=np.uint64)
    want = [0, 1, 2, 1, 64, 8]
    assert _popcount(v).tolist() == want
    assert _popcount(v, builtin=False).tolist() == want


@needs_java
@pytest.mark.parametrize("seed,n_refs", [(0, 5), (1, 3), (2, 1)])
def test_scores_equal_pycocoevalcap(seed, n_refs):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    gts, res = varied_sets(250, n_refs, seed=seed)
    res["0"] = [""]  # an empty prediction
    gts["1"] = gts["1"][:1] + ["!!!"]  # a reference that tokenizes to almost nothing
    G = {k: [{"caption": c} for c in v] for k, v in gts.items()}
    R = {k: [{"caption": c} for c in v] for k, v in res.items()}
    tg, tr = PTBTokenizer().tokenize(G), PTBTokenizer().tokenize(R)
    corpus, per, ids = coco_scores(ptb_tokenize(G), ptb_tokenize(R))
    assert ids == list(tg.keys())
    _assert_equal_to_pycocoevalcap(tg, tr, corpus, per)
    assert corpus["cider_d"] > 0.05 and corpus["bleu_1"] > 0.1  # non-trivial numbers were compared


def test_identical_caption_scores_and_order_sensitivity():
    gts = {"a": ["a dog runs on the grass", "a brown dog running"], "b": ["two cats sleep on a sofa", "cats on a couch"]}
    same = {"a": ["a dog runs on the grass"], "b": ["two cats sleep on a sofa"]}
    worse = {"a": ["grass the on runs dog a"], "b": ["sofa a on sleep cats two"]}
    c1, _, _ = coco_scores(gts, same)
    c2, _, _ = coco_scores(gts, worse)
    assert c1["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert c1["rouge_l"] == pytest.approx(1.0)
    assert c2["bleu_1"] == pytest.approx(1.0, abs=1e-6) and c2["bleu_4"] < 1e-3
    assert c1["cider_d"] > c2["cider_d"]
    with pytest.raises(ValueError, match="same image ids"):
        coco_scores(gts, {"a": ["x"]})


_FRAGMENTS = [
    "a", "A", "dog", "The", "It", "x", "I", "y", "5", "3.", "3.5", "3.5.", "1,000", "1,000,", ".5", "0.5.", "+5", "2+2",
    "-3", "a.", "x.", "A.", "I.", "No.", "no.", "Nos.", "nos", "Mr.", "mr.", "St.", "etc.", "vs.", "Inc.", "U.S.",
    "u.s.a.", "a.m.", "p.m.", "Ph.D.", "e.g.", "i.e.,", "word.", "word,", "word,.", "word!", "word?!", "word;",
    "word:", "word...", "word..", "word....", ".", "..", "...", "....", ". .", ". . .", "-", "--", "---", "e-mail",
    "e-mail.", "3-year-old", "10-20", "a-b-c.", "x-a.", "and/or", "1/2", "10:30", "(x)", "(x).", "(a).", "[b]", "{c},",
    '"quoted"', '"q".', "'q'", "``tex''", "`", "'", "''", "isn't", "isn't.", "don't", "can't.", "y'all", "y's.", "y't.",
    "dog's", "dog's.", "dogs'", "'s", "'s.", "'t.", "ca't.", "'tis", "'twas", "o'clock.", "ma'am", "'90s", "90's",
    "rock'n'roll", "'n'", "'em", "gonna", "gonna,", "Cannot.", "wanna.", "lemme", "c++", "f#", "#tag", "@user",
    "a@b.com", "a@b.com.", "http://x.org/a?b=1.", "www.foo.org.", ":)", ";-)", ":-(", "=D", "<b>", "<a", "href=x>",
    "</b>", "&amp;", "&", "$5", "5%", "*", "a*b", "_a.", "_", "x_y", "~", "^", "|", "=", "\\", "!?", "??", "?!",
]


@pytest.mark.parametrize("seed", range(4))
def test_chunk_fast_path_equals_full_scan(seed):
    """Captions assembled from memoised chunks give exactly the full scanner's result, with
    and without warm caches and for next captions that change sentence-end decisions."""
    import random

    from pixscribe.metrics import tokenize as tk

    rng = random.Random(seed)
    follows = ["", "The cat sat.", "a dog", "5 dogs", "It is", "Mr. X"]
    tk.clear_caches()
    n_fast = 0
    for i in range(3000):
        k = rng.randint(1, 8)
        sep = [rng.choice([" ", " ", " ", "  ", "   "]) for _ in range(k)]
        s = "".join(rng.choice(_FRAGMENTS) + sep[j] for j in range(k))
        if rng.random() < 0.5:
            s = s.rstrip()
        follow = rng.choice(follows)
        if i % 2:
            tk.clear_caches()
        want = " ".join(t for t in ptb_tokenize_line(s, follow=follow) if t not in PUNCTUATIONS)
        n_fast += tk._tokenize_by_chunks(s) is not None
        assert tk.tokenize_caption(s, follow) == want, (s, follow)
        assert tk.tokenize_caption(s, follow) == want, (s, follow)  # memoised
        other = rng.choice(follows)
        want2 = " ".join(t for t in ptb_tokenize_line(s, follow=other) if t not in PUNCTUATIONS)
        assert tk.tokenize_caption(s, other) == want2, (s, other)  # memo only when follow is irrelevant
    assert n_fast > 500  # the fast path was exercised


@pytest.mark.parametrize("odd_spacing", [False, True])
def test_scores_equal_pycocoevalcap_scorers_on_random_tokens(odd_spacing):
    """The scorers alone (no tokenizer) on random token strings: empty sentences, long
    hypotheses (> 64 tokens, the non-vectorised LCS), 1..6 references, and with
    ``odd_spacing`` double spaces / tabs / leading spaces where ROUGE-L's ``split(" ")`` and
    BLEU/CIDEr-D's ``split()`` disagree."""
    import random

    rng = random.Random(int(odd_spacing))
    words = ["a", "dog", "cat", "on", "the", "grass", "red", "x", "y", "z", "of"]

    def sent():
        if rng.random() < 0.05:
            return ""
        n = rng.randint(60, 90) if rng.random() < 0.03 else rng.randint(1, 14)
        s = " ".join(rng.choice(words) for _ in range(n))
        if odd_spacing and rng.random() < 0.1:
            s = rng.choice([s.replace(" ", "  ", 1), s.replace(" ", "\t", 1), " " + s, s + " "])
        return s

    for _ in range(40):
        gts = {f"i{k}": [sent() for _ in range(rng.randint(1, 6))] for k in range(rng.randint(2, 60))}
        res = {k: [sent()] for k in gts}
        corpus, per, _ids = coco_scores(gts, res)
        _assert_equal_to_pycocoevalcap(gts, res, corpus, per)
