"""Write a ClusterResult to a folder: arrays, summary, a HyperSpy file and figures, atomically."""

from __future__ import annotations

import warnings
from pathlib import Path

from .atomic import atomic_save_npy, atomic_write_json, result_folder


def write_result(result, folder: Path, *, overwrite: bool = False, figures: bool = True) -> Path:
    """Write ``result`` into ``folder``; all files appear at once, or none on failure."""
    with result_folder(folder, overwrite=overwrite, inputs=input_paths(result)) as tmp:
        write_result_files(result, tmp, figures=figures)
    return Path(folder)


def input_paths(result) -> list[str]:
    """The files a result was made from (the scan, a mask file, the model folder it was
    classified with): a results folder never holds them."""
    candidates = [result.source, result.parameters.get("mask"), result.extra.get("model")]
    return [c for c in candidates if isinstance(c, str) and c and Path(c).exists()]


def write_result_files(result, folder: Path, *, figures: bool = True) -> None:
    """Write the result files into an existing (temporary) folder."""
    atomic_save_npy(folder / "labels.npy", result.labels)
    atomic_save_npy(folder / "centroids.npy", result.centroids)
    atomic_save_npy(folder / "mean_patterns.npy", result.mean_patterns)
    atomic_save_npy(folder / "mask.npy", result.mask.masked)
    if result.centres is not None:
        atomic_save_npy(folder / "centres.npy", result.centres)
    if result.confidence is not None:
        atomic_save_npy(folder / "confidence.npy", result.confidence)
    atomic_write_json(folder / "summary.json", result.summary())
    _write_hyperspy(result, folder / "clusters.hspy")
    if figures:
        write_figures(result, folder)


def _write_hyperspy(result, path: Path) -> None:
    """One .hspy file: the centroids signal, with labels and mean patterns in its metadata."""
    signals = result.to_signals()
    main = signals.pop("centroids")
    main.metadata.General.title = "gpu4d clusters"
    for name, signal in signals.items():
        main.metadata.set_item(f"gpu4d.{name}", signal)
    main.metadata.set_item("gpu4d.summary_json", "see summary.json beside this file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # uncompressed: gzip took half of each write (26 of 51 ms on the seed-sized scan, 0.3 s of
        # an 11-k sweep) to make a 1.3 MB file 0.8 MB
        main.save(str(path), overwrite=True, compression=None)


def write_figures(result, folder: Path) -> None:
    """labels.png, centroids.png, mean_patterns.png, confidence.png (and centres.png after
    alignment): the figures ``ClusterResult.plot`` returns."""
    from .figures import save_figure
    from .views import result_figure, result_figure_names

    for name in result_figure_names(result):
        save_figure(result_figure(result, name), folder / f"{name}.png")
