"""The live acquisition loop: receive frames, cluster them as they come, show and save progress.

A receiving thread reads the source (``merlin://HOST:PORT``, a ``.mib`` being written, any
iterable of frames) and copies every frame into the scan's frame store, a preallocated
``(n, qy, qx)`` array (memory-mapped for large scans): that store is the buffer between the
receiver and the clustering loop, so a frame is never dropped. The loop in the calling thread
preprocesses and clusters what has arrived, batch by batch (:class:`LiveClusterer`), keeps a
terminal progress bar, and every few seconds writes a snapshot into the results folder:
``labels.npy`` (-1 where no frame has arrived yet), ``labels.png``, ``centroids.png`` and
``progress.json`` (frames received and processed, rate, lag), each atomically.

When the scan ends the centroids are refined by Lloyd over every frame and the folder receives
the same result files as ``gpu4d cluster`` (plus ``progress.json``). If it ends early, the
partial result (live labels, -1 where no frame arrived) is saved instead.

Given a model (``model=``, a results folder or a ``ClusterResult``), the loop classifies the
frames against it instead (:class:`~gpu4d.live.classifier.LiveClassifier`: the model's
preprocessing, nearest centroid with confidence, no refitting) and the folder receives what
``gpu4d classify`` writes.

Exit codes (``LiveOutcome.exit_code``, returned by ``gpu4d live``)
-------------------------------------------------------------------
0
    The whole scan arrived; the refined result is saved.
2
    An error: a malformed header or frame (the message names it and the frame index), an
    unreachable source, a bad argument. What had arrived is saved.
3
    Incomplete: the stream ended (disconnect, stop, idle timeout) before every frame of the
    scan arrived. The partial result is saved; ``progress.json`` and ``summary.json`` say how
    many frames arrived.
130
    Interrupted (Ctrl-C). The partial result is saved.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpu4d.errors import Gpu4dError, InputError
from gpu4d.live._base import StreamIncomplete
from gpu4d.live.classifier import LiveClassifier
from gpu4d.live.clusterer import LiveClusterer

__all__ = [
    "EXIT_ERROR",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "LiveOutcome",
    "LiveRun",
    "run_live",
]

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130
_EXIT_CODES = {"complete": EXIT_OK, "error": EXIT_ERROR, "incomplete": EXIT_INCOMPLETE,
               "interrupted": EXIT_INTERRUPTED}

#: The loop wakes at least this often (seconds) to update the display and the live labels.
TICK_S = 0.1
#: Display refresh period (seconds).
DISPLAY_S = 0.5
#: Frames per batch asked of the source.
RECEIVE_BATCH = 512
#: Snapshot figures (matplotlib) may take at most this share of the loop's time; labels.npy
#: and progress.json are written at every snapshot.
FIGURE_SHARE = 0.1
#: The rate shown is over this many seconds.
RATE_WINDOW_S = 3.0


@dataclass
class LiveOutcome:
    """How a live run ended.

    Attributes
    ----------
    status : {"complete", "incomplete", "error", "interrupted"}
    exit_code : int
        0, 3, 2 or 130 (see the module docstring).
    message : str or None
        Why the run did not complete (one line), None when it did.
    result : ClusterResult or None
        The refined (complete) or partial result; None when too few frames arrived.
    progress : dict
        The final ``progress.json``.
    out : pathlib.Path or None
        The results folder, when one was written.
    """

    status: str
    exit_code: int
    message: str | None
    result: object
    progress: dict
    out: Path | None


class LiveRun:
    """Cluster a scan from a live source, with snapshots, a progress bar and clean stops.

    Parameters
    ----------
    source : str, path, FrameSource, array or iterable
        What :func:`gpu4d.live.open_source` opens: ``"merlin://HOST:PORT"``, a ``.mib`` (being
        written), a source, an array or an iterable of frames or batches.
    n_clusters : int, optional
        k; required without a model, else the model's (another value is an InputError).
    scan_shape : (int, int)
        ``(ny, nx)``; ``ny * nx`` frames are expected (a Merlin or ``.mib`` source stops after
        them; further frames of an iterable are not read).
    model : path or ClusterResult, optional
        Classify the frames with this model (``gpu4d.load_result``) instead of clustering them:
        see :class:`~gpu4d.live.classifier.LiveClassifier`. Only ``backend``, ``batch_size``,
        ``spill_dir`` and ``max_in_memory_bytes`` apply then; ``refine`` does nothing. Frames
        whose detector shape is not the model's end the run with an error naming both.
    out : path, optional
        Results folder: snapshots while running, then the final result. None: nothing written.
    overwrite : bool
        Replace an existing results folder.
    figures : bool
        Draw ``labels.png`` and ``centroids.png`` in snapshots and the final result.
    snapshot_every_s : float
        Seconds between snapshots.
    display : bool
        Show a progress bar (tqdm) on stderr.
    max_lag_frames : int, optional
        How far (frames) the receiver may run ahead of the clustering before it waits for it
        (the stream then backs up in the sender). Default: the whole scan, i.e. the receiver
        never waits, frames queue in the frame store.
    timeout_s : float
        Idle time (no data) after which a Merlin stream or a growing ``.mib`` is taken to have
        ended; also the time allowed to connect.
    refine : bool
        Refine with Lloyd over every frame when the whole scan arrived.
    max_iter, tol : Lloyd's parameters for the refinement (tol 0: until no label changes).
    callback : callable, optional
        Called as ``callback(run, progress)`` by the loop after every step (for notebooks and
        tests); it runs in the loop's thread.
    warm_up : bool
        Before connecting, run a small synthetic scan through the same processing, so that the
        compiled kernels are loaded before the first frames arrive (``LiveClusterer.warm_up``).
    **clusterer_options
        ``mask``, ``normalize``, ``transform``, ``align``, ``backend``, ``random_state``,
        ``batch_size``, ``init_frames``, ``spill_dir``, ``max_in_memory_bytes``: see
        :class:`LiveClusterer`.

    Examples
    --------
    >>> run = LiveRun("merlin://127.0.0.1:6342", 5, (256, 256), out="live-out")  # doctest: +SKIP
    >>> outcome = run.run()                                                       # doctest: +SKIP
    >>> outcome.exit_code, outcome.result.labels.shape                            # doctest: +SKIP
    (0, (256, 256))

    Or drive the loop yourself and look at the labels as they grow:

    >>> for progress in run:                                                      # doctest: +SKIP
    ...     show(run.clusterer.labels)
    >>> run.outcome                                                               # doctest: +SKIP
    """

    def __init__(
        self,
        source,
        n_clusters: int | None = None,
        scan_shape: tuple[int, int] | None = None,
        *,
        model=None,
        out=None,
        overwrite: bool = False,
        figures: bool = True,
        snapshot_every_s: float = 5.0,
        display: bool = False,
        max_lag_frames: int | None = None,
        timeout_s: float = 10.0,
        refine: bool = True,
        max_iter: int = 300,
        tol: float = 0.0,
        callback=None,
        warm_up: bool = True,
        **clusterer_options,
    ) -> None:
        if scan_shape is None:
            raise InputError("scan_shape=(ny, nx) is required: a live source does not say it.")
        if model is None:
            if n_clusters is None:
                raise InputError("n_clusters is required without a model.")
            self.clusterer = LiveClusterer(n_clusters, scan_shape, **clusterer_options)
        else:
            self.clusterer = _classifier(model, n_clusters, scan_shape, clusterer_options)
        self.model = model
        n = self.clusterer.n_frames
        if max_lag_frames is None:
            max_lag_frames = n
        if isinstance(max_lag_frames, bool) or not isinstance(max_lag_frames, int) or max_lag_frames < 1:
            raise InputError(f"max_lag_frames={max_lag_frames!r} should be an integer >= 1.")
        if not snapshot_every_s > 0:
            raise InputError(f"snapshot_every_s={snapshot_every_s!r} should be > 0.")
        # the initial buffer must fit, or the receiver would wait for a loop that waits for it
        self.max_lag_frames = max(int(max_lag_frames), min(n, self.clusterer.init_frames + 1))
        self.out = None if out is None else Path(out)
        self.overwrite = overwrite
        self.figures = figures
        self.snapshot_every_s = float(snapshot_every_s)
        self.display = display
        self.refine = refine
        self.max_iter, self.tol = max_iter, tol
        self.callback = callback
        self.warm_up = warm_up
        self._source_spec = source
        self._mask_spec = clusterer_options.get("mask")
        self._timeout_s = float(timeout_s)
        self.source = None
        self.source_name = _describe(source)
        self.outcome: LiveOutcome | None = None

        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._receiving = False
        self._end: BaseException | None = None  # what ended the receiver, if it raised
        self._error: BaseException | None = None  # an error of the loop itself
        self._started = False
        self._stalled = False
        self._t0 = self._t_first = None
        self._cpu0 = self._cpu_live = None
        self._last_snapshot = self._last_display = self._next_figures = 0.0
        self._figure_thread = None
        self._t_live_end = None
        self.snapshots = 0
        self.max_lag_seen = 0
        self.receiver_waits = 0
        self.receiver_wait_s = 0.0
        self._history: deque = deque()
        self._bar = None
        self.status = "waiting"

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> LiveOutcome:
        """Run until the scan ends, the stream fails or Ctrl-C; save; return the outcome.

        Raises
        ------
        OutputError
            ``out`` exists (without ``overwrite``) or cannot be written; checked first.
        InputError
            Bad arguments (raised by the constructor already).
        """
        try:
            self.start()
            while not self.done:
                self.step()
        except KeyboardInterrupt:
            return self.finish(interrupted=True)
        return self.finish()

    def __iter__(self):
        """Step the loop, yielding the progress dict after each step; finishes at the end.

        A KeyboardInterrupt in the loop body is yours to catch: call
        ``run.finish(interrupted=True)`` to save what arrived.
        """
        self.start()
        while not self.done:
            yield self.step()
        self.finish()

    def start(self) -> None:
        """Prepare the results folder, open the source and start receiving (once)."""
        if self._started:
            return
        self._started = True
        self._t0 = time.monotonic()
        self._cpu0 = time.process_time()
        if self.out is not None:
            self._prepare_out()
        if self.warm_up:
            self.clusterer.warm_up()
        try:
            self.source = self._open_source()
            shape = getattr(self.source, "detector_shape", None)
            if shape is not None and isinstance(self.clusterer, LiveClassifier):
                self.clusterer.check_detector_shape(shape)  # known before the first frame
        except Gpu4dError as exc:
            self._error = exc
            return
        self._receiving = True
        self._thread = threading.Thread(target=self._receive, name="gpu4d-live-receiver", daemon=True)
        self._thread.start()
        if self.display:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.clusterer.n_frames, desc="live", unit="frame",
                             file=sys.stderr, dynamic_ncols=True, leave=True)

    @property
    def done(self) -> bool:
        """True when nothing more will be received and everything received was processed."""
        if self._error is not None or self._stalled:
            return True
        c = self.clusterer
        return not self._receiving and c.frames_processed >= c.frames_received

    def step(self) -> dict:
        """Process one batch of what has arrived (or wait up to TICK_S for frames); refresh
        the display, write a snapshot when due; return the progress."""
        c = self.clusterer
        with self._cond:
            if self._receiving and c.frames_received <= c.frames_processed:
                self._cond.wait(TICK_S)
            ended = not self._receiving
        try:
            # once the stream has ended, a scan shorter than the initial buffer starts anyway
            n = c.process(max_frames=c._batch, final=ended)
        except Gpu4dError as exc:
            self._error = exc
            n = 0
        if ended and not n and c.frames_processed < c.frames_received:
            self._stalled = True  # fewer frames than clusters: finish() reports it
        if n:
            with self._cond:
                self._cond.notify_all()  # room in the buffer for a waiting receiver
        elif c.stale_frames and c.frames_received == c.frames_processed:
            c.relabel(c._batch)  # idle: refresh labels made before the last re-seed
        self.status = "running" if c.frames_received else "waiting"
        progress = self.progress()
        now = time.monotonic()
        if now - self._last_display >= DISPLAY_S:
            self._show(progress)
            self._last_display = now
        if self.out is not None and now - self._last_snapshot >= self.snapshot_every_s:
            self.snapshot()
        if self.callback is not None:
            self.callback(self, progress)
        return progress

    # -- receiving --------------------------------------------------------------------------
    def _open_source(self):
        from gpu4d.live.sources import open_source

        spec = self._source_spec
        n = self.clusterer.n_frames
        if isinstance(spec, str) and spec.startswith("merlin://"):
            return open_source(spec, n_frames=n, timeout_s=self._timeout_s)
        if isinstance(spec, (str, os.PathLike)):
            return open_source(spec, n_frames=n, idle_timeout_s=self._timeout_s)
        return open_source(spec)

    def _receive(self) -> None:
        """The receiving thread: copy batches into the frame store, waiting while the loop is
        ``max_lag_frames`` behind."""
        c = self.clusterer
        try:
            for batch in self.source.batches(RECEIVE_BATCH):
                if self._stop.is_set():
                    break
                self._wait_for_room(len(batch.frames))
                if self._stop.is_set():
                    break
                c.receive(batch)
                if self._t_first is None:
                    self._t_first = time.monotonic()
                with self._cond:
                    self.max_lag_seen = max(self.max_lag_seen, c.frames_received - c.frames_processed)
                    self._cond.notify_all()
                if c.complete:
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which reports it
            self._end = exc
        finally:
            with self._cond:
                self._receiving = False
                self._cond.notify_all()

    def _wait_for_room(self, n: int) -> None:
        c = self.clusterer
        with self._cond:
            lag = c.frames_received - c.frames_processed
            if lag == 0 or lag + n <= self.max_lag_frames:
                return
            self.receiver_waits += 1
            t = time.monotonic()
            while not self._stop.is_set():
                lag = c.frames_received - c.frames_processed
                if lag == 0 or lag + n <= self.max_lag_frames:
                    break
                self._cond.wait(TICK_S)
            self.receiver_wait_s += time.monotonic() - t

    def _stop_receiver(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            if self._thread.is_alive() and self.source is not None:
                self.source.close()  # unblock a receiver waiting on an idle stream
                self._thread.join(timeout=self._timeout_s + 1.0)
        if self.source is not None:
            self.source.close()

    # -- reporting --------------------------------------------------------------------------
    def progress(self) -> dict:
        """What ``progress.json`` holds: counters, rate, lag, status."""
        c = self.clusterer
        now = time.monotonic()
        received, processed = c.frames_received, c.frames_processed
        history = self._history
        history.append((now, processed))
        while len(history) > 2 and now - history[0][0] > RATE_WINDOW_S:
            history.popleft()
        end = now if self._t_live_end is None else self._t_live_end
        since = None if self._t_first is None else max(end - self._t_first, 1e-9)
        span = now - history[0][0]
        recent = (processed - history[0][1]) / span if span > 0 else 0.0
        return {
            "status": self.status,
            "source": self.source_name,
            "scan_shape": list(c.scan_shape),
            "n_clusters": c.n_clusters,
            "frames_expected": c.n_frames,
            "frames_received": received,
            "frames_processed": processed,
            "lag_frames": received - processed,
            "max_lag_frames_seen": self.max_lag_seen,
            "max_lag_frames_allowed": self.max_lag_frames,
            "receiver_waits": self.receiver_waits,
            "receiver_wait_s": round(self.receiver_wait_s, 3),
            "rate_fps": round(processed / since, 1) if since else 0.0,
            "receive_rate_fps": round(received / since, 1) if since else 0.0,
            "recent_rate_fps": round(recent, 1),
            "elapsed_s": round(now - self._t0, 3) if self._t0 is not None else 0.0,
            # CPU seconds of this process (all its threads) until the scan ended
            "cpu_s": round(self._cpu_live if self._cpu_live is not None
                           else time.process_time() - (self._cpu0 or 0.0), 3),
            "reseeds": c.n_reseeds,
            "snapshots": self.snapshots,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def _show(self, progress: dict) -> None:
        bar = self._bar
        if bar is None:
            return
        bar.n = progress["frames_processed"]
        bar.set_postfix_str(
            f"received {progress['frames_received']}, lag {progress['lag_frames']}, "
            f"{progress['recent_rate_fps']:.0f} frames/s", refresh=False
        )
        bar.refresh()

    def snapshot(self) -> None:
        """Write labels.npy, labels.png, centroids.png and progress.json into ``out`` now."""
        from gpu4d.atomic import atomic_save_npy

        c = self.clusterer
        state = c.state()
        self.snapshots += 1
        atomic_save_npy(self.out / "labels.npy", state.labels)
        now = time.monotonic()
        drawing = self._figure_thread is not None and self._figure_thread.is_alive()
        if self.figures and state.centroids is not None and now >= self._next_figures and not drawing:
            ny, nx = c.scan_shape
            title = f"{Path(self.source_name).name}: {state.frames_processed} of {ny * nx} frames, k = {c.n_clusters}"
            # drawn beside the processing loop (matplotlib's object API, no pyplot): a pattern
            # grid takes ~1 s of CPU, which blocked clustering and halved the live rate
            self._figure_thread = threading.Thread(
                target=self._draw_figures,
                args=(np.array(state.labels), np.array(state.centroids), c.n_clusters, title),
                name="gpu4d-live-figures", daemon=True,
            )
            self._figure_thread.start()
        self._write_progress()
        self._last_snapshot = time.monotonic()

    def _draw_figures(self, labels, centroids, n_clusters: int, title: str) -> None:
        """labels.png and centroids.png of a snapshot (in the figure thread)."""
        from gpu4d.figures import plot_label_map, plot_pattern_grid

        start = time.monotonic()
        plot_label_map(labels, self.out / "labels.png", n_labels=n_clusters, title=title)
        plot_pattern_grid(centroids, self.out / "centroids.png", title="Cluster centroids (live)")
        # redraw no more often than FIGURE_SHARE of the time allows
        self._next_figures = time.monotonic() + (time.monotonic() - start) / FIGURE_SHARE

    def _wait_for_figures(self) -> None:
        if self._figure_thread is not None:
            self._figure_thread.join()

    def _write_progress(self) -> None:
        from gpu4d.atomic import atomic_write_json

        atomic_write_json(self.out / "progress.json", self.progress())

    def _prepare_out(self) -> None:
        """Check the folder and start it empty (an old one is replaced only with overwrite)."""
        from gpu4d.atomic import result_folder

        with result_folder(self.out, overwrite=self.overwrite, inputs=self._input_files()):
            pass

    def _input_files(self) -> list[str]:
        """A .mib being written (and a model folder) is an input: the results folder must
        never hold it."""
        candidates = [self._source_spec, self._mask_spec, self.model]
        return [os.fspath(c) for c in candidates
                if isinstance(c, (str, os.PathLike)) and os.fspath(c) and Path(c).exists()]

    # -- the end ----------------------------------------------------------------------------
    def finish(self, *, interrupted: bool = False) -> LiveOutcome:
        """Stop receiving, process what arrived, refine or keep the partial result, save."""
        if self.outcome is not None:
            return self.outcome
        self._t_live_end = time.monotonic()
        self._cpu_live = None if self._cpu0 is None else time.process_time() - self._cpu0
        self._stop_receiver()
        self._wait_for_figures()  # a snapshot's figures must not land after the final ones
        c = self.clusterer
        status, message = self._ending(interrupted)
        self.status = "finishing"
        if self.out is not None:
            self._write_progress()  # the refinement can take a while: say so
        self._show(self.progress())
        result = None
        try:
            result = c.finish(
                refine=self.refine and status == "complete", max_iter=self.max_iter, tol=self.tol,
                progress=self.display, source=self.source_name,
                extra={"status": status, "message": message},
            )
        except KeyboardInterrupt:
            status, message = "interrupted", "interrupted while finishing"
            try:
                result = c.finish(refine=False, source=self.source_name,
                                  extra={"status": status, "message": message})
            except Gpu4dError:
                result = None
        except Gpu4dError as exc:
            if status == "complete":
                status = "error"
            if not message:
                message = str(exc)
            elif c.frames_received:  # (with no frame at all, the first reason says it all)
                message = f"{message}; {exc}"
        self.status = status
        progress = self.progress()
        progress.update(message=message, exit_code=_EXIT_CODES[status],
                        finish_s=round(time.monotonic() - self._t_live_end, 3))
        if self._bar is not None:
            self._show(progress)
            self._bar.close()
        out = self._save(result, progress) if self.out is not None else None
        c.close()
        self.outcome = LiveOutcome(status, _EXIT_CODES[status], message, result, progress, out)
        if self._end is not None and not isinstance(self._end, (Gpu4dError, KeyboardInterrupt)):
            raise self._end  # a bug, not a stream problem: after saving, show its traceback
        return self.outcome

    def _ending(self, interrupted: bool) -> tuple[str, str | None]:
        c = self.clusterer
        end = self._end if self._error is None else self._error
        if interrupted or isinstance(end, KeyboardInterrupt):
            return "interrupted", f"interrupted after {c.frames_received} of {c.n_frames} frames"
        if isinstance(end, StreamIncomplete):
            return "incomplete", str(end)
        if isinstance(end, Gpu4dError):
            return "error", str(end)
        if end is not None:
            return "error", f"{type(end).__name__}: {end}"
        if not c.complete:
            return "incomplete", (
                f"{self.source_name}: the stream ended after {c.frames_received} of {c.n_frames} frames"
            )
        return "complete", None

    def _save(self, result, progress: dict) -> Path:
        from gpu4d.atomic import atomic_save_npy, atomic_write_json, result_folder
        from gpu4d.outputs import write_result_files

        with result_folder(self.out, overwrite=True, inputs=self._input_files()) as tmp:
            if result is not None:
                write_result_files(result, tmp, figures=self.figures)
            else:
                atomic_save_npy(tmp / "labels.npy", self.clusterer.labels)
            atomic_write_json(tmp / "progress.json", progress)
        return self.out


def run_live(source, n_clusters: int | None, scan_shape: tuple[int, int], **options) -> LiveOutcome:
    """Cluster (or, with ``model=``, classify) a scan from a live source; see :class:`LiveRun`."""
    return LiveRun(source, n_clusters, scan_shape, **options).run()


#: LiveRun options that a model replaces (its own preprocessing; nothing is fitted).
_MODEL_FIXES = ("mask", "normalize", "transform", "align", "random_state", "init_frames")


def _classifier(model, n_clusters, scan_shape, options: dict) -> LiveClassifier:
    """The LiveClassifier of ``LiveRun(model=...)``, or an InputError for what contradicts it."""
    for name in _MODEL_FIXES:
        if name in options:
            raise InputError(f"{name}={options[name]!r} does not apply with a model: the model's is used.")
    classifier = LiveClassifier(model, scan_shape, **options)
    if n_clusters is not None and n_clusters != classifier.n_clusters:
        raise InputError(
            f"n_clusters={n_clusters} differs from the model's n_clusters={classifier.n_clusters} "
            f"({classifier.model_name}); leave it out or give {classifier.n_clusters}."
        )
    return classifier


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "_name", None)
    return name if isinstance(name, str) else f"<{type(source).__name__}>"

