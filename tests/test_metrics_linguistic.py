"""Readability formulas on texts with hand-counted words, sentences and syllables."""

import math

import pytest

from pixscribe.metrics.linguistic import corpus_stats, count_syllables, pos_counts, text_stats


def test_syllables():
    for w, n in [("cat", 1), ("table", 2), ("banana", 3), ("beautiful", 3), ("the", 1), ("jumped", 1),
                 ("elephant", 3), ("television", 4), ("made", 1), ("dogs", 1)]:
        assert count_syllables(w) == n, w


def test_formulas_on_hand_counted_text():
    text = "The cat sat on the mat. A beautiful elephant walked by."
    # words: The cat sat on the mat | A beautiful elephant walked by -> 11 words, 2 sentences
    # syllables: 1+1+1+1+1+1 + 1+3+3+1+1 = 15; polysyllables: beautiful, elephant = 2
    # characters (letters): 3+3+3+2+3+3 + 1+9+8+6+2 = 43
    s = text_stats(text)
    assert (s.words, s.sentences, s.syllables, s.polysyllables, s.characters) == (11, 2, 15, 2, 43)
    assert s.vocabulary == 10  # 'the' twice
    W, S, Y, P, C = 11, 2, 15, 2, 43
    assert s.flesch_reading_ease == pytest.approx(206.835 - 1.015 * W / S - 84.6 * Y / W)
    assert s.flesch_kincaid_grade == pytest.approx(0.39 * W / S + 11.8 * Y / W - 15.59)
    assert s.ari == pytest.approx(4.71 * C / W + 0.5 * W / S - 21.43)
    assert s.smog == pytest.approx(1.0430 * math.sqrt(P * 30 / S) + 3.1291)
    assert s.coleman_liau == pytest.approx(0.0588 * (C / W * 100) - 0.296 * (S / W * 100) - 15.8)


def test_classic_example_very_easy_text():
    # "The cat sat on the mat." : 6 one-syllable words, 1 sentence -> FRE = 116.145 (a classic sanity value)
    s = text_stats("The cat sat on the mat.")
    assert s.flesch_reading_ease == pytest.approx(116.145, abs=1e-9)
    assert s.flesch_kincaid_grade == pytest.approx(-1.45, abs=1e-9)
    assert text_stats("").words == 0 and math.isnan(text_stats("").ari)


def test_corpus_stats_are_means_and_reuse_given_stats():
    texts = ["The cat sat on the mat.", "A beautiful elephant walked by. It was big.", "Dogs"]
    c = corpus_stats(texts)
    assert c["lin_words"] == pytest.approx((6 + 8 + 1) / 3)
    assert c["lin_corpus_vocabulary"] == 14
    assert corpus_stats(texts, [text_stats(t) for t in texts]) == c


def test_pos_is_honestly_unavailable():
    with pytest.raises(RuntimeError, match="offline"):
        pos_counts("a dog")
