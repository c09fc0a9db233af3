"""Incremental clustering of a scan while it is acquired.

Two layers:

* :class:`~gpu4d.kmeans.minibatch.MiniBatchKMeans` is scikit-learn's mini-batch KMeans update
  over an array module ``xp`` (numpy, or cupy on the GPU, so the update runs on the device where
  the features already are), in ``gpu4d.kmeans`` with the other KMeans steps.
* :class:`LiveClusterer` turns raw frames into that update. It keeps every frame (for the exact
  refinement at the end); builds the detector mask (and the alignment reference) from the first
  frames; seeds the centroids with k-means++ and Lloyd over an initial buffer; then
  preprocesses each further batch with the same fused kernels as ``gpu4d.cluster`` and folds it
  into the centroids. :meth:`LiveClusterer.finish` runs Lloyd from the live centroids over the
  whole scan through ``gpu4d.cluster(init=...)``.

Frames arrive in scan order, not at random: the first rows hold a few regions only, and new
regions appear all along the scan, which a plain mini-batch KMeans (made for shuffled data)
cannot follow. So the clusterer also keeps a stratified sample of the frames (up to a few
hundred per cluster, and a bucket of "novel" frames, far from every centroid, which are kept out
of the update). When novel frames pile up, or the frames seen double, the centroids are
re-seeded by a weighted KMeans of the sample (:meth:`LiveClusterer.reseed`), in its principal
axes; a last re-seed, adding a uniform sample, precedes the refinement.

Label identities stay stable: after every update and re-seed the new centroids are matched to
the previous ones (:func:`match_centroids`, Hungarian assignment on squared distances) and
reordered, so a region keeps its label, and its colour, from the first snapshot to the final
result. Frames labelled before a re-seed are labelled again when the loop is idle
(:meth:`LiveClusterer.relabel`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import threading
import time

import numpy as np

from gpu4d.arrays import to_host
from gpu4d.defaults import DEFAULT_ALIGN, DEFAULT_TRANSFORM
from gpu4d.detector_offset import find_offset
from gpu4d.engine.context import cpu_chunk_rows
from gpu4d.engine.reading import corrected
from gpu4d.errors import InputError
from gpu4d.kmeans import core as kmeans_core
from gpu4d.kmeans.matching import match_centroids
from gpu4d.kmeans.minibatch import MiniBatchKMeans
from gpu4d.live.frames import FrameStore, check_scan_shape, default_batch
from gpu4d.live.threads import processing_threads

__all__ = ["LiveClusterer", "MiniBatchKMeans", "match_centroids"]

#: Initial buffer: k-means++ and Lloyd run over the first ``max(INIT_PER_CLUSTER * k,
#: INIT_MIN_FRAMES)`` frames (fewer if the scan is smaller).
INIT_PER_CLUSTER = 20
INIT_MIN_FRAMES = 512
#: The beam (for mask="auto" and alignment) is located in this percentile over up to BEAM_FRAMES
#: evenly spaced frames of the initial buffer, and measured in their mean (``_beam_pattern``).
BEAM_PERCENTILE = 20
BEAM_FRAMES = 256
#: The sample the centroids are re-seeded from: frames whose features take up to this many
#: bytes, between MIN and MAX frames per cluster (and as many for the novel bucket).
SAMPLE_BYTES = 128 * 2**20
MIN_SAMPLE_PER_CLUSTER, MAX_SAMPLE_PER_CLUSTER = 32, 128
#: A frame is "novel" when its squared distance to its centre exceeds NOVELTY_FACTOR times the
#: NOVELTY_QUANTILE of its cluster's distances in the sample at the last re-seed.
NOVELTY_FACTOR = 2.0
NOVELTY_QUANTILE = 0.99
#: Re-seed when this many novel frames have arrived (at least NOVEL_MIN_GAP frames after the
#: last re-seed), and whenever the frames processed grow by RESEED_GROWTH.
NOVEL_MIN_FRAMES = 32
NOVEL_MIN_GAP = 256
RESEED_GROWTH = 2.0
#: ... but no more often than these shares of the time allow (a re-seed takes 0.1-0.5 s). At
#: 0.3 for novel frames, three re-seeds took a third of a 10,000-frame live window; at 0.15 two
#: or three, and the CLI's median rate rose from 3,700-3,900 to 4,550-4,760 frames/s (bench_live.py
#: --cli, 8 runs each); the final map is the refinement's either way.
RESEED_SHARE = 0.1
NOVEL_RESEED_SHARE = 0.15
#: The re-seed's KMeans runs in the sample's top principal axes (at least this many), from
#: SEED_N_INIT k-means++ starts and from the previous centroids, each for at most SEED_MAX_ITER
#: Lloyd iterations (it stops when no label changes).
SEED_DIMENSIONS = 16
SEED_N_INIT = 8
SEED_MAX_ITER = 100
#: The final re-seed (before the refinement) adds a uniform sample of this many frames (whose
#: features take at most FINAL_SAMPLE_BYTES) and uses more starts in more axes.
FINAL_UNIFORM_FRAMES = 1024
FINAL_SAMPLE_BYTES = 128 * 2**20
FINAL_N_INIT = 32
FINAL_DIMENSIONS = 32


# ------------------------------------------------------------------------------------- sample
class _Sample:
    """A stratified reservoir sample of the frames: up to ``capacity`` frames per cluster, plus a
    bucket (index k) for frames far from every centre ("novel": a region not seen before).

    Each bucket is a uniform sample (Algorithm R) of the frames that went into it; a member
    stands for ``seen[b] / size[b]`` frames. Only frame indices are kept (host): a re-seed
    preprocesses its few hundred frames again from the frame store, which costs less than
    copying every accepted feature row as it arrives. Small clusters keep up to ``capacity``
    frames however large the others grow, so the (weighted) re-seed still sees them.
    """

    def __init__(self, n_clusters: int, capacity: int, rng) -> None:
        self.n_buckets = n_clusters + 1
        self.capacity = capacity
        self.members = np.full((self.n_buckets, capacity), -1, np.int64)
        self.size = np.zeros(self.n_buckets, np.int64)
        self.seen = np.zeros(self.n_buckets, np.float64)
        self.rng = rng

    @property
    def novel_seen(self) -> float:
        return float(self.seen[-1])

    def add(self, frames: np.ndarray, buckets: np.ndarray) -> None:
        """Offer frames (indices), each to its bucket: a frame is appended while its bucket has
        room, else replaces member ``j ~ U[0, seen)`` when j < capacity."""
        n = len(buckets)
        counts = np.bincount(buckets, minlength=self.n_buckets)
        order = np.argsort(buckets, kind="stable")
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
        position = self.size[buckets] + rank
        sequence = self.seen[buckets] + rank + 1.0
        draw = np.floor(self.rng.random(n) * sequence).astype(np.int64)
        member = np.where(position < self.capacity, position, draw)
        keep = member < self.capacity
        self.members[buckets[keep], member[keep]] = frames[keep]
        self.size = np.minimum(self.size + counts, self.capacity)
        self.seen += counts

    def occupied(self) -> tuple[np.ndarray, np.ndarray]:
        """The sampled frames and the weight (frames represented) of each."""
        used = np.arange(self.capacity)[None, :] < self.size[:, None]
        buckets = np.nonzero(used)[0]
        return self.members[used], self.seen[buckets] / self.size[buckets]

    def regroup(self, frames: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> None:
        """Refill the buckets with ``frames`` by new cluster ``labels``; a cluster over capacity
        keeps a weighted sample (Efraimidis-Spirakis keys); the novel bucket empties."""
        self.size[:] = 0
        self.seen[:] = 0.0
        for c in range(self.n_buckets - 1):
            members = np.flatnonzero(labels == c)
            if members.size == 0:
                continue
            self.seen[c] = float(weights[members].sum())
            if members.size > self.capacity:
                keys = self.rng.random(members.size) ** (1.0 / weights[members])
                members = members[np.argsort(-keys)[: self.capacity]]
            self.size[c] = members.size
            self.members[c, : members.size] = frames[members]

    def permute(self, order: np.ndarray) -> None:
        """Cluster i becomes old cluster ``order[i]`` (the novel bucket stays last)."""
        k = self.n_buckets - 1
        for array in (self.members, self.size, self.seen):
            array[:k] = array[:k][order]


# ---------------------------------------------------------------------------------- frame store
# ------------------------------------------------------------------------------- live clusterer
@dataclasses.dataclass(frozen=True)
class LiveState:
    """A consistent look at a live run (copies; safe to keep)."""

    labels: np.ndarray  # (ny, nx) int32, -1 = not processed yet
    centroids: np.ndarray | None  # (k, qy, qx) float32, None before the initial buffer is full
    frames_received: int
    frames_processed: int
    n_frames: int


class LiveClusterer:
    """Cluster the frames of one scan as they arrive: feed it, read its current state.

    Parameters
    ----------
    n_clusters : int
        k.
    scan_shape : (int, int)
        ``(ny, nx)``; frames arrive in row-major scan order, ``ny * nx`` of them.
    mask, normalize, transform, backend, random_state
        As for :func:`gpu4d.cluster`. ``mask="auto"`` finds the beam in the initial buffer
        (in a low percentile of its frames, see ``_beam_pattern``); the mask is then fixed for
        the whole run and the refinement (with alignment, recentred on the beam the
        refinement aligns to).
    align : None, True, "com", "xcorr" or "fit"
        Live, every frame is shifted by its own ``"com"`` beam centre (measured in a window
        around the beam of the initial buffer); the final refinement runs the method asked for
        (``True``: ``gpu4d.cluster``'s default) over the whole scan.
    batch_size : int, optional
        Frames per mini-batch update; default fills ~128 MiB of features, 256..2048 frames.
    init_frames : int, optional
        Frames of the initial buffer; default ``max(20 * k, 512)``, at most the scan.
    spill_dir : path, optional
        Where a large scan's frames are memory-mapped (default: the system's temporary folder).
    max_in_memory_bytes : int, optional
        Frames above this size go to a memory-mapped file; default 40% of physical memory.

    Attributes
    ----------
    frames_received, frames_processed : int
    mask : DetectorMask or None
        Known once the initial buffer has been processed.
    detector_shape : (int, int) or None

    Examples
    --------
    >>> live = LiveClusterer(5, (64, 64))                 # doctest: +SKIP
    >>> for batch in frames_in_batches:                   # doctest: +SKIP
    ...     live.feed(batch)
    ...     show(live.labels)                             # -1 where not scanned yet
    >>> result = live.finish()                            # doctest: +SKIP
    """

    def __init__(
        self,
        n_clusters: int,
        scan_shape: tuple[int, int],
        *,
        mask="auto",
        normalize: str = "max",
        transform: str = DEFAULT_TRANSFORM,
        align=None,
        backend="cpu",
        random_state: int | None = 0,
        batch_size: int | None = None,
        init_frames: int | None = None,
        spill_dir=None,
        max_in_memory_bytes: int | None = None,
    ) -> None:
        # scipy's assignment solver (match_centroids) now, not while the first frames arrive:
        # its import took ~0.4 s of a 3 s live window
        import scipy.optimize  # noqa: F401

        from gpu4d.backend import get_backend
        from gpu4d.masks import parse_mask
        from gpu4d.pipeline import _check_kmeans_parameters, _resolve_align
        from gpu4d.preprocessing import NORMALIZATIONS, TRANSFORMS, option_code

        self.scan_shape = check_scan_shape(scan_shape)
        self.n_frames = self.scan_shape[0] * self.scan_shape[1]
        _check_kmeans_parameters(n_clusters, 1, 1, 0.0, random_state)
        if n_clusters > self.n_frames:
            raise InputError(f"n_clusters={n_clusters} should be <= the number of frames {self.n_frames}.")
        self.n_clusters = int(n_clusters)
        self.mask_spec = parse_mask(mask)
        self._mask_argument = mask
        self.normalize, self.transform = normalize, transform
        self._norm_code = option_code(NORMALIZATIONS, normalize, "normalize")
        self._transform_code = option_code(TRANSFORMS, transform, "transform")
        self.align_method = _resolve_align(align)
        self.backend_name = backend if isinstance(backend, str) else backend.name
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self.random_state = random_state
        self.batch_size = None if batch_size is None else _positive_int(batch_size, "batch_size")
        default_init = max(INIT_PER_CLUSTER * self.n_clusters, INIT_MIN_FRAMES)
        init = default_init if init_frames is None else _positive_int(init_frames, "init_frames")
        self.init_frames = min(max(init, self.n_clusters), self.n_frames)

        self._store = FrameStore(self.n_frames, spill_dir, max_in_memory_bytes)
        self._labels = np.full(self.n_frames, -1, np.int32)
        self._distances = np.zeros(self.n_frames, np.float32)
        self._centres = None  # (n, 2) float32 measured beam centres when aligning
        self._shifts = None
        self.frames_processed = 0
        self.mask = None
        self._offset = 0.0  # the detector offset, found in the initial buffer
        self.alignment: dict | None = None
        self._km: MiniBatchKMeans | None = None
        self._sample: _Sample | None = None
        self._rng = np.random.default_rng(random_state)
        self._last_reseed = 0
        self._last_reseed_time = 0.0
        self._last_reseed_took = 0.0
        self._stale_until = self._relabel_next = 0
        self._init_frames_used = 0
        self._lock = threading.Lock()  # guards labels/centroids against a reader thread
        stages = ("init", "align", "preprocess", "update", "reseed")
        self.timings: dict[str, float] = dict.fromkeys(stages, 0.0)
        self.n_relabelled = 0  # label permutations applied to keep identities stable
        self.n_reseeds = 0
        self.frames_novel = 0

    def warm_up(self, dtypes=(np.uint16, np.uint8)) -> None:
        """Run a small synthetic scan through a throwaway clusterer with the same options.

        In a fresh process, numba's compiled kernels (from its on-disk cache, or compiled on a
        first run) and lazily imported modules otherwise load while the first frames arrive:
        ~0.5-1 s, a fifth of a 3 s live window. The frame type is unknown until the stream
        starts, so the usual detector types are all warmed.
        """
        if getattr(self.backend, "simulated", False):
            return  # the CUDA simulator compiles nothing
        rng = np.random.default_rng(0)
        side, scan = 32, (24, 24)
        yy, xx = np.indices((side, side))
        beam = 200.0 * np.exp(-((yy - side / 2) ** 2 + (xx - side / 2) ** 2) / 8.0)
        for dtype in dtypes:
            scratch = LiveClusterer(
                self.n_clusters, scan, mask="auto", normalize=self.normalize,
                transform=self.transform, align=self.align_method, backend=self.backend,
            )
            try:
                frames = rng.poisson(5.0 + beam, (scan[0] * scan[1], side, side)).astype(dtype)
                scratch.feed(frames)
                scratch.reseed()
                scratch.relabel()
            finally:
                scratch.close()

    # -- receiving ------------------------------------------------------------------------------
    def receive(self, frames, start: int | None = None) -> int:
        """Store frames (without processing them); return how many were kept.

        ``frames`` is a frame (qy, qx), a batch (b, qy, qx) or a :class:`FrameBatch`. Frames
        past the end of the scan are not kept. Safe to call from one receiving thread while
        another calls :meth:`process` (``gpu4d.live.frames.FrameStore``).
        """
        return self._store.receive(frames, start)

    @property
    def frames_received(self) -> int:
        return self._store.received

    @property
    def detector_shape(self) -> tuple[int, int] | None:
        return self._store.detector_shape

    @property
    def dtype(self):
        return self._store.dtype

    @property
    def frames(self) -> np.ndarray | None:
        """The stored raw frames (n, qy, qx); rows past ``frames_received`` are not filled yet."""
        return self._store.frames

    @property
    def complete(self) -> bool:
        """Every frame of the scan has been received."""
        return self.frames_received >= self.n_frames

    @property
    def initialised(self) -> bool:
        return self._km is not None

    # -- processing -----------------------------------------------------------------------------
    def feed(self, frames, start: int | None = None) -> int:
        """Store frames; process them once a whole mini-batch is waiting (or the scan is
        complete). Returns the frames processed now; :meth:`process` processes at once."""
        self.receive(frames, start)
        waiting = self.frames_received - self.frames_processed
        if self.initialised and waiting < self._batch and not self.complete:
            return 0
        return self.process()

    def process(self, max_frames: int | None = None, *, final: bool = False) -> int:
        """Process received frames (at most about ``max_frames``); return how many.

        Frames wait until the initial buffer is full (or ``final`` is set, or the scan is
        complete); then they are folded in mini-batches of ``batch_size``, and the centroids
        are re-seeded from the sample when new regions appear or the data seen doubles.
        """
        with processing_threads():
            return self._process(max_frames, final)

    def _process(self, max_frames, final) -> int:
        done = 0
        while True:
            available = self.frames_received - self.frames_processed
            if available <= 0 or (max_frames is not None and done >= max_frames):
                return done
            if self._km is None:
                if self.frames_received < self.init_frames and not (final or self.complete):
                    return done
                if self.frames_received < self.n_clusters:
                    return done  # too few frames to seed k centres at all
                done += self._initialise(min(self.frames_received, self.init_frames))
                continue
            n = min(available, self._batch)
            if max_frames is not None:
                n = max(1, min(n, max_frames - done))
            self._update(self.frames_processed, self.frames_processed + n)
            done += n
            if self._refit_due():
                self._reseed()

    @property
    def _batch(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        m = self.mask.n_kept if self.mask is not None else math.prod(self.detector_shape or (1, 1))
        return default_batch(m)

    def _initialise(self, stop: int) -> int:
        """Mask, alignment reference and the first centroids from frames ``[0, stop)``."""
        from gpu4d.masks import build_mask, find_beam

        t0 = time.perf_counter()
        # the detector offset (gpu4d.detector_offset) is found in the initial buffer, as gpu4d.cluster
        # finds it in its sample, and subtracted from every frame read from now on
        first = self._store.frames[:stop]
        self._offset = find_offset(first.min(axis=0), first.max(axis=0))
        raw = self._raw(slice(0, stop))
        needs_beam = self.mask_spec.needs_beam_centre or self.align_method is not None
        mean = _beam_pattern(raw) if needs_beam else None
        self.mask = dataclasses.replace(build_mask(self.mask_spec, self.detector_shape, mean), detector_offset=self._offset)
        backend = self.backend
        xp = backend.xp
        self._pixels = tuple(backend.to_device(p) for p in self.mask.kept_pixels())
        if self.align_method is not None:
            from gpu4d.align import default_window_radius

            beam = find_beam(mean)
            self._reference = tuple(beam["centre"])
            self._window = default_window_radius(beam["half_max_radius"])
            self.alignment = {
                "live_method": "com",
                "reference": [float(v) for v in self._reference],
                "beam_radius_px": beam["half_max_radius"],
                "window_radius_px": self._window,
            }
            self._centres = np.full((self.n_frames, 2), np.nan, np.float32)
            self._shifts = np.zeros((self.n_frames, 2), np.float32)
        m = self.mask.n_kept
        self._work = xp.empty((stop, m), np.float32)  # the initial buffer; chunks after it
        capacity = int(min(MAX_SAMPLE_PER_CLUSTER, max(MIN_SAMPLE_PER_CLUSTER,
                                                       SAMPLE_BYTES // ((self.n_clusters + 1) * 4 * m))))
        self._sample = _Sample(self.n_clusters, capacity, self._rng)
        features = self._features(0, stop, measure=True)
        self._km = MiniBatchKMeans(self.n_clusters, xp=xp)
        centers, sample_labels, counts, thresholds = self._seed(features, np.ones(stop), None)
        self._km.set_centers(centers, counts)
        self._thresholds = xp.asarray(thresholds, dtype=np.float32)
        labels, distances = self._km.assign(features)
        labels = backend.to_host(labels)
        self._sample.add(np.arange(stop), labels)
        with self._lock:
            self._labels[:stop] = labels
            self._distances[:stop] = backend.to_host(distances)
            self.frames_processed = stop
        self._init_frames_used = stop
        self._last_reseed = stop
        self._work = xp.empty((self._chunk, m), np.float32)
        self.timings["init"] += time.perf_counter() - t0
        return stop

    def _raw(self, index) -> np.ndarray:
        """Stored frames ``index`` (a slice or indices), the detector offset subtracted."""
        return corrected(self._store.frames[index], self._offset)

    def _features(self, start: int, stop: int, *, measure: bool = True):
        """Preprocess frames ``[start, stop)`` into ``self._work[:stop - start]`` on the device.

        With alignment, ``measure`` measures each frame's beam centre first; otherwise the
        shifts measured before are reused (relabelling).
        """
        backend = self.backend
        raw = self._raw(slice(start, stop))
        out = self._work[: stop - start]
        for _, batch in backend.device_batches([(start, raw)]):
            shifts = None
            if self.align_method is not None:
                t = time.perf_counter()
                if measure:
                    shifts = self._measure_shifts(batch, start, stop)
                else:
                    shifts = backend.to_device(self._shifts[start:stop])
                self.timings["align"] += time.perf_counter() - t
            t = time.perf_counter()
            py, px = self._pixels
            backend.preprocess(batch, shifts, py, px, self._transform_code, self._norm_code, out)
            backend.synchronize()
            self.timings["preprocess"] += time.perf_counter() - t
        return out

    def _features_of(self, frames: np.ndarray):
        """Preprocess the frames of the given indices (the sample) into a new (s, m) array."""
        backend = self.backend
        raw = self._raw(frames)  # a copy, in the order given
        shifts = None if self._shifts is None else self._shifts[frames]
        out = backend.xp.empty((len(frames), self.mask.n_kept), np.float32)
        py, px = self._pixels
        t = time.perf_counter()
        for _, batch in backend.device_batches([(0, raw)]):
            batch_shifts = None if shifts is None else backend.to_device(shifts)
            backend.preprocess(batch, batch_shifts, py, px, self._transform_code, self._norm_code, out)
            backend.synchronize()
        self.timings["preprocess"] += time.perf_counter() - t
        return out

    def _measure_shifts(self, batch, start: int, stop: int):
        """Per-frame ``"com"`` beam centres of a device batch -> shifts on the device."""
        from gpu4d.align import backend_com_centres, shifts_from_centres

        backend = self.backend
        centres = backend.to_host(
            backend_com_centres(backend, batch, centre=self._reference, window_radius=self._window)
        )
        self._centres[start:stop] = centres
        # a frame whose window holds no beam takes the median shift of its batch
        shifts = shifts_from_centres(centres, self._reference)
        self._shifts[start:stop] = shifts
        return backend.to_device(shifts)

    @property
    def _chunk(self) -> int:
        """Frames preprocessed at a time. On the CPU, chunks small enough for the features to
        stay in cache while the assignment, the sums and the sample read them again; on the
        GPU, the whole batch."""
        if self.backend.xp is not np or self.backend.kernel_target == "cuda":
            return self._batch
        m = self.mask.n_kept if self.mask is not None else math.prod(self.detector_shape)
        # chunks still in cache when the assignment matmul and the one-hot sums read them (a
        # 1024-frame batch of 144x144 features is 85 MB)
        return int(min(self._batch, cpu_chunk_rows(m)))

    def _update(self, start: int, stop: int) -> None:
        """One mini-batch step on frames ``[start, stop)``: every frame is assigned with the
        same centres, the batch's sums are accumulated chunk by chunk and applied once."""
        km, backend = self._km, self.backend
        sums = counts = None
        chunk = self._chunk
        for a in range(start, stop, chunk):
            b = min(stop, a + chunk)
            features = self._features(a, b, measure=True)
            t = time.perf_counter()
            labels, distances = km.assign(features)
            # rows far from their centre may be a region not seen yet: keep them out of the
            # centres (they would drag one across) and put them in the sample's novel bucket
            novel = distances > self._thresholds[labels]
            part_sums, part_counts = km.accumulate(features, labels, include=~novel)
            sums = part_sums if sums is None else sums + part_sums
            counts = part_counts if counts is None else counts + part_counts
            labels_host = backend.to_host(labels)
            novel_host = backend.to_host(novel)
            self._sample.add(np.arange(a, b), np.where(novel_host, self.n_clusters, labels_host))
            self.frames_novel += int(novel_host.sum())
            with self._lock:
                self._labels[a:b] = labels_host
                self._distances[a:b] = backend.to_host(distances)
            self.timings["update"] += time.perf_counter() - t
        t = time.perf_counter()
        previous = km.cluster_centers_
        km.apply(sums, counts)
        order = match_centroids(previous, km.cluster_centers_)
        with self._lock:
            if not np.array_equal(order, np.arange(self.n_clusters)):
                self._permute(order, stop)
            self.frames_processed = stop
        self.timings["update"] += time.perf_counter() - t

    def _permute(self, order: np.ndarray, stop: int) -> None:
        """New cluster i is old cluster ``order[i]``: reorder the model, relabel frames [0, stop)."""
        self._km.permute(order)
        self._thresholds = self._thresholds[self.backend.xp.asarray(order)]
        relabel = np.argsort(order).astype(np.int32)
        done = self._labels[:stop]
        done[...] = relabel[done]
        self._sample.permute(order)
        self.n_relabelled += 1

    def _refit_due(self) -> bool:
        processed = self.frames_processed
        waited = time.monotonic() - self._last_reseed_time
        # re-seeds take at most NOVEL_RESEED_SHARE of the time when new regions show up, and
        # RESEED_SHARE when the data seen merely grew
        if (
            self._sample.novel_seen >= NOVEL_MIN_FRAMES
            and processed - self._last_reseed >= NOVEL_MIN_GAP
            and waited * NOVEL_RESEED_SHARE >= self._last_reseed_took
        ):
            return True
        return processed >= RESEED_GROWTH * self._last_reseed and waited * RESEED_SHARE >= self._last_reseed_took

    def _seed(self, rows, weights: np.ndarray, previous, *, n_init: int = SEED_N_INIT,
              dimensions: int = SEED_DIMENSIONS):
        """Centroids for weighted rows (s, m) on the device: weighted KMeans in their principal
        subspace (k-means++ starts, plus ``previous`` if given), lifted back to the full space.

        Returns centres (k, m) on the device in the order that continues ``previous``, the
        rows' labels (host), the weight in each cluster (host) and each cluster's novelty
        threshold (host, squared distance).
        """
        from gpu4d.sketch import in_memory_sketch

        xp, backend, k = self.backend.xp, self.backend, self.n_clusters
        s, m = rows.shape
        width = int(min(s, m, max(dimensions, 2 * k + 6)))
        sketch = in_memory_sketch(rows, backend, sketch_size=width, random_state=self._rng.integers(2**31))
        coords = to_host(sketch.scores).astype(np.float64)
        start = None
        if previous is not None:
            mean = rows.mean(axis=0, dtype=np.float64).astype(np.float32)  # what the scores are centred on
            start = to_host((previous - mean[None, :]) @ sketch.components).astype(np.float64)
        # a small weighted sample on the host, in float64; run until no label changes
        labels = kmeans_core.kmeans(
            np, coords, k, n_init=n_init, max_iter=SEED_MAX_ITER, tol=0.0, rng=self._rng,
            warm_start=start, weights=np.asarray(weights, np.float64), dtype=np.float64,
        ).labels
        # lifted back: each cluster's weighted mean of the full rows
        sums, mass = kmeans_core.cluster_sums(
            xp, rows, backend.to_device(labels), k, weights=backend.to_device(np.asarray(weights, np.float32))
        )
        mass = to_host(mass)
        centers = sums / xp.asarray(np.maximum(mass, 1e-12)[:, None].astype(np.float32))
        if previous is not None:
            centers = xp.where(xp.asarray(mass > 0)[:, None], centers, previous)
            order = match_centroids(previous, centers)
            centers = centers[xp.asarray(order)]
            relabel = np.argsort(order)
            labels, mass = relabel[labels], mass[order]
        _, distances = kmeans_core.assign(xp, rows, centers)
        distances = to_host(distances)
        thresholds = np.full(k, np.inf)
        spread = np.quantile(distances, NOVELTY_QUANTILE) if s else np.inf
        for c in range(k):
            own = distances[labels == c]
            q = np.quantile(own, NOVELTY_QUANTILE) if own.size >= 20 else spread
            thresholds[c] = NOVELTY_FACTOR * max(q, 1e-12)
        return centers.astype(np.float32), labels, mass, thresholds

    def reseed(self) -> None:
        """Re-seed the centroids from the sample (weighted KMeans), keeping label identities.

        Runs by itself when the novel bucket fills or the frames processed double; the labels
        of earlier frames are refreshed by :meth:`relabel` (the runner does it when idle).
        """
        if self._km is None:
            return
        with processing_threads():
            self._reseed()

    def _reseed(self, final: bool = False) -> None:
        t = time.perf_counter()
        xp = self.backend.xp
        frames, weights = self._sample.occupied()
        options = {}
        if final:
            # the last re-seed, before the refinement: the stratified sample and a uniform
            # one of every frame processed, each weighted to stand for all of them, and more
            # k-means++ starts in more principal axes
            n = self.frames_processed
            size = min(n, FINAL_UNIFORM_FRAMES, max(1, FINAL_SAMPLE_BYTES // (4 * self.mask.n_kept)))
            uniform = np.sort(self._rng.choice(n, size, replace=False))
            weights = np.concatenate([0.5 * weights * n / weights.sum(),
                                      np.full(len(uniform), 0.5 * n / len(uniform))])
            frames = np.concatenate([frames, uniform])
            options = {"n_init": FINAL_N_INIT, "dimensions": FINAL_DIMENSIONS}
        rows = self._features_of(frames)
        previous = self._km.cluster_centers_
        centers, labels, mass, thresholds = self._seed(rows, weights, previous, **options)
        del rows
        with self._lock:
            self._km.set_centers(centers, mass)
            self._thresholds = xp.asarray(thresholds, dtype=np.float32)
            self._sample.regroup(frames, labels, weights)
            self._last_reseed = self.frames_processed
            self._stale_until = self.frames_processed
            self._relabel_next = 0
        self.n_reseeds += 1
        took = time.perf_counter() - t
        self.timings["reseed"] += took
        self._last_reseed_time = time.monotonic()
        self._last_reseed_took = took

    @property
    def stale_frames(self) -> int:
        """Frames labelled before the last re-seed and not relabelled yet."""
        return max(0, self._stale_until - self._relabel_next)

    def relabel(self, max_frames: int | None = None) -> int:
        """Label again, with the current centroids, frames labelled before the last re-seed.

        Returns the frames relabelled (at most about ``max_frames``; all when None).
        """
        with processing_threads():
            return self._relabel(max_frames)

    def _relabel(self, max_frames) -> int:
        done = 0
        while self.stale_frames > 0 and (max_frames is None or done < max_frames):
            start = self._relabel_next
            stop = min(self._stale_until, start + self._chunk)
            features = self._features(start, stop, measure=False)
            labels, distances = self._km.assign(features)
            with self._lock:
                self._labels[start:stop] = self.backend.to_host(labels)
                self._distances[start:stop] = self.backend.to_host(distances)
                self._relabel_next = stop
            done += stop - start
        return done

    # -- reading --------------------------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        """(ny, nx) int32 labels of the frames processed so far; -1 elsewhere (a copy)."""
        with self._lock:
            return self._labels.reshape(self.scan_shape).copy()

    @property
    def centroids(self) -> np.ndarray | None:
        """(k, qy, qx) float32 centroids in the preprocessed space (masked pixels 0), or None."""
        with self._lock:
            if self._km is None:
                return None
            centers = self.backend.to_host(self._km.cluster_centers_)
        return self._expand(centers)

    @property
    def cluster_sizes(self) -> np.ndarray:
        """(k,) int64 frames currently labelled with each cluster."""
        labels = self._labels[: self.frames_processed]
        return np.bincount(labels, minlength=self.n_clusters).astype(np.int64)

    def state(self) -> LiveState:
        """A consistent copy of labels, centroids and counters."""
        with self._lock:
            labels = self._labels.reshape(self.scan_shape).copy()
            centers = None if self._km is None else self.backend.to_host(self._km.cluster_centers_).copy()
            received, processed = self.frames_received, self.frames_processed
        centroids = None if centers is None else self._expand(centers)
        return LiveState(labels, centroids, received, processed, self.n_frames)

    def _expand(self, centers: np.ndarray) -> np.ndarray:
        """(k, n_kept) -> (k, qy, qx), masked pixels 0."""
        full = np.zeros((self.n_clusters, *self.detector_shape), np.float32)
        py, px = self.mask.kept_pixels()
        full[:, py, px] = centers
        return full

    # -- results --------------------------------------------------------------------------------
    def finish(
        self,
        *,
        refine: bool = True,
        max_iter: int = 300,
        tol: float = 0.0,
        progress: bool = False,
        source: str | None = None,
        extra: dict | None = None,
    ):
        """The result of the run so far, as a :class:`gpu4d.ClusterResult`.

        Processes every received frame first. With the whole scan received and ``refine``,
        runs Lloyd from the live centroids over every frame (``gpu4d.cluster(init=...)``,
        with the live mask), and keeps the live label identities. Otherwise the live labels
        (-1 where no frame arrived) and centroids, with the mean pattern of each cluster over
        the frames that arrived.

        Raises
        ------
        InputError
            Fewer frames arrived than clusters were asked for: nothing can be clustered.
        """
        self.process(final=True)
        if self._km is None:
            raise InputError(
                f"only {self.frames_received} frames arrived, fewer than n_clusters="
                f"{self.n_clusters}: nothing to cluster."
            )
        with processing_threads():
            self._reseed(final=True)  # the best centroids a sample gives, over every frame seen
        if refine and self.complete:
            result = self._refined(max_iter, tol, progress)
        else:
            result = self._partial(progress)
        live_info = {
            "frames_expected": self.n_frames,
            "frames_received": self.frames_received,
            "frames_processed": self.frames_processed,
            "complete": self.complete,
            "refined": bool(refine and self.complete),
            "init_frames": self._init_frames_used,
            "minibatch_steps": self._km.n_steps_,
            "batch_size": self._batch,
            "label_permutations": self.n_relabelled,
            "reseeds": self.n_reseeds,
            "frames_novel": self.frames_novel,
            "sample_rows_per_cluster": self._sample.capacity,
            "frames_on_disk": self._store.on_disk,
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
            **(extra or {}),
        }
        result.extra = {**result.extra, "live": live_info}
        if source is not None:
            result.source = source
        return result

    def _refined(self, max_iter: int, tol: float, progress: bool):
        """The whole scan clustered as ``gpu4d.cluster`` does it (same defaults: alignment
        "auto" when none ran live), labels matched to the live clusters so that a region keeps
        its colour between the live view and the result."""
        from gpu4d.pipeline import cluster

        live_centroids = self._expand(self.backend.to_host(self._km.cluster_centers_))
        data = self._store.frames.reshape(*self.scan_shape, *self.detector_shape)
        result = cluster(
            data, self.n_clusters,
            mask=self._mask_argument, normalize=self.normalize, transform=self.transform,
            align=self.align_method or DEFAULT_ALIGN, backend=self.backend_name,
            random_state=self.random_state, max_iter=max_iter, tol=tol,
            batch_size=self.batch_size, progress=progress,
        )
        # the live centroids are in the live mask's pixels, the result's in its own mask's
        both = ~(self.mask.masked | result.mask.masked)
        order = match_centroids(live_centroids[:, both].reshape(self.n_clusters, -1),
                                result.centroids[:, both].reshape(self.n_clusters, -1))
        relabel = np.argsort(order).astype(np.int32)
        result.labels = relabel[result.labels]
        result.centroids = result.centroids[order]
        result.mean_patterns = result.mean_patterns[order]
        result.cluster_sizes = result.cluster_sizes[order]
        live_labels = self._labels.copy()
        result.extra["live_map_vs_refined_agreement"] = float((live_labels == result.labels.ravel()).mean())
        return result

    def _partial(self, progress: bool):
        from gpu4d.io.dataset import default_axes, open_dataset
        from gpu4d.preprocessing import cluster_mean_patterns
        from gpu4d.result import ClusterResult

        self.relabel()  # every label under the final centroids
        n = self.frames_processed
        raw = self._raw(slice(0, n)).reshape(1, n, *self.detector_shape)
        dataset = open_dataset(raw)
        shifts = None if self._shifts is None else self._shifts[:n]
        batch = min(n, self._batch)
        labels = self._labels[:n]
        means, sizes = cluster_mean_patterns(
            dataset, self.backend, labels, self.n_clusters, shifts, batch, progress
        )
        scan_axes, detector_axes = default_axes((*self.scan_shape, *self.detector_shape))
        centres = None
        if self._centres is not None:
            centres = self._centres.reshape(*self.scan_shape, 2).copy()
        parameters = {
            "n_clusters": self.n_clusters,
            "mask": self.mask_spec.text,
            "live_mask": self.mask.describe(),
            "normalize": self.normalize,
            "transform": self.transform,
            "align": self.align_method,
            "backend_requested": self.backend_name,
            "random_state": self.random_state,
            "batch_size": self._batch,
        }
        extra = {"alignment": self.alignment} if self.alignment is not None else {}
        return ClusterResult(
            labels=self._labels.reshape(self.scan_shape).copy(),
            centroids=self._expand(self.backend.to_host(self._km.cluster_centers_)),
            mean_patterns=means,
            cluster_sizes=sizes,
            inertia=float(self._distances[:n].sum(dtype=np.float64)),
            n_iter=int(self._km.n_steps_),
            backend=self.backend.name,
            backend_description=self.backend.describe(),
            parameters=parameters,
            mask=self.mask,
            timings={k: round(v, 4) for k, v in self.timings.items()},
            scan_axes=scan_axes,
            detector_axes=detector_axes,
            source="<live frames>",
            centres=centres,
            extra=extra,
        )

    def close(self) -> None:
        """Free the stored frames (and the memory-mapped file of a large scan)."""
        self._store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _beam_pattern(raw: np.ndarray) -> np.ndarray:
    """The pattern ``mask="auto"`` and the alignment look for the beam in: the mean of the first
    frames, unless a Bragg spot outshines the direct beam there.

    The first frames are the first scan rows, often one or two grains, and a strong spot of
    those grains can outshine the beam in their mean (it does in synthetic scans with a thick
    top edge). The direct beam is in every frame, a grain's spots only in its frames, so the
    BEAM_PERCENTILE-th percentile over the frames keeps the beam and drops the spots; but it
    also drops the beam's faint halo, which the mask must cover. So the beam is located in the
    percentile, and its size measured in the mean: the mean itself when its beam is the same,
    else the mean with everything farther than the largest mask the beam can get set to the
    background, else (a spot right next to the beam) the percentile.
    """
    from gpu4d.masks import AUTO_MARGIN_PX, AUTO_MAX_FACTOR, find_beam

    pick = np.unique(np.linspace(0, len(raw) - 1, min(len(raw), BEAM_FRAMES)).round().astype(int))
    mean = raw[pick].mean(axis=0, dtype=np.float64)
    robust = np.percentile(raw[pick], BEAM_PERCENTILE, axis=0)
    try:
        beam = find_beam(robust)
    except InputError:
        return mean  # no beam in the percentile (e.g. a beam that moves a lot): the mean's
    centre, radius = np.asarray(beam["centre"]), beam["half_max_radius"]

    def same_beam(pattern) -> bool:
        return bool(np.hypot(*(np.asarray(find_beam(pattern)["centre"]) - centre)) <= radius)

    if same_beam(mean):
        return mean
    distance = np.hypot(*(np.indices(mean.shape) - centre[:, None, None]))
    windowed = np.where(distance <= AUTO_MAX_FACTOR * radius + AUTO_MARGIN_PX + 1.0, mean, np.median(mean))
    return windowed if same_beam(windowed) else robust


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name}={value!r} should be an integer >= 1.")
    return int(value)
