"""Render expected patterns (beam disc, Gaussian spots, diffuse halo), then count electrons.

The expected counts of a pattern at probe position p in region r are

    lam = beam(p) * disc(centre_p) + bragg(p) * sum_k w_k(p) G(centre_p + g_k) + halo(p) + flat(p)

with the disc anti-aliased, each spot a pixel-integrated Gaussian (separable, so a chunk of
patterns is one batched matrix product), and the spot weights ``w_k(p)`` optionally modulated by
thickness (a pendellosung-like oscillation, different per reflection). Counts are Poisson draws,
then the detector's dtype clips them; hot and dead pixels are set last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

#: Patterns rendered per batched product (memory: chunk * q * n_spots float64 twice).
CHUNK = 128


@dataclass
class Regions:
    """Spot lists of every region in detector pixels: offsets from the beam and weights."""

    dy: list  # per region (n_k,) float64
    dx: list
    weight: list  # per region (n_k,) float64, sums to 1
    period_nm: list  # per region (n_k,) float64: thickness period of each spot's oscillation
    phase: list  # per region (n_k,) float64


@dataclass
class Beam:
    """Per-position electron budgets and geometry."""

    beam_e: np.ndarray  # (n,) electrons in the direct beam
    bragg_e: np.ndarray  # (n,) electrons in the spots
    halo_e: np.ndarray  # (n,) electrons in the diffuse halo
    flat_e: np.ndarray  # (n,) electrons spread flat over the detector
    centres: np.ndarray  # (n, 2) beam centre (cy, cx), pixels
    thickness: np.ndarray  # (n,) nm
    beam_radius: float
    spot_sigma: float
    halo_sigma: float
    dynamical: float  # depth of the thickness oscillation of spot weights, 0 for none


def pixel_gauss(pixels: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    """Share of a unit Gaussian at each centre (P, K) falling in each pixel: (P, q, K)."""
    scale = 1.0 / (math.sqrt(2.0) * sigma)
    edges = np.append(pixels - 0.5, pixels[-1] + 0.5)  # pixels are consecutive
    cdf = special.erf((edges[None, :, None] - centres[:, None, :]) * scale)
    return 0.5 * (cdf[:, 1:] - cdf[:, :-1])


def expected(labels: np.ndarray, index: np.ndarray, regions: Regions, beam: Beam, detector: tuple[int, int]) -> np.ndarray:
    """Expected counts (len(index), qy, qx) float64 of positions ``index`` if they held regions
    ``labels`` (one per position; the true ones, or any others for the oracle)."""
    qy, qx = detector
    out = np.empty((len(index), qy, qx))
    py, px = np.arange(qy, dtype=np.float64), np.arange(qx, dtype=np.float64)
    cy, cx = beam.centres[index, 0], beam.centres[index, 1]
    # direct beam: anti-aliased disc; diffuse halo: a Gaussian around it (separable)
    d = np.sqrt((py[None, :, None] - cy[:, None, None]) ** 2 + (px[None, None, :] - cx[:, None, None]) ** 2)
    disc = np.clip(beam.beam_radius + 0.5 - d, 0.0, 1.0)
    out[:] = disc * (beam.beam_e[index] / disc.sum(axis=(1, 2)))[:, None, None]
    hy = pixel_gauss(py, cy[:, None], beam.halo_sigma)[:, :, 0]
    hx = pixel_gauss(px, cx[:, None], beam.halo_sigma)[:, :, 0]
    out += hy[:, :, None] * hx[:, None, :] * beam.halo_e[index, None, None]
    out += (beam.flat_e[index] / (qy * qx))[:, None, None]
    for r in np.unique(labels):
        rows = np.nonzero(labels == r)[0]
        w = np.broadcast_to(regions.weight[r], (len(rows), len(regions.weight[r])))
        if beam.dynamical > 0:
            t = beam.thickness[index[rows]]
            osc = 1 + beam.dynamical * np.cos(2 * np.pi * t[:, None] / regions.period_nm[r] + regions.phase[r])
            w = w * osc
            w = w / w.sum(axis=1, keepdims=True)
        gy = pixel_gauss(py, cy[rows, None] + regions.dy[r][None], beam.spot_sigma)
        gx = pixel_gauss(px, cx[rows, None] + regions.dx[r][None], beam.spot_sigma)
        spots = np.matmul(gy * (w * beam.bragg_e[index[rows], None])[:, None, :], gx.transpose(0, 2, 1))
        out[rows] += spots
    return out


def render(labels: np.ndarray, regions: Regions, beam: Beam, detector: tuple[int, int], dtype: str, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts (ny, nx, qy, qx) in ``dtype`` (uint8 or uint16: clipped at its maximum)."""
    ny, nx = labels.shape
    flat_labels = labels.ravel()
    top = np.iinfo(dtype).max
    data = np.empty((ny * nx, *detector), dtype=dtype)
    for start in range(0, ny * nx, CHUNK):
        index = np.arange(start, min(start + CHUNK, ny * nx))
        lam = expected(flat_labels[index], index, regions, beam, detector)
        data[index] = np.minimum(rng.poisson(lam), top)
    return data.reshape(ny, nx, *detector)


def detector_response(data: np.ndarray, gain: float, pedestal: float, read_noise: float, rng: np.random.Generator) -> np.ndarray:
    """An integrating detector's reading of the counts ``data``: ``gain`` per electron, a dark
    level ``pedestal`` on every pixel and Gaussian read noise, rounded and clipped to the dtype
    (a CCD or CMOS camera that writes its frames without dark subtraction)."""
    top = np.iinfo(data.dtype).max
    out = np.empty_like(data)
    for i in range(data.shape[0]):  # a scan row at a time: float64 copies of the whole scan are large
        row = data[i].astype(np.float64) * gain + pedestal
        if read_noise:
            row += rng.normal(0.0, read_noise, row.shape)
        out[i] = np.clip(np.rint(row), 0, top)
    return out


def spikes(data: np.ndarray, share: float, counts: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Cosmic-ray or X-ray hits: a ``size`` x ``size`` blob of ``counts`` (clipped to the dtype),
    anywhere on the detector, in ``share`` of the frames. Returns the frames hit (flat indices)."""
    top = np.iinfo(data.dtype).max
    frames = data.reshape(-1, *data.shape[2:])
    hit = rng.choice(len(frames), int(round(share * len(frames))), replace=False)
    for index in hit:
        y, x = rng.integers(0, frames.shape[1] - size + 1), rng.integers(0, frames.shape[2] - size + 1)
        frames[index, y : y + size, x : x + size] = min(top, counts)
    return np.sort(hit)


def bad_pixels(data: np.ndarray, n_hot: int, n_dead: int, rng: np.random.Generator) -> dict:
    """Set ``n_hot`` pixels to a high, noisy level in every pattern and ``n_dead`` to zero, in
    place, away from the beam centre's neighbourhood or not (anywhere). Returns their places."""
    qy, qx = data.shape[2:]
    flat = rng.choice(qy * qx, size=n_hot + n_dead, replace=False)
    hot, dead = flat[:n_hot], flat[n_hot:]
    top = np.iinfo(data.dtype).max
    # a hot pixel reads several times the brightest real pixel (the beam's), whatever the dose
    level = min(top, max(20.0, 4.0 * float(np.percentile(data[:, :, :, :].max(axis=(2, 3)), 50))))
    view = data.reshape(*data.shape[:2], qy * qx)
    for p in hot:
        view[:, :, p] = np.minimum(rng.poisson(level, size=data.shape[:2]), top)
    view[:, :, dead] = 0
    return {"hot": [divmod(int(p), qx) for p in hot], "dead": [divmod(int(p), qx) for p in dead]}


def oracle_error(data: np.ndarray, labels: np.ndarray, regions: Regions, beam: Beam, skip_pixels: list, n_sample: int, rng: np.random.Generator) -> float:
    """Share of sampled positions a Bayes classifier that knows every noise-free pattern (the
    Poisson likelihood under each region's expected counts, at that position's thickness and
    drift) assigns to the wrong region: near 0 when the regions can be told apart at all."""
    ny, nx, qy, qx = data.shape
    n_regions = len(regions.weight)
    index = np.sort(rng.choice(ny * nx, size=min(n_sample, ny * nx), replace=False))
    keep = np.ones(qy * qx, bool)
    for y, x in skip_pixels:
        keep[y * qx + x] = False
    counts = data.reshape(ny * nx, qy * qx)[index][:, keep].astype(np.float64)
    top = np.iinfo(data.dtype).max
    saturated = counts >= top
    loglik = np.empty((len(index), n_regions))
    for r in range(n_regions):
        lam = expected(np.full(len(index), r), index, regions, beam, (qy, qx)).reshape(len(index), -1)[:, keep]
        lam = np.maximum(lam, 1e-12)
        ll = counts * np.log(lam) - lam
        ll[saturated] = 0.0  # clipped pixels: no likelihood term (they are rare)
        loglik[:, r] = ll.sum(axis=1)
    return float(np.mean(np.argmax(loglik, axis=1) != labels.ravel()[index]))
