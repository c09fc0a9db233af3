"""Models: a saved result read back, and applied to other scans (``load_result``, ``predict``).

A results folder written by ``ClusterResult.save`` holds everything needed to classify a new
scan: the mask, the preprocessing options and the centroids in the preprocessed space. A new
scan is preprocessed the same way, batch by batch (no feature matrix is held), and every pattern
goes to its nearest centroid.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import RESULT_MARKER
from .io.dataset import Axis, open_dataset
from .errors import InputError
from .masks import DetectorMask
from .engine import InlineExecutor, RowRecipe, parse_memory_budget, raw_cache_budget
from .engine.passes import Distances
from .preprocessing import (
    NORMALIZATIONS,
    TRANSFORMS,
    cluster_mean_patterns,
    mean_pattern,
    option_code,
    resolve_batch_size,
)
from .result import ClusterResult

#: summary.json keys that ``ClusterResult`` computes itself; every other key goes to ``extra``.
_SUMMARY_KEYS = (
    "source", "scan_shape", "detector_shape", "n_clusters", "inertia", "n_iter", "cluster_sizes",
    "cluster_fractions", "backend", "backend_description", "parameters", "mask", "timings_s",
    "scan_axes", "detector_axes", "versions", "confidence",
)
#: Relative difference of detector scales above which a scan does not match a model.
SCALE_TOLERANCE = 0.01


@dataclass
class Prediction:
    """The classes of a scan's patterns under a model.

    Attributes
    ----------
    labels : (ny, nx) int32
        Nearest centroid of each pattern.
    confidence : (ny, nx) float32
        ``1 - d_own / d_second`` (distances to the nearest and second-nearest centroid, in the
        preprocessed space), clipped to [0, 1]: 0 half-way between two classes, near 1 close to
        its own; 1 when the model has one class.
    distances : (ny, nx, k) float32 or None
        Distance of each pattern to every centroid, when asked for.
    centres, shifts, alignment : the descan measured on the scan (None without alignment).
    """

    labels: np.ndarray
    confidence: np.ndarray
    distances: np.ndarray | None = None
    centres: np.ndarray | None = None
    shifts: np.ndarray | None = None
    alignment: dict | None = None


# ------------------------------------------------------------------------------ load_result
def load_result(folder) -> ClusterResult:
    """Read a results folder written by ``ClusterResult.save`` back into a ``ClusterResult``.

    Raises ``InputError`` naming the folder (and file) when it is not a gpu4d result, is a
    sweep (pass one of its ``kNN`` subfolders) or misses a file.
    """
    folder = Path(folder)
    summary = _read_summary(folder)
    arrays = {name: _load_array(folder, name) for name in ("labels", "centroids", "mean_patterns", "mask")}
    optional = {name: _load_array(folder, name) if (folder / f"{name}.npy").is_file() else None
                for name in ("confidence", "centres")}
    centroids, masked = arrays["centroids"], arrays["mask"]
    if centroids.ndim != 3 or centroids.shape[0] < 1 or masked.shape != centroids.shape[1:]:
        raise InputError(
            f"{folder}: centroids.npy {centroids.shape} and mask.npy {masked.shape} should be "
            "(k, qy, qx) with k >= 1 and (qy, qx)"
        )
    try:
        mask = mask_from_description(masked.astype(bool), summary["mask"])
        scan_axes = tuple(axis_from_dict(a) for a in summary["scan_axes"])
        detector_axes = tuple(axis_from_dict(a) for a in summary["detector_axes"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"{folder / 'summary.json'}: cannot read its mask or axes ({exc!r})") from None
    return ClusterResult(
        labels=arrays["labels"].astype(np.int32, copy=False),
        centroids=centroids.astype(np.float32, copy=False),
        mean_patterns=arrays["mean_patterns"].astype(np.float32, copy=False),
        cluster_sizes=np.asarray(summary["cluster_sizes"], np.int64),
        inertia=float(summary.get("inertia", float("nan"))),
        n_iter=int(summary.get("n_iter", 0)),
        backend=summary.get("backend", "cpu"),
        backend_description=summary.get("backend_description", ""),
        parameters=summary["parameters"],
        mask=mask,
        timings=summary.get("timings_s", {}),
        scan_axes=scan_axes,
        detector_axes=detector_axes,
        source=summary.get("source", str(folder)),
        centres=optional["centres"],
        confidence=optional["confidence"],
        extra={key: value for key, value in summary.items() if key not in _SUMMARY_KEYS},
    )


def _read_summary(folder: Path) -> dict:
    """summary.json of a results folder, or an InputError saying why ``folder`` is not one."""
    if not folder.is_dir():
        raise InputError(f"{folder}: no such results folder")
    path = folder / "summary.json"
    if not path.is_file():
        if (folder / "sweep.json").is_file():
            ks = sorted(p.name for p in folder.glob("k[0-9]*") if p.is_dir())
            example = f" (e.g. {folder / ks[0]})" if ks else ""
            raise InputError(f"{folder} is a sweep; pass one of its k subfolders as the model{example}")
        what = "no summary.json" if (folder / RESULT_MARKER).is_file() else f"no {RESULT_MARKER} marker and no summary.json"
        raise InputError(f"{folder} is not a gpu4d results folder ({what})")
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read it as JSON ({exc})") from None
    for key in ("parameters", "mask", "scan_axes", "detector_axes", "cluster_sizes"):
        if not isinstance(summary, dict) or key not in summary:
            raise InputError(f"{path}: has no '{key}'; is it a gpu4d summary?")
    return summary


def _load_array(folder: Path, name: str) -> np.ndarray:
    path = folder / f"{name}.npy"
    if not path.is_file():
        raise InputError(f"{folder}: {path.name} is missing; the results folder is incomplete")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from None


def axis_from_dict(info: dict) -> Axis:
    """The inverse of ``Axis.as_dict``."""
    return Axis(
        name=str(info["name"]), size=int(info["size"]), scale=float(info.get("scale", 1.0)),
        offset=float(info.get("offset", 0.0)), units=str(info.get("units", "px")),
    )


def mask_from_description(masked: np.ndarray, info: dict) -> DetectorMask:
    """A DetectorMask from ``mask.npy`` and the ``describe()`` dict in summary.json.

    ``bad_masked`` is rebuilt from the dead and hot pixels the description lists (it lists at
    most ``gpu4d.bad_pixels.MAX_LISTED`` of each kind; they are in ``masked`` in any case).
    """
    bad = info.get("bad_pixels")
    bad_masked = None
    if bad:
        bad_masked = np.zeros_like(masked)
        for kind in ("hot", "dead", "from_detector"):
            for y, x in bad.get(kind, []):
                bad_masked[y, x] = True
    centre = info.get("centre")
    return DetectorMask(
        masked=masked, kind=str(info.get("kind", "array")),
        centre=None if centre is None else (float(centre[0]), float(centre[1])),
        radius=info.get("radius"), inner=info.get("inner"), outer=info.get("outer"),
        beam=info.get("beam"), bad_pixels=bad, bad_masked=bad_masked, border_px=info.get("border_px"),
        detector_offset=float(info.get("detector_offset", 0.0)),
    )


# ------------------------------------------------------------------------------ predict
def check_detector(model: ClusterResult, dataset) -> None:
    """A scan's detector must be the model's: same shape, same scale (within 1%) when both are
    calibrated. The scan shape may differ."""
    if tuple(dataset.detector_shape) != tuple(model.centroids.shape[1:]):
        raise InputError(
            f"{dataset.source}: detector shape {tuple(dataset.detector_shape)} does not match the "
            f"model's {tuple(model.centroids.shape[1:])} (from {model.source})"
        )
    for new, old in zip(dataset.detector_axes, model.detector_axes):
        if new.units == "px" or old.units == "px":
            continue
        if new.units != old.units or abs(new.scale - old.scale) > SCALE_TOLERANCE * abs(old.scale):
            raise InputError(
                f"{dataset.source}: detector scale {new.scale:g} {new.units} per pixel does not match "
                f"the model's {old.scale:g} {old.units} (within {SCALE_TOLERANCE:.0%})"
            )


def open_for_model(model: ClusterResult, data, *, reader=None, scan_shape=None, own_scan: bool = False):
    """Open ``data`` as ``cluster`` does, check its detector against the model's, and read the
    model's dead and hot pixels as 0, the scan's detector offset subtracted and its spikes
    replaced or not in every pass (as ``cluster`` read the model's scan; models made before
    gpu4d replaced spikes replace them too). ``own_scan``: ``data`` is the model's own scan,
    whose offset the model holds."""
    dataset = open_dataset(data, reader=reader, scan_shape=scan_shape)
    check_detector(model, dataset)
    if model.mask.bad_masked is not None:
        dataset = dataclasses.replace(dataset, zeroed_pixels=model.mask.bad_masked)
    offset = model.mask.detector_offset if own_scan else scan_offset(model, dataset)
    if offset:
        dataset = dataclasses.replace(dataset, offset=offset)
    return dataclasses.replace(dataset, spikes=bool(model.parameters.get("spikes", True)))


def scan_offset(model: ClusterResult, dataset) -> float:
    """The counts to subtract from every pixel of a scan classified with ``model``: the
    model's number if it was given one (0 for models made before gpu4d subtracted offsets);
    with ``"auto"``, found on the scan itself by ``gpu4d.detector_offset``'s rule (a dark level
    drifts between sessions), unless the model's own scan had none: the same detector (its
    shape and scale are checked) is then a counting one, and the scan is not read for it."""
    from .bad_pixels import pattern_statistics
    from .detector_offset import find_offset, parse_offset

    requested = parse_offset(model.parameters.get("offset", 0.0))
    if requested != "auto":
        return requested
    if not model.mask.detector_offset:
        return 0.0
    stats = pattern_statistics(dataset)
    return find_offset(stats.minimum, stats.maximum)


def model_aligned(model: ClusterResult) -> bool:
    """Whether the model's patterns were shifted onto a reference beam before clustering."""
    info = model.extra.get("alignment")
    if not model.parameters.get("align") or not info:
        return False
    auto = info.get("auto")
    return bool(auto.get("applied")) if auto is not None else True


def alignment_plan(model: ClusterResult) -> str | None:
    """How a new scan is aligned for this model: ``"always"`` (the model's patterns were
    shifted onto its reference beam), ``"auto"`` (the model measured its beam but did not need
    to shift it: a new scan is shifted onto that beam only if its own beam is 0.5 px or more
    away from it somewhere) or None (the model never looked for a beam)."""
    if model_aligned(model):
        return "always"
    info = model.extra.get("alignment") or {}
    if model.parameters.get("align") == "auto" and info.get("reference") is not None:
        return "auto"
    return None


def predict(
    model: ClusterResult, data, *, batch_size=None, backend: str = "cpu", reader=None,
    scan_shape=None, return_distances: bool = False, progress: bool = False,
) -> Prediction:
    """Assign every pattern of ``data`` to the model's nearest centroid (see ``ClusterResult.predict``)."""
    from .backend import get_backend

    engine = get_backend(backend)
    dataset = open_for_model(model, data, reader=reader, scan_shape=scan_shape)
    # aligned, a prediction makes two passes (beam centres, distances): the scan is worth keeping
    budget = raw_cache_budget() if alignment_plan(model) is not None else 0
    return _predict(model, _executor(model, dataset, engine, batch_size, budget), return_distances, progress)


def _executor(model: ClusterResult, dataset, engine, batch_size, cache_budget: int) -> InlineExecutor:
    """One executor for every pass of a prediction (and classify's mean patterns): a scan that
    is not read cheaply is then read from the file once (``engine.RawCache``), when it fits
    ``cache_budget`` bytes."""
    batch = resolve_batch_size(batch_size, dataset, engine, model.mask.n_kept)
    return InlineExecutor(dataset, engine, batch, cache_budget=cache_budget)


def _predict(model: ClusterResult, executor: InlineExecutor, return_distances: bool, progress: bool) -> Prediction:
    dataset, engine = executor.dataset, executor.backend
    transform = option_code(TRANSFORMS, model.parameters.get("transform", "none"), "transform")
    norm = option_code(NORMALIZATIONS, model.parameters.get("normalize", "max"), "normalize")
    pixels = model.mask.kept_pixels()
    centres = shifts = info = None
    plan = alignment_plan(model)
    if plan is not None:
        centres, shifts, info = _align_to_model(model, executor, plan == "auto", progress)
    # the model's own detector blur (models made before gpu4d blurred have none)
    recipe = RowRecipe(pixels[0], pixels[1], transform, norm, shifts, blur=float(model.parameters.get("blur_px", 0.0)))
    centroids = model.centroids[:, pixels[0], pixels[1]]
    all_distances = engine.to_host(executor.run(Distances(centroids), recipe, progress))
    labels, confidence = nearest_and_confidence(all_distances)
    distances = all_distances.astype(np.float32) if return_distances else None
    shape = dataset.scan_shape
    return Prediction(
        labels=labels.reshape(shape), confidence=confidence.reshape(shape),
        distances=None if distances is None else distances.reshape(*shape, -1),
        centres=None if centres is None else centres.reshape(*shape, 2), shifts=shifts, alignment=info,
    )


def _align_to_model(model, executor, auto, progress):
    """Measure the scan's descan and shift its patterns onto the model's reference beam.

    The centres are measured around the scan's own mean beam (``measure_alignment``), then the
    shifts are taken from the same fit, but towards the model's reference, so that the mask
    and centroids sit where the model's patterns were moved. ``auto``: the shifts are kept
    only when one reaches ``AUTO_ALIGN_THRESHOLD_PX`` (else centres and shifts are None).
    """
    from .align import AUTO_ALIGN_THRESHOLD_PX, DEFAULT_ALIGN_METHOD, descan_shifts
    from .alignment import measure_alignment

    method = model.parameters.get("align")
    method = DEFAULT_ALIGN_METHOD if method in ("auto", True) else method
    info_model = model.extra["alignment"]
    dataset = executor.dataset
    mean = mean_pattern(dataset)  # as the passes read the scan: offset off, bad pixels 0
    centres, _, info = measure_alignment(
        dataset, executor.backend, method, mean, executor.partition_size, progress, executor=executor
    )
    reference = info_model.get("reference") or info["reference"]
    shifts, info = descan_shifts(centres.reshape(*dataset.scan_shape, 2), method, tuple(reference))
    info.update(reference=[float(v) for v in reference], reference_from="the model")
    largest = float(np.abs(shifts).max()) if len(shifts) else 0.0
    if auto:
        applied = largest >= AUTO_ALIGN_THRESHOLD_PX
        info["auto"] = {
            "rule": f"shifted onto the model's reference beam when the fitted beam is >= "
                    f"{AUTO_ALIGN_THRESHOLD_PX} px away from it anywhere in the scan",
            "largest_offset_px": largest,
            "applied": applied,
        }
        if not applied:
            return None, None, info
    border = max(model.mask.border_px or [0])
    if np.ceil(largest) > border:
        # the pixels a shift moves in from the edge read 0; the model masked only its own border
        warnings.warn(
            f"{dataset.source}: the beam sits up to {largest:.1f} px from the model's reference, more "
            f"than the {border} px border the model masked; the outermost detector pixels read 0 in "
            "the most shifted patterns",
            stacklevel=3,
        )
    return centres, shifts, info


def nearest_and_confidence(distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From distances (n, k): the nearest centroid (n,) and ``1 - d_own / d_second`` clipped to
    [0, 1] (n,); 1 when k = 1, 0 when the two nearest distances are both 0."""
    order = np.argsort(distances, axis=1, kind="stable")
    nearest = order[:, 0].astype(np.int32)
    if distances.shape[1] == 1:
        return nearest, np.ones(distances.shape[0], np.float32)
    own = np.take_along_axis(distances, order[:, :1], axis=1)[:, 0]
    second = np.take_along_axis(distances, order[:, 1:2], axis=1)[:, 0]
    ratio = np.divide(own, second, out=np.ones_like(own, dtype=np.float64), where=second > 0)
    return nearest, np.clip(1.0 - ratio, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------ classify
def classify(
    model, data, *, batch_size=None, backend: str = "cpu", reader=None, scan_shape=None,
    progress: bool = False, memory_budget=None,
) -> ClusterResult:
    """Classify a scan with a model (a results folder or a ``ClusterResult``) into a full
    ``ClusterResult`` of the scan: its labels, confidence and mean pattern of each class; the
    model's centroids; ``extra["model"]`` names the model (a folder is then an input that no
    results folder may hold). ``memory_budget``: as for ``gpu4d.sweep`` (the scan is read by
    two or three passes)."""
    import time

    from .backend import get_backend

    model_name = str(model) if isinstance(model, (str, Path)) else f"in-memory model of {model.source}"
    if isinstance(model, (str, Path)):
        model = load_result(model)
    budget = raw_cache_budget(parse_memory_budget(memory_budget))
    dataset = open_for_model(model, data, reader=reader, scan_shape=scan_shape)
    engine = get_backend(backend)
    executor = _executor(model, dataset, engine, batch_size, budget)
    batch = executor.partition_size
    start = time.perf_counter()
    prediction = _predict(model, executor, True, progress)
    predicted = time.perf_counter() - start
    labels = prediction.labels.ravel()
    means, sizes = cluster_mean_patterns(
        dataset, engine, labels, model.n_clusters, prediction.shifts, batch, progress, executor=executor
    )
    own = np.take_along_axis(prediction.distances.reshape(labels.size, -1), labels[:, None], axis=1)
    extra = {"model": model_name}
    if prediction.alignment is not None:
        extra["alignment"] = prediction.alignment
    return ClusterResult(
        labels=prediction.labels, centroids=model.centroids, mean_patterns=means, cluster_sizes=sizes,
        inertia=float((own.astype(np.float64) ** 2).sum()), n_iter=0, backend=engine.name,
        backend_description=engine.describe(),
        parameters={**model.parameters, "batch_size": batch, "backend_requested": backend},
        mask=dataclasses.replace(model.mask, detector_offset=float(dataset.offset)),  # this scan's
        timings={"predict": round(predicted, 4), "mean_patterns": round(time.perf_counter() - start - predicted, 4)},
        scan_axes=dataset.scan_axes, detector_axes=dataset.detector_axes, source=dataset.source,
        centres=prediction.centres, confidence=prediction.confidence, extra=extra,
    )
