"""GCPA's corrector training (core/universe.py): one step against a step written out here, bfloat16 against float32."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from core.device import has_fast_bfloat16
from core.errors import DataError
from core.universe import GCPA, GPA, _Corrector, _gcpa_step
from core.evaluation.universe import any_to_any_retrieval, split_train_test
from tests.test_universe import planted


def _net(d=6, hidden=12, seed=0):
    """A corrector with every weight non-zero (W2 and Wg start at zero otherwise: no gradient reaches W1)."""
    net = _Corrector(d, hidden, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net


def _batch(n=16, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g)
    u = u / u.norm(dim=1, keepdim=True)
    c = u + 0.5 * torch.randn(n, d, generator=g)
    return u, c / c.norm(dim=1, keepdim=True)


def naive_steps(params, u, c, steps, lr=2e-3, wd=1e-4, pw=0.7, margin=0.08, betas=(0.9, 0.999), eps=1e-8):
    """The corrector's forward and loss written out in float64 (exact GELU, LayerNorm with eps 1e-5), its
    gradient by autograd, clipping to norm 1 and the AdamW update (decoupled decay) by hand, ``steps`` times."""
    p = {k: v.detach().double().clone() for k, v in params.items()}
    u, c = u.double(), c.double()
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    s = {k: torch.zeros_like(v) for k, v in p.items()}
    losses, norms = [], []
    for t in range(1, steps + 1):
        q = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        uh = u / torch.sqrt((u * u).sum(1, keepdim=True))
        mu = uh.mean(1, keepdim=True)
        var = ((uh - mu) ** 2).mean(1, keepdim=True)
        h = (uh - mu) / torch.sqrt(var + 1e-5) * q["norm.weight"] + q["norm.bias"]
        a = h @ q["w1.weight"].T + q["w1.bias"]
        gelu = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))
        delta = gelu @ q["w2.weight"].T + q["w2.bias"]
        gate = 1 / (1 + torch.exp(-(h @ q["wg.weight"].T + q["wg.bias"])))
        y = uh + gate * delta
        out = y / torch.sqrt((y * y).sum(1, keepdim=True))
        loss = (1 - (out * c).sum(1)).mean() + pw * torch.clamp(1 - (out * uh).sum(1) - margin, min=0).mean()
        grads = dict(zip(q, torch.autograd.grad(loss, list(q.values()))))
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
        scale = min(1.0, 1.0 / (norm + 1e-6))
        for k in p:
            g = grads[k] * scale
            p[k] = p[k] * (1 - lr * wd)
            m[k] = betas[0] * m[k] + (1 - betas[0]) * g
            s[k] = betas[1] * s[k] + (1 - betas[1]) * g * g
            m_hat, s_hat = m[k] / (1 - betas[0] ** t), s[k] / (1 - betas[1] ** t)
            p[k] = p[k] - lr * m_hat / (torch.sqrt(s_hat) + eps)
        losses.append(float(loss.detach()))
        norms.append(norm)
    return p, losses, norms


def test_one_training_step_matches_the_step_written_out():
    net = _net()
    u, c = _batch()
    start = {k: v.detach().clone() for k, v in net.named_parameters()}
    ref, ref_losses, norms = naive_steps(start, u, c, steps=3)
    assert max(norms) > 1.0                                 # the clipping is exercised
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    losses = [float(_gcpa_step(net, opt, u, c, 0.7, 0.08)) for _ in range(3)]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for k, v in net.named_parameters():
        np.testing.assert_allclose(v.detach().double().numpy(), ref[k].numpy(), atol=2e-6, err_msg=k)
        assert not torch.equal(v.detach(), start[k])        # every parameter moved


def test_bfloat16_step_is_close_to_the_float32_step():
    u, c = _batch(n=256, d=32, seed=3)
    nets = {dt: _net(d=32, hidden=64, seed=2) for dt in (None, torch.bfloat16)}
    losses = {}
    for dt, net in nets.items():
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
        losses[dt] = [float(_gcpa_step(net, opt, u, c, 0.7, 0.08, amp_dtype=dt)) for _ in range(5)]
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in net.parameters())
    # bfloat16 keeps 8 bits of mantissa: the loss agrees to about 1e-2 relative, and so do the weights after
    # five steps (AdamW's steps are about lr in size per weight, so compare the change, not the weights)
    np.testing.assert_allclose(losses[torch.bfloat16], losses[None], rtol=2e-2)
    start = _net(d=32, hidden=64, seed=2)
    for (k, a), (_, b), (_, p0) in zip(nets[None].named_parameters(), nets[torch.bfloat16].named_parameters(),
                                       start.named_parameters()):
        da, db = (a - p0).detach(), (b - p0).detach()
        assert float((da - db).norm() / da.norm()) < 0.25, k


def test_bfloat16_training_matches_float32_heldout_loss_and_retrieval():
    sp = planted(n=600, seed=4)
    train, test = split_train_test(600, 0.2, seed=0)
    tr = {k: v[train] for k, v in sp.items()}
    te = {k: v[test] for k, v in sp.items()}
    gpa = GPA().fit(tr)
    fits = {p: GCPA(max_epochs=40, patience=40, precision=p, batch_size=128, device="cpu").fit(tr, gpa=gpa)
            for p in ("float32", "bfloat16")}
    assert fits["float32"].precision_ == "float32" and fits["bfloat16"].precision_ == "bfloat16"
    assert fits["bfloat16"].describe()["precision"] == "bfloat16"
    h32, h16 = ([h["heldout_loss"] for h in fits[p].history_] for p in ("float32", "bfloat16"))
    assert h16[-1] < 0.9 * h16[0]                            # it trains
    assert abs(min(h16) - min(h32)) < 0.02 * min(h32)
    hits = {p: any_to_any_retrieval(f, te)["summary"]["top1"]["mean"] for p, f in fits.items()}
    assert abs(hits["bfloat16"] - hits["float32"]) <= 0.02
    # the trained corrector is applied in float32 either way
    assert all(p.dtype == torch.float32 for p in fits["bfloat16"].net_.parameters())


def test_auto_precision_follows_the_cpu_and_bad_precision_is_refused():
    sp = planted(n=120, seed=5)
    gpa = GPA().fit(sp)
    auto = GCPA(max_epochs=1, precision="auto", device="cpu").fit(sp, gpa=gpa)
    assert auto.precision_ == ("bfloat16" if has_fast_bfloat16("cpu") else "float32")
    assert GCPA(max_epochs=1, device="cpu").fit(sp, gpa=gpa).precision_ == "float32"     # the default
    with pytest.raises(DataError, match="unknown GCPA precision"):
        GCPA(max_epochs=1, precision="half").fit(sp, gpa=gpa)


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads the CPU's flags from /proc/cpuinfo")
def test_fast_bfloat16_is_what_the_cpu_flags_say():
    flags = set(re.findall(r"\b(avx512_bf16|amx_bf16)\b", Path("/proc/cpuinfo").read_text()))
    assert has_fast_bfloat16("cpu") == bool(flags)


def test_precision_reaches_gcpa_through_evaluate_universe_and_the_cli(tmp_path, capsys):
    import json

    from core.cli import main
    from core.evaluation.universe import evaluate_universe

    sp = planted(n=150, seed=6)
    res = evaluate_universe(sp, ["gcpa"], gcpa_epochs=1, gcpa_precision="bfloat16")
    assert res["methods"]["gcpa"]["description"]["precision"] == "bfloat16"
    assert evaluate_universe(sp, ["gcpa"], gcpa_epochs=1)["methods"]["gcpa"]["description"]["precision"] == "float32"
    paths = []
    for name, X in sp.items():
        np.save(tmp_path / f"{name}.npy", X.astype(np.float32))
        paths.append(str(tmp_path / f"{name}.npy"))
    assert main(["universe", *paths, "--method", "gcpa", "--epochs", "1", "--gcpa-precision", "bfloat16",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["methods"]["gcpa"]["description"]["precision"] == "bfloat16"
