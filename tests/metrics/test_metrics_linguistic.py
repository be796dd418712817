"""LIN-Bench equal to Image Textualization's readability.py, and lin_fixed where documented.

Counts and scores are worked out by hand from the reference's rules (issue #10 asks for
IT's ARI, Flesch-Kincaid, SMOG and Coleman-Liau on hand-computed examples):
characters = non-whitespace characters; words = \\b\\w+\\b; sentences = number of . ? !;
syllables = vowel groups of the a-z letters, minus one for a final e, at least one.
"""

import math

import pytest

from pixscribe.metrics.evaluate import evaluate
from pixscribe.metrics.linguistic import corpus_stats, count_syllables, counts, pos_counts, text_stats

# text -> (characters, words, sentences, syllables, polysyllables) for lin, then for lin_fixed
CASES = {
    # The(3) cat(3) sat(3) on(2) the(3) mat.(4) = 18 chars; 6 words; 1 sentence; every word 1 syllable
    # ("the": 1 group - final e = 0 -> 1). fixed: 17 letters (no ".")
    "The cat sat on the mat.": ((18, 6, 1, 6, 0), (17, 6, 1, 6, 0)),
    # "!!!" is three sentences, "." a fourth: Wow!!!(6) A(1) dog.(4) = 11 chars. fixed: one run = one sentence, 7
    "Wow!!! A dog.": ((11, 3, 4, 3, 0), (7, 3, 2, 3, 0)),
    # no final punctuation: 0 sentences. fixed: the unterminated text is a sentence
    "A dog runs in the park": ((17, 6, 0, 6, 0), (17, 6, 1, 6, 0)),
    # abbreviation, number, hyphen: words Mr Smith paid 3 50 for 2 hot dogs = 9; "." after Mr, in 3.50 and at the
    # end = 3 sentences; chars Mr.(3) Smith(5) paid(4) $3.50(5) for(3) 2(1) hot-dogs.(9) = 30; no-vowel words
    # (mr, 3, 50, 2) count 1 syllable: 9. fixed: Mr Smith paid 3.50 for 2 hot-dogs = 7 words, 1 sentence (Mr. is an
    # abbreviation, 3.50 a number), 25 letters/digits, hot-dogs 2 syllables: 8
    "Mr. Smith paid $3.50 for 2 hot-dogs.": ((30, 9, 3, 9, 0), (25, 7, 1, 8, 0)),
    # apostrophes: Don t touch the dog s bottle = 7 words ("t", "s": 1 syllable each; bottle: o,e - final e = 1);
    # chars 5+5+3+5+7 = 25. fixed: Don't touch the dog's bottle = 5 words, 22 letters, bottle = 2 (consonant + le)
    "Don't touch the dog's bottle.": ((25, 7, 1, 7, 0), (22, 5, 1, 6, 0)),
    # beautiful: eau,i,u = 3; elephants: e,e,a = 3; celebrate: e,e,a,e - 1 = 3 -> 9 syllables, 3 polysyllables;
    # chars 9+9+10 = 28
    "Beautiful elephants celebrate.": ((28, 3, 1, 9, 3), (27, 3, 1, 9, 3)),
    # only punctuation: 3 chars, 0 words, 3 sentences. fixed: nothing
    "...": ((3, 0, 3, 0, 0), (0, 0, 0, 0, 0)),
    "": ((0, 0, 0, 0, 0), (0, 0, 0, 0, 0)),
}


@pytest.mark.parametrize("text", list(CASES))
def test_counts(text):
    ref, fixed = CASES[text]
    assert counts(text, "lin") == ref
    assert counts(text, "lin_fixed") == fixed


def test_syllables_as_the_reference_counts_them():
    for w, n in [("cat", 1), ("the", 1), ("be", 1), ("free", 1), ("table", 1), ("bicycle", 2), ("banana", 3),
                 ("beautiful", 3), ("jumped", 2), ("café", 1), ("3", 1), ("rhythm", 1), ("eye", 1)]:
        assert count_syllables(w) == n, w  # "free": one group "ee" - final e = 0 -> 1; "café" -> "caf"


def test_the_four_formulas_on_hand_computed_texts():
    s = text_stats("The cat sat on the mat.")
    assert s.ari == pytest.approx(4.71 * 18 / 6 + 0.5 * 6 / 1 - 21.43)   # = -4.3
    assert s.ari == pytest.approx(-4.3)
    assert s.flesch_kincaid_grade == pytest.approx(-1.45)               # 0.39*6 + 11.8*1 - 15.59
    assert s.smog == pytest.approx(3.1291)                              # no polysyllables
    assert s.coleman_liau == pytest.approx(0.0588 * 300 - 0.296 * 100 / 6 - 15.8)  # = -3.093333
    s = text_stats("Beautiful elephants celebrate.")
    assert s.ari == pytest.approx(24.03)                                # 4.71*28/3 + 0.5*3 - 21.43
    assert s.flesch_kincaid_grade == pytest.approx(20.98)               # 0.39*3 + 11.8*9/3 - 15.59
    assert s.smog == pytest.approx(1.043 * math.sqrt(90) + 3.1291)      # = 13.023967
    assert s.coleman_liau == pytest.approx(0.0588 * 2800 / 3 - 0.296 * 100 / 3 - 15.8)  # = 29.213333
    s = text_stats("Mr. Smith paid $3.50 for 2 hot-dogs.")
    assert s.ari == pytest.approx(-4.23) and s.flesch_kincaid_grade == pytest.approx(-2.62)  # 30/9 c/w, 9/3 w/s
    assert s.coleman_liau == pytest.approx(0.0588 * 3000 / 9 - 0.296 * 300 / 9 - 15.8)      # = -6.066667
    assert text_stats("Wow!!! A dog.").ari == pytest.approx(4.71 * 11 / 3 + 0.5 * 3 / 4 - 21.43)  # = -3.785


def test_texts_the_reference_leaves_out():
    s = text_stats("A dog runs in the park")  # no . ? ! -> 0 sentences: ARI, FK, SMOG divide by zero
    assert math.isnan(s.ari) and math.isnan(s.flesch_kincaid_grade) and math.isnan(s.smog)
    assert s.coleman_liau == pytest.approx(0.0588 * 1700 / 6 - 15.8)  # = 0.86, still computed
    s = text_stats("...")  # no words, 3 sentences: only SMOG = 1.043*sqrt(0*30/3) + 3.1291
    assert s.smog == pytest.approx(3.1291) and math.isnan(s.ari) and math.isnan(s.coleman_liau)
    assert all(math.isnan(v) for v in (text_stats("").ari, text_stats("").smog, text_stats("").coleman_liau))


def test_corpus_means_skip_what_the_reference_skips():
    texts = ["The cat sat on the mat.", "A dog runs in the park", "Beautiful elephants celebrate."]
    c = corpus_stats(texts)
    assert c["lin_ari"] == pytest.approx((-4.3 + 24.03) / 2)  # the unterminated text has no ARI
    cl = [0.0588 * 300 - 0.296 * 100 / 6 - 15.8, 0.0588 * 1700 / 6 - 15.8, 0.0588 * 2800 / 3 - 0.296 * 100 / 3 - 15.8]
    assert c["lin_coleman_liau"] == pytest.approx(sum(cl) / 3)  # ... but has a Coleman-Liau
    assert c["lin_words"] == pytest.approx(5) and c["lin_corpus_vocabulary"] == 13
    f = corpus_stats(texts, variant="lin_fixed")
    ari_fixed = [4.71 * 17 / 6 + 0.5 * 6 - 21.43, 4.71 * 17 / 6 + 0.5 * 6 - 21.43, 4.71 * 27 / 3 + 0.5 * 3 - 21.43]
    assert f["lin_fixed_ari"] == pytest.approx(sum(ari_fixed) / 3)  # every text has one
    rep = evaluate({str(i): t for i, t in enumerate(texts)}, {str(i): ["x"] for i in range(3)}, "lin,lin_fixed",
                   bootstrap=0)
    assert rep["corpus"]["lin_ari"] == pytest.approx(c["lin_ari"])
    assert rep["corpus"]["lin_fixed_ari"] == pytest.approx(f["lin_fixed_ari"])
    assert rep["per_image"]["1"]["lin_ari"] is None and rep["per_image"]["1"]["lin_fixed_ari"] is not None


# --- lin_fixed: one test per difference listed in docs/metrics.md ----------------------------

def _sent(text):
    return counts(text, "lin")[2], counts(text, "lin_fixed")[2]


def test_fixed_a_run_of_terminators_is_one_sentence():
    assert _sent("Wow!!! Really?! Yes...") == (8, 3)


def test_fixed_numbers_abbreviations_initials_end_no_sentence():
    assert _sent("It is 3.5 m long.") == (2, 1)
    assert _sent("Dr. J. Smith met Mr. Brown in the U.S. on Monday.") == (6, 1)  # Dr. J. Mr. U.S.(2) Monday.


def test_fixed_unterminated_text_is_a_sentence():
    assert _sent("A dog. A cat") == (1, 2)
    assert not math.isnan(text_stats("A dog runs", "lin_fixed").ari)


def test_fixed_characters_are_letters_and_digits():
    text = "A dog, a cat (and 2 mice)!"
    assert counts(text, "lin")[0] == 1 + 4 + 1 + 3 + 4 + 1 + 6  # A dog, a cat (and 2 mice)!
    assert counts(text, "lin_fixed")[0] == 1 + 3 + 1 + 3 + 3 + 1 + 4


def test_fixed_words_keep_contractions_hyphens_and_numbers():
    text = "It's a well-known 1,000-year-old tree."
    assert counts(text, "lin")[1] == 10  # It s a well known 1 000 year old tree
    assert counts(text, "lin_fixed")[1] == 6  # It's a well-known 1,000 year-old tree (a number ends at the "-")


def test_fixed_consonant_le_is_a_syllable():
    assert counts("A bottle, a table and a bicycle.", "lin")[3] == 1 + 1 + 1 + 1 + 1 + 1 + 2  # a bottle a table and a bicycle
    assert counts("A bottle, a table and a bicycle.", "lin_fixed")[3] == 1 + 2 + 1 + 2 + 1 + 1 + 3


def test_pos_is_honestly_unavailable():
    with pytest.raises(RuntimeError, match="offline"):
        pos_counts("a dog")


def test_cli_says_why_a_lin_score_is_nan(tmp_path):
    """Captions without a final period (most VLM captions) have no LIN-Bench ARI: the CLI says why."""
    import json
    import subprocess
    import sys

    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"id": str(i), "caption": c}) + "\n"
                            for i, c in enumerate(["a cat on a mat", "two dogs in a park"])))
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps({"id": str(i), "refs": ["x."]}) + "\n" for i in range(2)))
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "pixscribe.metrics.eval_cli", "eval", "--pred", str(pred), "--refs",
                        str(refs), "--metrics", "lin,lin_fixed", "-o", str(out)],
                       capture_output=True, text=True, timeout=120, env={**__import__("os").environ, "COLUMNS": "300"})
    assert p.returncode == 0, p.stderr
    rep = json.loads(out.read_text())
    assert math.isnan(rep["corpus"]["lin_ari"]) and not math.isnan(rep["corpus"]["lin_fixed_ari"])
    why = rep["info"]["nan"]["lin"]
    assert why.startswith("lin_ari, lin_flesch_kincaid_grade, lin_flesch_reading_ease, lin_smog: nan")
    assert "2 of 2 texts have no sentence end (. ? !)" in why and "lin_fixed counts unterminated text" in why
    assert "lin_fixed" not in rep["info"]["nan"]
    assert " ".join(why.split()) in " ".join(p.stdout.split())  # printed under the table
