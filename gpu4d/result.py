"""The result of a clustering run: arrays, parameters, timings, and how to save them."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .io.dataset import Axis
from .masks import DetectorMask

#: Files ``ClusterResult.save`` writes (figures and ``centres.npy`` when they apply).
RESULT_FILES = (
    "labels.npy",
    "centroids.npy",
    "mean_patterns.npy",
    "summary.json",
    "clusters.hspy",
    "labels.png",
    "centroids.png",
    "mean_patterns.png",
)


#: Patterns below this confidence count as unsure in summary.json.
LOW_CONFIDENCE = 0.5


@dataclass
class ClusterResult:
    """Labels and cluster patterns of one scan.

    Attributes
    ----------
    labels : (ny, nx) int32
        Cluster of each scan position.
    centroids : (k, qy, qx) float32
        KMeans centroids in the preprocessed space (masked pixels are 0).
    mean_patterns : (k, qy, qx) float32
        Mean raw pattern of each cluster (aligned, if alignment ran): what to read to
        interpret a cluster.
    cluster_sizes : (k,) int64
    inertia, n_iter : KMeans' final inertia and iteration count.
    backend : "cpu" or "gpu": the backend that actually ran.
    parameters : every parameter used, including the mask that ``auto`` found.
    timings : seconds per stage.
    centres : (ny, nx, 2) float32 or None
        Measured direct-beam centres (cy, cx) when alignment ran.
    confidence : (ny, nx) float32 or None
        How clearly each pattern belongs to its cluster, 0 (as close to another cluster: a
        boundary, a pattern mixing two crystals) to 1 (see
        ``gpu4d.regions.RegionTree.confidence``); None after a full-dimensional fit.
    """

    labels: np.ndarray
    centroids: np.ndarray
    mean_patterns: np.ndarray
    cluster_sizes: np.ndarray
    inertia: float
    n_iter: int
    backend: str
    backend_description: str
    parameters: dict
    mask: DetectorMask
    timings: dict
    scan_axes: tuple[Axis, Axis]
    detector_axes: tuple[Axis, Axis]
    source: str
    centres: np.ndarray | None = None
    confidence: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def summary(self) -> dict:
        """What ``summary.json`` holds."""
        from . import __version__

        sizes = [int(c) for c in self.cluster_sizes]
        total = max(1, sum(sizes))
        return {
            "source": self.source,
            "scan_shape": list(self.labels.shape),
            "detector_shape": list(self.centroids.shape[1:]),
            "n_clusters": self.n_clusters,
            "inertia": self.inertia,
            "n_iter": self.n_iter,
            "cluster_sizes": sizes,
            "cluster_fractions": [s / total for s in sizes],
            "backend": self.backend,
            "backend_description": self.backend_description,
            "parameters": self.parameters,
            "mask": self.mask.describe(),
            "timings_s": self.timings,
            "scan_axes": [a.as_dict() for a in self.scan_axes],
            "detector_axes": [a.as_dict() for a in self.detector_axes],
            "versions": _versions(__version__),
            **self._confidence_summary(),
            **self._signal_summary(),
            **self.extra,
        }

    def confidence_map(self) -> np.ndarray | None:
        """The confidence (ny, nx), NaN where no pattern is: a partial live result labels -1,
        with confidence 0, where no frame arrived, and those are not patterns."""
        if self.confidence is None:
            return None
        confidence = np.asarray(self.confidence)
        return np.where(np.asarray(self.labels) >= 0, confidence, confidence.dtype.type(np.nan))

    def confidence_of_patterns(self) -> np.ndarray | None:
        """The confidence of the positions that hold a pattern (flat; ``confidence_map``)."""
        confidence = self.confidence_map()
        return None if confidence is None else confidence[np.isfinite(confidence)]

    def low_confidence_share(self) -> float | None:
        """The share of the patterns whose confidence is below ``LOW_CONFIDENCE``; None without
        a confidence or a pattern."""
        confidence = self.confidence_of_patterns()
        if confidence is None or not confidence.size:
            return None
        return float((confidence < LOW_CONFIDENCE).mean())

    def _confidence_summary(self) -> dict:
        confidence = self.confidence_of_patterns()
        if confidence is None:
            return {}
        return {
            "confidence": {
                "low_below": LOW_CONFIDENCE,
                "patterns": int(confidence.size),
                "share_low": self.low_confidence_share(),
                "median": float(np.median(confidence)) if confidence.size else None,
                "meaning": "1 - (distance to its own cluster) / (distance to the closest other "
                           "cluster), reduced space: 0 on a boundary or for a pattern mixing two "
                           "clusters, near 1 deep inside one; confidence.npy",
            }
        }

    def _signal_summary(self) -> dict:
        """Counts per pattern, from the mean raw patterns: how much signal the map stood on."""
        sizes = np.asarray(self.cluster_sizes, np.float64)
        if self.mean_patterns is None or sizes.sum() <= 0:
            return {}
        per_cluster = np.asarray(self.mean_patterns, np.float64).reshape(len(sizes), -1).sum(axis=1)
        return {
            "signal": {
                "mean_counts_per_pattern": float(per_cluster @ sizes / sizes.sum()),
                "cluster_counts_per_pattern": [float(v) for v in per_cluster],
                "meaning": "the sum of a raw pattern (direct beam included), in the detector's units: "
                           "electrons on a counting detector. README, 'How the map is made': how "
                           "weak a region the defaults find at a given dose",
            }
        }

    def to_signals(self) -> dict:
        """HyperSpy signals with the original calibrations (names, scales, offsets, units).

        Returns a dict:

        - ``"labels"``: Signal2D (|nx, ny) int32, the label map on the scan axes;
        - ``"centroids"``, ``"mean_patterns"``: Signal2D (k|qx, qy) float32, one pattern per
          cluster (navigation axis ``"cluster"``) on the detector axes;
        - ``"confidence"``: Signal2D (|nx, ny) float32 on the scan axes, when the result has it;
        - ``"centres"``: Signal1D (nx, ny|2), the measured beam centres, when alignment ran.

        ``to_pyxem()`` gives the same with the patterns as pyxem signals.
        """
        import hyperspy.api as hs

        labels = hs.signals.Signal2D(self.labels)
        calibrate_axes(labels.axes_manager.signal_axes, self.scan_axes)
        labels.metadata.General.title = "gpu4d cluster labels"
        signals = {"labels": labels}
        for name in ("centroids", "mean_patterns"):
            signal = hs.signals.Signal2D(getattr(self, name))
            calibrate_axes(signal.axes_manager.signal_axes, self.detector_axes)
            cluster_axis = signal.axes_manager.navigation_axes[0]
            cluster_axis.name, cluster_axis.units = "cluster", ""
            signal.metadata.General.title = f"gpu4d cluster {name.replace('_', ' ')}"
            signals[name] = signal
        if self.confidence is not None:
            confidence = hs.signals.Signal2D(self.confidence)
            calibrate_axes(confidence.axes_manager.signal_axes, self.scan_axes)
            confidence.metadata.General.title = "gpu4d confidence of each pattern's cluster"
            signals["confidence"] = confidence
        if self.centres is not None:
            centres = hs.signals.Signal1D(self.centres)
            calibrate_axes(centres.axes_manager.navigation_axes, self.scan_axes)
            centres.metadata.General.title = "direct-beam centre (cy, cx) in detector pixels"
            signals["centres"] = centres
        return signals

    def to_pyxem(self) -> dict:
        """``to_signals()`` with the centroids and mean patterns as pyxem
        ``ElectronDiffraction2D`` signals (navigation = cluster), ready for pyxem's methods.
        Needs pyxem (``pip install pyxem``)."""
        try:
            import pyxem  # noqa: F401 - registers pyxem's signal types with HyperSpy
        except ImportError:
            raise ImportError(
                "ClusterResult.to_pyxem() needs pyxem, which is not installed: pip install pyxem "
                "(to_signals() gives the same data as HyperSpy signals)"
            ) from None
        signals = self.to_signals()
        for name in ("centroids", "mean_patterns"):
            signals[name].set_signal_type("electron_diffraction")
        return signals

    def cluster_statistics(self, data, *, batch_size=None, reader=None, scan_shape=None):
        """Mean, per-pixel standard deviation and count of the raw patterns of each cluster (the
        detector offset subtracted, ``mask.detector_offset``), in one pass over ``data``, the scan
        this result labels (a ``gpu4d.cluster_stats.ClusterStatistics``)."""
        from .cluster_stats import result_statistics

        return result_statistics(self, data, batch_size=batch_size, reader=reader, scan_shape=scan_shape)

    def save_cluster_patterns(self, path, data, *, overwrite: bool = False, batch_size=None, reader=None,
                              scan_shape=None) -> Path:
        """Write the cluster-averaged patterns with their per-pixel standard deviation and
        count as one datacube, ``path`` ending in ``.hspy`` or ``.zspy``: a Signal2D
        (statistic, cluster | qx, qy) float32 with the detector calibration, ``.inav[0]`` the
        means, ``.inav[1]`` the standard deviations, the counts in ``metadata.gpu4d.count``
        (see ``gpu4d.cluster_stats``), the detector offset subtracted from the patterns in
        ``metadata.gpu4d.detector_offset``. ``data`` is the scan this result labels (one pass over it)."""
        from .cluster_stats import save_signal, statistics_signal

        stats = self.cluster_statistics(data, batch_size=batch_size, reader=reader, scan_shape=scan_shape)
        signal = statistics_signal(stats, self.detector_axes, title=f"gpu4d cluster statistics of {self.source}")
        signal.metadata.set_item("gpu4d.detector_offset", float(self.mask.detector_offset))
        return save_signal(signal, path, overwrite=overwrite, inputs=[self.source] + ([data] if isinstance(data, (str, Path)) else []))

    def predict(self, data, *, batch_size=None, backend: str = "cpu", reader=None, scan_shape=None,
                return_distances: bool = False, progress: bool = False):
        """Classify the patterns of another scan with this result as the model.

        ``data`` is opened as ``gpu4d.cluster`` opens it; its detector must be this result's
        (shape, and scale within 1% when both are calibrated); its scan shape may differ. The
        patterns are preprocessed as this result's were (mask, transform, normalization and,
        when this result was aligned, descan shifts onto its reference beam) and each goes to
        the nearest centroid. Returns a ``gpu4d.model.Prediction``: ``labels`` (ny, nx) int32,
        ``confidence`` (ny, nx) float32 in [0, 1] and, if asked, ``distances`` (ny, nx, k).
        """
        from .model import predict

        return predict(
            self, data, batch_size=batch_size, backend=backend, reader=reader, scan_shape=scan_shape,
            return_distances=return_distances, progress=progress,
        )

    def plot(self, kind: str = "labels"):
        """The matplotlib Figure of the result file ``{kind}.png``: ``"labels"`` (the map),
        ``"centroids"``, ``"mean_patterns"``, and ``"confidence"`` / ``"centres"`` when the
        result has them. In Jupyter, a cell ending in ``result.plot()`` shows it."""
        from .views import result_figure

        return result_figure(self, kind)

    def explore(self, **plot_options):
        """HyperSpy's interactive view: the label map as navigator, the mean pattern of the
        cluster under the cursor as signal (use ``%matplotlib widget`` or ``qt`` to move the
        cursor). ``plot_options`` go to HyperSpy's ``plot``. Returns the lazy signal shown."""
        from .views import explore

        return explore(self, **plot_options)

    def _repr_html_(self) -> str:
        from .views import result_html

        return result_html(self)

    def save(self, folder, *, overwrite: bool = False, figures: bool = True) -> Path:
        """Write every result file into ``folder`` atomically (see ``RESULT_FILES``)."""
        from .outputs import write_result

        return write_result(self, Path(folder), overwrite=overwrite, figures=figures)


def calibrate_axes(hs_axes, axes: tuple[Axis, Axis]) -> None:
    """Copy (y, x) calibrations onto HyperSpy axes, which come in (x, y) order."""
    for hs_axis, axis in zip(hs_axes, reversed(axes)):
        hs_axis.name = axis.name
        hs_axis.scale = axis.scale
        hs_axis.offset = axis.offset
        hs_axis.units = axis.units


def _versions(gpu4d_version: str) -> dict:
    from importlib.metadata import version

    import numba

    return {
        "gpu4d": gpu4d_version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        # from the installed metadata: importing scikit-learn takes about a second
        "scikit-learn": version("scikit-learn"),
    }
