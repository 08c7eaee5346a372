"""GCPA's corrector training (core/universe.py): one step against a step written out here, bfloat16 against float32."""
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from core.device import has_fast_bfloat16
from core.errors import DataError
import core.universe as cu
from core.universe import (GCPA, GPA, _Corrector, _corrector_backward, _corrector_forward, _gcpa_step,
                           _layer_normed, _normalize)
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


def naive_forward(q, u):
    """The corrector written out (exact GELU, LayerNorm with eps 1e-5) from the parameters ``q`` by name:
    ``(T(u), u^)``, differentiable by autograd, in whatever dtype ``q`` and ``u`` have."""
    uh = u / torch.sqrt((u * u).sum(1, keepdim=True))
    mu = uh.mean(1, keepdim=True)
    var = ((uh - mu) ** 2).mean(1, keepdim=True)
    h = (uh - mu) / torch.sqrt(var + 1e-5) * q["norm.weight"] + q["norm.bias"]
    a = h @ q["w1.weight"].T + q["w1.bias"]
    gelu = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))
    delta = gelu @ q["w2.weight"].T + q["w2.bias"]
    gate = 1 / (1 + torch.exp(-(h @ q["wg.weight"].T + q["wg.bias"])))
    y = uh + gate * delta
    return y / torch.sqrt((y * y).sum(1, keepdim=True)), uh


def naive_loss(q, u, c, pw=0.7, margin=0.08):
    """The GCPA loss of :func:`naive_forward` toward ``c``."""
    out, uh = naive_forward(q, u)
    return (1 - (out * c).sum(1)).mean() + pw * torch.clamp(1 - (out * uh).sum(1) - margin, min=0).mean()


def naive_steps(params, u, c, steps, lr=2e-3, wd=1e-4, pw=0.7, margin=0.08, betas=(0.9, 0.999), eps=1e-8):
    """:func:`naive_loss` in float64, its gradient by autograd, clipping to norm 1 and the AdamW update
    (decoupled decay) by hand, ``steps`` times."""
    p = {k: v.detach().double().clone() for k, v in params.items()}
    u, c = u.double(), c.double()
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    s = {k: torch.zeros_like(v) for k, v in p.items()}
    losses, norms = [], []
    for t in range(1, steps + 1):
        q = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        loss = naive_loss(q, u, c, pw, margin)
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


def reference_grads(net, u, c, pw=0.7, margin=0.08):
    """The loss and every parameter's gradient by autograd through :func:`naive_loss`, in float64."""
    q = {k: v.detach().double().clone().requires_grad_(True) for k, v in net.named_parameters()}
    loss = naive_loss(q, u.double(), c.double(), pw, margin)
    return float(loss.detach()), dict(zip(q, torch.autograd.grad(loss, list(q.values()))))


def hand_grads(net, u, c, dtype=None, work=None, xn=None, pw=0.7, margin=0.08):
    """The loss and gradients of core's hand-written forward and backward passes."""
    work = {} if work is None else work
    for p in net.parameters():
        p.grad = None
    with torch.no_grad():
        v, r, saved = _corrector_forward(net, u, dtype, work, xn)
        loss = _corrector_backward(net, u, c, v, r, saved, pw, margin, work)
    return float(loss), {k: p.grad.detach().clone() for k, p in net.named_parameters()}


def test_one_training_step_matches_the_step_written_out():
    net = _net()
    u, c = _batch()
    start = {k: v.detach().clone() for k, v in net.named_parameters()}
    ref, ref_losses, norms = naive_steps(start, u, c, steps=3)
    assert max(norms) > 1.0                                 # the clipping is exercised
    opt = cu._adamw(net, 2e-3, 1e-4)                        # the fit's optimizer (fused where there is one)
    losses = [float(_gcpa_step(net, opt, u, c, 0.7, 0.08)) for _ in range(3)]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for k, v in net.named_parameters():
        np.testing.assert_allclose(v.detach().double().numpy(), ref[k].numpy(), atol=2e-6, err_msg=k)
        assert not torch.equal(v.detach(), start[k])        # every parameter moved


def _half_inside_margin(net, u):
    """A margin that puts about half the rows inside it (the hinge term active on the others)."""
    out, uh = naive_forward({k: v.detach().double() for k, v in net.named_parameters()}, u.double())
    x = torch.sort(1 - (out * uh).sum(1)).values
    return float(x[len(x) // 2 - 1: len(x) // 2 + 1].mean())      # between two rows: none sits on the kink


@pytest.mark.parametrize("case", ["random", "gamma_near_zero", "small_weights"])
def test_hand_written_gradient_matches_autograd_in_float64(case):
    """Loss and every parameter's gradient of the hand-written passes against autograd through the forward
    written out, in float64; rows on both sides of the margin; LayerNorm's gamma at and near zero (its gradient
    and W's come from the first layer's weight gradient, with no division by gamma)."""
    d, hidden, n = 8, 16, 40
    net = _net(d=d, hidden=hidden, seed=1).double()
    with torch.no_grad():
        if case == "gamma_near_zero":
            net.norm.weight[: d // 2] = 0.0
            net.norm.weight[d // 2: d // 2 + 2] = 1e-9
        if case == "small_weights":            # close to the identity, as training starts
            for p in net.parameters():
                p.mul_(1e-3)
    u, c = (t.double() for t in _batch(n=n, d=d, seed=2))
    u = u / u.norm(dim=1, keepdim=True)          # unit rows in float64 (the fit's rows are unit rows)
    margin = _half_inside_margin(net, u)
    loss_ref, g_ref = reference_grads(net, u, c, margin=margin)
    loss, g = hand_grads(net, u, c, margin=margin)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    assert set(g) == set(g_ref) == {k for k, _ in net.named_parameters()}
    for k in g_ref:
        np.testing.assert_allclose(g[k].numpy(), g_ref[k].numpy(), rtol=1e-9, atol=1e-13, err_msg=k)
        assert float(g_ref[k].abs().max()) > 0, k              # every gradient is exercised
    # the same with the inputs' LayerNorm given (the fit computes it once), and with buffers of a larger batch
    work = {}
    hand_grads(net, u, c, work=work, margin=margin)
    loss_ref, g_ref = reference_grads(net, u[:25], c[:25], margin=margin)
    loss, g = hand_grads(net, u[:25], c[:25], work=work, xn=_layer_normed(_normalize(u[:25]), 1e-5), margin=margin)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    for k in g_ref:
        np.testing.assert_allclose(g[k].numpy(), g_ref[k].numpy(), rtol=1e-9, atol=1e-13, err_msg=k)


def test_hand_written_forward_is_the_corrector_written_out():
    """T(u) of the module (the fit's held-out checks and every use of the trained corrector) against the forward
    written out, float64, on inputs that are not unit rows, and differentiable by autograd."""
    net = _net(d=8, hidden=16, seed=4).double()
    u = torch.randn(30, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 3
    ref, _ = naive_forward({k: v.detach() for k, v in net.named_parameters()}, u)
    out = net(u)
    np.testing.assert_allclose(out.detach().numpy(), ref.numpy(), rtol=1e-12, atol=1e-14)
    out.sum().backward()                                       # autograd still works through the module
    assert all(p.grad is not None for p in net.parameters())


def test_bfloat16_gradient_is_close_to_the_float64_gradient():
    """The bfloat16 passes (matrix products, GELU and gate in bfloat16) give float32 gradients within bfloat16's
    rounding of the float64 ones, for every parameter."""
    net = _net(d=32, hidden=64, seed=6)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.3)
    u, c = _batch(n=256, d=32, seed=7)
    margin = _half_inside_margin(net, u)
    loss_ref, g_ref = reference_grads(net, u, c, margin=margin)
    loss, g = hand_grads(net, u, c, dtype=torch.bfloat16, margin=margin)
    assert all(v.dtype == torch.float32 for v in g.values())
    assert loss == pytest.approx(loss_ref, rel=1e-3)
    for k in g_ref:
        err = float((g[k].double() - g_ref[k]).norm() / g_ref[k].norm())
        assert err < 0.02, (k, err)                            # measured: 3.5e-3 at most
    # float32 for comparison: far tighter
    loss32, g32 = hand_grads(net, u, c, margin=margin)
    for k in g_ref:
        assert float((g32[k].double() - g_ref[k]).norm() / g_ref[k].norm()) < 1e-5, k


def _autograd_step(net, opt, u, c, pw, mg, amp_dtype=None, work=None, xn=None):
    """The corrector's step by autograd through the forward written out (the step before the hand-written one)."""
    loss = naive_loss(dict(net.named_parameters()), u, c, pw, mg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return loss.detach()


@pytest.mark.parametrize("schedule", ["epochs", "sampled"])
def test_fit_trains_as_with_the_autograd_step(monkeypatch, schedule):
    """A short fit with the hand-written step (and the fused AdamW, the precomputed LayerNorm inputs, the buffered
    held-out pass) against the same fit with an autograd step and held-out checks through the forward written
    out and plain AdamW: the same batches, history and early stopping, to float32 rounding."""
    sp = planted(n=500, seed=8)
    gpa = GPA().fit(sp)
    kw = dict(max_epochs=12, patience=3, batch_size=64, device="cpu") if schedule == "epochs" else \
        dict(schedule="sampled", max_epochs=3, steps_per_epoch=20, val_interval=5, val_batches=3, val_patience=4,
             batch_size=64, device="cpu")
    new = GCPA(**kw).fit(sp, gpa=gpa)
    with monkeypatch.context() as mp:
        mp.setattr(cu, "_gcpa_step", _autograd_step)
        mp.setattr(cu, "_adamw", lambda net, lr, wd: torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd))
        mp.setattr(cu, "_corrector_forward", lambda net, u, dtype=None, work=None, xn=None: (
            naive_forward(dict(net.named_parameters()), u)[0], torch.ones(len(u)), None))
        old = GCPA(**kw).fit(sp, gpa=gpa)
    assert len(new.history_) == len(old.history_) > 3
    assert (new.best_epoch_, new.stopped_epoch_) == (old.best_epoch_, old.stopped_epoch_)
    for a, b in zip(new.history_, old.history_):
        assert {k: v for k, v in a.items() if k not in ("seconds", "train_loss", "heldout_loss")} == \
               {k: v for k, v in b.items() if k not in ("seconds", "train_loss", "heldout_loss")}
        for key in ("train_loss", "heldout_loss"):
            if a[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-5), (key, a, b)   # measured: 1.4e-7
    assert min(h["heldout_loss"] for h in new.history_) < 0.95 * new.history_[0]["heldout_loss"]   # it trains
    X = sp[next(iter(sp))][:50]
    np.testing.assert_allclose(new.to_universe(next(iter(sp)), X), old.to_universe(next(iter(sp)), X), atol=1e-4)


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
