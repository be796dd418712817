"""Helpers for tests, benchmarks and offline smoke runs.

- :func:`train_tokenizer`: a byte-level BPE trained locally with ``tokenizers``.
- :func:`sample_photos`: real photos shipped inside scikit-image and matplotlib.
- :mod:`pixscribe.testing.tiny`: tiny random-weight models of real architectures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CORPUS = [
    "a photograph of an astronaut in a white suit standing in front of a flag",
    "a cat with striped orange fur lying on a wooden table",
    "a cup of coffee on a saucer next to a spoon",
    "a rocket on a launch pad under a blue sky",
    "a woman in a uniform looking at the camera",
    "a man riding a red motorcycle down the street",
    "two dogs playing in the green grass near a tree",
    "a printed page of text with several paragraphs",
    "the sun is bright and the sky is clear",
    "a black and white photo of a person holding a camera",
    "there is a car, a bus and a bicycle on the road",
    "describe this image in detail please be as descriptive as possible",
    "the image shows a kitchen with a table, chairs and a window",
    "a red apple and a yellow banana in a bowl",
    "a large building with many windows in the city",
    "people walking on the beach at sunset near the ocean",
    "a child is reading a book in the park",
    "the left side of the picture is dark while the right side is light",
    "yes no maybe one two three four five six seven eight nine ten",
    "object detection box mask depth text face person cup dog cat",
]


def train_tokenizer(
    special_tokens: list[str] | None = None,
    vocab_size: int = 400,
    sentences: list[str] | None = None,
    **fast_kwargs: Any,
):
    """A byte-level BPE tokenizer trained on a few sentences, as a PreTrainedTokenizerFast.

    ``special_tokens`` are added as whole tokens (e.g. ``"<image>"``, ``"<|im_start|>"``).
    ``fast_kwargs`` go to ``PreTrainedTokenizerFast`` (bos_token, eos_token, pad_token...).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys(special_tokens or []))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sentences or CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **fast_kwargs)


SAMPLE_NAMES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "grace_hopper", "page")


def sample_photo(name: str):
    """A real photo as an RGB PIL image: scikit-image's samples or matplotlib's grace_hopper."""
    from PIL import Image

    if name == "grace_hopper":
        import matplotlib.cbook as cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            return Image.open(f).convert("RGB")
    import skimage.data as data

    fn = {"motorcycle": "stereo_motorcycle"}.get(name, name)
    arr = getattr(data, fn)()
    if isinstance(arr, tuple):  # stereo_motorcycle returns (left, right, disparity)
        arr = arr[0]
    img = Image.fromarray(arr)
    return img.convert("RGB")


def sample_photos(names: tuple[str, ...] = SAMPLE_NAMES) -> dict[str, Any]:
    return {n: sample_photo(n) for n in names}


def write_sample_photos(directory: str | Path, names: tuple[str, ...] = SAMPLE_NAMES, fmt: str = "JPEG") -> list[Path]:
    """Save real sample photos as files (e.g. for a quickstart or a test folder)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ext = {"JPEG": "jpg", "PNG": "png"}[fmt]
    out = []
    for n in names:
        p = d / f"{n}.{ext}"
        sample_photo(n).save(p, fmt, quality=92) if fmt == "JPEG" else sample_photo(n).save(p, fmt)
        out.append(p)
    return out
