"""``gpu4d.cluster``: one code path from a scan to labels and cluster patterns, on any backend."""

from __future__ import annotations

import dataclasses
import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from .backend import get_backend
from .io.dataset import open_dataset
from .engine import parse_memory_budget
from .executors import requested_scheduler
from .errors import InputError
from .detector_offset import parse_offset
from .spikes import parse_spikes
from .blur import blur_sigma, parse_blur
from .masks import MaskSpec, detector_mask_for, mask_shifted_border, parse_mask
from .defaults import DEFAULT_ALIGN, DEFAULT_TRANSFORM
from .preprocessing import (
    NORMALIZATIONS,
    TRANSFORMS,
    build_features,
    cluster_mean_patterns,
    option_code,
    resolve_batch_size,
)
from .progress import StageTimer, stage_spinner
from .result import ClusterResult


def cluster(
    data,
    n_clusters: int = 6,
    *,
    mask="auto",
    normalize: str = "max",
    transform: str = DEFAULT_TRANSFORM,
    align=DEFAULT_ALIGN,
    offset="auto",
    spikes: bool = True,
    blur="auto",
    backend: str = "cpu",
    random_state: int | None = 0,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
    batch_size: int | None = None,
    reader: str | None = None,
    scan_shape=None,
    init=None,
    exact: bool = False,
    progress: bool = False,
    scheduler=None,
    memory_budget=None,
) -> ClusterResult:
    """Cluster the patterns of a 4D-STEM scan into ``n_clusters`` regions.

    By default the scan is streamed (it is never held as a float32 matrix): a randomized PCA of
    the preprocessed patterns, KMeans atoms in its leading coordinates merged into regions by
    separation (``gpu4d.regions``), then the exact centroids and mean patterns in one more
    pass: the ``sweep`` of one k. ``exact=True`` (or ``init``) runs full-dimensional KMeans on
    the stored feature matrix instead, the original method's objective.

    Parameters
    ----------
    data : path, numpy/dask array (ny, nx, qy, qx), HyperSpy signal or Dataset
    n_clusters : number of clusters k, 1 <= k <= ny * nx.
    mask : "auto", "none", R, (CY, CX, R), "annulus:R1,R2", boolean (qy, qx) array (True =
        masked) or a .npy path. ``"auto"`` masks the direct beam found in the mean pattern.
    normalize : "max" (the original method), "l2", "sum" or "none"; per pattern, after masking.
    transform : "sqrt" (default: counting noise made uniform), "none" or "log1p", applied to
        intensities before normalizing.
    align : "auto" (default: measure the descan, correct it when the beam wanders by >= 0.5
        px), None/False (never), True, "com", "xcorr" or "fit": shift every pattern onto its
        direct beam first.
    offset : counts subtracted from every pixel before anything else (a detector's dark level
        or pedestal): "auto" (default: the level every pixel holds in every sampled frame, 0
        for counting detectors; see ``gpu4d.detector_offset``), "none" or a number >= 0.
    spikes : True (default): replace transient spikes (cosmic rays, X-ray hits: a pixel far
        brighter than in the four patterns around it) by the brightest of those four; False
        keeps them (see ``gpu4d.spikes``).
    blur : "auto" (default: each pattern blurred over the detector by a Gaussian of sigma =
        detector size / 128 px before the transform, pooling a spot's counts at low dose), 0 or
        "none", or sigma in detector px (see ``gpu4d.blur``). Only the features are blurred.
    backend : "cpu", "gpu" or "auto" (the GPU if usable, else the CPU with a warning).
    random_state, n_init, max_iter, tol : KMeans parameters (scikit-learn's meaning).
        ``n_init`` applies to ``exact`` fits, whose trials run on a subsample of the patterns;
        the best of them, judged on all patterns, starts the final fit.
    batch_size : patterns per batch; by default from the backend's memory.
    reader : RosettaSciIO reader name for files several readers claim.
    scan_shape : (ny, nx) or "NYxNX" for data whose navigation is flat or 1-D (frames
        (n, qy, qx), a .mib without its .hdr, an ARINA master file).
    init : optional (k, qy, qx) centroids in the preprocessed space to start Lloyd from (one
        run, no k-means++), e.g. the centroids of a live run or of a previous fit.
    exact : full-dimensional KMeans (see above).
    progress : show progress bars on stderr.
    scheduler : a Dask scheduler address or ``distributed.Client``: the passes over the scan
        run on its workers (see ``gpu4d.sweep``); by default ``DASK_SCHEDULER_ADDRESS`` if set.
        Not with ``exact`` or ``init``, whose KMeans needs the whole matrix in one process.
    memory_budget : host memory the raw scan may take between passes (see ``gpu4d.sweep``);
        ``exact`` and ``init`` store the feature matrix instead and do not use it.
    """
    _check_kmeans_parameters(n_clusters, n_init, max_iter, tol, random_state)
    parse_memory_budget(memory_budget)  # checked on every path; only the streaming one uses it
    options = PreprocessingOptions.parse(
        mask=mask, normalize=normalize, transform=transform, align=align, offset=offset, spikes=spikes, blur=blur
    )
    timer = StageTimer()
    with timer.stage("open"):
        dataset = open_dataset(data, reader=reader, scan_shape=scan_shape)
    if n_clusters > dataset.n_patterns:  # said here in cluster's terms (n_clusters, not ks)
        raise InputError(
            f"n_clusters={n_clusters} should be <= the number of patterns {dataset.n_patterns}"
        )
    scheduler = requested_scheduler(scheduler)
    if scheduler is not None and (exact or init is not None):
        raise InputError(
            "scheduler: exact=True and init= fit full-dimensional KMeans on the whole feature matrix "
            "in one process; leave the scheduler out for them (the default mode runs on Dask)"
        )
    if init is None and not exact:
        from .sweep import sweep

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            swept = sweep(
                dataset, [n_clusters], mask=mask, normalize=normalize, transform=transform,
                align=align, offset=offset, spikes=spikes, blur=blur, backend=backend, random_state=random_state, n_init=n_init,
                max_iter=max_iter, tol=tol, batch_size=batch_size, progress=progress,
                scheduler=scheduler, memory_budget=memory_budget,
            )
        for warning in caught:  # pointing at the caller of cluster, not at the sweep inside it
            warnings.warn(warning.message, warning.category, stacklevel=2)
        return swept.as_cluster_result(n_clusters)
    engine = get_backend(backend)
    prepared = exact_features(dataset, options, engine, batch_size, progress, timer)
    dataset, pixels, shifts, batch = prepared.dataset, prepared.pixels, prepared.shifts, prepared.batch_size

    with timer.stage("kmeans"), stage_spinner(progress, f"KMeans k={n_clusters}"):
        fit = engine.kmeans(
            prepared.features, n_clusters, n_init=n_init, max_iter=max_iter, tol=tol,
            random_state=random_state, init=_initial_centroids(init, n_clusters, dataset, pixels),
        )
    prepared.features = None  # the matrix is freed before the mean patterns' pass

    with timer.stage("mean_patterns"):
        means, sizes = cluster_mean_patterns(dataset, engine, fit.labels, n_clusters, shifts, batch, progress)

    centroids = np.zeros((n_clusters, *dataset.detector_shape), np.float32)
    centroids[:, pixels[0], pixels[1]] = fit.centers
    parameters = {
        "n_clusters": n_clusters,
        "mask": options.mask.text,
        "normalize": normalize,
        "transform": transform,
        "align": options.align,
        "offset": options.offset,
        "spikes": options.spikes,
        **options.blur_parameters(dataset),
        "backend_requested": backend,
        "random_state": random_state,
        "n_init": n_init,
        "max_iter": max_iter,
        "tol": tol,
        "batch_size": batch,
        "exact": True,
    }
    extra = {"alignment": prepared.align_info} if options.align is not None else {}
    return ClusterResult(
        labels=fit.labels.reshape(dataset.scan_shape),
        centroids=centroids,
        mean_patterns=means,
        cluster_sizes=sizes,
        inertia=fit.inertia,
        n_iter=fit.n_iter,
        backend=engine.name,
        backend_description=engine.describe(),
        parameters=parameters,
        mask=prepared.detector_mask,
        timings={k: round(v, 4) for k, v in timer.seconds.items()},
        scan_axes=dataset.scan_axes,
        detector_axes=dataset.detector_axes,
        source=dataset.source,
        centres=None if prepared.centres is None else prepared.centres.reshape(*dataset.scan_shape, 2),
        extra=extra,
    )


@dataclass
class ExactFeatures:
    """The exact path's preprocessing of one scan: what ``exact_features`` hands back."""

    dataset: object  # the Dataset as every later pass reads it (offset, bad pixels, spikes)
    detector_mask: object  # the DetectorMask, with the border the shifts move in when aligned
    pixels: tuple  # the kept pixels' (rows, columns) on the detector
    centres: np.ndarray | None  # (n_patterns, 2) beam centres when aligned, else None
    shifts: np.ndarray | None  # (n_patterns, 2) the shifts applied, else None
    align_info: dict | None  # what the alignment measured and decided (summary.json's)
    features: object  # (n_patterns, n_kept) float32 on the backend's device
    batch_size: int  # patterns per batch


def exact_features(dataset, options: "PreprocessingOptions", engine, batch_size=None, progress=False, timer=None) -> ExactFeatures:
    """The feature matrix of ``cluster(exact=True)`` and everything it was built with: offset,
    bad pixels and spikes on read, the mask, the descan alignment, the detector blur, the
    transform and the normalization, in that order. The one home of that order: ``cluster``
    and the quality benchmark's inertia check both call it."""
    timer = timer if timer is not None else StageTimer()
    with timer.stage("mask"):
        dataset, detector_mask, mean = options.masked_dataset(dataset)
    batch = resolve_batch_size(batch_size, dataset, engine, detector_mask.n_kept)
    _check_device_memory(engine, dataset, detector_mask.n_kept)
    centres = shifts = align_info = None
    if options.align is not None:
        with timer.stage("align"):
            detector_mask, centres, shifts, align_info = options.alignment(
                dataset, engine, detector_mask, mean, batch, progress
            )
    pixels = detector_mask.kept_pixels()
    with timer.stage("preprocess"):
        features = build_features(
            dataset, engine, pixels, options.transform, options.norm, shifts, batch, progress,
            blur=options.blur_sigma(dataset),
        )
    return ExactFeatures(dataset, detector_mask, pixels, centres, shifts, align_info, features, batch)


@dataclass(frozen=True)
class PreprocessingOptions:
    """The preprocessing options of ``cluster`` and ``sweep``: checked, as kernel codes."""

    mask: MaskSpec
    transform: int  # kernels.pixel_math code
    norm: int  # kernels.pixel_math code
    align: str | None  # alignment method, None for none
    offset: str | float = "auto"  # the detector offset: "auto" or counts (gpu4d.detector_offset)
    spikes: bool = True  # replace transient spikes on read (gpu4d.spikes)
    blur: str | float = "auto"  # the detector blur: "auto" or sigma in px (gpu4d.blur)

    @classmethod
    def parse(cls, *, mask, normalize, transform, align, offset="auto", spikes=True, blur="auto") -> "PreprocessingOptions":
        """Check the options (an InputError names a bad one) and resolve them."""
        return cls(
            transform=option_code(TRANSFORMS, transform, "transform"),
            norm=option_code(NORMALIZATIONS, normalize, "normalize"),
            mask=parse_mask(mask),
            align=_resolve_align(align),
            offset=parse_offset(offset),
            spikes=parse_spikes(spikes),
            blur=parse_blur(blur),
        )

    def blur_sigma(self, dataset) -> float:
        """The detector blur's sigma (px) for this dataset's detector (``gpu4d.blur``)."""
        return blur_sigma(self.blur, dataset.detector_shape)

    def blur_parameters(self, dataset) -> dict:
        """The blur as results record it: the option, and the sigma it meant (classify and
        live classification blur new scans by that sigma)."""
        return {"blur": self.blur, "blur_px": self.blur_sigma(dataset)}

    def masked_dataset(self, dataset):
        """``(dataset, detector_mask, mean)``: the mask (see ``detector_mask``), and the dataset
        reading its dead and hot pixels as 0, its offset subtracted and its spikes replaced (or
        not), in every pass from now on."""
        detector_mask, mean = self.detector_mask(dataset)
        dataset = dataclasses.replace(dataset, spikes=self.spikes)
        if detector_mask.bad_masked is not None:
            dataset = dataclasses.replace(dataset, zeroed_pixels=detector_mask.bad_masked)
        if detector_mask.detector_offset:
            dataset = dataclasses.replace(dataset, offset=detector_mask.detector_offset)
        return dataset, detector_mask, mean

    def alignment(self, dataset, engine, detector_mask, mean, batch_size: int, progress=False, executor=None):
        """Measure the descan: ``(detector_mask, centres, shifts, info)``. Centres and shifts are
        None when ``"auto"`` finds no descan worth correcting; with shifts, the border they move
        in from the detector's edge (no data there) is masked too."""
        from .alignment import measure_alignment

        try:
            centres, shifts, info = measure_alignment(
                dataset, engine, self.align, mean, batch_size, progress, executor=executor
            )
            if shifts is None:
                centres = None
            return mask_shifted_border(detector_mask, shifts), centres, shifts, info
        except InputError as exc:
            if self.align != "auto":
                raise
            # "auto" aligns when it can: a scan with no beam to measure, or one whose shifts
            # would leave no pixel, is clustered as it is, and summary.json says why
            return detector_mask, None, None, {"auto": {"applied": False, "reason": str(exc)}}

    def detector_mask(self, dataset):
        """The DetectorMask for ``dataset`` and the mean pattern its beam was found in (None
        when neither the mask nor the alignment needs the beam)."""
        return detector_mask_for(self.mask, dataset, needs_mean=self.align is not None, offset=self.offset)


def _check_kmeans_parameters(n_clusters, n_init, max_iter, tol, random_state) -> None:
    for name, value in (("n_clusters", n_clusters), ("n_init", n_init), ("max_iter", max_iter)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(f"{name}={value!r} should be an integer >= 1")
    if not isinstance(tol, numbers.Real) or not tol >= 0:
        raise InputError(f"tol={tol!r} should be a number >= 0")
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral)):
        raise InputError(f"random_state={random_state!r} should be an integer or None")
    if random_state is not None and not 0 <= random_state < 2**32:  # numpy's seed range
        raise InputError(f"random_state={random_state} should be in 0..{2**32 - 1}")


def _initial_centroids(init, n_clusters: int, dataset, pixels):
    """``init`` (k, qy, qx) reduced to the kept pixels, or None."""
    if init is None:
        return None
    init = np.asarray(init, np.float32)
    if init.shape != (n_clusters, *dataset.detector_shape):
        raise InputError(
            f"init has shape {init.shape}; expected (n_clusters, qy, qx) = "
            f"{(n_clusters, *dataset.detector_shape)}"
        )
    return init[:, pixels[0], pixels[1]]


def _resolve_align(align):
    if align is None or align is False:
        return None
    from .align import resolve_align

    return resolve_align(align)


def _check_device_memory(engine, dataset, n_features: int) -> None:
    """Refuse, before any work, a feature matrix that cannot fit in device memory."""
    free = engine.free_memory_bytes()
    if free is None:
        return
    needed = 4 * dataset.n_patterns * n_features
    if needed > 0.9 * free:
        raise InputError(
            f"{dataset.source}: the preprocessed matrix needs {needed / 2**30:.1f} GiB but the GPU "
            f"has {free / 2**30:.1f} GiB free; bin the detector (e.g. 2x2), crop the scan or the "
            "detector, or use 'gpu4d sweep', whose reduced-dimension mode needs far less"
        )
