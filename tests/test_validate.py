import numpy as np
import pytest

from core.dataset import Space
from core.errors import DataError
from core.validate import (check_token_extras, find_problems, scan_space, validate_array, validate_space)

SMALL_CHUNK = 64  # bytes: forces many chunks so the chunked scan is exercised


@pytest.mark.parametrize("chunk", [SMALL_CHUNK, 1 << 20])
def test_nan_inf_count_and_first_row_match_naive(chunk):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(57, 5)).astype(np.float32)
    spots = [(40, 1), (13, 4), (50, 0), (13, 0)]
    for i, (r, c) in enumerate(spots):
        x[r, c] = np.nan if i % 2 == 0 else -np.inf
    naive_nan = int(np.isnan(x).sum())
    naive_inf = int(np.isinf(x).sum())
    naive_first = min(r for r, _ in spots)
    with pytest.raises(DataError) as info:
        validate_array(x, file="f.npy", array="a", chunk_bytes=chunk)
    err = info.value
    assert err.row == naive_first == 13
    assert f"{naive_nan} NaN and {naive_inf} Inf values" in err.message
    assert err.file == "f.npy" and err.array == "a"


def test_token_set_nan_row():
    x = np.random.default_rng(1).normal(size=(9, 3, 2))
    x[7, 2, 1] = np.nan
    with pytest.raises(DataError, match=r"1 NaN value \(first in row 7\)"):
        validate_array(x, chunk_bytes=SMALL_CHUNK)


def test_zero_variance_only_when_every_row_identical():
    row = np.array([[1.0, 2.0, 3.0]])
    same = np.repeat(row, 30, axis=0)
    with pytest.raises(DataError, match="zero variance: all 30 rows are identical"):
        validate_array(same, chunk_bytes=SMALL_CHUNK)
    differs_late = same.copy()
    differs_late[29, 2] = 3.5  # only the last chunk differs
    validate_array(differs_late, chunk_bytes=SMALL_CHUNK)
    validate_array(row)  # a single row is not "zero variance"


@pytest.mark.parametrize("arr, pattern", [
    (np.zeros(5), r"1-D array of shape \(5\)"),
    (np.zeros((2, 2, 2, 2)), r"4-D array"),
    (np.float64(3.0) * np.ones(()), r"0-D scalar"),
    (np.zeros((0, 3)), r"0 rows"),
    (np.zeros((3, 0)), r"0 columns"),
    (np.zeros((3, 0, 2)), r"0 tokens"),
    (np.array([["a"]]), r"holds text"),
    (np.ones((2, 2), dtype=complex), r"complex"),
    (np.ones((2, 2), dtype=bool), r"booleans"),
    (np.array([[None]], dtype=object), r"Python objects"),
    (np.zeros((2, 2), dtype=[("a", "f4")]), r"structured"),
])
def test_fatal_shape_and_dtype_errors(arr, pattern):
    with pytest.raises(DataError, match=pattern):
        validate_array(arr, file="x", array="y")


def test_integer_spaces_are_accepted():
    validate_array(np.arange(12, dtype=np.int16).reshape(4, 3))


def test_token_extras():
    data = np.random.default_rng(2).normal(size=(4, 3, 2))
    check_token_extras(data, np.ones((4, 3), dtype=np.uint8), np.ones((4, 3)), file="f", array="t")
    with pytest.raises(DataError, match=r"expected \(4 x 3\)"):
        check_token_extras(data, np.ones((4, 2), dtype=bool), None, file="f", array="t")
    bad_mask = np.ones((4, 3))
    bad_mask[2, 1] = 0.5
    with pytest.raises(DataError, match="other than 0 and 1") as info:
        check_token_extras(data, bad_mask, None, file="f", array="t")
    assert info.value.row == 2 and info.value.array == "t_mask"
    w = np.ones((4, 3))
    w[3, 0] = np.nan
    with pytest.raises(DataError, match="NaN/Inf weight") as info:
        check_token_extras(data, None, w, file="f", array="t")
    assert info.value.row == 3
    with pytest.raises(DataError, match="only applies to token sets"):
        check_token_extras(data[:, 0], np.ones((4, 3)), None, file="f", array="t")


def test_validate_space_checks_mask():
    data = np.random.default_rng(3).normal(size=(4, 3, 2))
    mask = np.ones((4, 3))
    mask[1, 1] = 7
    with pytest.raises(DataError, match="other than 0 and 1"):
        validate_space(Space("t", data, mask=mask))


def test_find_problems_counts_match_naive():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6))
    x[:, 2] = 0.0  # constant columns: 2 and 4 (zero, so that the zero rows below stay zero)
    x[:, 4] = 0.0
    x[[3, 9, 20], :] = 0.0  # three zero rows (also duplicates of each other)
    x[30] = x[31]  # one more duplicate
    x[11] *= 1e4  # norms vary
    naive_const = int((x.min(0) == x.max(0)).sum())
    naive_zero = int((np.linalg.norm(x, axis=1) == 0).sum())
    naive_dup = len(x) - len({tuple(r) for r in x})
    norms = np.linalg.norm(x, axis=1)
    ratio = norms.max() / norms[norms > 0].min()
    scan = scan_space(Space("s", x), chunk_bytes=SMALL_CHUNK * 4)
    assert (scan.constant_columns, scan.zero_rows, scan.duplicate_rows) == (naive_const, naive_zero, naive_dup)
    np.testing.assert_allclose(scan.mean_norm, norms.mean(), rtol=1e-12)
    problems = find_problems(Space("s", x))
    assert f"{naive_const} zero-variance columns" in problems
    assert f"{naive_zero} all-zero rows" in problems
    assert f"{naive_dup} duplicate rows" in problems
    assert any(p.startswith(f"norms vary {ratio:.0f}x") for p in problems)


def test_find_problems_clean_space_is_empty():
    x = np.random.default_rng(5).normal(size=(30, 4)) + 3.0
    assert find_problems(Space("s", x)) == []


def test_scan_token_sets_pools_with_mask_and_weights():
    rng = np.random.default_rng(6)
    data = rng.normal(size=(10, 4, 3))
    mask = rng.random((10, 4)) > 0.3
    mask[0] = False  # an empty token set
    weights = rng.random((10, 4)) + 0.5
    # naive pooling: sum_t w m v / sum_t m (the one pooling, paper B's mean_i w_i v_i; issue 12 changed the
    # weighted case from dividing by sum_t |w| m)
    w = weights * mask
    denom = mask.sum(1, keepdims=True).astype(float)
    denom[denom == 0] = 1
    pooled = np.einsum("nt,ntd->nd", w, data) / denom
    scan = scan_space(Space("t", data, mask=mask, weights=weights), chunk_bytes=200)
    np.testing.assert_allclose(scan.mean_norm, np.linalg.norm(pooled, axis=1).mean(), rtol=1e-12)
    assert scan.empty_token_sets == 1
    assert "1 token set with no real token" in find_problems(Space("t", data, mask=mask, weights=weights))


def test_validate_memmap_in_chunks(tmp_path):
    x = np.random.default_rng(7).normal(size=(100, 8)).astype(np.float32)
    x[77, 3] = np.inf
    np.save(tmp_path / "m.npy", x)
    mm = np.load(tmp_path / "m.npy", mmap_mode="r")
    with pytest.raises(DataError, match=r"first in row 77"):
        validate_array(mm, chunk_bytes=256)
