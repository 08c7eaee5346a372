"""A hand-crafted 3D shape descriptor (no learning): D2 shape distribution + extents + covariance spectrum.

For a normalised cloud (centroid at 0, farthest point at distance 1, z up) the raw descriptor concatenates

* ``D2`` - histogram (32 bins on [0, 2], frequencies) of the distances between 4,096 random point pairs
  (Osada et al. 2002), pairs drawn from ``default_rng([seed, index])``;
* ``extents`` - bounding-box size along x, y, z (3);
* ``cov`` - eigenvalues of the 3 x 3 point covariance, descending (3);
* ``radial`` - histogram (16 bins on [0, 1]) of the points' distances to the centroid;
* ``height`` - histogram (16 bins on [-1, 1]) of the points' z coordinates.

70 numbers in all. :func:`standardise` z-scores every column with the dataset's mean and std.
"""
from __future__ import annotations

import numpy as np

D2_BINS, D2_PAIRS, RADIAL_BINS, HEIGHT_BINS = 32, 4096, 16, 16
DESCRIPTOR_DIM = D2_BINS + 3 + 3 + RADIAL_BINS + HEIGHT_BINS


def shape_descriptor(cloud: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The raw 70-number descriptor of one normalised cloud (``m x 3``)."""
    cloud = np.asarray(cloud, np.float64)
    m = len(cloud)
    i = rng.integers(0, m, D2_PAIRS)
    j = rng.integers(0, m, D2_PAIRS)
    d2 = np.linalg.norm(cloud[i] - cloud[j], axis=1)
    h_d2 = np.histogram(d2, bins=D2_BINS, range=(0.0, 2.0))[0] / D2_PAIRS
    extents = cloud.max(0) - cloud.min(0)
    cov = np.linalg.eigvalsh(np.cov(cloud.T))[::-1]
    radial = np.histogram(np.linalg.norm(cloud - cloud.mean(0), axis=1), bins=RADIAL_BINS, range=(0.0, 1.0))[0] / m
    height = np.histogram(cloud[:, 2], bins=HEIGHT_BINS, range=(-1.0, 1.0))[0] / m
    return np.concatenate([h_d2, extents, cov, radial, height])


def shape_descriptors(clouds: np.ndarray, seed: int, start: int = 0) -> np.ndarray:
    """Raw descriptors of ``clouds`` (``n x m x 3``); object ``start + k`` uses ``default_rng([seed, start + k])``."""
    return np.stack([shape_descriptor(c, np.random.default_rng([seed, start + k])) for k, c in enumerate(clouds)])


def standardise(raw: np.ndarray, mean: np.ndarray | None = None, std: np.ndarray | None = None):
    """Z-score the columns (constant columns keep std 1). Returns (standardised, mean, std)."""
    if mean is None:
        mean = raw.mean(0)
    if std is None:
        std = raw.std(0)
        std = np.where(std > 1e-12, std, 1.0)
    return (raw - mean) / std, mean, std
