"""Spatial-language helpers on hand-made boxes."""

from __future__ import annotations

import pytest

from pixscribe.spatial import (
    Entity,
    depth_word,
    describe_position,
    position_words,
    relation,
    relations,
    size_word,
)


@pytest.mark.parametrize(
    "box,words",
    [
        ((0.0, 0.0, 0.2, 0.2), "upper left"),
        ((0.4, 0.0, 0.6, 0.2), "top"),
        ((0.8, 0.0, 1.0, 0.2), "upper right"),
        ((0.0, 0.4, 0.2, 0.6), "left"),
        ((0.4, 0.4, 0.6, 0.6), "center"),
        ((0.0, 0.0, 1.0, 1.0), "center"),
        ((0.8, 0.4, 1.0, 0.6), "right"),
        ((0.0, 0.8, 0.2, 1.0), "lower left"),
        ((0.4, 0.8, 0.6, 1.0), "bottom"),
        ((0.9, 0.9, 1.0, 1.0), "lower right"),
        ((1.0, 1.0, 1.0, 1.0), "lower right"),  # a degenerate box on the corner
        ((0.2, 0.2, 0.0, 0.0), "upper left"),  # reversed corners are accepted
        ((0.0, 0.0, 2 / 3, 2 / 3), "center"),  # centre exactly on the third lines: the later cell
        ((0.3, 0.3, 0.36, 0.36), "upper left"),  # centre just inside the first third
    ],
)
def test_position_words(box, words):
    assert position_words(box) == words


def test_position_phrase():
    from pixscribe.spatial import position_phrase

    assert position_phrase((0.0, 0.0, 0.2, 0.2)) == "in the upper left"
    assert position_phrase((0.4, 0.0, 0.6, 0.2)) == "at the top"
    assert position_phrase((0.8, 0.4, 1.0, 0.6)) == "on the right"
    assert position_phrase((0.4, 0.4, 0.6, 0.6)) == "in the center"


def test_size_and_depth_words():
    assert size_word((0, 0, 0.05, 0.05)) == "tiny"  # 0.25 %
    assert size_word((0, 0, 0.2, 0.2)) == "small"  # 4 %
    assert size_word((0, 0, 0.4, 0.4)) == "medium"  # 16 %
    assert size_word((0, 0, 0.6, 0.6)) == "large"  # 36 %
    assert size_word((0, 0, 1, 1)) == "very large"
    assert depth_word(1.0) == "in the foreground"
    assert depth_word(0.5) == "in the middle ground"
    assert depth_word(0.0) == "in the background"
    assert describe_position((0, 0, 0.2, 0.2), 0.1) == "small, upper left, in the background"


def test_relations_apart_touching_contained():
    left, right = (0.0, 0.3, 0.3, 0.6), (0.6, 0.3, 0.9, 0.6)
    assert relation(left, right) == ["left of"]
    assert relation(right, left) == ["right of"]
    top, bottom = (0.3, 0.0, 0.6, 0.3), (0.3, 0.6, 0.6, 0.9)
    assert relation(top, bottom) == ["above"] and relation(bottom, top) == ["below"]
    # touching boxes: apart, not overlapping
    assert relation((0.0, 0.0, 0.4, 0.4), (0.4, 0.0, 0.8, 0.4)) == ["left of"]
    # a box inside another, same centre: only overlapping
    assert relation((0.1, 0.1, 0.9, 0.9), (0.4, 0.4, 0.6, 0.6)) == ["overlapping"]
    # a small box inside a big one, off to the left: inside, not "left of" its container
    assert relation((0.15, 0.4, 0.35, 0.6), (0.1, 0.1, 0.9, 0.9)) == ["overlapping"]
    # equal centres, different shapes: no direction at all
    assert relation((0.4, 0.0, 0.6, 1.0), (0.0, 0.4, 1.0, 0.6)) == ["overlapping"]
    # diagonal neighbours
    assert relation((0.0, 0.0, 0.2, 0.2), (0.5, 0.5, 0.7, 0.7)) == ["left of", "above"]
    # partly overlapping, centres well apart
    assert relation((0.0, 0.0, 0.5, 0.5), (0.3, 0.0, 0.8, 0.5)) == ["left of", "overlapping"]


def test_depth_relations_and_pairs():
    person = Entity("person", (0.1, 0.2, 0.4, 0.9), depth=0.9)
    tree = Entity("tree", (0.6, 0.1, 0.9, 0.8), depth=0.2)
    dog = Entity("dog", (0.35, 0.6, 0.55, 0.9), depth=0.85)
    assert relation(person.box, tree.box, person.depth, tree.depth) == ["left of", "in front of"]
    assert relation(tree.box, person.box, tree.depth, person.depth) == ["right of", "behind"]
    # depths within the margin: neither in front nor behind
    assert "in front of" not in relation(person.box, dog.box, 0.9, 0.85)
    triples = relations([person, tree, dog])
    assert ("person", "in front of", "tree") in triples and ("tree", "behind", "dog") in triples
    assert all(a != b for a, _, b in triples)
    assert len(relations([person, tree, dog], limit=2)) == 2
