"""The offline noun-phrase extractor and the extraction-reply parser, on hand-written text."""

import pytest

from pixscribe.backends.structured import SchemaError
from pixscribe.nounphrases import noun_phrases
from pixscribe.methods.textualize.objects import parse_objects


@pytest.mark.parametrize("text, phrases", [
    ("A cat, a sofa and a dog.", ["cat", "sofa", "dog"]),
    # IT's rule 1: what the description hedges on is left out (to the end of the clause)
    ("There's a white car parked, perhaps belonging to one of the hotel guests.", ["white car"]),
    ("A dog, which might be a wolf, runs on a beach. What appears to be a kite flies above.", ["dog", "beach"]),
    ("A red car is parked by the road, possibly a taxi. It looks like a bus stop nearby.", ["red car", "road"]),
    # negations: absent things are not objects
    ("A kitchen with no people and a table without chairs.", ["kitchen", "table"]),
    # IT's rule 2: abstract and positional words are not objects; numbers and colours stay
    ("This image captures a cozy Christmas scene with two red candlesticks, adding to the festive atmosphere.",
     ["two red candlesticks"]),
    ("On the left side of the sky view stands a tall building.", ["tall building"]),
    # markdown emphasis is dropped; text in quotes (read in the image) is not an object
    ('A **black cat** sits under a sign that reads "FRESH FISH".', ["black cat", "sign"]),
    # participles after the noun are trimmed, before it they stay; -ly adverbs break phrases
    ("A cat sleeping peacefully next to a sleeping puppy.", ["cat", "sleeping puppy"]),
    ("", []),
])
def test_noun_phrases(text, phrases):
    assert noun_phrases(text) == phrases


def test_noun_phrases_are_deterministic_and_capped():
    text = "A cup, a plate, a fork, a knife, a spoon and a napkin lie on the table."
    assert noun_phrases(text) == noun_phrases(text) == ["cup", "plate", "fork", "knife", "spoon", "napkin", "table"]
    assert noun_phrases(text, limit=3) == ["cup", "plate", "fork"]


@pytest.mark.parametrize("reply, phrases", [
    ('{"objects": ["black cat", "gray nightstand"]}', ["black cat", "gray nightstand"]),
    ('```json\n{"objects": ["cat", "Cat.", " sofa "]}\n```', ["cat", "sofa"]),
    ('["cat", "dog"]', ["cat", "dog"]),
    ("OBJECTS: red satin bedspread. gold tassels. four teddy bears.", ["red satin bedspread", "gold tassels",
                                                                       "four teddy bears"]),
    ("Sure.\nobjects: 1. white cat\n2. **Christmas tree**\n- two red candlesticks.", ["white cat", "Christmas tree",
                                                                                     "two red candlesticks"]),
    ("man with a long white beard. green tie", ["man with a long white beard", "green tie"]),  # no marker at all
    ("OBJECTS: this reply is a long sentence of prose and not a list of objects at all. cat.", ["cat"]),
    ("", []),
])
def test_parse_objects(reply, phrases):
    assert parse_objects(reply) == phrases


def test_parse_objects_rejects_json_of_another_shape_and_caps():
    with pytest.raises(SchemaError, match="not .*objects"):
        parse_objects('{"items": ["cat"]}')
    assert parse_objects(None, {"objects": ["a", "b", "c"]}, limit=2) == ["a", "b"]
