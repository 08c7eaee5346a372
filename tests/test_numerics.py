"""core.numerics.polar_factors against independent references (scipy's polar decomposition, the defining
properties of a polar factor), and its thread-local single-threaded workers (docs/UI.md, "threads")."""
import threading

import numpy as np
import pytest
import scipy.linalg
import torch

from core.numerics import orthonormal_factor, polar_factors


def _random(rng, n, cond=None, rank=None):
    U = np.linalg.qr(rng.normal(size=(n, n)))[0]
    V = np.linalg.qr(rng.normal(size=(n, n)))[0]
    s = np.logspace(0, -np.log10(cond), n) if cond else rng.uniform(0.5, 2.0, n)
    if rank is not None:
        s[rank:] = 0.0
    return (U * s) @ V.T


@pytest.mark.parametrize("cond", [None, 1e4, 1e8])
def test_polar_factors_match_scipy_polar(cond):
    rng = np.random.default_rng(3)
    Ms = [_random(rng, n, cond) for n in (5, 40, 96, 96, 130)]
    Qs = polar_factors([torch.as_tensor(M) for M in Ms])
    for M, Q in zip(Ms, Qs):
        ref, _ = scipy.linalg.polar(M)
        # the polar factor of M is as sensitive as 1 / (s_i + s_j): expect eps * cond, not eps
        tol = 1e-12 * (cond or 1.0)
        np.testing.assert_allclose(Q.numpy(), ref, atol=tol, rtol=0)


def test_polar_factors_of_rank_deficient_matrices_are_orthogonal_with_a_symmetric_psd_factor():
    # without full rank the orthogonal factor is not unique: check what defines one, Q orthogonal, Q^T M = H
    # symmetric positive semi-definite (so M = Q H), and that it maximises tr(Q^T M) (= the nuclear norm of M)
    rng = np.random.default_rng(4)
    Ms = [_random(rng, 64, rank=r) for r in (0, 1, 20, 63)]
    for M, Q in zip(Ms, polar_factors([torch.as_tensor(M) for M in Ms])):
        Q = Q.numpy()
        np.testing.assert_allclose(Q.T @ Q, np.eye(64), atol=1e-12)
        H = Q.T @ M
        np.testing.assert_allclose(H, H.T, atol=1e-12)
        assert np.linalg.eigvalsh((H + H.T) / 2).min() > -1e-12
        np.testing.assert_allclose(np.trace(H), np.linalg.svd(M, compute_uv=False).sum(), rtol=1e-12, atol=1e-12)


def test_polar_factors_of_tall_matrices_and_the_procrustes_rotation():
    # tall M (n x d): A B^T with orthonormal columns; the Procrustes rotation of Y onto X is polar(Y^T X)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 12))
    R = np.linalg.qr(rng.normal(size=(12, 12)))[0]
    Y = X @ R.T + 1e-3 * rng.normal(size=X.shape)
    (Rhat,) = polar_factors([torch.as_tensor(Y.T @ X)])
    np.testing.assert_allclose(Rhat.numpy(), scipy.linalg.orthogonal_procrustes(Y, X)[0], atol=1e-12)
    tall = rng.normal(size=(50, 8))
    (Q,) = polar_factors([torch.as_tensor(tall)])
    np.testing.assert_allclose(Q.numpy(), scipy.linalg.polar(tall)[0], atol=1e-12)


def test_polar_factors_leave_the_callers_threads_alone_and_are_thread_safe():
    rng = np.random.default_rng(6)
    Ms = [torch.as_tensor(_random(rng, 80, 1e3)) for _ in range(6)]
    refs = [scipy.linalg.polar(M.numpy())[0] for M in Ms]
    before = torch.get_num_threads()
    errors = []

    def work():
        try:
            for _ in range(3):
                for Q, ref in zip(polar_factors(Ms), refs):
                    np.testing.assert_allclose(Q.numpy(), ref, atol=1e-9)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert torch.get_num_threads() == before          # the workers' one thread is theirs only
    assert polar_factors([]) == []


def test_the_lapack_workers_run_one_thread_each():
    from core.numerics import _SERIAL_LAPACK

    pool = _SERIAL_LAPACK.executor()
    if pool is None:
        pytest.skip("this torch build has no MKL / libgomp thread-local controls: SVDs run in the caller")
    assert pool.submit(torch.get_num_threads).result() == 1
    assert torch.get_num_threads() >= 1 and _SERIAL_LAPACK.available


def test_gram_equals_the_full_product():
    from core.numerics import gram, gram_blocks

    rng = np.random.default_rng(7)
    X = rng.normal(size=(300, 70))
    ref = X.T @ X
    for block in (16, 32, 70, 512):
        G = gram(torch.as_tensor(X), block=block).numpy()
        np.testing.assert_allclose(G, ref, rtol=1e-12, atol=1e-10)
    parts = [torch.as_tensor(X[:, :10]), torch.as_tensor(X[:, 10:45]), torch.as_tensor(X[:, 45:])]
    G = gram_blocks(parts).numpy()
    np.testing.assert_allclose(G, ref, rtol=1e-12, atol=1e-10)
    np.testing.assert_array_equal(G[:10, 10:], G[10:, :10].T)


def test_gram_on_the_cpu_is_exactly_symmetric_in_both_precisions_and_keeps_blas_to_torchs_threads(monkeypatch):
    """The CPU path (numpy's syrk) against the float64 product, for float64 and float32, contiguous and not;
    numpy's BLAS runs with torch's thread count inside the call (threadpoolctl), as a job's share says."""
    from threadpoolctl import threadpool_info

    import core.numerics as numerics

    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 90))
    ref = X.T @ X
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        t = torch.as_tensor(X, dtype=dtype)
        for x in (t, t.T.contiguous().T):                       # contiguous, and a transposed (strided) copy
            G = numerics.gram(x)
            assert G.dtype == dtype and G.shape == (90, 90)
            np.testing.assert_allclose(G.double().numpy(), ref, rtol=rtol, atol=rtol * 100)
            assert bool((G == G.T).all())
    seen = []
    real = numerics._numpy_blas_threads

    def spy(n):
        seen.append(n)
        return real(n)

    monkeypatch.setattr(numerics, "_numpy_blas_threads", spy)
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    numerics.gram(torch.as_tensor(X))
    assert seen == [torch.get_num_threads()]
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before   # restored


def test_the_lapack_workers_run_at_their_callers_priority():
    import os

    from core.numerics import _SERIAL_LAPACK

    if _SERIAL_LAPACK.executor() is None or not hasattr(os, "getpriority"):
        pytest.skip("no thread-local LAPACK controls or no per-thread priorities here")
    seen = {}

    def niced():
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + 3)   # as a job thread does
        mine = os.getpriority(os.PRIO_PROCESS, tid)
        worker = _SERIAL_LAPACK.executor().submit(lambda: os.getpriority(os.PRIO_PROCESS,
                                                                       threading.get_native_id())).result()
        seen.update(mine=mine, worker=worker)

    t = threading.Thread(target=niced)
    t.start()
    t.join()
    assert seen["worker"] == seen["mine"]
    here = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert _SERIAL_LAPACK.executor().submit(lambda: os.getpriority(os.PRIO_PROCESS,
                                                                 threading.get_native_id())).result() == here


def test_single_threaded_iter_yields_in_order_passes_errors_and_stops_early():
    import time as _time

    from core.numerics import single_threaded, single_threaded_iter

    def slow_square(i):
        _time.sleep(0.02 * (5 - i))                  # later calls finish first
        return i * i

    assert single_threaded(slow_square, [(i,) for i in range(5)]) == [0, 1, 4, 9, 16]
    started = []

    def record(i):
        started.append(i)
        _time.sleep(0.01)
        if i == 2:
            raise ValueError("two")
        return i

    it = single_threaded_iter(record, [(i,) for i in range(40)])
    assert next(it) == 0 and next(it) == 1
    with pytest.raises(ValueError, match="two"):
        next(it)
    it.close()                                       # a consumer that stops (a cancelled job) starts no more calls
    _time.sleep(0.1)
    assert len(started) < 40


def test_a_forked_child_starts_its_own_workers():
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork here")
    polar_factors([torch.eye(3), torch.eye(3)])            # the parent's workers exist
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_polar, args=(q,))
    p.start()
    p.join(60)
    if p.exitcode is None:                                  # hung on the parent's (absent) workers
        p.kill()
    assert p.exitcode == 0 and q.get(timeout=5) == pytest.approx(1.0)


def _child_polar(q):
    Q = polar_factors([torch.eye(4) * 2.0, torch.eye(4) * 3.0])
    q.put(float(Q[1][0, 0]))


@pytest.mark.parametrize("cond", [1.0, 30.0, 1e6])
def test_orthonormal_factor_matches_householder_qr_up_to_column_signs(cond):
    """CholeskyQR on well-conditioned inputs, Householder QR on the others: either way G0 = G T with orthonormal
    G and upper triangular T, the same factorisation numpy's QR gives (up to the signs of the columns)."""
    rng = np.random.default_rng(3)
    n, k = 400, 12
    Q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    W, _ = np.linalg.qr(rng.standard_normal((k, k)))
    G0 = Q @ np.diag(np.logspace(0, np.log10(cond), k)) @ W
    G, T = orthonormal_factor(torch.as_tensor(G0))
    G, T = G.numpy(), T.numpy()
    assert np.allclose(G.T @ G, np.eye(k), atol=1e-12)
    assert np.allclose(np.triu(T), T) and np.allclose(G @ T, G0, atol=1e-10 * cond)
    Qr, Rr = np.linalg.qr(G0)
    signs = np.sign(np.diag(Rr)) * np.sign(np.diag(T))
    assert np.allclose(G, Qr * signs, atol=1e-9) and np.allclose(T, Rr * signs[:, None], rtol=1e-9, atol=1e-9 * cond)
    # a k x k Gram handed in (GCCA reads it from the cross-products) gives the same factors
    G2, T2 = orthonormal_factor(torch.as_tensor(G0), torch.as_tensor(G0.T @ G0))
    assert np.allclose(G2.numpy(), G, atol=1e-12) and np.allclose(T2.numpy(), T, atol=1e-12 * cond)
