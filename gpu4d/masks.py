"""The detector mask: which pixels are left out of clustering (True = masked).

The original method masks the transmitted (central) beam so that the faint diffraction spots
carry the contrast. Discs and annuli are centred on the direct beam found in the mean pattern
unless a centre is given.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import InputError

#: ``mask="auto"`` masks the beam out to where the mean pattern's radial profile has fallen to
#: ``AUTO_TAIL_LEVEL`` of the beam's height above background (the diffuse halo around the beam
#: grows with thickness and would otherwise steer the clustering), plus ``AUTO_MARGIN_PX``;
#: at least ``AUTO_RADIUS_FACTOR`` x the half-maximum radius + margin, at most ``AUTO_MAX_FACTOR`` x.
AUTO_TAIL_LEVEL = 0.05
AUTO_RADIUS_FACTOR = 1.25
AUTO_MAX_FACTOR = 3.0
AUTO_MARGIN_PX = 1.5
#: The beam is chosen where the mean pattern, smoothed over this share of the detector's width,
#: peaks: the feature holding the most electrons nearby, not the sharpest one. At low dose a
#: Bragg spot a pixel wide can out-peak a direct-beam disc ten pixels wide in a lightly
#: smoothed mean while holding a twentieth of its electrons (abTEM Au, 150 counts per pattern
#: on 128 px: the spot was taken for the beam, the alignment then followed it and the map fell
#: to ARI 0.66).
BEAM_SEARCH_SCALE = 0.04


@dataclass(frozen=True)
class MaskSpec:
    """A parsed ``mask`` argument, before the detector shape and beam position are known."""

    kind: str  # "none" | "auto" | "disc" | "annulus" | "array"
    radius: float | None = None
    inner: float | None = None
    outer: float | None = None
    centre: tuple[float, float] | None = None
    array: np.ndarray | None = None
    text: str = ""

    @property
    def needs_beam_centre(self) -> bool:
        return self.kind == "auto" or (self.kind in ("disc", "annulus") and self.centre is None)

    @property
    def finds_bad_pixels(self) -> bool:
        """Dead and hot pixels are added to the masks centred on the beam gpu4d finds (auto, R,
        annulus), from the same pass over a sample of the scan; not to "none", to an explicit
        CY,CX,R or to a mask array, which say exactly what to leave out."""
        return self.needs_beam_centre


@dataclass(frozen=True)
class DetectorMask:
    """A mask built for one detector: ``masked`` (qy, qx) bool, True = left out."""

    masked: np.ndarray
    kind: str
    centre: tuple[float, float] | None = None
    radius: float | None = None
    inner: float | None = None
    outer: float | None = None
    beam: dict | None = None  # what the beam search found, when it ran
    bad_pixels: dict | None = None  # the dead and hot pixels masked too (gpu4d.bad_pixels)
    bad_pixels_text: str = ""  # the same in one phrase, for the CLI
    bad_masked: np.ndarray | None = None  # (qy, qx) bool: the dead and hot pixels alone
    border_px: list | None = None  # the border masked after alignment (mask_shifted_border)
    detector_offset: float = 0.0  # counts subtracted from every pixel (gpu4d.detector_offset)

    @property
    def n_kept(self) -> int:
        return int((~self.masked).sum())

    def kept_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """(pixel_y, pixel_x) int32 of the kept pixels, row-major."""
        ys, xs = np.nonzero(~self.masked)
        return ys.astype(np.int32), xs.astype(np.int32)

    def describe(self) -> dict:
        info = {"kind": self.kind, "n_masked_pixels": int(self.masked.sum()), "detector_offset": float(self.detector_offset)}
        for key in ("centre", "radius", "inner", "outer", "beam", "bad_pixels", "border_px"):
            value = getattr(self, key)
            if value is not None:
                info[key] = [float(v) for v in value] if key == "centre" else value
        return info


def parse_mask(value) -> MaskSpec:
    """Parse the ``mask`` argument of the API or the CLI's ``--mask``.

    Accepted: ``None``/``"none"``; ``"auto"``; a radius ``R`` (a disc on the beam found in the
    mean pattern); ``(CY, CX, R)`` or ``"CY,CX,R"``; ``"annulus:R1,R2"`` (keeps R1 <= r <= R2
    around the beam); a boolean array (qy, qx), True = masked; a path to such a ``.npy``.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return MaskSpec("none", text="none")
    if isinstance(value, np.ndarray):
        return _array_spec(value, "mask array")
    if isinstance(value, Path) or (isinstance(value, str) and value.strip().endswith(".npy")):
        return _load_mask_file(Path(value))
    if isinstance(value, str):
        return _parse_mask_text(value.strip())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return MaskSpec("disc", radius=_positive(value, "mask radius"), text=str(value))
    if isinstance(value, (tuple, list)) and len(value) == 3:
        cy, cx, r = (float(v) for v in value)
        return MaskSpec("disc", radius=_positive(r, "mask radius"), centre=(cy, cx), text=str(value))
    raise InputError(
        f"mask: cannot use {value!r}; give 'auto', 'none', a radius R, (CY, CX, R), "
        "'annulus:R1,R2', a boolean array or a .npy file"
    )


def _parse_mask_text(text: str) -> MaskSpec:
    lowered = text.lower()
    if lowered == "auto":
        return MaskSpec("auto", text="auto")
    try:
        if lowered.startswith("annulus:"):
            inner, outer = (float(v) for v in lowered.split(":", 1)[1].split(","))
            if not 0 <= inner < outer:
                raise InputError(f"mask: annulus needs 0 <= R1 < R2, got '{text}'")
            return MaskSpec("annulus", inner=inner, outer=outer, text=text)
        numbers = [float(v) for v in lowered.split(",")]
    except InputError:  # an InputError is a ValueError: keep its message
        raise
    except ValueError:
        numbers = None
    if numbers and len(numbers) == 1:
        return MaskSpec("disc", radius=_positive(numbers[0], "mask radius"), text=text)
    if numbers and len(numbers) == 3:
        radius = _positive(numbers[2], "mask radius")
        return MaskSpec("disc", radius=radius, centre=(numbers[0], numbers[1]), text=text)
    raise InputError(
        f"mask: cannot parse '{text}'; use auto, none, R, CY,CX,R, annulus:R1,R2 or MASK.npy"
    )


def _positive(value, what: str) -> float:
    value = float(value)
    if not value > 0:
        raise InputError(f"{what} must be > 0, got {value}")
    return value


def _load_mask_file(path: Path) -> MaskSpec:
    if not path.exists():
        raise InputError(f"mask file {path}: no such file")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"mask file {path}: not a readable .npy file ({exc})") from exc
    return _array_spec(array, f"mask file {path}")


def _array_spec(array: np.ndarray, what: str) -> MaskSpec:
    if array.ndim != 2:
        raise InputError(f"{what}: expected a 2-D boolean array (qy, qx), got shape {array.shape}")
    if array.dtype != bool:
        if array.dtype.kind not in "iu" or not np.isin(array, (0, 1)).all():
            raise InputError(
                f"{what}: expected booleans (True = masked) or 0/1, got dtype {array.dtype}"
            )
        array = array.astype(bool)
    return MaskSpec("array", array=array.copy(), text=what)


def detector_mask_for(spec: MaskSpec, dataset, needs_mean: bool = False, offset="auto"):
    """The DetectorMask of ``spec`` for ``dataset``, with its dead and hot pixels and its offset
    (``gpu4d.detector_offset``: ``"auto"`` or counts), found in one pass over a sample of the
    scan before the beam is looked for, and the mean pattern (offset subtracted, bad pixels
    replaced by their neighbours' median) when the mask or ``needs_mean`` needs it, else None."""
    from .bad_pixels import clean_mean, find_bad_pixels, pattern_statistics
    from .detector_offset import find_offset

    if not (spec.needs_beam_centre or spec.finds_bad_pixels or needs_mean or offset == "auto"):
        return replace(build_mask(spec, dataset.detector_shape), detector_offset=float(offset)), None
    stats = pattern_statistics(dataset)
    value = find_offset(stats.minimum, stats.maximum) if offset == "auto" else float(offset)
    bad = None
    if spec.finds_bad_pixels:
        bad = find_bad_pixels(dataset, stats, dataset.metadata.get("detector_bad_pixels"))
    mean = clean_mean(stats.mean, bad)
    if value:
        mean = np.maximum(mean - value, 0.0)
    try:
        return replace(build_mask(spec, dataset.detector_shape, mean, bad_pixels=bad), detector_offset=value), mean
    except InputError as exc:
        raise InputError(f"{dataset.source}: {exc}") from None  # which scan has no beam


def build_mask(spec: MaskSpec, detector_shape, mean_pattern: np.ndarray | None = None, bad_pixels=None):
    """Build the DetectorMask for a detector, finding the beam in ``mean_pattern`` if needed;
    ``bad_pixels`` (``gpu4d.bad_pixels.BadPixels``) are masked too."""
    qy, qx = detector_shape
    beam = None
    centre = spec.centre
    if spec.needs_beam_centre:
        if mean_pattern is None:
            raise ValueError("this mask needs the mean pattern to find the beam")  # internal
        beam = find_beam(mean_pattern)
        centre = (beam["centre"][0], beam["centre"][1])

    if spec.kind == "none":
        masked = np.zeros((qy, qx), bool)
        result = DetectorMask(masked, "none")
    elif spec.kind == "array":
        if spec.array.shape != (qy, qx):
            raise InputError(
                f"{spec.text}: mask shape {spec.array.shape} does not match the detector "
                f"shape {(qy, qx)}"
            )
        result = DetectorMask(spec.array, "array")
    elif spec.kind == "annulus":
        r = _radius_map(detector_shape, centre)
        masked = (r < spec.inner) | (r > spec.outer)
        result = DetectorMask(masked, "annulus", centre, inner=spec.inner, outer=spec.outer, beam=beam)
    else:
        radius = spec.radius if spec.kind == "disc" else beam["mask_radius"]
        masked = _radius_map(detector_shape, centre) <= radius
        result = DetectorMask(masked, spec.kind, centre, radius=radius, beam=beam)

    if bad_pixels is not None and bad_pixels.count:
        result = replace(
            result,
            masked=result.masked | bad_pixels.masked,
            bad_pixels=bad_pixels.describe(),
            bad_pixels_text=bad_pixels.text(),
            bad_masked=bad_pixels.masked,
        )
    if result.n_kept == 0:
        raise InputError(f"mask '{spec.text}' masks every detector pixel; nothing is left to cluster")
    return result


def mask_shifted_border(detector_mask: DetectorMask, shifts) -> DetectorMask:
    """``detector_mask`` with the detector's border masked as wide as the largest alignment
    shift (rounded up), on each side.

    Why: a pattern shifted by s pixels has no data in the s pixels it moved in from the edge
    (they read 0), so those pixels would differ between patterns by how far each was shifted:
    a map of the descan, not of the crystal. Only pixels with data in every pattern are kept.
    """
    if shifts is None or len(shifts) == 0:
        return detector_mask
    shifts = np.asarray(shifts, np.float64)
    qy, qx = detector_mask.masked.shape
    width_y, width_x = (int(np.ceil(np.abs(shifts[:, j]).max())) for j in (0, 1))
    if width_y == 0 and width_x == 0:
        return detector_mask
    border = np.zeros((qy, qx), bool)
    if width_y:
        border[:width_y], border[qy - width_y :] = True, True
    if width_x:
        border[:, :width_x], border[:, qx - width_x :] = True, True
    masked = detector_mask.masked | border
    if masked.all():
        raise InputError(
            f"the alignment shifts reach {max(width_y, width_x)} px, which leaves no detector pixel "
            "with data in every pattern; check the scan or pass align=None"
        )
    return replace(detector_mask, masked=masked, border_px=[width_y, width_x])


def _radius_map(detector_shape, centre) -> np.ndarray:
    yy, xx = np.indices(detector_shape, dtype=np.float64)
    return np.hypot(yy - centre[0], xx - centre[1])


def find_beam(mean_pattern: np.ndarray) -> dict:
    """Locate the direct beam in the mean pattern.

    The beam is the connected region above half its peak height (over the median background)
    that holds the brightest pixel of the lightly smoothed pattern. Returns its intensity-
    weighted centre, its half-maximum radius (from the region's area) and the radius that
    ``mask="auto"`` masks.
    """
    mean_pattern = np.asarray(mean_pattern, np.float64)
    pattern = ndimage.gaussian_filter(mean_pattern, 1.0)
    background = float(np.median(pattern))
    if not pattern.max() > background:
        raise InputError(
            "mask=auto: the mean pattern is flat, no direct beam to find; give the mask "
            "explicitly (CY,CX,R) or use mask=none"
        )
    brightest = _beam_pixel(mean_pattern, pattern)
    peak = float(pattern[brightest])
    above = pattern > background + 0.5 * (peak - background)
    regions, _ = ndimage.label(above)
    beam_region = regions == regions[brightest]
    weights = (pattern - background) * beam_region
    cy, cx = ndimage.center_of_mass(weights)
    half_max_radius = float(np.sqrt(beam_region.sum() / np.pi))
    tail_radius = _tail_radius(pattern, (cy, cx), background, peak)
    mask_radius = min(
        max(tail_radius, AUTO_RADIUS_FACTOR * half_max_radius),
        AUTO_MAX_FACTOR * half_max_radius,
    ) + AUTO_MARGIN_PX
    return {
        "centre": [float(cy), float(cx)],
        "half_max_radius": half_max_radius,
        "tail_radius": tail_radius,
        "mask_radius": float(mask_radius),
    }


def _beam_pixel(mean_pattern: np.ndarray, pattern: np.ndarray) -> tuple[int, int]:
    """The beam's brightest pixel in ``pattern`` (the mean lightly smoothed): the peak of the
    mean smoothed over ``BEAM_SEARCH_SCALE`` of the detector, followed down to 1 px of
    smoothing, halving the scale and looking only within two scales of the last peak, so that
    a sharp spot beside the beam cannot take its place (``BEAM_SEARCH_SCALE``'s why)."""
    scale = max(1.0, BEAM_SEARCH_SCALE * min(mean_pattern.shape))
    smoothed = ndimage.gaussian_filter(mean_pattern, scale)
    y, x = np.unravel_index(np.argmax(smoothed), smoothed.shape)
    while scale > 1.0:
        scale = max(1.0, scale / 2)
        smoothed = pattern if scale == 1.0 else ndimage.gaussian_filter(mean_pattern, scale)
        reach = int(np.ceil(2 * scale))
        window = (slice(max(0, y - reach), y + reach + 1), slice(max(0, x - reach), x + reach + 1))
        wy, wx = np.unravel_index(np.argmax(smoothed[window]), smoothed[window].shape)
        y, x = wy + window[0].start, wx + window[1].start
    return int(y), int(x)


def _tail_radius(pattern: np.ndarray, centre, background: float, peak: float) -> float:
    """Inner radius of the first 1-px ring whose median is below the tail level."""
    radius = _radius_map(pattern.shape, centre)
    level = background + AUTO_TAIL_LEVEL * (peak - background)
    rings = radius.astype(int)
    for ring in range(int(radius.max()) + 1):
        values = pattern[rings == ring]
        if values.size and np.median(values) < level:
            return float(ring)
    return float(radius.max())
