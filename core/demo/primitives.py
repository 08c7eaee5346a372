"""Surface primitives and area-weighted surface sampling for the demo's parametric objects.

Every primitive is a :class:`Part` with a surface ``area`` and ``sample(k, rng) -> k x 3`` points drawn uniformly
on its surface. Units are metres, z points up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass
class Part:
    area: float
    sample: Callable[[int, np.random.Generator], np.ndarray]


def _rotation_z_to(direction: np.ndarray) -> np.ndarray:
    """A rotation matrix taking +z to ``direction`` (normalised)."""
    d = np.asarray(direction, float)
    d = d / np.linalg.norm(d)
    z = np.array([0.0, 0.0, 1.0])
    v = np.cross(z, d)
    c = float(z @ d)
    if np.linalg.norm(v) < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * (1.0 / (1.0 + c))


def revolve(radii, heights, center=(0.0, 0.0, 0.0), axis=(0.0, 0.0, 1.0)) -> Part:
    """Surface of revolution of the polyline (r_k, z_k) around ``axis`` through ``center``.

    Each segment is a conical frustum (an annulus when z is constant, a cylinder when r is constant).
    """
    r = np.asarray(radii, float)
    z = np.asarray(heights, float)
    slant = np.hypot(np.diff(r), np.diff(z))
    areas = np.pi * (r[:-1] + r[1:]) * slant
    total = float(areas.sum())
    rot = _rotation_z_to(axis)
    c = np.asarray(center, float)

    def sample(k, rng):
        if k == 0:
            return np.zeros((0, 3))
        seg = rng.choice(len(areas), size=k, p=areas / total)
        r1, r2, z1, z2 = r[seg], r[seg + 1], z[seg], z[seg + 1]
        u = rng.random(k)
        dr = r2 - r1
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(np.abs(dr) > 1e-12, (np.sqrt(r1 ** 2 + u * (r2 ** 2 - r1 ** 2)) - r1) / dr, u)
        rr = r1 + dr * t
        zz = z1 + (z2 - z1) * t
        th = rng.random(k) * 2 * np.pi
        local = np.stack([rr * np.cos(th), rr * np.sin(th), zz], axis=1)
        return local @ rot.T + c
    return Part(total, sample)


def cylinder(radius, z0, z1, center=(0.0, 0.0), caps=True) -> Part:
    """Upright closed (or open-ended) cylinder."""
    if caps:
        return revolve([0, radius, radius, 0], [z0, z0, z1, z1], (center[0], center[1], 0.0))
    return revolve([radius, radius], [z0, z1], (center[0], center[1], 0.0))


def tube(p0, p1, radius) -> Part:
    """Closed cylinder between points ``p0`` and ``p1``."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    length = float(np.linalg.norm(p1 - p0))
    return revolve([0, radius, radius, 0], [0, 0, length, length], p0, p1 - p0)


def sphere(radius, center, n_seg: int = 16, z_from: float = -1.0, z_to: float = 1.0) -> Part:
    """Sphere (or a zone of it between z_from and z_to, in units of the radius)."""
    a = np.linspace(np.arccos(np.clip(z_to, -1, 1)), np.arccos(np.clip(z_from, -1, 1)), n_seg + 1)[::-1]
    return revolve(radius * np.sin(a), radius * np.cos(a), center)


def box(center, size) -> Part:
    """Axis-aligned box surface."""
    c = np.asarray(center, float)
    s = np.asarray(size, float)
    areas = np.array([s[1] * s[2], s[1] * s[2], s[0] * s[2], s[0] * s[2], s[0] * s[1], s[0] * s[1]])
    total = float(areas.sum())

    def sample(k, rng):
        face = rng.choice(6, size=k, p=areas / total)
        pts = (rng.random((k, 3)) - 0.5) * s
        axis = face // 2
        sign = np.where(face % 2 == 0, -0.5, 0.5)
        pts[np.arange(k), axis] = sign * s[axis]
        return pts + c
    return Part(total, sample)


def torus(major, minor, center, normal=(0.0, 0.0, 1.0), arc: float = 2 * np.pi, start: float = 0.0) -> Part:
    """Torus (or an arc of it) around ``normal`` through ``center``."""
    rot = _rotation_z_to(normal)
    c = np.asarray(center, float)
    total = float(arc * 2 * np.pi * minor * major)

    def sample(k, rng):
        out = np.empty((0, 2))
        while len(out) < k:  # rejection: density of v proportional to (major + minor cos v)
            v = rng.random(2 * k + 8) * 2 * np.pi
            keep = rng.random(len(v)) * (major + minor) < major + minor * np.cos(v)
            u = start + rng.random(len(v)) * arc
            out = np.concatenate([out, np.stack([u[keep], v[keep]], 1)])
        u, v = out[:k, 0], out[:k, 1]
        rr = major + minor * np.cos(v)
        local = np.stack([rr * np.cos(u), rr * np.sin(u), minor * np.sin(v)], axis=1)
        return local @ rot.T + c
    return Part(total, sample)


def sample_surface(parts: list[Part], n_points: int, rng: np.random.Generator) -> np.ndarray:
    """``n_points`` points uniform on the union of the parts' surfaces (area-weighted), in random order."""
    areas = np.array([p.area for p in parts], float)
    counts = rng.multinomial(n_points, areas / areas.sum())
    pts = np.concatenate([p.sample(int(k), rng) for p, k in zip(parts, counts) if k > 0])
    return pts[rng.permutation(len(pts))]


def normalise_cloud(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre on the centroid and scale so the farthest point is at distance 1 (unit bounding sphere about the
    centroid). Returns (points, centroid, scale) with ``points = (raw - centroid) / scale``."""
    centroid = points.mean(0)
    centred = points - centroid
    scale = float(np.sqrt((centred ** 2).sum(1).max()))
    return centred / scale, centroid, scale
