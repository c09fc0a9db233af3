"""Synthetic 4D-STEM scans: a physical caricature of a polycrystal with a planar defect.

The scan is a perovskite (cubic ABO3, a = 0.39 nm) polycrystal seen in nano-beam electron
diffraction at 200 kV:

* **Grains** are Voronoi cells of random seeds over the scan. Each grain looks down a low-index
  zone axis, rotated in-plane by a grain-specific angle and tilted a few mrad out of the zone, so
  the Ewald sphere cuts the relrods unevenly: a spot's intensity is
  ``|F_g| * exp(-(g / G_FALLOFF)^2) * exp(-(s_g / EXCITATION_WIDTH)^2)`` with ``s_g`` the
  excitation error (``|F_g|``, not ``|F_g|^2``: the thick-crystal limit of dynamical diffraction).
  Every grain sends the same fraction of the beam into its spots, so grains differ in *where* the
  spots are and how the intensity is shared among them, not in total intensity.
* **A planar defect** (a twin lamella a few scan pixels wide) crosses the largest grain. Where the
  probe passes through it, the pattern holds the grain's spots plus fainter twin spots: the
  grain's reciprocal lattice mirrored across the twin plane, whose normal is the band's normal.
  It has its own ground-truth label, ``n_grains``.
* **A thickness gradient** across the field: the unscattered (direct) beam carries
  ``exp(-t / MEAN_FREE_PATH_NM)`` of the electrons, about 8 times less at the thick end than at the
  thin end, while the Bragg spots and a diffuse halo around the beam grow with the rest. The beam
  stays the brightest feature, so after each pattern is scaled by its maximum the spots of thin
  regions nearly vanish and the halo's level tracks thickness: clustering the raw patterns mixes
  thickness in with the grains, and masking the direct beam (the original method) restores them.
* **Poisson noise** at ``dose`` electrons per pattern, and an optional smooth **descan drift**
  that shifts each whole pattern (beam, spots and background) by a sub-pixel amount.

Patterns are rendered analytically, one at a time, straight into the output array by a parallel
numba kernel: the direct beam is an anti-aliased disc, spots and background are Gaussians, and
each pixel's counts are drawn from a counter-based random number generator keyed by
``(seed, pattern, pixel)``, so the result depends on ``seed`` only, not on threads or scheduling.
Apart from the output, memory holds one float64 pattern per thread.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from scipy import ndimage, special

from .atomic import atomic_write
from .errors import InputError

__all__ = ["SyntheticScan", "make_scan", "write_blo"]

# --- Crystal and microscope ------------------------------------------------------------------
#: Cubic perovskite lattice parameter (BaTiO3-like), nm.
LATTICE_NM = 0.39
#: Electron wavelength at 200 kV, nm.
WAVELENGTH_NM = 0.00251
#: Kinematic scattering amplitudes (arbitrary units) of the A (heavy: Bi, Na, Ba), B (Ti) and O
#: sites; their interference makes the reflections of different parity differ in strength.
SCATTERING_A, SCATTERING_B, SCATTERING_O = 5.0, 2.0, 0.8
#: Spot intensity goes as ``|F_g| ** STRUCTURE_EXPONENT``: 2 is the kinematic limit, 1 Blackman's
#: thick-crystal (dynamical) limit, where strong reflections saturate and intensity spreads out.
STRUCTURE_EXPONENT = 1.0
#: Form-factor and Debye-Waller fall-off: intensities are damped by ``exp(-(g / G_FALLOFF)^2)``,
#: g and G_FALLOFF in 1/nm.
G_FALLOFF = 8.0
#: Width of the excitation-error window (relrod length, beam convergence), 1/nm.
EXCITATION_WIDTH = 0.1
#: Zone axes the grains look down, in the order they are handed out (shuffled per seed).
ZONE_AXES = ((0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 1, 2), (0, 1, 2))
#: Out-of-plane tilt of a grain away from its zone axis, radians.
TILT_RANGE_RAD = (0.002, 0.008)
#: Reciprocal-space width of the whole detector, 1/nm: fixes ``detector_scale`` for any size.
DETECTOR_FIELD_INV_NM = 23.0
#: Direct-beam disc radius and Bragg spot Gaussian sigma, as fractions of the detector width.
BEAM_RADIUS_FRACTION = 1.0 / 25.0
SPOT_SIGMA_FRACTION = 0.0095
#: Spots weaker than this fraction of a grain's strongest spot are dropped (lost in the noise).
MIN_SPOT_FRACTION = 1e-2
#: Spots are rendered out to this many sigma (1% of their peak), plus half a pixel.
SPOT_REACH_SIGMAS = 3.0
#: Two regions' spot templates (no beam) must have a cosine similarity below this.
MAX_TEMPLATE_SIMILARITY = 0.35
MAX_ORIENTATION_TRIES = 200

# --- Specimen ----------------------------------------------------------------------------------
#: Thickness range of the gradient (thin end, thick end) and the thickness without it, nm.
THICKNESS_RANGE_NM = (20.0, 150.0)
UNIFORM_THICKNESS_NM = 60.0
#: Mean free path for scattering out of the direct beam, nm: the beam keeps exp(-t / this).
#: Over THICKNESS_RANGE_NM the direct beam dims by a factor of about 8.
MEAN_FREE_PATH_NM = 62.0
#: Shares of the scattered electrons that go into Bragg spots and into a diffuse background on
#: the detector (thermal diffuse and inelastic scattering); the rest leaves the detector. With
#: these, the direct beam's peak is ~40 times a typical spot's at the thin end and comparable to
#: it at the thick end, where the diffuse halo around the beam reaches ~2/3 of the beam's peak.
BRAGG_SHARE = 0.075
DIFFUSE_SHARE = 0.4
#: The diffuse background: a Gaussian halo around the beam (sigma as a fraction of the detector
#: width; about half of it lies under a beam mask of 1.3 beam radii + 2 px) plus a flat share.
DIFFUSE_SIGMA_FRACTION = 0.06
DIFFUSE_FLAT_SHARE = 0.3
#: Grain seeds are at least this fraction of the mean grain diameter apart (when they fit).
MIN_SEED_SPACING = 0.6
#: Twin lamella: width in scan pixels (``max(DEFECT_MIN_WIDTH_PX, min(ny, nx) / this)``), the
#: twin's share of the Bragg intensity where the probe crosses it (the rest stays the grain's), and
#: how far (scan pixels) it stays from the grain's boundary.
DEFECT_WIDTH_DIVISOR = 16.0
DEFECT_MIN_WIDTH_PX = 3.0
TWIN_SHARE = 0.25
DEFECT_BOUNDARY_MARGIN_PX = 2

# --- Acquisition -------------------------------------------------------------------------------
#: Expected electrons per pattern: the strongest spots peak at tens of counts, weak ones at a few,
#: the direct beam at several hundred to ~1400 counts per pixel (96-pixel detector).
DEFAULT_DOSE = 3.0e5
DEFAULT_SCAN_STEP_NM = 2.0
#: Poisson draws use inversion below this expected count and transformed rejection above.
POISSON_PTRS_ABOVE = 10.0
#: uint8 output: electron counts are scaled by a gain (at most 1) that puts the brightest expected
#: pixel of the scan at this fraction of 255; brighter noise saturates.
UINT8_FILL = 0.8
_DTYPES = {"uint8": 255, "uint16": 65535, "float32": 2**62}


@dataclass(frozen=True, eq=False)  # eq=False: arrays make field-wise == and hash meaningless
class SyntheticScan:
    """A synthetic 4D-STEM scan and its ground truth.

    Attributes
    ----------
    data : numpy.ndarray, shape (ny, nx, qy, qx)
        Electron counts, dtype as asked; uint8 holds counts times a gain <= 1, saturating at 255.
    labels : numpy.ndarray, shape (ny, nx), int32
        Ground truth: ``0 .. n_grains - 1`` the grains, ``n_grains`` the planar defect (if any).
    beam_centres : numpy.ndarray, shape (ny, nx, 2), float64
        True ``(cy, cx)`` of the direct beam in detector pixels, drift included.
    n_regions : int
        Number of distinct labels.
    beam_radius : float
        Direct-beam disc radius, detector pixels.
    scan_step_nm : float
        Real-space calibration of the scan, nm per scan pixel.
    detector_scale : float
        Reciprocal-space calibration, 1/nm per detector pixel.
    thickness_nm : numpy.ndarray, shape (ny, nx), float64
        Specimen thickness at each probe position.
    """

    data: np.ndarray
    labels: np.ndarray
    beam_centres: np.ndarray
    n_regions: int
    beam_radius: float
    scan_step_nm: float
    detector_scale: float
    thickness_nm: np.ndarray


@dataclass(frozen=True)
class _Spots:
    """The Bragg spots of one region: offsets from the beam (pixels) and intensity shares."""

    dy: np.ndarray  # (n,) float64
    dx: np.ndarray  # (n,) float64
    share: np.ndarray  # (n,) float64, sums to 1


def make_scan(
    scan_shape: tuple[int, int] = (64, 64),
    detector_shape: tuple[int, int] = (128, 128),
    n_grains: int = 4,
    defect: bool = True,
    drift_px: float = 0.0,
    dose: float = DEFAULT_DOSE,
    thickness_gradient: bool = True,
    dtype: str = "uint16",
    seed: int = 0,
    *,
    scan_step_nm: float = DEFAULT_SCAN_STEP_NM,
) -> SyntheticScan:
    """Generate a synthetic polycrystal scan with a twin lamella, a wedge and Poisson noise.

    Parameters
    ----------
    scan_shape : (int, int)
        ``(ny, nx)`` probe positions, each at least 4.
    detector_shape : (int, int)
        ``(qy, qx)`` detector pixels, each at least 32.
    n_grains : int
        Number of grains, 1 to 12.
    defect : bool
        Add a twin lamella inside the largest grain, labelled ``n_grains``.
    drift_px : float
        Peak descan drift of each detector coordinate, pixels (0 for none, at most 1/8 of the
        detector). The beam centre follows a linear ramp plus a slow sinusoid over the scan.
    dose : float
        Expected electrons per pattern, part of which scatters off the detector.
    thickness_gradient : bool
        Thickness ramps across the field over ``THICKNESS_RANGE_NM``; otherwise uniform.
    dtype : {"uint8", "uint16", "float32"}
        Output dtype. Values are whole electron counts; for uint8 they are first multiplied by
        a gain (at most 1, rounded) that puts the brightest expected pixel at ``UINT8_FILL``
        of 255, as an 8-bit camera's gain would be set, and saturate at 255.
    seed : int
        Seeds everything; equal arguments give identical scans.
    scan_step_nm : float
        Real-space scan step recorded in the result.

    Returns
    -------
    SyntheticScan

    Raises
    ------
    InputError
        An argument is out of range; the message names it.
    """
    ny, nx = _check_shape("scan_shape", scan_shape, 4)
    qy, qx = _check_shape("detector_shape", detector_shape, 32)
    n_grains = _check_int("n_grains", n_grains, 1, 12)
    seed = _check_int("seed", seed, 0, 2**63 - 1)
    drift_px = _check_float("drift_px", drift_px, 0.0, min(qy, qx) / 8)
    dose = _check_positive("dose", dose)
    scan_step_nm = _check_positive("scan_step_nm", scan_step_nm)
    dtype = _check_dtype(dtype)

    # One independent stream per ingredient: switching the defect, drift or gradient off leaves
    # everything else as it was for the same seed.
    grain_rng, crystal_rng, defect_rng, thickness_rng, drift_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    size = min(qy, qx)
    detector_scale = DETECTOR_FIELD_INV_NM / size
    beam_radius = BEAM_RADIUS_FRACTION * size
    spot_sigma = SPOT_SIGMA_FRACTION * size

    grains = _grain_map((ny, nx), n_grains, grain_rng)
    regions = _grain_spots(n_grains, (qy, qx), detector_scale, spot_sigma, crystal_rng)
    labels = grains.astype(np.int32)
    if defect:
        host = int(np.argmax(np.bincount(grains.ravel(), minlength=n_grains)))
        band, normal = _defect_band(grains, host, regions[host], (qy, qx), spot_sigma, defect_rng)
        labels[band] = n_grains
        regions.append(_twinned(regions[host], normal))

    thickness = _thickness_map((ny, nx), thickness_gradient, thickness_rng)
    centre = np.array([(qy - 1) / 2.0, (qx - 1) / 2.0])
    centres = centre + _drift_field((ny, nx), drift_px, drift_rng)

    data = np.empty((ny, nx, qy, qx), dtype=dtype)
    _render(data, labels, thickness, centres, regions, dose, beam_radius, spot_sigma, seed)
    return SyntheticScan(
        data=data,
        labels=labels,
        beam_centres=centres,
        n_regions=len(regions),
        beam_radius=float(beam_radius),
        scan_step_nm=float(scan_step_nm),
        detector_scale=float(detector_scale),
        thickness_nm=thickness,
    )


# --- Argument checks ---------------------------------------------------------------------------


def _check_shape(name: str, value: Any, minimum: int) -> tuple[int, int]:
    try:
        shape = tuple(int(v) for v in value)
        exact = all(int(v) == v for v in value)
    except (TypeError, ValueError):
        shape, exact = (), False
    if len(shape) != 2 or not exact or min(shape) < minimum:
        raise InputError(f"{name}={value!r} should be two integers >= {minimum}.")
    return shape


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name}={value!r} should be an integer.")
    if not low <= value <= high:
        raise InputError(f"{name}={value} should be between {low} and {high}.")
    return int(value)


def _check_positive(name: str, value: Any) -> float:
    number = _check_float(name, value, 0.0, math.inf)
    if number <= 0 or math.isinf(number):
        raise InputError(f"{name}={value!r} should be a finite number > 0.")
    return number


def _check_float(name: str, value: Any, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not low <= number <= high:  # also rejects NaN
        raise InputError(f"{name}={value!r} should be a number between {low} and {high}.")
    return number


def _check_dtype(dtype: Any) -> np.dtype:
    try:
        checked = np.dtype(dtype)
    except TypeError:
        checked = None
    if checked is None or checked.name not in _DTYPES:
        raise InputError(f"dtype={dtype!r} should be one of {', '.join(_DTYPES)}.")
    return checked


# --- Specimen geometry -------------------------------------------------------------------------


def _grain_map(scan_shape: tuple[int, int], n_grains: int, rng: np.random.Generator) -> np.ndarray:
    """Voronoi grains: each probe position takes the label of its nearest seed.

    Returns
    -------
    numpy.ndarray, shape (ny, nx), int64
        Every label ``0 .. n_grains - 1`` occurs (its seed pixel is its own).
    """
    ny, nx = scan_shape
    spacing = MIN_SEED_SPACING * math.sqrt(ny * nx / n_grains)
    seeds = _spaced_points(ny * nx, n_grains, nx, spacing, rng)
    yy, xx = np.mgrid[0:ny, 0:nx]
    dist2 = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    return np.argmin(dist2, axis=-1)


def _spaced_points(
    n_pixels: int, count: int, nx: int, spacing: float, rng: np.random.Generator
) -> np.ndarray:
    """``count`` distinct pixels ``(y, x)``, shape (count, 2), ideally ``spacing`` apart."""
    for _ in range(1000):
        flat = rng.choice(n_pixels, size=count, replace=False)
        points = np.stack([flat // nx, flat % nx], axis=1).astype(np.float64)
        gaps = np.linalg.norm(points[:, None] - points[None], axis=-1)
        if count == 1 or gaps[np.triu_indices(count, 1)].min() >= spacing:
            return points
    return points  # a crowded scan: distinct seeds are enough


def _defect_band(
    grains: np.ndarray,
    host: int,
    host_spots: _Spots,
    detector_shape: tuple[int, int],
    spot_sigma: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """A straight twin lamella through the middle of grain ``host``, clear of its boundary.

    Its direction is chosen so that the twin spots do not fall on the grain's own spots.

    Returns
    -------
    band : numpy.ndarray, shape (ny, nx), bool
        The lamella's probe positions (never empty).
    normal : numpy.ndarray, shape (2,)
        Unit normal ``(y, x)`` of the twin plane, in scan and detector coordinates alike.
    """
    ny, nx = grains.shape
    inside = grains == host
    # border_value=1: the scan's edge is not a grain boundary.
    core = ndimage.binary_erosion(inside, iterations=DEFECT_BOUNDARY_MARGIN_PX, border_value=1)
    if not core.any():
        core = inside
    ys, xs = np.nonzero(core)
    middle = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    anchor = np.array([ys[middle], xs[middle]], dtype=np.float64)
    width = max(DEFECT_MIN_WIDTH_PX, min(ny, nx) / DEFECT_WIDTH_DIVISOR)

    matrix = _template(host_spots, detector_shape, spot_sigma)
    best, best_similarity = None, math.inf
    for _ in range(MAX_ORIENTATION_TRIES):
        angle = rng.uniform(0.0, math.pi)
        normal = np.array([-math.sin(angle), math.cos(angle)])
        twin = _template(_mirrored(host_spots, normal), detector_shape, spot_sigma)
        similarity = _cosine(matrix, twin)
        if similarity < best_similarity:
            best, best_similarity = normal, similarity
        if similarity < MAX_TEMPLATE_SIMILARITY:
            break
    yy, xx = np.mgrid[0:ny, 0:nx]
    distance = (yy - anchor[0]) * best[0] + (xx - anchor[1]) * best[1]
    return core & (np.abs(distance) <= width / 2), best


def _thickness_map(
    scan_shape: tuple[int, int], gradient: bool, rng: np.random.Generator
) -> np.ndarray:
    """Specimen thickness, nm, shape (ny, nx): a linear wedge in a random direction, or flat."""
    if not gradient:
        return np.full(scan_shape, UNIFORM_THICKNESS_NM)
    ny, nx = scan_shape
    angle = rng.uniform(0.0, 2 * math.pi)
    yy, xx = np.mgrid[0:ny, 0:nx]
    ramp = yy * math.sin(angle) + xx * math.cos(angle)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    thin, thick = THICKNESS_RANGE_NM
    return thin + (thick - thin) * ramp


def _drift_field(
    scan_shape: tuple[int, int], drift_px: float, rng: np.random.Generator
) -> np.ndarray:
    """Descan shift ``(dy, dx)`` of the pattern, shape (ny, nx, 2), pixels.

    Each component is a linear ramp over the scan (mostly along its own axis, as a descan error
    is) plus a slow sinusoid, scaled so that its largest magnitude is ``drift_px``.
    """
    ny, nx = scan_shape
    v, u = np.meshgrid(np.linspace(-0.5, 0.5, ny), np.linspace(-0.5, 0.5, nx), indexing="ij")
    along = rng.uniform(0.5, 1.5, size=2)  # ramp along the component's own scan axis
    across = rng.uniform(-0.5, 0.5, size=2)
    phase = rng.uniform(0.0, 2 * math.pi, size=2)
    dy = along[0] * v + across[0] * u + 0.3 * np.sin(2 * math.pi * (0.7 * v + 0.5 * u) + phase[0])
    dx = along[1] * u + across[1] * v + 0.3 * np.sin(2 * math.pi * (0.5 * v + 0.7 * u) + phase[1])
    shift = np.stack([dy, dx], axis=-1)
    return shift * (drift_px / np.abs(shift).max(axis=(0, 1)))


# --- Diffraction -------------------------------------------------------------------------------


def _grain_spots(
    n_grains: int,
    detector_shape: tuple[int, int],
    detector_scale: float,
    spot_sigma: float,
    rng: np.random.Generator,
) -> list[_Spots]:
    """One spot list per grain, each clearly different from those before it."""
    zone_order = rng.permutation(len(ZONE_AXES))
    regions: list[_Spots] = []
    templates: list[np.ndarray] = []
    for grain in range(n_grains):
        zone = ZONE_AXES[zone_order[grain % len(ZONE_AXES)]]
        best, best_template, best_similarity = None, None, math.inf
        for _ in range(MAX_ORIENTATION_TRIES):
            spots = _zone_axis_spots(zone, detector_shape, detector_scale, spot_sigma, rng)
            template = _template(spots, detector_shape, spot_sigma)
            similarity = max((_cosine(template, t) for t in templates), default=0.0)
            if similarity < best_similarity:
                best, best_template, best_similarity = spots, template, similarity
            if similarity < MAX_TEMPLATE_SIMILARITY:
                break
        regions.append(best)
        templates.append(best_template)
    return regions


def _zone_axis_spots(
    zone: tuple[int, int, int],
    detector_shape: tuple[int, int],
    detector_scale: float,
    spot_sigma: float,
    rng: np.random.Generator,
) -> _Spots:
    """Kinematic spot pattern of a perovskite crystal near ``zone``, randomly oriented.

    The crystal is turned so that ``zone`` points along the beam, rotated in-plane by a random
    angle and tilted out of the zone by a few mrad about a random in-plane axis.
    """
    qy, qx = detector_shape
    g_max = (math.hypot(qy, qx) / 2 + SPOT_REACH_SIGMAS * spot_sigma) * detector_scale
    n = int(math.ceil(g_max * LATTICE_NM)) + 1
    hkl = np.stack(np.meshgrid(*[np.arange(-n, n + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    hkl = hkl[np.any(hkl != 0, axis=1)]

    rotation = _orientation(zone, rng)
    g = (hkl / LATTICE_NM) @ rotation.T  # lab frame (x, y, z), z along the beam, 1/nm
    g_abs2 = np.sum(g**2, axis=1)
    # Excitation error: distance from the Ewald sphere, |k0 + g| = 1/lambda.
    excitation = -(g[:, 2] + WAVELENGTH_NM * g_abs2 / 2)
    intensity = (
        np.abs(_structure_factor(hkl)) ** STRUCTURE_EXPONENT
        * np.exp(-g_abs2 / G_FALLOFF**2)
        * np.exp(-((excitation / EXCITATION_WIDTH) ** 2))
    )
    dx, dy = g[:, 0] / detector_scale, g[:, 1] / detector_scale
    reach = SPOT_REACH_SIGMAS * spot_sigma
    on_detector = (np.abs(dy) < qy / 2 + reach) & (np.abs(dx) < qx / 2 + reach)
    keep = on_detector & (intensity > MIN_SPOT_FRACTION * intensity[on_detector].max())
    share = intensity[keep] / intensity[keep].sum()
    return _Spots(dy=dy[keep], dx=dx[keep], share=share)


def _orientation(zone: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Rotation matrix (3, 3), crystal to lab: ``zone`` near +z, random in-plane angle and tilt."""
    axis = np.asarray(zone, dtype=np.float64)
    axis /= np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(helper, axis)
    e1 /= np.linalg.norm(e1)
    to_zone = np.stack([e1, np.cross(axis, e1), axis])  # rows: lab x, y, z in crystal coords

    phi = rng.uniform(0.0, 2 * math.pi)
    tilt = rng.uniform(*TILT_RANGE_RAD)
    tilt_axis = rng.uniform(0.0, 2 * math.pi)
    return _rotation_about([math.cos(tilt_axis), math.sin(tilt_axis), 0.0], tilt) @ (
        _rotation_about([0.0, 0.0, 1.0], phi) @ to_zone
    )


def _rotation_about(axis: list[float], angle: float) -> np.ndarray:
    """Rodrigues rotation matrix (3, 3) by ``angle`` radians about the unit vector ``axis``."""
    k = np.asarray(axis)
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def _structure_factor(hkl: np.ndarray) -> np.ndarray:
    """Kinematic structure factor of cubic perovskite: A at 000, B at the body centre, O at the
    face centres. ``hkl`` (n, 3) int; returns (n,) float64."""
    h, k, l = hkl.T  # noqa: E741 - Miller indices
    parity = lambda m: 1.0 - 2.0 * (m % 2)  # noqa: E731 - (-1)**m for integer arrays
    return (
        SCATTERING_A
        + SCATTERING_B * parity(h + k + l)
        + SCATTERING_O * (parity(h + k) + parity(k + l) + parity(h + l))
    )


def _mirrored(spots: _Spots, normal: np.ndarray) -> _Spots:
    """The spots reflected across the plane with in-plane unit normal ``(ny, nx)``: a twin."""
    along = spots.dy * normal[0] + spots.dx * normal[1]
    return _Spots(
        dy=spots.dy - 2 * along * normal[0], dx=spots.dx - 2 * along * normal[1], share=spots.share
    )


def _twinned(matrix: _Spots, normal: np.ndarray) -> _Spots:
    """Spots seen through a twin lamella: the matrix's plus its mirror image, sharing 1."""
    twin = _mirrored(matrix, normal)
    return _Spots(
        dy=np.concatenate([matrix.dy, twin.dy]),
        dx=np.concatenate([matrix.dx, twin.dx]),
        share=np.concatenate([(1 - TWIN_SHARE) * matrix.share, TWIN_SHARE * twin.share]),
    )


def _template(spots: _Spots, detector_shape: tuple[int, int], spot_sigma: float) -> np.ndarray:
    """Noise-free spot image (qy, qx) float64, beam at the centre, for comparing regions."""
    qy, qx = detector_shape
    gy = _pixel_shares(np.arange(qy) - (qy - 1) / 2, spots.dy, spot_sigma)
    gx = _pixel_shares(np.arange(qx) - (qx - 1) / 2, spots.dx, spot_sigma)
    return (gy * spots.share) @ gx.T  # separable Gaussians: sum_k share_k gy_k(y) gx_k(x)


def _pixel_shares(pixels: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    """Share of a 1D Gaussian at each centre (m,) that falls in each pixel (n,): (n, m)."""
    scale = 1.0 / (math.sqrt(2.0) * sigma)
    edges = (pixels[:, None] - centres[None, :]) * scale
    return 0.5 * (special.erf(edges + 0.5 * scale) - special.erf(edges - 0.5 * scale))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- Rendering ---------------------------------------------------------------------------------


def _render(
    data: np.ndarray,
    labels: np.ndarray,
    thickness: np.ndarray,
    centres: np.ndarray,
    regions: list[_Spots],
    dose: float,
    beam_radius: float,
    spot_sigma: float,
    seed: int,
) -> None:
    """Fill ``data`` (ny, nx, qy, qx) in place with Poisson-noisy patterns."""
    ny, nx, qy, qx = data.shape
    unscattered = np.exp(-thickness / MEAN_FREE_PATH_NM).ravel()
    beam_e = dose * unscattered
    bragg_e = dose * BRAGG_SHARE * (1 - unscattered)
    diffuse_e = dose * DIFFUSE_SHARE * (1 - unscattered)
    diffuse_sigma = DIFFUSE_SIGMA_FRACTION * min(qy, qx)

    most = max(len(r.share) for r in regions)
    spot_dy = np.zeros((len(regions), most))
    spot_dx = np.zeros((len(regions), most))
    spot_share = np.zeros((len(regions), most))
    n_spots = np.zeros(len(regions), dtype=np.int64)
    for i, region in enumerate(regions):
        n_spots[i] = len(region.share)
        spot_dy[i, : n_spots[i]] = region.dy
        spot_dx[i, : n_spots[i]] = region.dx
        spot_share[i, : n_spots[i]] = region.share

    if data.dtype == np.uint8:
        # Like an 8-bit camera's gain: the brightest expected pixel lands at UINT8_FILL of 255.
        background = diffuse_e * (1 - DIFFUSE_FLAT_SHARE) / (2 * math.pi * diffuse_sigma**2)
        beam_peak = beam_e / (math.pi * beam_radius**2)
        spot_peak = bragg_e * spot_share.max(axis=1)[labels.ravel()] / (2 * math.pi * spot_sigma**2)
        peak = float(np.max(background + np.maximum(beam_peak, spot_peak)))
        gain = min(1.0, UINT8_FILL * 255 / peak)
    else:
        gain = 1.0

    _render_patterns_kernel(
        data.reshape(ny * nx, qy, qx),
        labels.ravel(),
        beam_e,
        bragg_e,
        diffuse_e,
        np.ascontiguousarray(centres.reshape(ny * nx, 2)),
        spot_dy,
        spot_dx,
        spot_share,
        n_spots,
        float(beam_radius),
        float(spot_sigma),
        float(diffuse_sigma),
        np.uint64(seed),
        gain,
        _DTYPES[data.dtype.name],
    )


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_INVERSES = 1.0 / np.maximum(np.arange(100.0), 1.0)  # 1 / k for the Poisson inversion


@numba.njit(cache=True, inline="always")
def _splitmix64(x):
    """One step of SplitMix64: a well-mixed uint64 from a uint64 counter."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _to_unit(bits):
    """A float64 in (0, 1) from the top 53 of 64 random bits."""
    return ((bits >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True)
def _poisson(lam, bits):
    """An exact Poisson(``lam``) count from the 64 random ``bits`` (a hash).

    Inversion (one uniform, about ``lam`` steps) below ``POISSON_PTRS_ABOVE``; above, Hormann's
    transformed rejection (PTRS, as in numpy), about 1.2 pairs of uniforms whatever ``lam``.
    """
    if lam <= 0.0:
        return 0
    if lam < POISSON_PTRS_ABOVE:
        u = _to_unit(bits)
        if u <= 1.0 - lam:  # exp(-lam) >= 1 - lam: a zero, without computing exp (most pixels)
            return 0
        p = math.exp(-lam)
        cdf = p
        k = 0
        while u > cdf and k < 99:  # the cap guards against round-off as cdf nears 1
            k += 1
            p *= lam * _INVERSES[k]  # a table lookup: division is the slow step here
            cdf += p
        return k
    return _poisson_ptrs(lam, bits)


@numba.njit(cache=True)
def _poisson_ptrs(lam, bits):
    """Poisson(``lam``) for ``lam`` >= 10 by transformed rejection (Hormann 1993)."""
    slam = math.sqrt(lam)
    loglam = math.log(lam)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    invalpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    draw = np.uint64(0)
    while True:
        u = _to_unit(_splitmix64(bits + draw)) - 0.5
        v = _to_unit(_splitmix64(bits + draw + np.uint64(1)))
        draw += np.uint64(2)
        us = 0.5 - abs(u)
        k = int(math.floor((2 * a / us + b) * u + lam + 0.43))
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        accept = -lam + k * loglam - math.lgamma(k + 1)
        if math.log(v) + math.log(invalpha) - math.log(a / (us * us) + b) <= accept:
            return k


@numba.njit(cache=True)
def _add_background(lam, gy, gx, cy, cx, core, flat, sigma):
    """``lam`` (qy, qx) = a Gaussian of ``core`` electrons at (cy, cx) plus ``flat`` per pixel."""
    qy, qx = lam.shape
    norm = core / (2.0 * math.pi * sigma * sigma)
    for i in range(qy):
        gy[i] = norm * math.exp(-((i - cy) ** 2) / (2.0 * sigma * sigma))
    for j in range(qx):
        gx[j] = math.exp(-((j - cx) ** 2) / (2.0 * sigma * sigma))
    for i in range(qy):
        for j in range(qx):
            lam[i, j] = gy[i] * gx[j] + flat


@numba.njit(cache=True)
def _add_disc(lam, cy, cx, electrons, radius):
    """Add an anti-aliased uniform disc of ``electrons`` at (cy, cx): the direct beam."""
    qy, qx = lam.shape
    per_pixel = electrons / (math.pi * radius * radius)
    i0, i1 = max(0, int(cy - radius - 2)), min(qy, int(cy + radius + 3))
    j0, j1 = max(0, int(cx - radius - 2)), min(qx, int(cx + radius + 3))
    for i in range(i0, i1):
        for j in range(j0, j1):
            d = math.sqrt((i - cy) ** 2 + (j - cx) ** 2)
            cover = min(max(radius + 0.5 - d, 0.0), 1.0)  # pixel coverage, linear across the edge
            lam[i, j] += per_pixel * cover


@numba.njit(cache=True)
def _add_spot(lam, gx, y0, x0, electrons, sigma):
    """Add a Gaussian spot of ``electrons`` at (y0, x0), integrated over each pixel (so spots
    narrower than a pixel keep their total), cut at SPOT_REACH_SIGMAS; ``gx`` is scratch."""
    qy, qx = lam.shape
    reach = SPOT_REACH_SIGMAS * sigma + 0.5
    i0, i1 = max(0, int(math.floor(y0 - reach))), min(qy, int(math.ceil(y0 + reach)) + 1)
    j0, j1 = max(0, int(math.floor(x0 - reach))), min(qx, int(math.ceil(x0 + reach)) + 1)
    if i0 >= i1 or j0 >= j1:
        return
    scale = 1.0 / (math.sqrt(2.0) * sigma)
    # Share of the spot in pixel j along x: half the difference of erf at the pixel's two edges.
    below = math.erf((j0 - 0.5 - x0) * scale)
    for j in range(j0, j1):
        above = math.erf((j + 0.5 - x0) * scale)
        gx[j] = 0.5 * (above - below)
        below = above
    below = math.erf((i0 - 0.5 - y0) * scale)
    for i in range(i0, i1):
        above = math.erf((i + 0.5 - y0) * scale)
        wy = 0.5 * electrons * (above - below)
        below = above
        for j in range(j0, j1):
            lam[i, j] += wy * gx[j]


@numba.njit(parallel=True, cache=True)
def _render_patterns_kernel(
    out,
    labels,
    beam_e,
    bragg_e,
    diffuse_e,
    centres,
    spot_dy,
    spot_dx,
    spot_share,
    n_spots,
    beam_radius,
    spot_sigma,
    diffuse_sigma,
    seed,
    gain,
    clip_max,
):
    """Render and sample ``out`` (n, qy, qx), one pattern per iteration.

    Pattern ``p`` is centred on ``centres[p]`` (n, 2) and holds ``beam_e[p]`` electrons in the
    direct beam, ``bragg_e[p]`` in the spots of region ``labels[p]`` (offsets ``spot_dy/dx``,
    shares ``spot_share``, both (n_regions, max_spots), ``n_spots`` used) and ``diffuse_e[p]``
    in the background. Electron counts are multiplied by ``gain``, rounded, and saturate at
    ``clip_max``.
    """
    n, qy, qx = out.shape
    base = _splitmix64(seed)
    for p in numba.prange(n):
        lam = np.empty((qy, qx))
        gy = np.empty(qy)
        gx = np.empty(qx)
        cy, cx = centres[p, 0], centres[p, 1]
        flat = diffuse_e[p] * DIFFUSE_FLAT_SHARE / (qy * qx)
        core = diffuse_e[p] * (1.0 - DIFFUSE_FLAT_SHARE)
        _add_background(lam, gy, gx, cy, cx, core, flat, diffuse_sigma)
        _add_disc(lam, cy, cx, beam_e[p], beam_radius)
        region = labels[p]
        for k in range(n_spots[region]):
            y0, x0 = cy + spot_dy[region, k], cx + spot_dx[region, k]
            _add_spot(lam, gx, y0, x0, bragg_e[p] * spot_share[region, k], spot_sigma)
        key = _splitmix64(base ^ np.uint64(p))
        for i in range(qy):
            for j in range(qx):
                pixel = np.uint64(i * qx + j)
                count = _poisson(lam[i, j], _splitmix64(key + pixel))
                if gain != 1.0:
                    count = int(count * gain + 0.5)
                out[p, i, j] = min(count, clip_max)


# --- Writing -----------------------------------------------------------------------------------


def write_blo(
    path: str | os.PathLike[str],
    data: np.ndarray,
    scan_step_nm: float = DEFAULT_SCAN_STEP_NM,
    detector_scale: float = 1.0,
) -> None:
    """Write a scan as a NanoMegas blockfile (``.blo``), atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; its folder must exist. An existing file is replaced only once the new one is
        complete.
    data : numpy.ndarray, shape (ny, nx, q, q), uint8
        The patterns. Blockfiles hold 8-bit, square patterns.
    scan_step_nm : float
        Scan step, nm per probe position (both directions).
    detector_scale : float
        Detector calibration. The format stores it as the integer part of ``100 / scale`` in a
        unit HyperSpy reads as ``cm``, so it comes back only approximately.

    Raises
    ------
    InputError
        ``data`` is not a 4D uint8 array with square patterns, or a calibration is not > 0.
    OutputError
        The file cannot be written.
    """
    import dask.array as da
    from rsciio.blockfile import file_writer

    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        dtype = getattr(data, "dtype", type(data).__name__)
        raise InputError(
            f"data should be a uint8 numpy array for a .blo file, got dtype={dtype}; "
            "scale it to 0-255 first."
        )
    if data.ndim != 4 or data.shape[2] != data.shape[3]:
        raise InputError(
            f"data.shape={data.shape} should be (ny, nx, q, q): .blo patterns are square."
        )
    scan_step_nm = _check_positive("scan_step_nm", scan_step_nm)
    detector_scale = _check_positive("detector_scale", detector_scale)

    navigator = data.mean(axis=(2, 3), dtype=np.float32)  # the file's virtual bright field
    navigator = np.round(255 * navigator / max(float(navigator.max()), 1e-12)).astype(np.uint8)
    signal = {
        # A dask array is written frame block by frame block, without a whole-scan copy.
        "data": da.from_array(data, chunks=(max(1, 2**24 // data[0].nbytes), -1, -1, -1)),
        "axes": [
            _axis("y", data.shape[0], scan_step_nm, "nm", True),
            _axis("x", data.shape[1], scan_step_nm, "nm", True),
            _axis("dy", data.shape[2], detector_scale, "cm", False),
            _axis("dx", data.shape[3], detector_scale, "cm", False),
        ],
        "metadata": {"General": {"title": "gpu4d synthetic scan"}},
        "original_metadata": {},
        "attributes": {"_lazy": True},
    }
    # rsciio opens the file by name; write it through the temporary file atomic_write made.
    atomic_write(
        path,
        lambda fh: file_writer(fh.name, signal, navigator=navigator, show_progressbar=False),
    )


def _axis(name: str, size: int, scale: float, units: str, navigate: bool) -> dict:
    return {
        "name": name,
        "size": int(size),
        "scale": float(scale),
        "offset": 0.0,
        "units": units,
        "navigate": navigate,
    }
