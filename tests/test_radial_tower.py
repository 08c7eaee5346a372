"""RE fine-tuning of the last blocks of an open_clip text tower (tiny random-weights model: plumbing only,
never quality)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.encoders import OpenCLIPEncoder
from core.errors import DataError
from core.hierarchy import Chains, root_embedding
from core.radial import OpenCLIPTextTowerFineTuner, tower_trainable_names

TINY_TOWER_CFG = {"embed_dim": 16,
                  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
                  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3}}

CHAINS = [["animal", "dog", "small dog"], ["animal", "cat", "black cat"], ["animal", "bird", "blue bird"],
          ["animal", "horse", "brown horse"], ["vehicle", "car", "red car"], ["vehicle", "bus", "school bus"],
          ["vehicle", "bike", "old bike"], ["vehicle", "truck", "big truck"], ["food", "fruit", "green apple"],
          ["food", "bread", "white bread"], ["food", "soup", "hot soup"], ["food", "cake", "chocolate cake"]]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    import open_clip
    path = tmp_path_factory.mktemp("oc") / "platoscope-test-tiny-tower.json"
    path.write_text(json.dumps(TINY_TOWER_CFG))
    open_clip.add_model_config(path)
    torch.manual_seed(0)
    enc = OpenCLIPEncoder("platoscope-test-tiny-tower", None, device="cpu", cache_namespace=None)
    enc.load()
    return enc


def make_chains(encoder, chains) -> Chains:
    texts = np.array([t for c in chains for t in c], dtype=object)
    emb = encoder.encode_text(list(texts))["embedding"]
    root = root_embedding(encoder)
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in chains])])
    return Chains(ids=np.array([f"c{i}" for i in range(len(chains))]), offsets=offsets, texts=texts,
                  embeddings=emb, root=root, root_source="''")


@pytest.fixture(scope="module")
def data(encoder):
    return make_chains(encoder, CHAINS[:9]), make_chains(encoder, CHAINS[9:])


def fit(encoder, data, **kw):
    params = {"n_blocks": 2, "lr": 1e-3, "batch_size": 4, "max_epochs": 4, "patience": 4, "seed": 0,
              "device": "cpu"} | kw
    return OpenCLIPTextTowerFineTuner(**params).fit(encoder, *data)


@pytest.fixture(scope="module")
def tuned(encoder, data):
    return fit(encoder, data)


def test_trainable_names_are_last_blocks_ln_final_and_projection(encoder):
    model = encoder.load()[0]
    names = tower_trainable_names(model, 2)
    assert "text_projection" in names and any(n.startswith("ln_final.") for n in names)
    assert any(n.startswith("transformer.resblocks.1.") for n in names)
    assert any(n.startswith("transformer.resblocks.2.") for n in names)
    assert not any(n.startswith(("transformer.resblocks.0.", "visual.", "token_embedding")) for n in names)
    with pytest.raises(DataError):
        tower_trainable_names(model, 4)


def test_only_last_blocks_get_gradients(encoder, data):
    tuner = OpenCLIPTextTowerFineTuner(n_blocks=2, device="cpu")
    tuner._prepare(encoder, "cpu")
    t = tuner._tower_tensors(tuner._ensure_negatives(data[0], 0)[0], "cpu")
    # the frozen targets are the encoder's own embeddings
    np.testing.assert_allclose(t["frozen"][t["pos_v"][:, 1]].numpy(),
                               data[0].embeddings[data[0].padded_index()[:, 1]], atol=1e-5)
    tuner._tower_loss(t, torch.arange(4))["total"].backward()
    trainable = set(tuner.trainable_names_)
    for k, p in tuner.model_.named_parameters():
        if k in trainable:
            assert p.grad is not None and torch.isfinite(p.grad).all(), k
        else:
            assert p.grad is None and not p.requires_grad, k
    assert any(float(tuner.model_.get_parameter(k).grad.abs().sum()) > 0 for k in trainable)


def test_only_last_blocks_change_and_encoder_untouched(encoder, tuned):
    original = dict(encoder.load()[0].named_parameters())
    trainable = set(tuned.trainable_names_)
    changed = set()
    for k, p in tuned.model_.named_parameters():
        if k in trainable:
            if not torch.equal(p, original[k]):
                changed.add(k)
        else:
            assert torch.equal(p, original[k]), k
    assert tuned.best_epoch_ > 0
    assert changed == trainable
    assert all(p.requires_grad for p in encoder.load()[0].parameters())   # the encoder's model is not altered


def test_loss_goes_down(tuned):
    h = tuned.history_
    assert h[0]["epoch"] == 0 and len(h) >= 2
    assert tuned.best_val_loss_ < h[0]["val_loss"]
    assert min(r["train_loss"] for r in h[1:]) < h[0]["train_loss"]
    assert np.isfinite([r["val_loss"] for r in h]).all()


def test_seeded_runs_identical(encoder, data, tuned):
    again = fit(encoder, data)
    assert [r["val_loss"] for r in again.history_] == [r["val_loss"] for r in tuned.history_]
    texts = ["animal", "small dog", ""]
    np.testing.assert_array_equal(again.transform_texts(texts), tuned.transform_texts(texts))


def test_transform_texts_and_chains(encoder, data, tuned):
    out = tuned.transform_texts(["dog", "a red car"])
    assert out.shape == (2, 16) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(out, encoder.encode_text(["dog", "a red car"])["embedding"], atol=1e-4)
    ch = tuned.transform_chains(data[1])
    np.testing.assert_allclose(ch.embeddings, tuned.transform_texts(data[1].texts), atol=1e-6)
    np.testing.assert_allclose(ch.root, tuned.transform_texts([""])[0], atol=1e-6)


def test_save_load_round_trip(encoder, tuned, tmp_path):
    js = tuned.save(tmp_path / "tower")
    meta = json.loads(js.read_text())
    assert meta["trainable"] == tuned.trainable_names_ and meta["params"]["n_blocks"] == 2
    from safetensors.torch import load_file
    assert sorted(load_file(str(tmp_path / "tower.safetensors"))) == sorted(tuned.trainable_names_)
    back = OpenCLIPTextTowerFineTuner.load(tmp_path / "tower", encoder)
    texts = ["animal", "dog", "small dog", "", "vehicle"]
    np.testing.assert_array_equal(back.transform_texts(texts), tuned.transform_texts(texts))
    assert back.history_ == tuned.history_ and back.best_epoch_ == tuned.best_epoch_
    other = OpenCLIPEncoder("platoscope-test-tiny-tower", None, device="cpu", cache_namespace=None)
    other.model_name = "something-else"
    with pytest.raises(DataError):
        OpenCLIPTextTowerFineTuner.load(tmp_path / "tower", other)


def test_not_fitted():
    with pytest.raises(DataError):
        OpenCLIPTextTowerFineTuner().transform_texts(["x"])


def test_hierarchy_report_tower_blocks(encoder):
    from core.hierarchy_eval import hierarchy_report
    chains = make_chains(encoder, CHAINS * 2)
    out = hierarchy_report(chains, finetune=True, seed=0, n_boot=20, encoder=encoder, tower_blocks=1,
                           tuner_params={"max_epochs": 2, "lr": 1e-3, "batch_size": 8, "device": "cpu"})
    assert out["training"]["params"]["n_blocks"] == 1 and "after" in out["heldout"]
    assert out["training"]["epochs_run"] >= 1
    with pytest.raises(DataError, match="open_clip"):
        hierarchy_report(chains, finetune=True, seed=0, n_boot=20, tower_blocks=1)


def test_cli_tower_blocks_needs_finetune_and_open_clip(tmp_path, capsys):
    from core.cli import main

    csv = tmp_path / "chains.csv"
    csv.write_text("chain,tier,caption\n" + "\n".join(
        f"c{i},{t},{w}" for i in range(4) for t, w in enumerate(["animal", f"dog {i}", f"small dog {i}"])))
    assert main(["hierarchy", str(csv), "--encoder", "minilm", "--tower-blocks", "1"]) == 2
    assert "--finetune" in capsys.readouterr().err
    assert main(["hierarchy", str(csv), "--encoder", "minilm", "--finetune", "--tower-blocks", "1"]) == 2
    assert "open_clip" in capsys.readouterr().err


def test_authors_fine_tuning_trains_the_whole_text_tower_and_keeps_the_last_weights(encoder, data):
    from core.radial import AUTHORS_TOWER_PARAMS

    model, _, _ = encoder.load()
    names = tower_trainable_names(model, "all")
    assert any(k.startswith("token_embedding") for k in names) and "positional_embedding" in names
    assert any(k.startswith("transformer.resblocks.0.") for k in names)
    assert not any(k.startswith("visual.") for k in names) and "logit_scale" not in names
    params = {**AUTHORS_TOWER_PARAMS, "lr": 1e-3}   # a visible step on a tiny model; the schedule is the authors'
    tuner = OpenCLIPTextTowerFineTuner(**params, le_negatives="shared").fit(encoder, *data)
    assert tuner.get_params()["n_blocks"] == "all" and tuner.get_params()["batch_size"] == 8
    assert len(tuner.history_) == 2 and tuner.best_epoch_ == 1           # one epoch, last weights kept
    before = dict(model.named_parameters())
    after = dict(tuner.model_.named_parameters())
    assert not torch.equal(before["token_embedding.weight"], after["token_embedding.weight"])
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("visual."))
