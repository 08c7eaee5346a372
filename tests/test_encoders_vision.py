"""timm: and torchvision: image encoders with random weights (pretrained=False), against the libraries' own calls."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core import encoders_base
from core.encoders import list_images, make_encoder
from core.encoders_vision import TimmEncoder, TorchvisionEncoder
from core.errors import DataError


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from PIL import Image
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(5):
        arr = rng.integers(0, 255, size=(30 + 7 * i, 40, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    return TimmEncoder("vit_tiny_patch16_224", pretrained=False, cache_namespace=None, batch_size=2,
                       model_kwargs={"img_size": 32, "depth": 3})


def _batch(enc, folder, names):
    from PIL import Image
    _, preprocess = enc.load()
    return torch.stack([preprocess(Image.open(folder / n).convert("RGB")) for n in names])


def test_timm_vit_matches_forward_intermediates(tiny_vit, image_folder):
    files = list_images(image_folder)
    out = tiny_vit.encode_images(files, layers="all", tokens=True)
    assert out["names"] == [f"img{i}.png" for i in range(5)]
    assert dict(out["skipped"]).keys() == {"broken.jpg"}
    assert tiny_vit.n_layers == 3 and sorted(out["layers"]) == [1, 2, 3]
    assert tiny_vit.data_config["input_size"] == (3, 32, 32)  # the model's own preprocessing, at its size
    model, _ = tiny_vit.load()
    x = _batch(tiny_vit, image_folder, out["names"])
    with torch.no_grad():
        feats = model.forward_features(x)
        ref = model.forward_head(feats, pre_logits=True).numpy()
        inter = model.forward_intermediates(x, intermediates_only=True)
    np.testing.assert_allclose(out["embedding"], ref, atol=1e-5)
    for k in (1, 2, 3):
        np.testing.assert_allclose(out["layers"][k], inter[k - 1].mean(dim=(2, 3)).numpy(), atol=1e-5)
    assert out["tokens"].shape == (5, 4, 192)  # (32 / 16)^2 patches, the class token left out
    np.testing.assert_allclose(out["tokens"], feats[:, 1:].numpy(), atol=1e-5)
    assert out["mask"].all()
    again = tiny_vit.encode_images(files, layers=(2,))
    np.testing.assert_array_equal(again["layers"][2], out["layers"][2])
    info = tiny_vit.space_info(layer=2)
    assert info["layer"] == 2 and info["spec"] == "timm:vit_tiny_patch16_224:none" and info["random_weights"]


def test_timm_layer_numbers_and_unknown_model(tiny_vit):
    with pytest.raises(DataError, match=r"layers 1\.\.3"):
        tiny_vit.layers_for("image", (4,))
    with pytest.raises(DataError, match="not 0"):
        tiny_vit.layers_for("image", (0,))
    with pytest.raises(DataError, match="does not know the model 'vit_tinyy_patch16_224'") as e:
        make_encoder("timm:vit_tinyy_patch16_224")
    assert "vit_tiny_patch16_224" in e.value.hint
    with pytest.raises(DataError, match="cannot encode texts"):
        tiny_vit.encode_inputs("text", ["a chair"])


def test_timm_offline_message_names_model_and_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PLATOSCOPE_TIMM_CACHE", str(tmp_path / "timm"))
    monkeypatch.setattr(encoders_base, "_reachable", lambda host, timeout=3.0: False)
    enc = make_encoder("timm:resnet18.a1_in1k", cache_namespace=None)
    with pytest.raises(DataError) as e:
        enc.load()
    text = str(e.value)
    assert "'resnet18.a1_in1k'" in text and str(tmp_path / "timm") in text and "internet" in text


def test_torchvision_resnet_hooks_match_the_model(image_folder):
    torch.manual_seed(0)
    enc = make_encoder("torchvision:resnet18:none", cache_namespace=None, batch_size=3)
    assert isinstance(enc, TorchvisionEncoder) and enc.n_layers == 4
    out = enc.encode_images(list_images(image_folder), layers="all", tokens=True)
    model, _ = enc.load()
    x = _batch(enc, image_folder, out["names"])
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        stages = []
        for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
            h = layer(h)
            stages.append(h)
        pre_logits = torch.flatten(model.avgpool(h), 1)
    np.testing.assert_allclose(out["embedding"], pre_logits.numpy(), atol=1e-5)
    for k, s in enumerate(stages, start=1):
        np.testing.assert_allclose(out["layers"][k], s.mean(dim=(2, 3)).numpy(), atol=1e-5)
    assert out["tokens"].shape == (5, 49, 512)
    with pytest.raises(DataError, match="no weights 'IMAGENET9'"):
        make_encoder("torchvision:resnet18:IMAGENET9")
