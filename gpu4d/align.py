"""Descan alignment: measure the direct beam of every pattern and turn it into per-pattern shifts.

The preprocessing kernels sample pattern i at ``(y + shifts[i, 0], x + shifts[i, 1])`` with
``shifts = measured beam centre - reference centre``, so every beam lands on the reference and
the beam mask (drawn at the reference) follows the beam. This module provides the three steps:

1. **Measure** the beam centre of each pattern of a batch (:func:`measure_centres`):

   * ``"com"``: thresholded centre of mass inside a circular window around the expected beam, a
     numba kernel on the CPU (``kernels.beam_centre``) or the GPU (``kernels.beam_centre_cuda``);
   * ``"xcorr"``: cross-correlation with a disc of the beam's radius, integer peak plus a
     parabolic sub-pixel refinement. It is array code over ``xp`` (numpy or cupy): an FFT
     correlation of the windowed crops, batched, so cuFFT does the work on the GPU and no
     kernel is needed (a direct correlation kernel would redo what the FFT libraries already do
     well, for a step that costs little next to preprocessing).

2. **Fit** (method ``"fit"``, the default): descan is a smooth function of the scan position, so
   a robust smooth fit over the scan (:func:`fit_descan`: a low-order 2-D polynomial trend plus
   a local-linear Gaussian smoothing of what it misses, reweighted against outliers) averages
   the per-pattern noise away and ignores patterns whose beam was badly measured (thick regions
   where the beam is weak and the spots strong, defects, unmeasured patterns).

3. **Shift** (:func:`shifts_from_centres`): centres (measured or fitted) minus the reference; a
   pattern without a measurement gets the median shift, so shifts are never NaN.

:func:`descan_shifts` chains 2 and 3 for a whole scan of measured centres.
"""

from __future__ import annotations

import math

import numpy as np

from .arrays import to_host
from .errors import InputError

__all__ = [
    "ALIGN_METHODS",
    "DEFAULT_ALIGN_METHOD",
    "DEFAULT_FIT_ORDER",
    "DEFAULT_THRESHOLD",
    "ENGINES",
    "default_smooth",
    "default_window_radius",
    "descan_shifts",
    "fit_descan",
    "measure_centres",
    "measure_centres_cpu",
    "measure_centres_cuda",
    "resolve_align",
    "shifts_from_centres",
    "xcorr_centres",
]

#: ``"fit"`` measures with ``"com"`` and fits a smooth descan field over the scan.
ALIGN_METHODS = ("com", "xcorr", "fit")
#: ``align="auto"``: measure and fit the descan (``DEFAULT_ALIGN_METHOD``) and apply it only when
#: the fitted beam position wanders by at least this much (peak to peak, either axis, detector
#: pixels). Below it the bilinear resampling would blur every pattern for less than it corrects.
AUTO_ALIGN_THRESHOLD_PX = 0.5
#: What ``align=True`` means: the most accurate method on the synthetic scans (see the tests).
DEFAULT_ALIGN_METHOD = "fit"
#: Kernel engines, named like ``backend.kernel_target``.
ENGINES = ("cpu", "cuda")
#: Pixels below this fraction of the window's maximum carry no centre-of-mass weight. Low
#: enough that Poisson noise on the maximum does not throw away half the beam, high enough that
#: the diffuse background and weak spots in the window are ignored (on the synthetic scans,
#: 0.1-0.2 measure best; 0.5 doubles the error of a noisy beam).
DEFAULT_THRESHOLD = 0.2
#: Total degree of the descan polynomial: a linear ramp plus a gentle curvature.
DEFAULT_FIT_ORDER = 2
#: Default window radius = ``WINDOW_FACTOR * beam radius + WINDOW_MARGIN_PX``: the whole beam
#: plus a few pixels of descan, but not the first Bragg spots of usual crystals.
WINDOW_FACTOR = 1.5
WINDOW_MARGIN_PX = 2.0
#: Default Gaussian sigma of the local correction to the polynomial trend, as a fraction of the
#: scan's shorter side (descan varies over the field of view, whatever its sampling), and its
#: floor in scan pixels.
SMOOTH_FRACTION = 1.0 / 24.0
MIN_SMOOTH_PX = 1.0
#: Median of the norm of a 2-D isotropic Gaussian residual, in units of its per-axis sigma
#: (Rayleigh distribution: sqrt(2 ln 2)); turns the median residual into a robust sigma.
_RAYLEIGH_MEDIAN = math.sqrt(2.0 * math.log(2.0))
#: Reweighting: Huber (tuning 1.5 sigma) for the first steps, Tukey's biweight (4.685) after.
_HUBER_K = 1.5
_TUKEY_C = 4.685
_HUBER_STEPS = 5
#: Added to the local fit's total weight: far from every inlier the correction fades to 0.
_SMOOTH_EPS = 1e-3


# ------------------------------------------------------------------------------ the argument
def resolve_align(align) -> str | None:
    """Map the ``align`` argument to a method name, or None for no alignment.

    Parameters
    ----------
    align : None, bool or str
        None/False: no alignment; True: ``DEFAULT_ALIGN_METHOD``; ``"auto"``: measured, applied
        when the beam wanders (``AUTO_ALIGN_THRESHOLD_PX``); a name in ``ALIGN_METHODS``
        (case-insensitive).

    Returns
    -------
    str or None

    Raises
    ------
    InputError
        ``align`` is anything else; the message lists the allowed values.
    """
    if align is None or align is False:
        return None
    if align is True:
        return DEFAULT_ALIGN_METHOD
    if isinstance(align, str) and align.strip().lower() in (*ALIGN_METHODS, "auto"):
        return align.strip().lower()
    allowed = ", ".join(repr(m) for m in (*ALIGN_METHODS, "auto"))
    raise InputError(f"align must be None, True, False or one of {allowed}; got {align!r}")


def default_smooth(scan_shape: tuple[int, int]) -> float:
    """Default sigma (scan pixels) of :func:`fit_descan`'s local correction for a scan shape."""
    return max(MIN_SMOOTH_PX, SMOOTH_FRACTION * min(scan_shape))


def default_window_radius(radius: float) -> float:
    """Window radius (detector pixels) used when none is given, for a beam of ``radius``."""
    return WINDOW_FACTOR * float(radius) + WINDOW_MARGIN_PX


# ------------------------------------------------------------------------------ measuring
def measure_centres(
    batch,
    method: str = "com",
    *,
    centre,
    radius: float,
    window_radius: float | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    engine: str = "cpu",
    stream=None,
):
    """Measure the direct-beam centre of every pattern of a batch.

    Parameters
    ----------
    batch : array, shape (n, qy, qx)
        Raw patterns (uint8, uint16, uint32, float32 or float64): numpy, or for the ``"cuda"``
        engine a device array (cupy) or, under numba's simulator, numpy.
    method : {"com", "xcorr", "fit"}
        ``"fit"`` measures like ``"com"``; its fit runs once all centres are known
        (:func:`descan_shifts`).
    centre : (float, float) or array, shape (2,) or (n, 2)
        Expected beam centre (cy, cx), detector pixels: the window centre. ``"xcorr"`` takes a
        single centre only.
    radius : float
        Beam radius, detector pixels (the half-maximum radius; the ``"xcorr"`` template's).
    window_radius : float, optional
        Radius of the search window around ``centre``; default ``default_window_radius(radius)``.
        It must hold the beam wherever descan puts it.
    threshold : float
        ``"com"``: fraction in [0, 1) of the window's maximum below which pixels are ignored.
    engine : {"cpu", "cuda"}
        Which kernels run ``"com"``. ``"xcorr"`` runs on the batch's array module either way.
    stream : optional
        numba CUDA stream for the ``"cuda"`` engine; by default the stream CuPy considers current.

    Returns
    -------
    array, shape (n, 2), float32
        Measured (cy, cx), on the batch's array module; NaN where the window holds no signal.

    Raises
    ------
    InputError
        An argument is out of range; the message names it.
    """
    if method not in ALIGN_METHODS:
        resolve_align(method)  # raises the InputError that names the allowed values
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    radius = _positive("radius", radius)
    window = default_window_radius(radius) if window_radius is None else window_radius
    window = _positive("window_radius", window)
    if method == "xcorr":
        return xcorr_centres(batch, centre=centre, radius=radius, window_radius=window)
    if engine == "cuda":
        return measure_centres_cuda(
            batch, centre=centre, window_radius=window, threshold=threshold, stream=stream
        )
    return measure_centres_cpu(batch, centre=centre, window_radius=window, threshold=threshold)


def backend_com_centres(backend, batch, *, centre, window_radius: float):
    """``"com"`` centres (n, 2) of a batch on ``backend``'s device, with its kernels: the CUDA
    kernel on the GPU backend (on the stream it launches on), the CPU kernel otherwise."""
    if backend.kernel_target == "cuda":
        return measure_centres_cuda(
            batch, centre=centre, window_radius=window_radius,
            stream=backend.kernel_stream(), threads_per_block=backend.threads_per_block,
        )
    return measure_centres_cpu(batch, centre=centre, window_radius=window_radius)


def measure_centres_cpu(
    batch: np.ndarray,
    *,
    centre,
    window_radius: float,
    threshold: float = DEFAULT_THRESHOLD,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Thresholded centre of mass of the beam in each pattern, numba CPU kernel.

    Parameters
    ----------
    batch : numpy.ndarray, shape (n, qy, qx)
        Raw patterns.
    centre : (float, float) or numpy.ndarray, shape (2,) or (n, 2)
        Window centre (cy, cx), one for all patterns or one per pattern.
    window_radius : float
        Window radius, detector pixels.
    threshold : float
        Fraction in [0, 1) of each window's maximum; pixels weigh their excess over it.
    out : numpy.ndarray, shape (n, 2), float32, optional
        Written in place when given.

    Returns
    -------
    numpy.ndarray, shape (n, 2), float32
        (cy, cx) per pattern; NaN where the window holds no positive pixel.
    """
    from .kernels.beam_centre import launch_beam_centre_cpu

    batch = _check_batch(batch)
    centres = _window_centres(centre, batch.shape[0], np)
    threshold = _check_threshold(threshold)
    window_radius = _positive("window_radius", window_radius)
    if out is None:
        out = np.empty((batch.shape[0], 2), np.float32)
    if batch.shape[0]:
        launch_beam_centre_cpu(batch, centres, window_radius, threshold, out)
    return out


def measure_centres_cuda(
    batch,
    *,
    centre,
    window_radius: float,
    threshold: float = DEFAULT_THRESHOLD,
    out=None,
    stream=None,
    threads_per_block: int | None = None,
):
    """Thresholded centre of mass of the beam in each pattern, numba CUDA kernel.

    Same arguments and results as :func:`measure_centres_cpu`; ``batch`` and ``out`` are device
    arrays (cupy) on a GPU, numpy arrays under numba's CUDA simulator. ``stream`` is the numba
    stream to launch on (by default the one CuPy considers current); ``threads_per_block`` a power of two (default
    ``kernels.beam_centre_cuda.THREADS_PER_BLOCK``).
    """
    from .kernels.beam_centre_cuda import launch_beam_centre_cuda

    xp = _array_module(batch)
    if batch.ndim != 3:
        raise InputError(f"batch.shape={tuple(batch.shape)} should be (n, qy, qx).")
    centres = _window_centres(centre, batch.shape[0], xp)
    threshold = _check_threshold(threshold)
    window_radius = _positive("window_radius", window_radius)
    if out is None:
        out = xp.empty((batch.shape[0], 2), np.float32)
    launch_beam_centre_cuda(
        batch, centres, window_radius, threshold, out,
        stream=stream, threads_per_block=threads_per_block,
    )
    return out


def xcorr_centres(batch, *, centre, radius: float, window_radius: float | None = None, xp=None):
    """Beam centre of each pattern by cross-correlation with a disc, on numpy or cupy.

    The window's crop of every pattern is correlated (FFT, batched) with an anti-aliased disc of
    the beam's ``radius``; the best integer shift within ``window_radius - radius`` of the
    expected centre is refined by a parabola through its neighbours along each axis. The crop
    is large enough that the circular correlation never wraps for shifts inside that search
    disc, so no zero-padding is needed.

    Parameters
    ----------
    batch : array, shape (n, qy, qx)
        Raw patterns, numpy or cupy.
    centre : (float, float)
        Expected beam centre (cy, cx), detector pixels.
    radius : float
        Beam (template disc) radius, detector pixels.
    window_radius : float, optional
        The beam must lie within ``window_radius - radius`` of ``centre``;
        default ``default_window_radius(radius)``.
    xp : module, optional
        numpy or cupy; default: the batch's.

    Returns
    -------
    array, shape (n, 2), float32
        (cy, cx) per pattern, on ``xp``; NaN where the crop (the square around the window)
        holds no positive pixel.
    """
    xp = _array_module(batch) if xp is None else xp
    if batch.ndim != 3:
        raise InputError(f"batch.shape={tuple(batch.shape)} should be (n, qy, qx).")
    cy, cx = _single_centre(centre)
    radius = _positive("radius", radius)
    window = default_window_radius(radius) if window_radius is None else window_radius
    search = _positive("window_radius", window) - radius
    if search < 1.0:
        raise InputError(
            f"window_radius={window} should exceed the beam radius={radius} by at least 1 pixel."
        )
    n = batch.shape[0]
    if n == 0:
        return xp.empty((0, 2), np.float32)
    half = int(math.ceil(window + 0.5))
    my, mx = int(round(cy)), int(round(cx))
    crops = _crops(batch, my, mx, half, xp)  # (n, size, size) float32, centre pixel (my, mx)
    size = 2 * half + 1
    template = xp.asarray(_disc((size, size), half, half, radius), dtype=np.float32)
    spectrum = xp.fft.rfft2(crops) * xp.conj(xp.fft.rfft2(template))[None]
    corr = xp.fft.irfft2(spectrum, s=(size, size))  # corr[s] = sum_x crop(x + s) disc(x)

    lag = xp.asarray(np.fft.fftfreq(size, 1.0 / size))  # integer shifts of the FFT layout
    dy2 = (lag[:, None] - (cy - my)) ** 2
    dx2 = (lag[None, :] - (cx - mx)) ** 2
    allowed = (dy2 + dx2) <= search * search
    flat = xp.where(allowed[None], corr, -xp.inf).reshape(n, -1)
    peak = xp.argmax(flat, axis=1)
    iy, ix = peak // size, peak % size
    rows = xp.arange(n)
    middle = corr[rows, iy, ix]
    fy = _parabola(corr[rows, (iy - 1) % size, ix], middle, corr[rows, (iy + 1) % size, ix])
    fx = _parabola(corr[rows, iy, (ix - 1) % size], middle, corr[rows, iy, (ix + 1) % size])
    out = xp.empty((n, 2), np.float32)
    out[:, 0] = my + lag[iy] + fy
    out[:, 1] = mx + lag[ix] + fx
    empty = crops.reshape(n, -1).max(axis=1) <= 0
    out[empty] = np.nan
    return out


# ------------------------------------------------------------------------------ fitting
def fit_descan(
    centres: np.ndarray,
    order: int = DEFAULT_FIT_ORDER,
    *,
    smooth: float | None = None,
    cutoff: float = 3.5,
    min_scale: float = 0.05,
    max_iter: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Robust smooth fit of the beam centres over the scan: a polynomial trend plus a local
    correction.

    The model of each coordinate is a polynomial of total degree ``order`` in the scan
    coordinates (scaled to [-1, 1]) plus, when ``smooth > 0``, the Gaussian-smoothed (sigma
    ``smooth`` scan pixels) residual from that polynomial: descan is not always a low-order
    polynomial (slow drift during the scan, coil hysteresis), and a polynomial that cannot follow
    the field would make whole regions look like outliers. The smoothing is a normalized
    convolution, so outliers and NaNs weigh nothing in it, and it still averages each position
    over about ``4 pi smooth^2`` neighbours.

    The fit is iteratively reweighted on the 2-D residual from the whole model (like robust
    LOWESS): Huber weights first (they converge from the plain least-squares start whatever the
    outliers), then Tukey's biweight, which gives gross outliers no weight at all. The scale is
    the median residual, so up to about half the measurements may be outliers.

    NaN centres are left out. With fewer valid centres than twice the polynomial's terms, the
    order is lowered.

    Parameters
    ----------
    centres : numpy.ndarray, shape (ny, nx, 2)
        Measured (cy, cx); NaN = not measured.
    order : int
        Total degree of the trend, 0 to 5.
    smooth : float, optional
        Gaussian sigma, scan pixels, of the local correction; default
        ``default_smooth((ny, nx))`` (1/24 of the shorter side, at least 1). 0 fits the
        polynomial alone: only for a descan known to be that polynomial, since the biweight
        then rejects the regions a misfitting polynomial misses (on the synthetic scans'
        non-polynomial drift, 0.5 px rms against 0.03 px with the default).
    cutoff : float
        A centre is an inlier when its residual is below ``cutoff`` robust sigmas.
    min_scale : float
        Floor on the robust sigma, pixels, so that near-exact data do not make every tiny
        residual an outlier.
    max_iter : int
        Iteration cap of the reweighting.

    Returns
    -------
    field : numpy.ndarray, shape (ny, nx, 2), float64
        The fitted (cy, cx) at every scan position; all NaN when no centre was measured.
    inliers : numpy.ndarray, shape (ny, nx), bool
        The measured centres the fit kept.

    Raises
    ------
    InputError
        ``centres`` is not (ny, nx, 2), ``order`` is not an integer in 0..5 or ``smooth`` < 0.
    """
    centres = np.asarray(centres, dtype=np.float64)
    if centres.ndim != 3 or centres.shape[2] != 2:
        raise InputError(f"centres.shape={centres.shape} should be (ny, nx, 2).")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
        raise InputError(f"order={order!r} should be an integer between 0 and 5.")
    ny, nx, _ = centres.shape
    if smooth is None:
        smooth = default_smooth((ny, nx))
    if isinstance(smooth, bool) or not (
        isinstance(smooth, (int, float, np.number)) and 0 <= smooth < math.inf
    ):
        raise InputError(f"smooth={smooth!r} should be a number >= 0.")
    values = centres.reshape(-1, 2)
    valid = np.isfinite(values).all(axis=1)
    if not valid.any():
        return np.full((ny, nx, 2), np.nan), np.zeros((ny, nx), bool)
    while order > 0 and valid.sum() < 2 * _n_terms(order):
        order -= 1
    model = _DescanModel(_monomials(ny, nx, order), values, valid, (ny, nx), smooth)
    weights = valid.astype(np.float64)
    for step in range(max_iter):
        residual = model.residual(model.fit(weights))
        scale = _robust_scale(residual[valid], min_scale)
        if step < _HUBER_STEPS:
            new = np.minimum(1.0, _HUBER_K * scale / np.maximum(residual, 1e-300))
        else:
            u = residual / (_TUKEY_C * scale)
            new = np.where(u < 1.0, (1.0 - u * u) ** 2, 0.0)
        change = float(np.abs(new - weights).max())
        weights = new
        if step >= _HUBER_STEPS and change < 1e-4:
            break
    field = model.fit(weights)
    residual = model.residual(field)
    inliers = residual < cutoff * _robust_scale(residual[valid], min_scale)
    return field.reshape(ny, nx, 2), inliers.reshape(ny, nx)


def shifts_from_centres(centres, reference, *, fill=None) -> np.ndarray:
    """Per-pattern shifts that move each beam onto ``reference``.

    Parameters
    ----------
    centres : numpy.ndarray, shape (n, 2) or (ny, nx, 2)
        Measured or fitted (cy, cx); NaN rows are "not measured".
    reference : (float, float)
        Reference centre (cy, cx): where the beam mask is drawn.
    fill : (float, float), optional
        Shift given to unmeasured patterns; default the median shift of the measured ones
        (zero when none was measured).

    Returns
    -------
    numpy.ndarray, shape (n, 2), float32
        ``centre - reference`` per pattern, in the preprocessing kernels' convention; never NaN.
    """
    centres = np.asarray(centres, dtype=np.float64)
    if centres.shape[-1] != 2 or centres.ndim not in (2, 3):
        raise InputError(f"centres.shape={centres.shape} should be (n, 2) or (ny, nx, 2).")
    shifts = centres.reshape(-1, 2) - np.asarray(_single_centre(reference, "reference"))
    missing = ~np.isfinite(shifts).all(axis=1)
    if missing.any():
        if fill is None:
            measured = shifts[~missing]
            fill = np.median(measured, axis=0) if len(measured) else np.zeros(2)
        else:
            fill = np.asarray(_single_centre(fill, "fill"))
        shifts[missing] = fill
    return np.ascontiguousarray(shifts, dtype=np.float32)  # kernels need C order


def descan_shifts(
    centres: np.ndarray,
    method: str,
    reference,
    *,
    order: int = DEFAULT_FIT_ORDER,
    smooth: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Shifts for a whole scan from its measured centres: fitted for ``"fit"``, else as measured.

    Parameters
    ----------
    centres : numpy.ndarray, shape (ny, nx, 2)
        Measured (cy, cx) of every pattern, NaN where unmeasured.
    method : {"com", "xcorr", "fit"}
    reference : (float, float)
        Reference centre (cy, cx).
    order, smooth
        Polynomial degree and local-correction sigma (scan pixels) for ``"fit"``; see
        :func:`fit_descan`.

    Returns
    -------
    shifts : numpy.ndarray, shape (ny * nx, 2), float32
        Never NaN.
    info : dict
        JSON-ready summary: method, measured and inlier counts, fit order and residual RMS (px),
        and the range of the shifts.
    """
    centres = np.asarray(centres, dtype=np.float64)
    if centres.ndim != 3 or centres.shape[2] != 2:
        raise InputError(f"centres.shape={centres.shape} should be (ny, nx, 2).")
    method = resolve_align(method)
    measured = np.isfinite(centres).all(axis=2)
    info = {"method": method, "n_patterns": int(measured.size), "n_measured": int(measured.sum())}
    if method == "fit":
        if smooth is None:
            smooth = default_smooth(centres.shape[:2])
        field, inliers = fit_descan(centres, order, smooth=smooth)
        shifts = shifts_from_centres(field, reference)
        residual = np.linalg.norm((centres - field)[inliers], axis=1)
        info.update(
            order=int(order),
            smooth_px=float(smooth),
            n_inliers=int(inliers.sum()),
            residual_rms_px=float(np.sqrt(np.mean(residual**2))) if residual.size else None,
        )
    else:
        shifts = shifts_from_centres(centres, reference)
    info["shift_min_px"] = [float(v) for v in shifts.min(axis=0)] if len(shifts) else None
    info["shift_max_px"] = [float(v) for v in shifts.max(axis=0)] if len(shifts) else None
    return shifts, info


# ------------------------------------------------------------------------------ helpers
def _array_module(array):
    """numpy or cupy, whichever ``array`` belongs to (cupy is imported only for its arrays)."""
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def _positive(name: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (number > 0 and math.isfinite(number)):
        raise InputError(f"{name}={value!r} should be a finite number > 0.")
    return number


def _check_threshold(threshold) -> float:
    try:
        number = float(threshold)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(threshold, bool) or not 0.0 <= number < 1.0:
        raise InputError(f"threshold={threshold!r} should be a number in [0, 1).")
    return number


def _check_batch(batch) -> np.ndarray:
    batch = np.asarray(batch)
    if batch.ndim != 3:
        raise InputError(f"batch.shape={batch.shape} should be (n, qy, qx).")
    return batch


def _single_centre(centre, name: str = "centre") -> tuple[float, float]:
    values = np.asarray(centre, dtype=np.float64)
    if values.shape != (2,) or not np.isfinite(values).all():
        raise InputError(f"{name}={centre!r} should be two finite numbers (cy, cx).")
    return float(values[0]), float(values[1])


def _window_centres(centre, n: int, xp):
    """Window centres as the kernels take them: (1, 2) or (n, 2) float64 on ``xp``."""
    values = np.asarray(centre if xp is np else to_host(centre), dtype=np.float64)
    if values.shape == (2,):
        values = values[None]
    if values.shape not in ((1, 2), (n, 2)):
        raise InputError(f"centre has shape {values.shape}; it should be (2,) or (n={n}, 2).")
    return xp.asarray(np.ascontiguousarray(values))


def _crops(batch, my: int, mx: int, half: int, xp):
    """(n, 2*half+1, 2*half+1) float32 crops centred on pixel (my, mx), zero off the detector."""
    n, qy, qx = batch.shape
    size = 2 * half + 1
    crops = xp.zeros((n, size, size), np.float32)
    y0, x0 = my - half, mx - half
    ya, yb = max(0, y0), min(qy, y0 + size)
    xa, xb = max(0, x0), min(qx, x0 + size)
    if ya < yb and xa < xb:
        crops[:, ya - y0 : yb - y0, xa - x0 : xb - x0] = batch[:, ya:yb, xa:xb]
    return crops


def _disc(shape: tuple[int, int], cy: float, cx: float, radius: float) -> np.ndarray:
    """Anti-aliased disc (coverage linear across a one-pixel edge), float64 (qy, qx)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    distance = np.hypot(yy - cy, xx - cx)
    return np.clip(radius + 0.5 - distance, 0.0, 1.0)


def _parabola(left, middle, right):
    """Sub-pixel offset of the vertex of the parabola through three samples, in [-0.5, 0.5]."""
    curvature = left - 2.0 * middle + right
    safe = curvature < 0
    offset = 0.5 * (left - right) / (curvature + (~safe))  # + 1 where unsafe: no 0/0
    return (offset * safe).clip(-0.5, 0.5)


def _n_terms(order: int) -> int:
    return (order + 1) * (order + 2) // 2


def _monomials(ny: int, nx: int, order: int) -> np.ndarray:
    """Monomials ``u^a v^b`` (a + b <= order) of the scan coordinates scaled to [-1, 1].

    Returns
    -------
    numpy.ndarray, shape (n_terms, ny * nx), float64
        One row per monomial: the long axis last keeps the products with it fast.
    """
    u = np.linspace(-1.0, 1.0, ny) if ny > 1 else np.zeros(1)
    v = np.linspace(-1.0, 1.0, nx) if nx > 1 else np.zeros(1)
    uu, vv = np.repeat(u, nx), np.tile(v, ny)
    return np.stack([uu**a * vv ** (d - a) for d in range(order + 1) for a in range(d, -1, -1)])


class _DescanModel:
    """Polynomial trend plus smoothed residual, refitted for given per-position weights.

    ``monomials`` (n_terms, m) polynomial terms, ``values`` (m, 2) centres (NaN where ``valid`` is
    False), ``scan_shape`` (ny, nx) with ny * nx = m, ``smooth`` the Gaussian sigma (scan px).
    """

    def __init__(self, monomials, values, valid, scan_shape, smooth: float):
        self.monomials = monomials
        self.values = values
        self.valid = valid
        self.filled = np.where(valid[:, None], values, 0.0)
        self.scan_shape = scan_shape
        self.smooth = smooth
        ny, nx = scan_shape
        self._coords = (
            np.repeat(np.arange(ny, dtype=np.float64), nx),
            np.tile(np.arange(nx, dtype=np.float64), ny),
        )

    def fit(self, weights: np.ndarray) -> np.ndarray:
        """(m, 2) fitted centres for (m,) weights (zero on invalid rows)."""
        # normal equations: a handful of monomials on [-1, 1] are well conditioned, and this is
        # much faster than an SVD of the (m, n_terms) design
        weighted = self.monomials * weights
        gram = weighted @ self.monomials.T
        gram[np.diag_indices_from(gram)] += 1e-9 * max(float(weights.sum()), 1.0)
        coef = np.linalg.solve(gram, weighted @ self.filled)  # (n_terms, 2)
        field = (coef.T @ self.monomials).T
        if self.smooth > 0:
            field += self._smoothed(self.filled - field, weights)
        return field

    def residual(self, field: np.ndarray) -> np.ndarray:
        """(m,) norm of each row's 2-D residual; inf on invalid rows."""
        residual = np.full(len(field), np.inf)
        valid = self.valid
        residual[valid] = np.linalg.norm(self.values[valid] - field[valid], axis=1)
        return residual

    def _smoothed(self, residual: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Local-linear Gaussian smoothing (LOWESS-like) of the (m, 2) residual over the scan.

        At each position, a plane is fitted to the weighted residuals of its neighbours with
        Gaussian weights (sigma ``smooth``); its value there is the correction. A plane, not a
        weighted mean (Nadaraya-Watson), so the residual's slope causes no bias at the scan's
        edges and corners. The moments are Gaussian-filtered products of ``weights``, the scan
        coordinates and the residual. Where no weighted position is near, the correction fades
        to zero (the trend alone); where they lie on a line, the plane's slope across it is
        damped to zero.
        """
        from scipy import ndimage

        y, x = self._coords
        shape = self.scan_shape

        def blur(values):
            blurred = ndimage.gaussian_filter(values.reshape(shape), self.smooth, mode="constant")
            return blurred.ravel()

        # weighted moments of the offsets (y_q - y_p, x_q - x_p) around every position p
        s0, sy, sx = blur(weights), blur(weights * y), blur(weights * x)
        ridge = _SMOOTH_EPS * self.smooth**2
        syy = blur(weights * y * y) - 2 * y * sy + y * y * s0 + ridge
        sxy = blur(weights * x * y) - x * sy - y * sx + x * y * s0
        sxx = blur(weights * x * x) - 2 * x * sx + x * x * s0 + ridge
        sy, sx = sy - y * s0, sx - x * s0
        s0 = s0 + _SMOOTH_EPS
        # the plane's value at p is the first unknown of the symmetric 3x3 system
        # [[s0, sy, sx], [sy, syy, sxy], [sx, sxy, sxx]] (a, b, c) = (t0, ty, tx): Cramer's rule
        # on the first row of the inverse, vectorized (a batched LAPACK solve is far slower)
        c0 = syy * sxx - sxy * sxy
        c1 = sx * sxy - sy * sxx
        c2 = sy * sxy - sx * syy
        det = s0 * c0 + sy * c1 + sx * c2
        out = np.empty_like(residual)
        for axis in range(2):
            wr = weights * residual[:, axis]
            t0, ty, tx = blur(wr), blur(wr * y), blur(wr * x)
            out[:, axis] = (c0 * t0 + c1 * (ty - y * t0) + c2 * (tx - x * t0)) / det
        return out


def _robust_scale(residual: np.ndarray, min_scale: float) -> float:
    """Per-axis sigma of 2-D residual norms from their median (robust to outliers)."""
    return max(float(np.median(residual)) / _RAYLEIGH_MEDIAN, min_scale)
