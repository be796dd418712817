"""Train the test tagger: nltk's averaged perceptron on tagged_corpus.txt (made for these tests),
saved in nltk's JSON layout (taggers/averaged_perceptron_tagger_eng/), so that nltk.pos_tag in
AMBER's reference and pixscribe's default tagger load the same weights.

    python tests/data/amber/make_tagger.py
"""

import json
import random
from pathlib import Path

from nltk.tag.perceptron import PerceptronTagger

HERE = Path(__file__).parent
OUT = HERE / "nltk_data" / "taggers" / "averaged_perceptron_tagger_eng"

sentences = [[tuple(t.rsplit("/", 1)) for t in line.split()] for line in (HERE / "tagged_corpus.txt").read_text().splitlines()]
random.seed(0)
tagger = PerceptronTagger(load=False)
tagger.train(sentences, nr_iter=5)
OUT.mkdir(parents=True, exist_ok=True)
for obj, name in zip(tagger.encode_json_obj(), tagger.param_files("eng")):
    (OUT / name).write_text(json.dumps(obj, sort_keys=True))
print(sorted(p.name for p in OUT.iterdir()))
