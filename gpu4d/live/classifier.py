"""Live classification: each frame of a scan, as it arrives, assigned to a saved model's classes.

:class:`LiveClassifier` is what :class:`~gpu4d.live.LiveRun` drives instead of a
:class:`~gpu4d.live.LiveClusterer` when it is given a model (a results folder or a
``ClusterResult``): no initial buffer, no KMeans, no re-seeding. Each batch of arrived frames
is preprocessed with the model's mask, transform and normalization by the backend's fused kernel,
its float64 distances to the model's centroids give the labels and the confidence
(:func:`gpu4d.model.nearest_and_confidence`, as ``gpu4d.classify``). Labels come first: the
raw patterns of classified frames are added to per-class running sums (the mean patterns) when
no frame is waiting, and the rest at the end, so a loop that cannot keep up spends its time on
labels (on the CPU the sums cost about a fifth of a frame's classification).

Alignment, when the model was aligned, differs from ``gpu4d.classify`` in one way: ``classify``
measures the whole scan and fits a smooth descan field before shifting (the model's method,
``"fit"`` by default); live, the scan is not there yet, so each frame is shifted by its own
measured ``"com"`` beam centre (in a window around the model's reference beam, of the model's
window radius) onto the model's reference, like ``align="com"``. A model that measured its beam
but did not need to shift it (``align="auto"``, not applied) shifts a frame only when its beam
is ``AUTO_ALIGN_THRESHOLD_PX`` or more from the reference, the per-frame form of ``classify``'s
per-scan rule. Without descan both give the same labels; with it, labels near a class boundary
can differ (per-frame centres are noisier than the fitted field).
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from gpu4d.engine.context import cpu_chunk_rows
from gpu4d.engine.reading import read_stored
from gpu4d.errors import InputError
from gpu4d.kernels.blur import gaussian_taps
from gpu4d.live.frames import FrameStore, check_scan_shape, default_batch
from gpu4d.live.threads import processing_threads

__all__ = ["LiveClassifier"]


class LiveClassifier:
    """Classify the frames of one scan with a fixed model as they arrive.

    Has the interface :class:`~gpu4d.live.LiveRun` uses of a :class:`LiveClusterer`
    (``receive``, ``process``, ``labels``, ``state``, ``finish``, ...); nothing is refitted.

    Parameters
    ----------
    model : path or ClusterResult
        A results folder (``gpu4d.load_result``) or a result in memory.
    scan_shape : (int, int)
        ``(ny, nx)``; frames arrive in row-major scan order. It may differ from the model's.
    backend : "cpu", "gpu", "auto" or a backend
    batch_size : int, optional
        Frames per step; default fills ~128 MiB of features, 256..2048 frames.
    spill_dir, max_in_memory_bytes
        Where and above what size the raw frames are memory-mapped (:class:`FrameStore`).

    Attributes
    ----------
    frames_received, frames_processed : int
    n_clusters : int
        The model's k.
    detector_shape : (int, int)
        The model's; frames of another shape are refused (InputError naming both).
    """

    #: LiveRun waits for this many frames before processing (a classifier needs no buffer).
    init_frames = 1
    #: A classifier never re-seeds nor relabels (LiveRun's counters).
    n_reseeds = 0
    stale_frames = 0

    def __init__(self, model, scan_shape: tuple[int, int], *, backend="cpu", batch_size: int | None = None,
                 spill_dir=None, max_in_memory_bytes: int | None = None) -> None:
        from gpu4d.align import AUTO_ALIGN_THRESHOLD_PX, default_window_radius
        from gpu4d.backend import get_backend
        from gpu4d.model import alignment_plan, load_result
        from gpu4d.preprocessing import NORMALIZATIONS, TRANSFORMS, option_code
        from gpu4d.result import ClusterResult

        if isinstance(model, (str, os.PathLike)):
            self.model_name = str(model)
            model = load_result(model)
        elif isinstance(model, ClusterResult):
            self.model_name = f"in-memory model of {model.source}"
        else:
            raise InputError(f"model={model!r} should be a results folder or a ClusterResult.")
        self.model = model
        self.scan_shape = check_scan_shape(scan_shape)
        self.n_frames = self.scan_shape[0] * self.scan_shape[1]
        self.n_clusters = int(model.n_clusters)
        self.detector_shape = tuple(int(s) for s in model.centroids.shape[1:])
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise InputError(f"batch_size={batch_size!r} should be an integer >= 1.")
        self.batch_size = batch_size
        self.backend_name = backend if isinstance(backend, str) else backend.name
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        parameters = model.parameters
        self._transform_code = option_code(TRANSFORMS, parameters.get("transform", "none"), "the model's transform")
        self._norm_code = option_code(NORMALIZATIONS, parameters.get("normalize", "max"), "the model's normalize")
        self._raw_codes = (TRANSFORMS["none"], NORMALIZATIONS["none"])
        self.mask = model.mask
        xp, to_device = self.backend.xp, self.backend.to_device
        py, px = self.mask.kept_pixels()
        self._pixels = (to_device(py), to_device(px))
        # the distances as gpu4d.engine.passes.Distances computes them, in float64
        centroids = np.ascontiguousarray(model.centroids[:, py, px], np.float64)
        self._centroids = to_device(centroids)
        self._centroid_norms = (self._centroids**2).sum(axis=1)
        bad = model.mask.bad_masked
        self._zeroed = None if bad is None or not bad.any() else np.nonzero(bad)  # read as 0, as classify
        # subtracted as the model's scan had it (frames arrive one by one: none to find it in)
        self._offset = float(model.mask.detector_offset)
        self._spikes = bool(model.parameters.get("spikes", True))  # replaced as classify does
        blur = float(model.parameters.get("blur_px", 0.0))  # the model's detector blur, as classify's
        self._taps = to_device(gaussian_taps(blur)) if blur else None

        self.plan = alignment_plan(model)  # "always", "auto" or None
        self.alignment = None
        if self.plan is not None:
            info = model.extra["alignment"]
            self._reference = tuple(float(v) for v in info["reference"])
            window = info.get("window_radius_px")
            if window is None:  # an older summary: the window from the beam's radius
                radius = info.get("beam_radius_px") or (getattr(self.mask, "beam", None) or {}).get("half_max_radius")
                if radius is None:
                    raise InputError(f"{self.model_name}: its alignment records no beam radius to measure frames with")
                window = default_window_radius(radius)
            self._window = float(window)
            self._threshold_px = AUTO_ALIGN_THRESHOLD_PX if self.plan == "auto" else 0.0
            every_y, every_x = np.indices(self.detector_shape, dtype=np.int32)
            self._every_pixel = (to_device(every_y.ravel()), to_device(every_x.ravel()))
            self.alignment = {
                "live_method": "com",
                "model_method": parameters.get("align"),
                "plan": self.plan,
                "reference": list(self._reference),
                "reference_from": "the model",
                "window_radius_px": self._window,
                "shift_threshold_px": self._threshold_px,
            }

        self._store = FrameStore(self.n_frames, spill_dir, max_in_memory_bytes)
        self._labels = np.full(self.n_frames, -1, np.int32)
        self._confidence = np.zeros(self.n_frames, np.float32)
        self._own = np.zeros(self.n_frames, np.float32)  # distance to the own centroid
        self._centres = None if self.plan is None else np.full((self.n_frames, 2), np.nan, np.float32)
        self._shifts = None if self.plan is None else np.zeros((self.n_frames, 2), np.float32)
        self._summed = 0  # frames [0, _summed) are in the class sums
        self._frames_shifted = 0
        self._sums = xp.zeros((self.n_clusters, self.detector_shape[0] * self.detector_shape[1]), np.float64)
        self._work = self._raw_work = None
        self.frames_processed = 0
        self._lock = threading.Lock()  # guards labels against a reader thread
        self.timings: dict[str, float] = dict.fromkeys(("align", "preprocess", "assign", "sums"), 0.0)

    # -- receiving ------------------------------------------------------------------------------
    def check_detector_shape(self, shape) -> None:
        """InputError, naming both shapes, unless ``shape`` is the model's detector shape."""
        shape = tuple(int(s) for s in shape)
        if shape != self.detector_shape:
            raise InputError(
                f"the frames' detector shape {shape} does not match the model's {self.detector_shape} "
                f"({self.model_name})"
            )

    def receive(self, frames, start: int | None = None) -> int:
        """Store frames (a frame, a batch or a FrameBatch) without processing them; return how
        many were kept. Safe from one receiving thread while another calls :meth:`process`."""
        return self._store.receive(frames, start, check_first=self.check_detector_shape)

    @property
    def frames_received(self) -> int:
        return self._store.received

    @property
    def frames(self) -> np.ndarray | None:
        """The stored raw frames (n, qy, qx); rows past ``frames_received`` are not filled yet."""
        return self._store.frames

    @property
    def complete(self) -> bool:
        """Every frame of the scan has been received."""
        return self.frames_received >= self.n_frames

    def warm_up(self, dtypes=(np.uint16, np.uint8)) -> None:
        """Classify a few synthetic frames of the model's detector shape with a throwaway
        classifier, so the kernels are loaded before the first real frames arrive."""
        if getattr(self.backend, "simulated", False):
            return  # the CUDA simulator compiles nothing
        rng = np.random.default_rng(0)
        qy, qx = self.detector_shape
        yy, xx = np.indices((qy, qx))
        beam = 200.0 * np.exp(-((yy - qy / 2) ** 2 + (xx - qx / 2) ** 2) / 8.0)
        for dtype in dtypes:
            scratch = LiveClassifier(self.model, (4, 4), backend=self.backend)
            try:
                scratch.receive(rng.poisson(5.0 + beam, (16, qy, qx)).astype(dtype))
                scratch.process()
            finally:
                scratch.close()

    # -- processing -----------------------------------------------------------------------------
    @property
    def _batch(self) -> int:
        """Frames per step of the loop (LiveRun asks for this many at a time)."""
        if self.batch_size is not None:
            return self.batch_size
        return default_batch(self.mask.n_kept)

    @property
    def _chunk(self) -> int:
        """Frames classified at a time: cache-sized on the CPU, the whole step on the GPU."""
        if self.backend.xp is not np or self.backend.kernel_target == "cuda":
            return self._batch
        # chunks still in cache when the distance matmul reads them
        return int(min(self._batch, cpu_chunk_rows(self.mask.n_kept)))

    def process(self, max_frames: int | None = None, *, final: bool = False) -> int:
        """Classify received frames (at most about ``max_frames``); return how many.

        When no frame is waiting, adds (about ``max_frames``) classified frames to the class
        sums instead: labels come first, the mean patterns' sums when there is time (and at
        :meth:`finish`). ``final`` is accepted for LiveRun; there is no initial buffer.
        """
        with processing_threads():
            done = 0
            while True:
                available = self._readable(final) - self.frames_processed
                if available <= 0 and done == 0:
                    self._add_to_sums(max_frames)
                if available <= 0 or (max_frames is not None and done >= max_frames):
                    return done
                n = min(available, self._chunk)
                if max_frames is not None:
                    n = max(1, min(n, max_frames - done))
                self._classify(self.frames_processed, self.frames_processed + n)
                done += n

    def _readable(self, final: bool) -> int:
        """Frames that can be read as ``classify`` reads them: those whose right and lower
        neighbours have arrived, for spikes (``gpu4d.spikes``); every received one at the end
        (``final``, the whole scan in, or spikes kept)."""
        received = self.frames_received
        if final or received >= self.n_frames or not self._spikes:
            return received
        return max(0, received - self.scan_shape[1] - 1)

    def relabel(self, max_frames: int | None = None) -> int:
        """Nothing to relabel: the centroids never change."""
        return 0

    @property
    def frames_summed(self) -> int:
        """Frames whose raw patterns are in the class sums (the mean patterns) so far."""
        return self._summed

    def _raw_chunk(self, start: int, stop: int) -> np.ndarray:
        """Stored frames ``[start, stop)`` as ``classify`` reads them: the model's detector
        offset subtracted, its dead and hot pixels read as 0 (a hot pixel must not be shifted
        into the patterns), spikes replaced unless the model kept them."""
        store = self._store
        return read_stored(store.frames, store.received, start, stop, self.scan_shape, self._offset, self._zeroed, self._spikes)

    def _classify(self, start: int, stop: int) -> None:
        """Labels, confidence (and the beam centres, when aligning) of frames ``[start, stop)``."""
        from gpu4d.model import nearest_and_confidence

        backend, n = self.backend, stop - start
        if self._work is None or self._work.shape[0] < n:
            self._work = backend.xp.empty((max(n, self._chunk), self.mask.n_kept), np.float32)
        for _, batch in backend.device_batches([(start, self._raw_chunk(start, stop))]):
            shifts = None
            if self.plan is not None:
                t = time.perf_counter()
                shifts = self._measure_shifts(batch, start, stop)
                self.timings["align"] += time.perf_counter() - t
            t = time.perf_counter()
            features = self._work[:n]
            py, px = self._pixels
            backend.preprocess(batch, shifts, py, px, self._transform_code, self._norm_code, features, taps=self._taps)
            backend.synchronize()
            t = self._lap("preprocess", t)
            distances = backend.to_host(self._distances(features))
            labels, confidence = nearest_and_confidence(distances)
            own = distances[np.arange(n), labels].astype(np.float32)
            self._lap("assign", t)
        with self._lock:
            self._labels[start:stop] = labels
            self._confidence[start:stop] = confidence
            self._own[start:stop] = own
            self.frames_processed = stop

    def _add_to_sums(self, max_frames: int | None = None) -> int:
        """Add classified frames (about ``max_frames``; all when None) to the per-class sums of
        their raw patterns, aligned by the shifts they were classified with; return how many."""
        backend, done = self.backend, 0
        t = time.perf_counter()
        while self._summed < self.frames_processed and (max_frames is None or done < max_frames):
            start = self._summed
            stop = min(self.frames_processed, start + self._chunk)
            n = stop - start
            labels = backend.to_device(np.ascontiguousarray(self._labels[start:stop, None]))
            for _, batch in backend.device_batches([(start, self._raw_chunk(start, stop))]):
                backend.add_label_sums(self._raw_rows(batch, start, stop), labels, self._sums)
            backend.synchronize()
            self._summed = stop
            done += n
        self._lap("sums", t)
        return done

    def _distances(self, features):
        """(n, k) float64 distances to the centroids, as ``classify``'s (``backend.squared_distances``)."""
        squared = self.backend.squared_distances(features, self._centroids, self._centroid_norms)
        return self.backend.xp.sqrt(self.backend.xp.maximum(squared, 0.0))

    def _lap(self, stage: str, since: float) -> float:
        """Add the time since ``since`` to ``stage``; return now."""
        now = time.perf_counter()
        self.timings[stage] += now - since
        return now

    def _raw_rows(self, batch, start: int, stop: int):
        """The batch's raw patterns as (n, qy * qx) rows, shifted onto the reference as they
        were for their classification (float32 then), as classify's mean patterns read them."""
        n = stop - start
        if self._shifts is None or not self._shifts[start:stop].any():
            return batch.reshape(n, -1)
        if self._raw_work is None or self._raw_work.shape[0] < n:
            self._raw_work = self.backend.xp.empty((max(n, self._chunk), self._sums.shape[1]), np.float32)
        out = self._raw_work[:n]
        shifts = self.backend.to_device(self._shifts[start:stop])
        self.backend.preprocess(batch, shifts, *self._every_pixel, *self._raw_codes, out)
        return out

    def _measure_shifts(self, batch, start: int, stop: int):
        """Per-frame ``"com"`` beam centres of a device batch -> shifts onto the model's
        reference (on the device), or None when no frame of the batch is to be shifted."""
        from gpu4d.align import backend_com_centres, shifts_from_centres

        backend = self.backend
        centres = backend.to_host(
            backend_com_centres(backend, batch, centre=self._reference, window_radius=self._window)
        )
        self._centres[start:stop] = centres
        # a frame whose window holds no beam takes the median shift of its batch
        shifts = shifts_from_centres(centres, self._reference)
        if self._threshold_px > 0:
            shifts[np.abs(shifts).max(axis=1) < self._threshold_px] = 0.0
        self._shifts[start:stop] = shifts  # the class sums shift the raw patterns alike
        moved = int(np.count_nonzero(np.abs(shifts).max(axis=1) > 0))
        self._frames_shifted += moved
        return backend.to_device(shifts) if moved else None

    # -- reading --------------------------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        """(ny, nx) int32 labels of the frames processed so far; -1 elsewhere (a copy)."""
        with self._lock:
            return self._labels.reshape(self.scan_shape).copy()

    @property
    def confidence(self) -> np.ndarray:
        """(ny, nx) float32 confidence of the frames processed so far; 0 elsewhere (a copy)."""
        with self._lock:
            return self._confidence.reshape(self.scan_shape).copy()

    @property
    def centroids(self) -> np.ndarray:
        """(k, qy, qx) float32: the model's centroids."""
        return self.model.centroids

    def state(self):
        """A consistent copy of labels, centroids and counters (a ``LiveState``)."""
        from gpu4d.live.clusterer import LiveState

        with self._lock:
            labels = self._labels.reshape(self.scan_shape).copy()
            received, processed = self.frames_received, self.frames_processed
        return LiveState(labels, self.model.centroids, received, processed, self.n_frames)

    # -- results --------------------------------------------------------------------------------
    def finish(self, *, refine: bool = True, max_iter: int = 300, tol: float = 0.0, progress: bool = False,
               source: str | None = None, extra: dict | None = None):
        """The classification of the frames received, as ``gpu4d.classify`` returns it.

        Processes every received frame first. Labels are -1 (and confidence 0) where no frame
        arrived; mean patterns and cluster sizes count the frames that did. ``refine``,
        ``max_iter``, ``tol`` and ``progress`` are accepted for LiveRun and do nothing.

        Raises
        ------
        InputError
            No frame arrived: nothing was classified.
        """
        from gpu4d.io.dataset import Axis
        from gpu4d.result import ClusterResult

        self.process(final=True)
        self._add_to_sums()
        n = self.frames_processed
        if n == 0:
            raise InputError("no frame arrived: nothing to classify.")
        counts = np.bincount(self._labels[:n], minlength=self.n_clusters).astype(np.int64)
        sums = self.backend.to_host(self._sums)
        means = np.divide(sums, counts[:, None], out=np.zeros_like(sums), where=counts[:, None] > 0)
        ny, nx = self.scan_shape
        centres = None if self._centres is None else self._centres.reshape(ny, nx, 2).copy()
        live_info = {
            "frames_expected": self.n_frames,
            "frames_received": self.frames_received,
            "frames_processed": n,
            "complete": self.complete,
            "refined": False,
            "classified_with_model": True,
            "batch_size": self._batch,
            "frames_on_disk": self._store.on_disk,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            **(extra or {}),
        }
        result_extra = {"model": self.model_name, "live": live_info}
        if self.alignment is not None:
            result_extra["alignment"] = {**self.alignment, "frames_shifted": self._frames_shifted}
        return ClusterResult(
            labels=self._labels.reshape(ny, nx).copy(),
            centroids=self.model.centroids,
            mean_patterns=means.reshape(self.n_clusters, *self.detector_shape).astype(np.float32),
            cluster_sizes=counts,
            inertia=float((self._own[:n].astype(np.float64) ** 2).sum()),
            n_iter=0,
            backend=self.backend.name,
            backend_description=self.backend.describe(),
            parameters={**self.model.parameters, "batch_size": self._batch,
                        "backend_requested": self.backend_name},
            mask=self.model.mask,
            timings={k: round(v, 4) for k, v in self.timings.items()},
            scan_axes=(Axis("y", ny), Axis("x", nx)),
            detector_axes=self.model.detector_axes,  # the same detector: the model's calibration
            source=source or "<live frames>",
            centres=centres,
            confidence=self._confidence.reshape(ny, nx).copy(),
            extra=result_extra,
        )

    def close(self) -> None:
        """Free the stored frames (and the memory-mapped file of a large scan)."""
        self._store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
