"""``gpu4d.sweep``: prepare a scan once, fit KMeans for every k, score the fits, suggest k.

The default (reduced) mode costs about one full-dimensional fit for the whole sweep:

1. the preprocessing of ``gpu4d.cluster`` (mask, alignment, transform, normalization), run by
   the backend's kernel batch by batch, feeds a streaming randomized PCA (``gpu4d.sketch``:
   two passes over a random quarter of the patterns, one over all) instead of a stored (n, m)
   feature matrix;
2. KMeans for every k on the first ``c`` principal coordinates (n, c), on the device
   (``gpu4d.kmeans.core``: numpy on the CPU, cupy on the GPU): k-means++ inits and a warm start
   from the previous k going up, then, going down, a start from the next larger k's fit with
   its closest clusters merged (kept where its inertia is lower: k-means++ can miss a small
   region that a larger k found);
3. one more streaming pass computes, for every k at once, the exact centroids (mean of the
   preprocessed rows of each cluster), the mean raw patterns and the exact inertia in the full
   preprocessed space: each pattern is added, preprocessed and raw, to the sums of its "atom"
   (the patterns that share its label at every k), from which every k's sums follow;
4. scores for every k (``gpu4d.scores``) and the suggested k.

Every pass runs on the engine (``gpu4d.engine``): in this process, where the raw patterns are
read from the file once and kept in host memory between passes when they fit
(``engine.inline.RAW_CACHE_BYTES``, in their own dtype), or on a Dask cluster (``scheduler``).

``exact=True`` builds the full feature matrix (an ``engine.passes.Project`` pass) and fits every k with the
backend's full-dimensional KMeans (scikit-learn / cuML) instead; the centroids, mean patterns
and scores are computed the same way.
"""

from __future__ import annotations

import dataclasses
import numbers
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backend import get_backend
from .io.dataset import open_dataset
from .errors import Gpu4dWarning, InputError
from .pipeline import PreprocessingOptions, _check_kmeans_parameters
from .defaults import BASIS_BLUR_PX, DEFAULT_ALIGN, DEFAULT_TRANSFORM
from .engine import RowRecipe, parse_memory_budget, raw_cache_budget
from .engine.passes import LabelSums, Project
from .executors import make_executor, requested_scheduler
from .preprocessing import resolve_batch_size
from .progress import StageTimer, stage_spinner
from .relabel import consistent_labels
from .result import ClusterResult
from .scores import (
    DEFAULT_SILHOUETTE_SAMPLES,
    RULE,
    SCORE_NAMES,
    reduced_space_scores,
    silhouettes,
    subsample,
    suggest_k,
)
from .sketch import DEFAULT_SKETCH_SIZE, in_memory_sketch, leading_axes, small_matrices, streaming_sketch
from .regions import MIN_PATTERNS as REGIONS_MIN_PATTERNS
from .regions import fit_region_tree, smooth_over_scan, stability

#: Share of the sketch's variance the chosen components must hold (``n_components="auto"``).
DEFAULT_VARIANCE_TARGET = 0.95
#: Bounds of the automatic number of components. At least 16: a sweep to k = 12 needs 11
#: directions between clusters, and structure within them (thickness, strain) decides how
#: regions merge or split; KMeans costs little more there.
MIN_COMPONENTS = 16
MAX_COMPONENTS = 64
#: Descriptions of where each score is computed (written to sweep.json).
SCORE_SPACES = {
    "inertia": "full preprocessed space, exact: sum of squared distances of the preprocessed "
    "patterns to their cluster means, from the final streaming pass",
    "silhouette": "reduced space (the first n_components principal coordinates), on a fixed "
    "random subsample of the patterns (the same for every k)",
    "calinski_harabasz": "reduced space (the first n_components principal coordinates), all patterns",
    "davies_bouldin": "reduced space (the first n_components principal coordinates), all patterns",
    "separation": "reduced space (the first n_components principal coordinates), all patterns: "
    "over the pairs of clusters, the smallest distance between centroids divided by the pooled "
    "standard deviation of the two clusters' members along the line joining them",
}


# ------------------------------------------------------------------------------------ the ks
#: The ks of a sweep when none are given (clipped to the number of patterns).
DEFAULT_KS = range(2, 13)


def parse_ks(value, n_patterns: int | None = None, *, name: str = "ks") -> list[int]:
    """The sorted, distinct ks of a sweep.

    Parameters
    ----------
    value : iterable of int (``range(2, 13)``), an int, or text: ``"2:12"`` (both ends
        included), ``"2:12:2"``, ``"4"`` or ``"2,4,6"``.
    n_patterns : if given, every k must be <= it.
    name : the argument named in errors (``"ks"``, or ``"-k"`` for the CLI).
    """
    if isinstance(value, str):
        ks = _parse_ks_text(value.strip(), name)
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        ks = [int(value)]
    else:
        try:
            items = list(value)
        except TypeError:
            raise InputError(f"{name}={value!r} should be integers, a range or text like '2:12'") from None
        ks = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, numbers.Integral):
                raise InputError(f"{name}: {item!r} is not an integer; ks are numbers of clusters")
            ks.append(int(item))
    if not ks:
        raise InputError(f"{name} is empty; give at least one number of clusters, e.g. 2:12")
    for k in ks:
        if k < 1:
            raise InputError(f"{name}: k={k} should be >= 1")
        if n_patterns is not None and k > n_patterns:
            raise InputError(f"{name}: k={k} should be <= the number of patterns {n_patterns}")
    return sorted(set(ks))


def clip_default_ks(ks: list[int], dataset) -> list[int]:
    """The default ks up to the number of patterns, with a warning when that drops some."""
    n = dataset.n_patterns
    kept = [k for k in ks if k <= n]
    if len(kept) < len(ks):
        if len(kept) < 1 or n < 2:
            raise InputError(f"{dataset.source}: a scan of {n} pattern(s) cannot be split into clusters")
        warnings.warn(
            f"{dataset.source}: the scan has {n} patterns, so k = {kept[0]}..{kept[-1]} "
            f"instead of the default {ks[0]}..{ks[-1]}",
            Gpu4dWarning,
            stacklevel=3,
        )
    return kept


def _parse_ks_text(text: str, name: str) -> list[int]:
    bad = InputError(
        f"{name}: cannot read {text!r}; give START:STOP (both included), START:STOP:STEP, "
        "one k, or a list like 2,4,6"
    )
    if re.fullmatch(r"-?\d+(:-?\d+){1,2}", text):
        parts = [int(p) for p in text.split(":")]
        start, stop, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1
        if step < 1:
            raise InputError(f"{name}: the step of {text!r} should be >= 1")
        return list(range(start, stop + 1, step))
    if re.fullmatch(r"-?\d+(\s*,\s*-?\d+)*\s*,?", text):
        return [int(p) for p in text.split(",") if p.strip()]
    raise bad


# -------------------------------------------------------------------------------- the result
@dataclass
class SweepResult:
    """The clusterings of one scan for every k, their scores and the suggested k.

    Attributes
    ----------
    ks : list of int
    results : dict k -> ClusterResult
        Labels, exact centroids (preprocessed space), mean raw patterns, sizes and the exact
        full-space inertia of each k.
    scores : dict score name -> list of float (one per k; NaN where undefined)
    suggested_k : int or None
    suggestion : how the rule decided (``separated_ks``, ``reason``) and, for reference,
        ``kneedle_elbow_k``, ``silhouette_best_k`` and ``inertia_drops``.
    components : the reduced space: mode, sketch size, n_components, explained variance.
    timings : seconds per stage.
    """

    ks: list
    results: dict
    scores: dict
    suggested_k: int | None
    suggestion: dict
    components: dict
    timings: dict
    parameters: dict
    n_passes: int
    rule: str = RULE
    score_spaces: dict = field(default_factory=lambda: dict(SCORE_SPACES))

    def __getitem__(self, k: int) -> ClusterResult:
        return self.results[k]

    @property
    def labels(self) -> dict:
        """k -> (ny, nx) label map."""
        return {k: r.labels for k, r in self.results.items()}

    def summary(self) -> dict:
        """What ``sweep.json`` holds."""
        from .result import _versions
        from . import __version__

        first = self.results[self.ks[0]]
        per_k = {}
        for i, k in enumerate(self.ks):
            r = self.results[k]
            per_k[str(k)] = {
                **{name: self.scores[name][i] for name in self.scores},
                "n_iter": r.n_iter,
                "cluster_sizes": [int(s) for s in r.cluster_sizes],
                "folder": folder_name(k),
            }
        return {
            "source": first.source,
            "scan_shape": list(first.labels.shape),
            "detector_shape": list(first.centroids.shape[1:]),
            "ks": list(self.ks),
            "scores": self.scores,
            "per_k": per_k,
            "suggested_k": self.suggested_k,
            "rule": self.rule,
            "suggestion": self.suggestion,
            "score_spaces": self.score_spaces,
            "components": self.components,
            "n_passes": self.n_passes,
            "timings_s": self.timings,
            "backend": first.backend,
            "backend_description": first.backend_description,
            "parameters": self.parameters,
            "mask": first.mask.describe(),
            "versions": _versions(__version__),
        }

    def as_cluster_result(self, k: int):
        """The result of k as ``gpu4d.cluster`` returns it: its scores, not the sweep's."""
        result = self.results[k]
        extra = dict(result.extra)
        sweep_info = extra.pop("sweep")
        extra["scores"] = sweep_info["scores"]
        extra["kmeans_space"] = sweep_info["kmeans_space"]
        extra["components"] = {key: self.components[key] for key in ("n_components", "explained_variance_ratio_kept")}
        parameters = {key: value for key, value in result.parameters.items() if key not in ("ks", "silhouette_samples")}
        return dataclasses.replace(result, parameters=parameters, extra=extra)

    def plot(self, kind: str = "scores"):
        """The matplotlib Figure of ``scores.png`` (``"scores"``) or ``label_maps.png``
        (``"label_maps"``)."""
        from .views import sweep_figure

        return sweep_figure(self, kind)

    def _repr_html_(self) -> str:
        from .views import sweep_html

        return sweep_html(self)

    def save(self, folder, *, overwrite: bool = False, figures: bool = True) -> Path:
        """Write the sweep into ``folder`` atomically.

        ``sweep.json``, ``scores.png`` (score curves, suggestion marked), ``label_maps.png``
        (every k) and one subfolder per k (``k02``, ``k03``, ...) with the files
        ``ClusterResult.save`` writes.
        """
        from .atomic import atomic_write_json, result_folder
        from .outputs import input_paths, write_result_files

        inputs = input_paths(self.results[self.ks[0]])
        with result_folder(folder, overwrite=overwrite, inputs=inputs) as tmp:
            for k in self.ks:
                sub = tmp / folder_name(k)
                sub.mkdir()
                write_result_files(self.results[k], sub, figures=figures)
            atomic_write_json(tmp / "sweep.json", self.summary())
            if figures:
                from .figures import plot_label_map_grid, plot_score_curves

                plot_score_curves(self.ks, self.scores, tmp / "scores.png", suggested_k=self.suggested_k)
                plot_label_map_grid(self.labels, tmp / "label_maps.png")
        return Path(folder)


def folder_name(k: int) -> str:
    return f"k{k:02d}"


# ---------------------------------------------------------------------------------- the sweep
def sweep(
    data,
    ks=None,
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
    n_init: int = 3,
    max_iter: int = 300,
    tol: float = 1e-4,
    batch_size: int | None = None,
    reader: str | None = None,
    scan_shape=None,
    progress: bool = False,
    exact: bool = False,
    n_components="auto",
    sketch_size: int = DEFAULT_SKETCH_SIZE,
    variance_target: float = DEFAULT_VARIANCE_TARGET,
    silhouette_samples: int = DEFAULT_SILHOUETTE_SAMPLES,
    scheduler=None,
    memory_budget=None,
) -> SweepResult:
    """Cluster a scan for every k in ``ks``, score the clusterings and suggest k.

    Parameters
    ----------
    data : path, numpy/dask array (ny, nx, qy, qx), HyperSpy signal or Dataset
    ks : the numbers of clusters: an iterable of ints (``range(2, 13)``), or text ``"2:12"``
        (both ends included), ``"2:12:2"``, ``"2,4,6"``. Each 1 <= k <= ny * nx. By default
        2..12, clipped to the number of patterns (with a warning saying so).
    mask, normalize, transform, align, offset, spikes, blur, backend, random_state, n_init, max_iter, tol,
    batch_size, reader, scan_shape, progress : as for ``gpu4d.cluster``; the preprocessing is the same.
    exact : fit every k with full-dimensional KMeans on the stored feature matrix
        (n_patterns x kept pixels float32 on the device) instead of in the reduced space.
    n_components : "auto" or an int: principal coordinates KMeans runs on (reduced mode) and
        the scores are computed in. "auto": the smallest number whose axes hold
        ``variance_target`` of the variance the sketch holds, within [16, 64] (and <= the
        sketch size); in reduced mode the variances are the sample's estimates, and only the
        chosen components are projected.
    sketch_size : l, the width of the randomized PCA (its number of axes).
    variance_target : see ``n_components``.
    silhouette_samples : size of the fixed random subsample of the silhouette.
    scheduler : a Dask scheduler address (``"tcp://host:8786"``) or ``distributed.Client``:
        run the passes over the scan on its workers (each opens the file itself; ``data`` must
        be a file path), with ``backend`` on each worker; the client merges the partials and
        fits the regions on its CPU. By default ``DASK_SCHEDULER_ADDRESS`` if set, else inline.
    memory_budget : bytes (or text: ``"8G"``, ``"512M"``) of host memory the raw scan may take
        to be kept between passes, so that later passes read memory, not the file (a scan
        read through RosettaSciIO's lazy readers, e.g. .mib or compressed HDF5, is otherwise
        read once per pass). Default: 1 GiB, at most a quarter of the memory available; 0:
        never. Files gpu4d reads by plain file reads or memory maps (.blo, .npy) are never copied.

    Returns
    -------
    SweepResult
        ``results[k]`` is a ClusterResult per k; ``scores`` holds ``inertia`` (exact, full
        preprocessed space), ``silhouette``, ``calinski_harabasz`` and ``davies_bouldin``
        (reduced space) and ``separation``: for the least separated pair of clusters, the
        distance between their centroids over the pooled standard deviation of their members
        along the line joining them (reduced space). ``suggested_k`` follows
        ``gpu4d.scores.RULE``: the largest k whose clusters are all separated (two halves of
        one region that KMeans splits are 2.5-5.5 apart), stable and not tiny, or the smallest
        k if none is; the inertia elbow (Kneedle) and the best-silhouette k are reported beside
        it in ``suggestion``.

    Notes
    -----
    Reduced mode reads the scan four times whatever the number of ks (three sketch passes, two
    of which preprocess only a quarter of the patterns, and one final pass; the mean pattern for
    the mask reads a sample more) and never holds an (n, m)
    float array: its memory is a few (n, l), (m, l) and (sum(ks), qy * qx) arrays and the
    batches.
    """
    _check_kmeans_parameters(1, n_init, max_iter, tol, random_state)
    default_ks = ks is None
    ks_list = parse_ks(DEFAULT_KS if default_ks else ks)
    options = PreprocessingOptions.parse(
        mask=mask, normalize=normalize, transform=transform, align=align, offset=offset, spikes=spikes, blur=blur
    )
    _check_sweep_options(n_components, sketch_size, variance_target, silhouette_samples)
    memory_budget = parse_memory_budget(memory_budget)
    scheduler = requested_scheduler(scheduler)
    # with a scheduler the workers run ``backend``; the client only merges and fits small arrays
    engine = get_backend("cpu" if scheduler is not None else backend)
    xp = engine.xp
    timer = StageTimer()

    with timer.stage("open"):
        dataset = open_dataset(data, reader=reader, scan_shape=scan_shape)
    if default_ks:
        ks_list = clip_default_ks(ks_list, dataset)
    ks_list = parse_ks(ks_list, dataset.n_patterns)
    if dataset.n_patterns < REGIONS_MIN_PATTERNS:  # too few patterns for the regions' statistics
        exact = True
    n = dataset.n_patterns

    with timer.stage("mask"):
        dataset, detector_mask, mean = options.masked_dataset(dataset)
        pixels = detector_mask.kept_pixels()
    n_kept = int(pixels[0].shape[0])
    # reduced mode stores no feature matrix: only the sketch's (n, l) arrays stay on the device
    batch = resolve_batch_size(batch_size, dataset, engine, n_kept if exact else sketch_size)
    if exact:
        from .pipeline import _check_device_memory

        _check_device_memory(engine, dataset, n_kept)

    with make_executor(
        dataset, engine, batch, scheduler=scheduler, cache_budget=0 if exact else raw_cache_budget(memory_budget),
        backend_name=backend,
    ) as executor:
        shifts = centres = None
        align_info = None
        if options.align is not None:
            with timer.stage("align"):
                detector_mask, centres, shifts, align_info = options.alignment(
                    dataset, engine, detector_mask, mean, batch, progress, executor=executor
                )
            pixels = detector_mask.kept_pixels()

        recipe = RowRecipe(pixels[0], pixels[1], options.transform, options.norm, shifts, blur=options.blur_sigma(dataset))
        features = None
        n_passes = 0
        if exact:
            with timer.stage("preprocess"):
                features = executor.run(Project(None, "preprocess", n_features=recipe.n_features), recipe, progress)
                if executor.local:  # the final pass reads the stored rows; workers compute theirs
                    recipe = dataclasses.replace(recipe, features=features)
                n_passes += 1
            with timer.stage("sketch"):
                sketch = in_memory_sketch(features, engine, sketch_size=sketch_size, random_state=random_state)
        else:
            with timer.stage("sketch"):
                # the components are chosen on the sample's estimate of the variances, and only
                # they are projected (see ``streaming_sketch``)
                sketch = streaming_sketch(
                    executor, recipe, sketch_size=sketch_size, random_state=random_state, progress=progress,
                    axes=lambda values: _n_components(values, n_components, variance_target),
                    basis_blur=BASIS_BLUR_PX,
                )
                n_passes += 3
        # reduced mode projected just the chosen components
        n_comp = _n_components(sketch.singular_values, n_components, variance_target) if exact else sketch.width
        z = xp.ascontiguousarray(sketch.scores[:, :n_comp])

        # the regions are found in z smoothed over the scan, edges kept (``smooth_over_scan``)
        z_regions = None if exact else smooth_over_scan(xp, z, dataset.scan_shape)
        with timer.stage("kmeans"):
            fits, kmeans_seconds, tree = _fit_every_k(
                engine, ks_list, z_regions, features, n_init, max_iter, tol, random_state, progress
            )

        labels_all = np.stack([fits[k][0] for k in ks_list], axis=1)  # (n, K)
        confidence = {}
        if tree is not None:
            with timer.stage("confidence"):
                z_host = engine.to_host(z_regions)
                confidence = {k: c.reshape(dataset.scan_shape) for k, c in tree.confidence(z_host, ks_list).items()}
        with timer.stage("final_pass"):
            totals = _final_pass(executor, recipe, engine, labels_all, ks_list, progress)
            n_passes += 1
        raw_kept = executor.raw_kept
        budget_applied = executor.cache_budget
        execution = executor.describe()
    del features, recipe

    with timer.stage("scores"), small_matrices(xp):
        scored_in = z if z_regions is None else z_regions  # where the regions were found
        scores = _scores(engine.to_host(scored_in), labels_all, ks_list, totals, silhouette_samples, random_state)
    if tree is not None and len(ks_list) > 1:  # a single k (gpu4d.cluster) has nothing to choose
        with timer.stage("stability"), small_matrices(xp):
            stable = stability(
                xp, z_regions, tree, ks_list, rng=np.random.default_rng([0 if random_state is None else random_state, 1]),
                max_iter=max_iter, tol=tol, assign_and_sum=engine.assign_and_sum,
            )
        scores["stability"] = [stable[k] for k in ks_list]
    with timer.stage("suggest"):
        smallest_share = [
            np.bincount(labels_all[:, i], minlength=k).min() / labels_all.shape[0] for i, k in enumerate(ks_list)
        ]
        suggested, suggestion = suggest_k(ks_list, scores, totals.total_variance, smallest_share)

    components = _components_info(sketch, n_comp, exact, n_components, variance_target, totals)
    timings = {k: round(v, 4) for k, v in timer.seconds.items()}
    parameters = {
        "ks": ks_list,
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
        "exact": exact,
        "n_components": n_components,
        "sketch_size": sketch_size,
        "variance_target": variance_target,
        "silhouette_samples": min(silhouette_samples, n),
        "memory_budget": budget_applied,
        "raw_patterns_kept_in_memory": raw_kept,
        "execution": execution,
    }
    common = {
        "backend": engine.name,
        "backend_description": engine.describe(),
        "mask": detector_mask,
        "scan_axes": dataset.scan_axes,
        "detector_axes": dataset.detector_axes,
        "source": dataset.source,
        "centres": None if centres is None else centres.reshape(*dataset.scan_shape, 2),
    }
    results = {}
    for i, k in enumerate(ks_list):
        labels, n_iter = fits[k]
        centroids, means = _cluster_patterns(totals, i, k, pixels, dataset.detector_shape)
        results[k] = ClusterResult(
            labels=labels.reshape(dataset.scan_shape),
            centroids=centroids,
            mean_patterns=means,
            cluster_sizes=totals.counts[i],
            inertia=scores["inertia"][i],
            n_iter=n_iter,
            parameters={**parameters, "n_clusters": k},
            timings={**timings, "kmeans": round(kmeans_seconds[k], 4)},
            confidence=confidence.get(k),
            extra={
                "sweep": {
                    "scores": {name: values[i] for name, values in scores.items()},
                    "suggested_k": suggested,
                    "kmeans_space": components["kmeans_space"],
                },
                **({"alignment": align_info} if options.align is not None else {}),
            },
            **common,
        )
    timings["kmeans_per_k"] = {str(k): round(v, 4) for k, v in kmeans_seconds.items()}
    results = consistent_labels(results)  # a region keeps its label (and colour) across the ks
    return SweepResult(
        ks=ks_list,
        results=results,
        scores=scores,
        suggested_k=suggested,
        suggestion=suggestion,
        components=components,
        timings=timings,
        parameters=parameters,
        n_passes=n_passes,
    )


def _fit_every_k(engine, ks, z, features, n_init, max_iter, tol, random_state, progress):
    """The clustering of every k: ``{k: (labels (n,) int32, n_iter)}``, ``{k: seconds}`` and
    the region tree (None in exact mode).

    Reduced mode (``features`` None) over-segments the coordinates ``z`` into KMeans atoms on
    the device and merges them by separation (``gpu4d.regions``): one tree, cut at every k.
    Exact mode fits ``features`` with the backend's full-dimensional KMeans for every k.
    """
    fits, seconds = {}, {}
    if features is not None:
        for k in ks:
            start = time.perf_counter()
            with stage_spinner(progress, f"KMeans k={k}"):
                fit = engine.kmeans(
                    features, k, n_init=n_init, max_iter=max_iter, tol=tol, random_state=random_state
                )
            fits[k] = (np.asarray(fit.labels, np.int32), int(fit.n_iter))
            seconds[k] = time.perf_counter() - start
        return fits, seconds, None
    start = time.perf_counter()
    rng = np.random.default_rng(random_state)
    with small_matrices(engine.xp), stage_spinner(progress, f"regions k={ks[0]}..{ks[-1]}"):
        tree = fit_region_tree(
            engine.xp, z, max(ks), rng=rng, max_iter=max_iter, tol=tol,
            assign_and_sum=engine.assign_and_sum,
        )
    for k in ks:
        fits[k] = (tree.labels(k), tree.atom_iterations)
        seconds[k] = (time.perf_counter() - start) / len(ks)
    return fits, seconds, tree


def _scores(z, labels_all, ks, totals, silhouette_samples, random_state) -> dict[str, list]:
    """Every score of every k: the exact inertia from the final pass, the others in ``z``."""
    z = np.ascontiguousarray(z, dtype=np.float64)  # once: every score works in float64
    sample = subsample(z.shape[0], silhouette_samples, random_state)
    silhouette = silhouettes(z, sample, labels_all)  # every k at once
    scores = {name: [] for name in SCORE_NAMES}
    for i in range(len(ks)):
        sums, counts = totals.centroid_sums[i], totals.counts[i]
        # the exact inertia of the clustering: sum_i ||x_i||^2 - sum_j ||S_j||^2 / n_j
        between = np.einsum("ij,ij->i", sums, sums) / np.maximum(counts, 1)
        scores["inertia"].append(max(0.0, totals.sum_squares - float(between.sum())))
        for name, value in reduced_space_scores(z, labels_all[:, i], sample, silhouette[i]).items():
            scores[name].append(value)
    return scores


def _n_components(singular_values, n_components, variance_target: float) -> int:
    """The principal coordinates KMeans runs on (see ``sweep``'s ``n_components``)."""
    if n_components == "auto":
        return leading_axes(singular_values, variance_target, MIN_COMPONENTS, MAX_COMPONENTS)
    return int(min(n_components, len(singular_values)))


def _components_info(sketch, n_comp, exact, n_components, variance_target, totals) -> dict:
    """The ``components`` section of sweep.json: the reduced space and its variance."""
    ratio = sketch.explained_variance_ratio(totals.total_variance)
    # the variance of every axis of the sketch: exact (exact mode), or estimated on the sample
    # (reduced mode, where only the leading axes are projected)
    all_singular_values = sketch.singular_values if sketch.sample_singular_values is None else sketch.sample_singular_values
    power = all_singular_values**2
    all_ratio = power / max(totals.total_variance, np.finfo(float).tiny)
    if n_components == "auto":
        rule = (
            f"smallest c whose axes hold >= {variance_target} of the sketch's variance, within "
            f"[{MIN_COMPONENTS}, {MAX_COMPONENTS}] and <= the sketch size"
        )
    else:
        rule = "given"
    return {
        "mode": "exact" if exact else "reduced",
        "sketch_size": len(all_singular_values),
        "n_components": n_comp,
        "n_components_rule": rule,
        "variance_target": variance_target,
        "total_variance": totals.total_variance,
        "explained_variance_ratio": [float(v) for v in ratio[:n_comp]],
        "explained_variance_ratio_kept": float(ratio[:n_comp].sum()),
        "explained_variance_ratio_sketch": float(all_ratio.sum()),
        "explained_variance_ratio_sketch_axes": [float(v) for v in all_ratio],
        "sketch_axes_variance": "exact" if sketch.sample_singular_values is None else (
            f"of the patterns blurred over the scan (Gaussian, sigma {BASIS_BLUR_PX} px), where the "
            "axes are found: below the patterns' own where blurring removes noise and edges"
        ),
        "share_of_sketch_variance_kept": float(power[:n_comp].sum() / max(power.sum(), 1e-300)),
        "final_pass_sums": totals.n_sums,
        "kmeans_space": (
            "full preprocessed space (backend KMeans)" if exact else f"first {n_comp} principal coordinates"
        ),
    }


def _cluster_patterns(totals, i: int, k: int, pixels, detector_shape):
    """Exact centroids (k, qy, qx), zero at masked pixels, and mean raw patterns of the i-th k."""
    qy, qx = detector_shape
    safe = np.maximum(totals.counts[i], 1)[:, None]  # an empty cluster keeps zeros
    centroids = np.zeros((k, qy, qx), np.float32)
    centroids[:, pixels[0], pixels[1]] = (totals.centroid_sums[i] / safe).astype(np.float32)
    means = (totals.raw_sums[i] / safe).astype(np.float32).reshape(k, qy, qx)
    return centroids, means


def _check_sweep_options(n_components, sketch_size, variance_target, silhouette_samples) -> None:
    for name, value in (("sketch_size", sketch_size), ("silhouette_samples", silhouette_samples)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
            raise InputError(f"{name}={value!r} should be an integer >= 2")
    if n_components != "auto" and (
        isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral) or n_components < 1
    ):
        raise InputError(f"n_components={n_components!r} should be 'auto' or an integer >= 1")
    if not isinstance(variance_target, numbers.Real) or not 0 < variance_target <= 1:
        raise InputError(f"variance_target={variance_target!r} should be a number in (0, 1]")


@dataclass
class _Totals:
    """Per-k results of the final pass, on the host (float64)."""

    counts: list  # K arrays (k,) int64
    centroid_sums: list  # K arrays (k, m): sums of the preprocessed rows per cluster
    raw_sums: list  # K arrays (k, qy * qx): sums of the raw (aligned) patterns per cluster
    n_sums: int  # the atoms (or clusters) each pattern was summed into
    sum_squares: float  # sum_i ||x_i||^2 over the preprocessed rows
    total_variance: float  # sum_i ||x_i - mean||^2: the inertia of one cluster


def _final_pass(executor, recipe, engine, labels_all, ks, progress) -> _Totals:
    """One pass: per-cluster sums of preprocessed and raw rows for every k at once.

    The clusters of all ks are numbered together (column ``offset_k + label`` of a stacked
    (n, sum(ks)) one-hot matrix H). Patterns that share their label at every k form an "atom"
    (the coarsest common refinement of the clusterings), and H = A M with A the atoms' one-hot
    matrix and M (n_atoms, sum(ks)) 0/1. Each pattern's preprocessed and raw rows are added to
    the sums of their atom (``engine.passes.LabelSums``: one addition per value), or, when there
    are more atoms than clusters, to the sums of their K clusters (K additions); M is applied
    once at the end. In exact mode the recipe reads the preprocessed rows from the stored matrix.
    """
    n = labels_all.shape[0]
    offsets = np.concatenate([[0], np.cumsum(ks)[:-1]]).astype(np.int64)
    total = int(sum(ks))
    atoms, atom_of = _atoms(labels_all, ks)
    # by atom (one addition per value, not K) unless there are more atoms than clusters, whose
    # sums would then take more memory than the clusters' own
    if atoms.shape[0] <= total:
        columns = atom_of[:, None]
        width = atoms.shape[0]
        expand = np.zeros((width, total), np.float64)  # M
        expand[np.arange(width)[:, None], atoms.astype(np.int64) + offsets[None, :]] = 1.0
    else:
        columns = labels_all.astype(np.int64) + offsets[None, :]  # (n, K) columns of H
        width, expand = total, None
    columns = np.ascontiguousarray(columns, dtype=np.int32)
    sums_pre, column_squares, sums_raw = executor.run(
        LabelSums(columns, width, "centroids, all k"), recipe, progress
    )
    sums_pre = engine.to_host(sums_pre)
    sums_raw = engine.to_host(sums_raw)
    column_squares = engine.to_host(column_squares)
    if expand is not None:  # H^T X = M^T (A^T X)
        sums_pre = expand.T @ sums_pre
        sums_raw = expand.T @ sums_raw
    counts, centroid_sums, raw_sums = [], [], []
    for i, (k, offset) in enumerate(zip(ks, offsets)):
        counts.append(np.bincount(labels_all[:, i], minlength=k).astype(np.int64))
        centroid_sums.append(sums_pre[offset : offset + k])
        raw_sums.append(sums_raw[offset : offset + k])
    sum_squares = float(column_squares.sum())
    column_sum = centroid_sums[0].sum(axis=0)  # the clusters of any k hold every pattern
    total_variance = max(0.0, sum_squares - float(column_sum @ column_sum) / n)
    return _Totals(counts, centroid_sums, raw_sums, int(width), sum_squares, total_variance)


def _atoms(labels_all: np.ndarray, ks) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``labels_all`` (n, K) (n_atoms, K) and each row's atom (n,).

    As ``np.unique(labels_all, axis=0, return_inverse=True)``, 15x faster: the columns are
    folded one by one into a compact 1-D key (the key stays below n_atoms * k, no overflow).
    """
    key = np.zeros(labels_all.shape[0], np.int64)
    for i, k in enumerate(ks):
        _, key = np.unique(key * k + labels_all[:, i], return_inverse=True)
        key = key.reshape(-1)
    first = np.unique(key, return_index=True)[1]
    return labels_all[first], key
