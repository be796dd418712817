"""The list logic of the panoptic stages on hand-made cases: cleaning, "none", merging, boxes in
the padding, and the IoU-gated merge of proposals with re-detections."""

from __future__ import annotations

import pytest

from pixscribe.experts.base import Detection
from pixscribe.methods.panoptic import entities as E
from pixscribe.methods.panoptic.boxes import ModelItem, model_to_pixels, pixels_to_model
from pixscribe.methods.panoptic.redetect import merge_redetections


@pytest.mark.parametrize("text", ["None", "none.", "  None of the entities is missing", "Nothing is missing.",
                                  "No more entities.", "no missing entities", "There are no other entities.", ""])
def test_says_none(text):
    assert E.says_none(text)


@pytest.mark.parametrize("text", ["nonetheless a cat <box>[[1, 2, 3, 4]]</box>", "cat <box>[[1, 2, 3, 4]]</box>",
                                  "Notebook <box>[[1, 2, 3, 4]]</box>", "no. 5 bus <box>[[1, 2, 3, 4]]</box>"])
def test_not_none(text):
    assert not E.says_none(text)
    assert E.parse_missing(text, []).items  # and the item is read


def test_clean_boxes_and_pairs():
    c = E.clean_boxes("car <box>[[1, 2, 3, 4]]</box>, <box>[[1, 2, 3, 4]]</box>, <box>[[5, 6, 7, 8]]</box>")
    assert c.text() == "<box>[[1, 2, 3, 4]]</box>, <box>[[5, 6, 7, 8]]</box>" and c.duplicates == 1
    c = E.clean_pairs("red  car <box>[[1, 2, 3, 4]]</box>, Red Car <box>[[1, 2, 3, 4]]</box>, "
                      "car <box>[[1, 2, 3, 4]]</box>, <box>[[5, 6, 7, 8]]</box>")
    # the same box with another tag is another pair; spaces are tidied, the first spelling kept
    assert c.text() == "red car <box>[[1, 2, 3, 4]]</box>, car <box>[[1, 2, 3, 4]]</box>"
    assert (c.duplicates, c.untagged) == (1, 1)
    assert c.report() == {"items": 2, "duplicates_removed": 1, "untagged_skipped": 1}


def test_missing_against_known_and_merge():
    known = [ModelItem("dog", (1, 2, 3, 4))]
    c = E.parse_missing("Dog <box>[[1, 2, 3, 4]]</box>, cat <box>[[9, 9, 20, 20]]</box>, cat <box>[[9, 9, 20, 20]]"
                        "</box>", known)
    assert [(i.tag, i.box) for i in c.items] == [("cat", (9, 9, 20, 20))] and c.duplicates == 2
    assert E.merge_pairs(known, c.items) == [known[0], c.items[0]]


def test_keep_inside_drops_boxes_in_the_padding():
    c = E.Cleaned([ModelItem("sky", (0, 0, 999, 100)), ModelItem("road", (0, 600, 999, 999))])
    assert [i.tag for i in E.keep_inside(c, 640, 427).items] == ["road"] and c.outside == 1
    c2 = E.Cleaned([ModelItem("sky", (0, 0, 999, 100))])
    assert E.keep_inside(c2, 427, 640).items and c2.outside == 0  # inside a tall image


def _det(box, score, label, w=640, h=427):
    return Detection.make(box, score, label, w, h)


def test_merge_redetections_confirms_adds_and_dedupes():
    w, h = 640, 427
    dog = ModelItem("dog", pixels_to_model((100, 100, 300, 300), w, h))
    cup = ModelItem("cup", pixels_to_model((400, 50, 450, 100), w, h))
    dog2 = ModelItem("Dog", pixels_to_model((102, 101, 301, 302), w, h))  # a near-duplicate proposal
    dets = {
        "grounding_dino": [_det((105, 98, 298, 305), 0.8, "dog"),      # confirms the dog
                           _det((500, 300, 600, 400), 0.6, "dog"),     # a second dog: added
                           _det((400, 50, 450, 100), 0.2, "dog"),      # wrong tag, low: ignored
                           _det((10, 10, 60, 60), 0.3, "cup")],        # below the add threshold
        "owlv2": [_det((101, 99, 299, 299), 0.25, "dog"), _det((502, 302, 598, 398), 0.3, "dog")],
    }
    items, rows, rep = merge_redetections([dog, cup, dog2], dets, w, h, add_threshold={"grounding_dino": 0.4,
                                                                                       "owlv2": 0.2})
    assert [(r["tag"], r["found_by"], r["expert"]) for r in rows] == [
        ("dog", "proposals", "dense"), ("cup", "proposals", "dense"), ("dog", "redetect", "grounding_dino")]
    assert rows[0]["confirmed_by"] == {"grounding_dino": 0.8, "owlv2": 0.25}
    assert rows[1]["confirmed_by"] == {}
    # the two detectors' second dog were one entity: the later one merged into the first
    assert rows[2]["confirmed_by"] == {"grounding_dino": 0.6, "owlv2": 0.3}
    assert rep == {"proposals": 3, "confirmed": 2, "dropped_unconfirmed": 0, "added": 2, "duplicates_merged": 2,
                   "entities": 3}
    assert items[2].box == pixels_to_model((500, 300, 600, 400), w, h)
    px = model_to_pixels(items[2].box, w, h)
    assert rows[2]["box"] == [round(v, 2) for v in px]
    # unconfirmed proposals can be dropped
    _, rows2, rep2 = merge_redetections([dog, cup], dets, w, h, keep_unconfirmed=False, add_threshold=1.0)
    assert [r["tag"] for r in rows2] == ["dog"] and rep2["dropped_unconfirmed"] == 1 and rep2["added"] == 0
