"""Small numerical routines every module shares (each exists once, here).

* :func:`gram`, :func:`gram_blocks` - ``X^T X`` from the upper blocks only (scatter and cross-product matrices).
* :func:`fix_signs` - the sign convention of every decomposition: each column's largest-magnitude entry is positive.
* :func:`sym_eig_desc` - eigendecomposition of a symmetric matrix, eigenvalues descending, signs fixed.
* :func:`pca_components` - PCA from a covariance (or scatter) matrix: variances and ``k x d`` components.
* :func:`average_ranks`, :func:`pearson`, :func:`spearman` - rank correlation on torch vectors (float64).
* :func:`pool_coefficients`, :func:`pool_tokens` - the one pooling of token sets: ``(1/M) sum_t m_t w_t v_t``.
* :func:`single_threaded` - dense LAPACK calls single-threaded, side by side on the caller's share of the cores.
* :func:`polar_factors` - the orthogonal polar factors (Procrustes rotations) of several matrices at once.

Torch in, torch out, on the input's device; callers convert with :mod:`core.device`.
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import torch

__all__ = ["gram", "gram_blocks", "fix_signs", "sym_eig_desc", "pca_components", "average_ranks", "pearson", "spearman", "pool_coefficients",
           "pool_tokens", "single_threaded", "single_threaded_iter", "polar_factors", "orthonormal_factor"]

_F64 = torch.float64


def gram_blocks(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """``X^T X`` for ``X = [B_1 ... B_K]`` (column blocks with the same rows), from the products ``B_j^T B_k``
    with ``j <= k`` only: the lower blocks are the transposes (exactly symmetric off the diagonal blocks), so it
    costs about ``(1 + 1/K) / 2`` of the full GEMM and never concatenates the blocks."""
    blocks = list(blocks)
    widths = [int(b.shape[1]) for b in blocks]
    starts = [0]
    for w in widths:
        starts.append(starts[-1] + w)
    first = blocks[0]
    C = torch.empty(starts[-1], starts[-1], dtype=first.dtype, device=first.device)
    for j, bj in enumerate(blocks):
        for k in range(j, len(blocks)):
            P = bj.T @ blocks[k]
            C[starts[j]:starts[j + 1], starts[k]:starts[k + 1]] = P
            if k != j:
                C[starts[k]:starts[k + 1], starts[j]:starts[j + 1]] = P.T
    return C


_BLAS = None


def _numpy_blas_threads(n: int):
    """numpy's BLAS limited to ``n`` threads for a ``with`` block (threadpoolctl), so that a job's share of the
    cores (core.jobs divides torch's threads) holds for numpy's BLAS too."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=max(1, int(n)), user_api="blas")


def gram(X: torch.Tensor, block: int = 512) -> torch.Tensor:
    """``X^T X``, exactly symmetric.

    A contiguous float32 / float64 matrix on the CPU goes through numpy's ``a.T @ a``, which calls BLAS ``syrk``
    (the symmetric rank-k update, half a GEMM's flops; torch's CPU matmul calls GEMM) on torch's share of the
    threads: 1.9-2.7x the speed of the blocked GEMMs on this project's 2-core CPU for 24,800 x 512 and x 1,280
    (bench/bench_universe.py, "Gram"); a strided matrix is copied first. Elsewhere :func:`gram_blocks` on
    column blocks of at most ``block`` columns (views, no copy)."""
    p = int(X.shape[1])
    if X.device.type == "cpu" and X.dtype in (torch.float32, _F64) and not X.requires_grad:
        a = X.contiguous().numpy()
        with _numpy_blas_threads(torch.get_num_threads()):
            return torch.from_numpy(a.T @ a)      # numpy sees one buffer and its transpose: syrk, mirrored
    if p > block:
        return gram_blocks([X[:, a:a + block] for a in range(0, p, block)])
    G = X.T @ X
    return (G + G.T) / 2


def fix_signs(U: torch.Tensor, V: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flip the columns of ``U`` so that each one's largest-magnitude entry is positive (and ``V``'s alike).

    The one sign convention of the project (PCA components, CCA directions, GCCA bases): fits are reproducible
    and comparable across runs and devices.
    """
    idx = U.abs().argmax(dim=0)
    signs = torch.sign(U[idx, torch.arange(U.shape[1], device=U.device)])
    signs[signs == 0] = 1
    return U * signs, None if V is None else V * signs


def sym_eig_desc(C: torch.Tensor, k: int | None = None, signs: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns) of the symmetric matrix ``C``.

    ``C`` is symmetrised first (``(C + C^T) / 2``: ``eigh`` reads one triangle only, and a Gram matrix summed by
    GEMMs can be asymmetric in the last bit). ``k`` keeps the top ``k``; ``signs`` applies :func:`fix_signs`
    (pass False where only the span matters, e.g. whitening). The ``eigh`` runs single-threaded
    (:func:`single_threaded`).
    """
    sym = (C + C.T) / 2
    (vals, vecs), = single_threaded(torch.linalg.eigh, [(sym,)], _on_cpu(sym))    # one thread (single_threaded)
    vals, vecs = vals.flip(0), vecs.flip(1)
    if k is not None:
        vals, vecs = vals[:k], vecs[:, :k]
    if signs:
        vecs, _ = fix_signs(vecs)
    return vals, vecs


def pca_components(C: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The one PCA: principal variances (descending) and components of the covariance (or scatter) matrix ``C``.

    Returns ``(variances, components)`` with ``components`` ``k x d`` (scikit-learn's layout: row ``j`` is the
    ``j``-th unit axis; signs fixed by :func:`fix_signs`), so that ``(x - mean) @ components.T`` projects. The
    variances are ``C``'s eigenvalues: pass ``Cxx / (n - 1)`` for sample variances. ``k`` keeps the top ``k``.
    """
    vals, vecs = sym_eig_desc(C, k)
    return vals, vecs.T


def average_ranks(v: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a vector, ties given their average rank (``scipy.stats.rankdata(method='average')``)."""
    sorted_v, order = torch.sort(v)
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(_F64)
    avg = ends - (counts.to(_F64) - 1) / 2
    ranks = torch.empty_like(v, dtype=_F64)
    ranks[order] = avg[inverse]
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation of two vectors; None when one of them is constant."""
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a)) * math.sqrt(float(b @ b))
    if not den > 0:
        return None
    return float(a @ b) / den


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman correlation: :func:`pearson` of the :func:`average_ranks`; None when one side is constant."""
    return pearson(average_ranks(a), average_ranks(b))


def pool_coefficients(mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The coefficients ``m_t w_t / M`` of the pooled mean of token sets (``B x T``; ``M`` = the number of real
    tokens of the set, at least 1; ``w = 1`` without weights).

    The one definition of pooling (paper B's ``mean_i w_i v_i`` over the ``M`` unmasked tokens): without weights the
    masked mean, with weights their sum over the real tokens divided by the token count (not by ``sum w``: the
    weights' scale is part of the pooled vector, as in the point-set features); a set with no real token pools to 0.
    """
    m = mask.to(weights.dtype if weights is not None else torch.float64)
    M = m.sum(1).clamp_min(1.0)
    return (m if weights is None else weights * m) / M[:, None]


def pool_tokens(tokens: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pooled vectors ``(1/M) sum_t m_t w_t v_t`` of a batch of token sets (``B x T x d`` -> ``B x d``), see
    :func:`pool_coefficients`."""
    return torch.einsum("bt,btd->bd", pool_coefficients(mask, weights).to(tokens.dtype), tokens)


# ------------------------------------------------------------------------------------------------
# dense LAPACK, one thread per call
# ------------------------------------------------------------------------------------------------
def _thread_count_setters():
    """``(set_mkl, get_mkl, set_omp)``: the functions that set the *calling thread's* thread count in the MKL and
    the libgomp that torch ships with (``MKL_Set_Num_Threads_Local``, ``omp_set_num_threads``: both thread-local by
    their specifications, unlike ``torch.set_num_threads``, which also changes a process-wide default); None when
    this torch build has no such libraries (e.g. no MKL, or another OpenMP)."""
    libdir = os.path.join(os.path.dirname(torch.__file__), "lib")
    try:
        cpu = ctypes.CDLL(os.path.join(libdir, "libtorch_cpu.so"))
        gomp = ctypes.CDLL(os.path.join(libdir, "libgomp.so.1"))
        mkl, mkl_get, omp = cpu.MKL_Set_Num_Threads_Local, cpu.MKL_Get_Max_Threads, gomp.omp_set_num_threads
    except (OSError, AttributeError):
        return None
    mkl.argtypes, mkl.restype = [ctypes.c_int], ctypes.c_int
    mkl_get.argtypes, mkl_get.restype = [], ctypes.c_int
    omp.argtypes, omp.restype = [ctypes.c_int], None
    return mkl, mkl_get, omp


def _thread_nice() -> int | None:
    """The calling thread's nice value (Linux: per thread), None where unknown."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (AttributeError, OSError):
        return None


class _SerialLapackPool:
    """Worker threads whose own MKL / OpenMP thread count is 1: LAPACK calls on them run serially, with no
    parallel region and so no wake-up of sleeping OpenMP workers. None of this touches any other thread.

    One set of workers per nice value of the callers (a job thread runs niced, ui.jobs): a worker is started by
    the thread that first needs it and inherits its priority, so the work runs at its caller's priority."""

    def __init__(self):
        self._lock = threading.Lock()
        self._executors: dict = {}
        self._setters = None
        self.available = None              # unknown until first use

    @staticmethod
    def _init_worker(setters):
        torch.get_num_threads()            # torch's lazy per-thread setup first (it would reset the counts later)
        set_mkl, _, set_omp = setters
        set_mkl(1)
        set_omp(1)

    def executor(self) -> ThreadPoolExecutor | None:
        nice = _thread_nice()
        with self._lock:
            if self.available is None:
                self._setters = _thread_count_setters()
                self.available = self._setters is not None
            if not self.available:
                return None
            pool = self._executors.get(nice)
            if pool is None:
                setters = self._setters
                pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1),
                                          thread_name_prefix="platoscope-lapack",
                                          initializer=self._init_worker, initargs=(setters,))
                ok = pool.submit(lambda: (torch.get_num_threads(), setters[1]())).result() == (1, 1)
                if not ok:                 # the counts did not take: run in the caller instead
                    pool.shutdown(wait=False)
                    self.available = False
                    return None
                self._executors[nice] = pool
            return pool

    def _forget_after_fork(self):
        """A forked child has none of the parent's worker threads: start afresh there."""
        self._lock = threading.Lock()
        self._executors = {}


_SERIAL_LAPACK = _SerialLapackPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_SERIAL_LAPACK._forget_after_fork)


def single_threaded(fn: Callable, arg_lists: Sequence[tuple], tensors_on_cpu: bool = True) -> list:
    """``[fn(*args) for args in arg_lists]``, each call single-threaded and up to ``torch.get_num_threads()`` of
    them side by side, on worker threads whose own MKL / OpenMP thread count is 1 (:func:`single_threaded_iter`
    yields the results one by one, in order).

    For dense LAPACK on small and medium matrices (SVD, eigh, QR of a few hundred to a few thousand columns):
    each such call is a long chain of small parallel regions, and with ``OMP_WAIT_POLICY=PASSIVE`` (which
    ``import core`` sets, docs/UI.md) every region pays a futex wake-up of the sleeping OpenMP workers, and waits
    for the slowest of them when other processes hold the cores. One call per core with no region at all avoids
    both (bench/bench_universe.py, "dense LAPACK"). Also for independent pieces of work that mix GEMMs with
    single-threaded numpy (retrieval's score blocks): side by side, both cores stay busy. The same routines run
    either way; only their summation order may differ in the last bits. The callers' own thread settings are left
    alone (thread-safe). Runs in the caller when the caller has one thread, when ``tensors_on_cpu`` is False
    (GPU) and where this torch build has no thread-local controls.
    """
    return list(single_threaded_iter(fn, arg_lists, tensors_on_cpu))


def single_threaded_iter(fn: Callable, arg_lists: Sequence[tuple], tensors_on_cpu: bool = True) -> Iterator:
    """:func:`single_threaded`, yielding each result in order as soon as it is ready (for progress and
    cancellation between them: a consumer that stops early leaves the calls not yet started unstarted)."""
    arg_lists = [tuple(a) for a in arg_lists]
    threads = torch.get_num_threads()
    pool = _SERIAL_LAPACK.executor() if (arg_lists and threads >= 2 and tensors_on_cpu) else None
    if pool is None:                     # one thread: serial already
        for a in arg_lists:
            yield fn(*a)
        return
    futures = [Future() for _ in arg_lists]
    order = iter(range(len(arg_lists)))
    lock, stop = threading.Lock(), threading.Event()

    def runner():
        while not stop.is_set():
            with lock:
                i = next(order, None)
            if i is None:
                return
            try:
                futures[i].set_result(fn(*arg_lists[i]))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                futures[i].set_exception(exc)

    for _ in range(min(len(arg_lists), threads)):
        pool.submit(runner)
    try:
        for f in futures:
            yield f.result()
    finally:
        stop.set()


def _on_cpu(*tensors) -> bool:
    return all(t.device.type == "cpu" for t in tensors)


def _polar_one(M: torch.Tensor) -> torch.Tensor:
    A, _, Bh = torch.linalg.svd(M, full_matrices=False)
    return A @ Bh


def orthonormal_factor(G0: torch.Tensor, gram0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``G0 = G T`` with orthonormal columns ``G`` and upper triangular ``T``, given ``gram0 = G0^T G0``.

    CholeskyQR (``T`` = the Cholesky factor of ``gram0``, ``G = G0 T^-1``) when ``G0`` is well conditioned
    (``cond(gram0) < 1e4``, i.e. ``cond(G0) < 100``: the columns of ``G`` are then orthonormal to about
    ``1e4`` unit roundoffs; a triangular solve instead of a Householder QR of the ``n x k`` matrix); else
    Householder QR (one thread, :func:`single_threaded`). ``gram0`` (default ``G0^T G0``) may come from cheaper
    ``k x k`` work (GCCA: the spaces' cross-products)."""
    gram0 = G0.T @ G0 if gram0 is None else (gram0 + gram0.T) / 2
    ev = torch.linalg.eigvalsh(gram0)
    if bool(ev[0] > 0) and bool(ev[-1] < 1e4 * ev[0]):
        T, info = torch.linalg.cholesky_ex(gram0, upper=True)
        if int(info) == 0:
            return torch.linalg.solve_triangular(T, G0, upper=True, left=False), T
    (G, T), = single_threaded(torch.linalg.qr, [(G0,)], G0.device.type == "cpu")
    return G, T


def polar_factors(Ms: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The orthogonal polar factor ``A B^T`` of each ``M = A S B^T`` (thin SVD; the Procrustes rotation
    ``argmax_R tr(R^T M)`` over orthogonal ``R``), for several square (or tall) matrices at once, side by side
    (:func:`single_threaded`)."""
    Ms = list(Ms)
    return single_threaded(_polar_one, [(M,) for M in Ms], _on_cpu(*Ms))
