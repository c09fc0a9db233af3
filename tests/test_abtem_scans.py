"""``benchmarks/bench_abtem.py`` renders what it claims, checked without abTEM.

The multislice simulation is replaced by a stand-in thickness series (a direct beam that fades
with thickness and two reflections that trade intensity), so what is checked is the rendering
the benchmark adds on top: labels and region shares, counts per pattern at the dose, the
thickness interpolation, the vacuum strip (the beam alone) and reflections drawn as discs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_abtem  # noqa: E402

PLANES = bench_abtem.N_PLANES


def stand_in(phase, tilt_mrad, cache, amorphous=False, depth_nm=32.0) -> dict:
    """A thickness series on a 41x41 grid of 2 mrad pixels: the beam falls from 0.9 to 0.3,
    reflection A (6 px right of the beam) rises and B (6 px up) oscillates."""
    t = np.linspace(2.0, 32.0, PLANES)
    beam = np.linspace(0.9, 0.3, PLANES)
    a = (1 - beam) * (0.5 + 0.5 * t / 32.0)
    b = 1 - beam - a
    patterns = np.zeros((PLANES, 41, 41))
    patterns[:, 20, 20] = beam
    patterns[:, 20, 26] = a
    patterns[:, 14, 20] = b
    return {"patterns": patterns, "thickness_nm": t, "mrad_per_px": np.array([2.0, 2.0])}


@pytest.fixture(autouse=True)
def no_abtem(monkeypatch):
    monkeypatch.setattr(bench_abtem, "simulate", stand_in)


def test_regions_and_dose(tmp_path):
    cond = bench_abtem.Condition("t", "Au", 3, 400.0, scan=(24, 24), detector=32, band_share=0.05, vacuum_share=0.125)
    data, labels, info = bench_abtem.make_scan(cond, 1, tmp_path)
    assert data.shape == (24, 24, 32, 32) and data.dtype == np.uint16 and labels.shape == (24, 24)
    assert set(np.unique(labels)) == set(range(labels.max() + 1))  # 0..k-1, none empty
    assert (labels[:3] == labels.max()).all() and not (labels[3:] == labels.max()).any()  # 3 rows of vacuum
    counts = data.reshape(576, -1).sum(axis=1)
    assert counts.mean() == pytest.approx(400.0, rel=0.03)  # Poisson at the dose, all of it on the detector
    # the vacuum holds the beam disc alone: nothing beyond its edge
    radius = bench_abtem.BEAM_RADIUS_FRAC * 32
    yy, xx = np.indices((32, 32))
    outside = np.hypot(yy - 15.5, xx - 15.5) > radius + 1
    assert data[:3][..., outside].sum() == 0
    assert data[3:][..., outside].sum() > 0.2 * data[3:].sum()  # the specimen scatters out of it


def test_thickness_sets_the_beam_share(tmp_path):
    """The beam's share of the counts follows the stand-in's 0.9 -> 0.3 across the wedge."""
    cond = bench_abtem.Condition("t", "Au", 1, 5000.0, scan=(16, 16), detector=32, thickness_nm=(2.0, 32.0))
    data, _, _ = bench_abtem.make_scan(cond, 2, tmp_path)
    radius = bench_abtem.BEAM_RADIUS_FRAC * 32
    yy, xx = np.indices((32, 32))
    inside = np.hypot(yy - 15.5, xx - 15.5) <= radius + 1
    share = data[..., inside].sum(axis=-1) / data.sum(axis=(-1, -2))
    # (1 - halo share) of the beam stays on the disc; the halo adds a little inside it
    assert 0.75 < share.max() < 0.95 and 0.2 < share.min() < 0.4


def test_disks_are_discs_of_the_beams_size(tmp_path):
    cond = bench_abtem.Condition("t", "Au", 1, 20000.0, scan=(4, 4), detector=64, disks=True)
    data, _, _ = bench_abtem.make_scan(cond, 3, tmp_path)
    mean = data.reshape(16, 64, 64).mean(axis=0)
    radius = bench_abtem.BEAM_RADIUS_FRAC * 64
    # reflection A lands 6 px x 2 mrad x (64 / 80 mrad) = 9.6 px from the centre, rotated in
    # plane: the brightest pixel away from the beam, and its disc as wide as the beam's
    yy, xx = np.indices((64, 64))
    r = np.hypot(yy - 31.5, xx - 31.5)
    away = np.where(r > radius + 2, mean, 0)
    y, x = np.unravel_index(np.argmax(away), away.shape)
    assert np.hypot(y - 31.5, x - 31.5) == pytest.approx(9.6, abs=1.5)
    spot = np.hypot(yy - y, xx - x) <= radius + 2
    lit = (mean > 0.5 * mean[y, x]) & spot
    assert abs(np.sqrt(lit.sum() / np.pi) - radius) < 0.6  # a Gaussian spot: 1.1 against 2.56
