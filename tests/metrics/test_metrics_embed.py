"""BERTScore and CLIPScore/RefCLIPScore load real architectures with from_pretrained (tiny, built locally)."""

import numpy as np
import pytest

from pixscribe.testing import CORPUS, sample_photo, train_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("bert")
    words = sorted({w for s in CORPUS for w in s.replace(",", " ").split()})
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words)}
    BertTokenizer(vocab=vocab).save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    d = tmp_path_factory.mktemp("clip")
    tok = train_tokenizer(special_tokens=["<|startoftext|>", "<|endoftext|>"], bos_token="<|startoftext|>",
                          eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                          model_max_length=16)
    from tokenizers.processors import TemplateProcessing

    bos, eos = tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"])
    # like the real CLIP tokenizer: <bos> text <eos> (CLIP pools at the first <eos>)
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}), tokenizer=tok)
    proc.save_pretrained(d)
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(d)
    return str(d)


def test_bertscore_tiny_bert(tiny_bert):
    from pixscribe.metrics.embed import BertScorer

    b = BertScorer(tiny_bert)
    s = b.score(["a cat with striped orange fur", "a red apple in a bowl"],
                [["a cat with striped orange fur", "a dog"], ["a large building in the city"]])
    assert s["bertscore_f1"][0] == pytest.approx(1.0, abs=1e-5)  # identical to one reference
    assert s["bertscore_f1"][1] < 0.999
    assert np.all((s["bertscore_p"] <= 1 + 1e-6) & (s["bertscore_r"] <= 1 + 1e-6))
    with pytest.raises(RuntimeError, match="could not be loaded"):
        BertScorer(str(tiny_bert) + "-missing")


def test_clipscore_tiny_clip_and_chunking(tiny_clip):
    from pixscribe.metrics.embed import ClipScorer

    c = ClipScorer(tiny_clip)
    assert c.max_tokens == 16
    imgs = [sample_photo("chelsea"), sample_photo("coffee")]
    long = " ".join(CORPUS[:4])  # far more than 16 tokens
    s = c.score(["a cat lying on a table", long], imgs, refs=[["a cat on a table"], ["a cup of coffee"]])
    assert c.chunked == 1  # only the long caption was chunked (not silently truncated)
    assert s["clipscore"].shape == (2,) and np.all(s["clipscore"] >= 0) and np.all(s["clipscore"] <= 2.5)
    # chunk-and-average: the long caption's embedding is the normalised mean of its pieces' embeddings
    pieces = c._chunks(long)
    assert len(pieces) > 1
    e_long = c.embed_texts([long])[0]
    e_pieces = c.embed_texts(pieces)
    m = e_pieces.mean(0)
    np.testing.assert_allclose(e_long, m / np.linalg.norm(m), atol=1e-5)
    # CLIPScore is w * max(cos, 0) computed from the real towers
    ie = c.embed_images(imgs[:1])[0]
    te = c.embed_texts(["a cat lying on a table"])[0]
    assert s["clipscore"][0] == pytest.approx(2.5 * max(float(te @ ie), 0.0), abs=1e-5)
    assert "refclipscore" in s and np.all(s["refclipscore"] >= 0)
