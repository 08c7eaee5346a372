"""The scikit-learn contract of every estimator in core (core/base.py).

Estimators are discovered by walking the core package for BaseEstimator subclasses, so a new one is covered
without being listed here. Each one must clone, round-trip its parameters, store them unchanged, raise the one
NotFittedError before fit, and (where it takes random_state) depend on nothing but random_state.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

import core
from core.base import Estimator, check_fitted, resolve_seed
from core.errors import DataError, NotFittedError


def _core_modules():
    out = []
    for info in pkgutil.walk_packages(core.__path__, "core."):
        if info.name.endswith("__main__"):
            continue
        out.append(importlib.import_module(info.name))
    return out


def _estimators():
    found = {}
    for mod in _core_modules():
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if (issubclass(cls, BaseEstimator) and cls.__module__.startswith("core.") and not name.startswith("_")
                    and cls.__module__ == mod.__name__ and cls is not Estimator):
                found[f"{cls.__module__}.{name}"] = cls
    return found


ESTIMATORS = _estimators()


def test_discovery_finds_every_known_estimator():
    names = {key.rsplit(".", 1)[1] for key in ESTIMATORS}
    assert {"AffineMap", "PairedPCA", "ProcrustesMap", "CCA", "LocalCKA", "PairwiseAligner", "UniversePreprocessor",
            "PairwiseProcrustes", "GPA", "GCCA", "GCPA", "RandomFourierFeatures", "PointSetSimilarity",
            "RadialFineTuner", "OpenCLIPTextTowerFineTuner", "PCAProjection", "CrossModalRetriever"} <= names
    assert all(issubclass(cls, Estimator) for cls in ESTIMATORS.values())


@pytest.mark.parametrize("key", sorted(ESTIMATORS))
def test_clone_params_and_repr(key):
    cls = ESTIMATORS[key]
    est = cls()
    params = est.get_params(deep=False)
    sig = inspect.signature(cls.__init__).parameters
    # hyper-parameters are stored unchanged under their __init__ names
    for name, value in params.items():
        assert value is sig[name].default or value == sig[name].default, name
    twin = clone(est)
    assert twin is not est and type(twin) is cls and twin.get_params(deep=False) == params
    assert repr(est).startswith(cls.__name__ + "(")
    # set_params changes one hyper-parameter and nothing else
    name = next(iter(params))
    other = clone(est).set_params(**{name: params[name]})
    assert other.get_params(deep=False) == params
    # no fitted state before fit, and one error type for it
    assert not est.is_fitted
    assert not any(k.endswith("_") and not k.startswith("_") for k in vars(est)), vars(est)
    with pytest.raises(NotFittedError) as info:
        check_fitted(est)
    assert isinstance(info.value, SklearnNotFittedError) and isinstance(info.value, DataError)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(est)


@pytest.mark.parametrize("key", sorted(k for k, c in ESTIMATORS.items() if "random_state" in c._get_param_names()))
def test_seed_is_a_deprecated_alias_of_random_state(key):
    cls = ESTIMATORS[key]
    with pytest.warns(DeprecationWarning):
        est = cls(seed=7)
    assert est.random_state == 7 and est.seed == 7 and clone(est).random_state == 7
    with pytest.raises(TypeError):
        cls(seed=1, random_state=2)


def test_resolve_seed():
    assert resolve_seed(5) == 5 and resolve_seed(np.int64(5)) == 5
    a, b = resolve_seed(np.random.default_rng(1)), resolve_seed(np.random.default_rng(1))
    assert a == b and isinstance(a, int)
    assert isinstance(resolve_seed(None), int)
    with pytest.raises(TypeError):
        resolve_seed("0")
    with pytest.raises(TypeError):
        resolve_seed(True)


# ------------------------------------------------------------------------------------------------
# small data
# ------------------------------------------------------------------------------------------------
def _pair(n=240, p=8, q=6, seed=0):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 4))
    X = Z @ rng.normal(size=(4, p)) + 0.3 * rng.normal(size=(n, p)) + 5.0
    Y = Z @ rng.normal(size=(4, q)) + 0.3 * rng.normal(size=(n, q)) - 2.0
    return X, Y


def _spaces(n=150, seed=0):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 5))
    return {name: Z @ rng.normal(size=(5, d)) + 0.2 * rng.normal(size=(n, d))
            for name, d in (("a", 6), ("b", 7), ("c", 5))}


def _heldout_corr(est, X, Y):
    """Mean correlation of the canonical pairs on held-out rows (a GridSearchCV scorer)."""
    return float(np.mean(est.heldout_correlations(X, Y)))


def _neg_mse(est, X, Y):
    return -float(np.mean((est.transform(X) - Y) ** 2))


def _top1(est, X, Y):
    S = est.score_matrix(X, Y)
    return float(np.mean(S.argmax(1) == np.arange(len(S))))


def test_cca_in_a_pipeline_after_a_scaler():
    from core.align import CCA
    X, Y = _pair()
    pipe = Pipeline([("scale", StandardScaler()), ("cca", CCA(n_components=3))]).fit(X, Y)
    scaler = StandardScaler().fit(X)
    alone = CCA(n_components=3).fit(scaler.transform(X), Y)
    np.testing.assert_allclose(pipe.transform(X[:20]), alone.transform(scaler.transform(X[:20])), rtol=1e-9,
                               atol=1e-12)
    # the scaled twin of the pipeline is a clone with the same parameters, unfitted
    twin = clone(pipe)
    assert twin.get_params()["cca__n_components"] == 3 and not twin.named_steps["cca"].is_fitted


def test_cca_grid_search_picks_the_true_rank():
    from core.align import CCA
    X, Y = _pair(n=400)
    search = GridSearchCV(CCA(), {"n_components": [1, 4, 6], "reg": [1e-3]}, scoring=_heldout_corr, cv=3).fit(X, Y)
    # 4 shared latent factors: a 6th canonical pair is noise and lowers the mean held-out correlation
    assert search.best_params_["n_components"] in (1, 4)
    scores = dict(zip([p["n_components"] for p in search.cv_results_["params"]],
                      search.cv_results_["mean_test_score"]))
    assert scores[4] > scores[6]
    assert search.best_estimator_.is_fitted


def test_affine_ridge_grid_search_and_pipeline():
    from core.align import AffineMap
    X, Y = _pair(n=60, p=40, q=6)   # few anchors for 40 features: some ridge helps
    search = GridSearchCV(AffineMap(), {"ridge": [0.0, 1e-2, 1.0]}, scoring=_neg_mse, cv=3).fit(X, Y)
    assert search.best_params_["ridge"] > 0
    pipe = Pipeline([("scale", StandardScaler()), ("map", AffineMap(ridge=1e-2))]).fit(X, Y)
    assert pipe.transform(X).shape == Y.shape


def test_pairwise_aligner_grid_search_over_methods():
    from core.align import PairwiseAligner
    X, Y = _pair(n=300)
    search = GridSearchCV(PairwiseAligner(k=4), {"method": ["affine", "cca_affine", "procrustes"]}, scoring=_top1,
                          cv=3).fit(X, Y)
    assert search.best_estimator_.method_ in ("affine", "cca_affine", "procrustes")
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


def test_pca_projection_in_a_pipeline_matches_sklearn():
    from sklearn.decomposition import PCA

    from core.projection import PCAProjection
    X, _ = _pair()
    ours = Pipeline([("pca", PCAProjection(n_components=3))]).fit_transform(X)
    ref = PCA(3).fit_transform(X)
    np.testing.assert_allclose(np.abs(ours), np.abs(ref), rtol=1e-7, atol=1e-9)


def test_point_set_similarity_grid_search_over_kernels():
    from core.pointset import PointSetSimilarity
    rng = np.random.default_rng(0)
    A = rng.normal(size=(90, 4, 6)).astype(np.float32)
    B = (A + 0.05 * rng.normal(size=A.shape)).astype(np.float32)

    def score(est, A, B):
        return _top1(est, A, B)

    search = GridSearchCV(PointSetSimilarity(n_features=64, device="cpu"), {"kernel": ["linear", "gauss"]},
                          scoring=score, cv=3).fit(A, B)
    assert search.best_estimator_.is_fitted and max(search.cv_results_["mean_test_score"]) > 0.5


@pytest.mark.parametrize("name", ["PairwiseProcrustes", "GPA", "GCCA", "GCPA"])
def test_universe_estimators_clone_and_refit_identically(name):
    import core.universe as uv
    sp = _spaces()
    est = getattr(uv, name)(**({"max_epochs": 2, "batch_size": 64, "device": "cpu"} if name == "GCPA" else {}))
    a = est.fit(sp).to_universe("b", sp["b"][:10])
    b = clone(est).fit(sp).to_universe("b", sp["b"][:10])
    np.testing.assert_array_equal(a, b)


def _fit_outputs(cls_name, random_state):
    """Fit a seeded estimator on small data and return what its fit produced (arrays)."""
    if cls_name == "GCPA":
        from core.universe import GCPA
        sp = _spaces()
        est = GCPA(max_epochs=2, batch_size=32, random_state=random_state, device="cpu").fit(sp)
        return est.to_universe("a", sp["a"][:8])
    if cls_name == "RandomFourierFeatures":
        from core.pointset import RandomFourierFeatures
        est = RandomFourierFeatures(16, "imq", random_state=random_state).fit(dim=3)
        return np.concatenate([est.W_.ravel(), est.b_])
    if cls_name == "PointSetSimilarity":
        from core.pointset import PointSetSimilarity
        rng = np.random.default_rng(1)
        A = rng.normal(size=(60, 3, 5)).astype(np.float32)
        B = rng.normal(size=(60, 3, 4)).astype(np.float32)
        est = PointSetSimilarity(weights="learned", max_epochs=2, n_features=16, n_components=3,
                                 random_state=random_state, device="cpu").fit(A, B)
        return est.score_matrix(A[:6], B[:6])
    raise KeyError(cls_name)


@pytest.mark.parametrize("cls_name", ["GCPA", "RandomFourierFeatures", "PointSetSimilarity"])
def test_fits_depend_on_random_state_only(cls_name):
    """Seeding torch's / numpy's global RNGs differently changes nothing; random_state does."""
    torch.manual_seed(123)
    np.random.seed(123)
    a = _fit_outputs(cls_name, 0)
    torch.manual_seed(999)
    np.random.seed(999)
    torch.rand(17)
    b = _fit_outputs(cls_name, 0)
    np.testing.assert_array_equal(a, b)
    c = _fit_outputs(cls_name, 1)
    assert not np.array_equal(a, c)
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(_fit_outputs(cls_name, g1), _fit_outputs(cls_name, g2))


def test_radial_mlp_adapter_depends_on_random_state_only():
    from core.hierarchy import Chains
    from core.radial import RadialFineTuner
    rng = np.random.default_rng(0)
    texts = [f"t{i}" for i in range(40)]
    E = rng.normal(size=(40, 8)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    root = rng.normal(size=8).astype(np.float32)
    chains = Chains(ids=np.array([f"c{i}" for i in range(10)], dtype=object), offsets=np.arange(0, 41, 4),
                    texts=np.array(texts, dtype=object), embeddings=E, root=root / np.linalg.norm(root))

    def run():
        tuner = RadialFineTuner(kind="mlp", max_epochs=2, batch_size=4, random_state=3, device="cpu")
        return tuner.fit(chains.subset(range(7)), chains.subset(range(7, 10))).transform(E[:5])

    torch.manual_seed(1)
    a = run()
    torch.manual_seed(2)
    np.testing.assert_array_equal(a, run())


def test_gcpa_refuses_a_gpa_fitted_on_other_spaces():
    from core.universe import GCPA, GPA
    sp = _spaces()
    other = {"a": sp["a"], "x": sp["b"]}     # neither a subset nor a superset of sp's names
    gpa = GPA().fit(other)
    with pytest.raises(DataError, match="same spaces"):
        GCPA(max_epochs=1).fit(sp, gpa=gpa)
    fewer_rows = GPA().fit({k: v[:100] for k, v in sp.items()})
    with pytest.raises(DataError, match="rows"):
        GCPA(max_epochs=1).fit(sp, gpa=fewer_rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        GCPA(max_epochs=1, device="cpu").fit(sp, gpa=GPA().fit(sp))   # the right GPA is accepted


def test_one_calling_convention_for_the_side():
    """Pairwise: transform(X) / transform(Y, side="y"); multi-space: transform(X, space=name)."""
    from core.align import CCA, PairwiseAligner
    from core.universe import GPA
    X, Y = _pair()
    cca = CCA(n_components=3).fit(X, Y)
    ys = cca.transform(Y[:7], side="y")
    np.testing.assert_allclose(ys, (Y[:7] - cca.mean_y_) @ cca.W_y_, rtol=1e-12, atol=1e-12)
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(cca.transform_target(Y[:7]), ys)
    with pytest.raises(DataError):
        cca.transform(Y[:7], side="z")
    with pytest.raises(DataError):
        cca.transform(Y[:7])          # Y's width on the X side
    al = PairwiseAligner("cca_affine", k=3).fit(X, Y)
    np.testing.assert_allclose(al.score_matrix(X[:5], Y[:5]),
                               _cos(al.transform(X[:5]), al.transform(Y[:5], side="y")), rtol=1e-10, atol=1e-12)
    sp = _spaces()
    gpa = GPA().fit(sp)
    np.testing.assert_array_equal(gpa.transform(sp["b"][:4], space="b"), gpa.to_universe("b", sp["b"][:4]))
    with pytest.warns(DeprecationWarning):
        old = gpa.transform(sp["a"][:4], "a", "c")
    np.testing.assert_array_equal(old, gpa.translate(sp["a"][:4], "a", "c"))
    pre = gpa.preprocessor_
    with pytest.warns(DeprecationWarning):
        np.testing.assert_array_equal(pre.transform("a", sp["a"][:3]), pre.transform(sp["a"][:3], space="a"))
    with pytest.raises(DataError):
        gpa.transform(sp["a"][:3])    # which space the rows come from must be said


def _cos(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


# ------------------------------------------------------------------------------------------------
# a fit that raises leaves no partial fitted state
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", sorted(ESTIMATORS))
def test_every_fit_is_atomic(key):
    cls = ESTIMATORS[key]
    for name in ("fit", "fit_moments"):
        method = getattr(cls, name, None)
        if method is not None:
            assert getattr(method, "_atomic_fit", False), f"{key}.{name} keeps partial state when it raises"


def _state(est):
    return {k: v for k, v in vars(est).items() if k.endswith("_") or k.startswith("_")}


@pytest.mark.parametrize("make, match", [
    (lambda: __import__("core.universe", fromlist=["x"]).PairwiseProcrustes(reference="nope"), "reference"),
    (lambda: __import__("core.universe", fromlist=["x"]).GCCA(reg=-5.0), "ridge"),
    (lambda: __import__("core.universe", fromlist=["x"]).GCPA(schedule="nope", max_epochs=1, device="cpu"),
     "schedule"),
])
def test_a_first_fit_that_raises_leaves_the_estimator_unfitted(make, match):
    # each of these raised after _prepare had stored the preprocessor (the fitted attribute), n_train_ and the
    # training cross-products (_prepared): the estimator looked fitted, with half its maps
    est = make()
    params = est.get_params(deep=False)
    with pytest.raises(DataError, match=match):
        est.fit(_spaces())
    assert _state(est) == {} and not est.is_fitted
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(est)
    with pytest.raises(NotFittedError):
        est.to_universe("a", _spaces()["a"][:3])
    assert est.get_params(deep=False) == params


def test_a_refit_that_raises_keeps_the_previous_fit():
    from core.universe import PairwiseProcrustes
    sp = _spaces()
    est = PairwiseProcrustes().fit(sp)
    before = {k: (v.copy() if isinstance(v, dict) else v) for k, v in _state(est).items()}
    expected = est.translate(sp["a"][:5], "a", "b")
    est.set_params(reference="nope")
    with pytest.raises(DataError, match="reference"):
        est.fit({k: v[:90] for k, v in sp.items()})      # other rows: R_ and n_train_ were overwritten before
    assert est.n_train_ == len(sp["a"]) and est.reference_ == before["reference_"]
    assert set(_state(est)) == set(before) and "_prepared" not in vars(est)
    np.testing.assert_array_equal(est.translate(sp["a"][:5], "a", "b"), expected)


def test_nan_input_and_a_cancelled_training_leave_no_fitted_state():
    from core.universe import GCPA, GPA
    sp = _spaces()
    bad = {k: v.copy() for k, v in sp.items()}
    bad["b"][4, 1] = np.nan
    gpa = GPA()
    with pytest.raises(DataError, match="NaN"):
        gpa.fit(bad)
    assert _state(gpa) == {} and not gpa.is_fitted

    class Cancelled(Exception):
        pass

    def progress(iterable, total=None, desc=""):      # a job cancelled during GCPA's first epoch
        for i, x in enumerate(iterable):
            if desc == "GCPA epochs" and i == 1:
                raise Cancelled
            yield x

    gcpa = GCPA(max_epochs=3, batch_size=32, device="cpu")
    with pytest.raises(Cancelled):
        gcpa.fit(sp, progress=progress)
    assert _state(gcpa) == {} and not gcpa.is_fitted     # no gpa_, preprocessor_, history_ of the cancelled fit
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(gcpa)


def test_atomic_fit_restores_attributes_of_a_subclass():
    class Toy(Estimator):
        _fitted_attributes = ("w_",)

        def __init__(self, fail=False):
            self.fail = fail

        def fit(self, X):
            self.w_ = np.asarray(X).sum()
            self._scratch = object()
            if self.fail:
                raise ValueError("boom")
            del self._scratch
            return self

    class Child(Toy):
        def fit(self, X):
            self.extra_ = 1
            return super().fit(X)

    toy = Toy().fit([1.0, 2.0])
    toy.fail = True
    with pytest.raises(ValueError):
        toy.fit([5.0])
    assert toy.w_ == 3.0 and "_scratch" not in vars(toy)
    child = Child(fail=True)
    with pytest.raises(ValueError):
        child.fit([1.0])
    assert _state(child) == {} and not child.is_fitted
    assert Child(fail=False).fit([2.0]).w_ == 2.0


def test_warnings_from_inside_a_fit_point_at_the_callers_line():
    # the atomic-fit wrapper adds a frame; warnings raised deep inside a fit still name the user's line
    from core.align import CCA, AffineMap
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(30, 40)), rng.normal(size=(30, 5))
    for make in (lambda: AffineMap().fit(X, Y), lambda: CCA(n_components=2, reg=0.0).fit(X[:, :6], Y)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            make()
        runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
        assert runtime and all(w.filename == __file__ for w in runtime), [(w.filename, w.lineno) for w in runtime]
