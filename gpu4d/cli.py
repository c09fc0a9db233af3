"""The ``gpu4d`` command line: cluster, demo, info."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import Gpu4dError, InputError, OutputError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_ERROR
    try:
        return args.run(args) or 0
    except Gpu4dError as exc:
        print(f"gpu4d: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_ERROR)
    except KeyboardInterrupt:
        print("gpu4d: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``gpu4d: error:`` line, like every other gpu4d error."""

    def error(self, message):
        self.exit(EXIT_ERROR, f"gpu4d: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpu4d", description="Cluster 4D-STEM scans into maps of their regions."
    )
    commands = parser.add_subparsers(title="commands")

    cluster = commands.add_parser("cluster", help="cluster one scan with KMeans")
    cluster.add_argument("file", help="4D-STEM file: .blo, .mib (+.hdr), .hspy, .zspy, .npy, ...")
    cluster.add_argument("-k", "--n-clusters", type=int, required=True, help="number of clusters")
    add_preprocessing_options(cluster)
    add_run_options(cluster)
    cluster.set_defaults(run=run_cluster)

    demo = commands.add_parser("demo", help="cluster the built-in synthetic scan and score it")
    demo.add_argument("--out", default="gpu4d-demo", help="results folder (default: gpu4d-demo)")
    demo.add_argument("--backend", choices=("cpu", "gpu", "auto"), default="auto")
    demo.add_argument("--drift", type=float, default=0.0, help="descan drift in pixels (default 0)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the synthetic scan")
    demo.set_defaults(run=run_demo)

    info = commands.add_parser("info", help="versions and which backends can run here")
    info.set_defaults(run=run_info)
    return parser


def add_preprocessing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mask",
        default="auto",
        help="auto | none | R | CY,CX,R | annulus:R1,R2 | MASK.npy (True = masked); default auto",
    )
    parser.add_argument("--normalize", choices=("max", "l2", "sum", "none"), default="max")
    parser.add_argument("--transform", choices=("none", "sqrt", "log1p"), default="none")
    parser.add_argument(
        "--align",
        nargs="?",
        const=True,
        default=None,
        metavar="METHOD",
        help="align patterns on the direct beam first (com | xcorr | fit; no value: the default)",
    )
    parser.add_argument("--backend", choices=("cpu", "gpu", "auto"), default="cpu")
    parser.add_argument("--batch-size", type=int, default=None, help="patterns per batch")
    parser.add_argument("--reader", default=None, help="RosettaSciIO reader, if the format is ambiguous")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="KMeans random state (default 0)")
    parser.add_argument("--n-init", type=int, default=3, help="KMeans initialisations (default 3)")
    parser.add_argument("--max-iter", type=int, default=300)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--out", required=True, help="results folder (must not exist, see --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def cluster_kwargs(args) -> dict:
    """Keyword arguments of ``gpu4d.cluster`` from parsed CLI options."""
    return {
        "mask": args.mask,
        "normalize": args.normalize,
        "transform": args.transform,
        "align": args.align,
        "backend": args.backend,
        "batch_size": args.batch_size,
        "reader": args.reader,
        "random_state": args.seed,
        "n_init": args.n_init,
        "max_iter": args.max_iter,
        "tol": args.tol,
        "progress": not args.quiet,
    }


def run_cluster(args) -> int:
    from .atomic import check_output_folder
    from .pipeline import cluster

    check_output_folder(args.out, args.overwrite)
    start = time.perf_counter()
    result = cluster(args.file, args.n_clusters, **cluster_kwargs(args))
    result.save(args.out, overwrite=args.overwrite, figures=not args.no_figures)
    print_result(result, args.out, time.perf_counter() - start)
    return 0


def print_result(result, out, seconds: float) -> None:
    sizes = ", ".join(f"{i}: {n}" for i, n in enumerate(result.cluster_sizes))
    mask = result.mask.describe()
    mask_text = mask["kind"]
    if "centre" in mask:
        mask_text += f" (centre {mask['centre'][0]:.1f}, {mask['centre'][1]:.1f}"
        mask_text += f", radius {mask['radius']:.1f})" if "radius" in mask else ")"
    print(f"{result.source}: {result.labels.shape[0]}x{result.labels.shape[1]} scan, k = {result.n_clusters}")
    print(f"  backend  {result.backend_description}")
    print(f"  mask     {mask_text}")
    print(f"  clusters {sizes}")
    print(f"  inertia  {result.inertia:.6g} after {result.n_iter} iterations")
    stages = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
    print(f"  time     {seconds:.2f} s ({stages})")
    print(f"  results  {out}")


def run_demo(args) -> int:
    from sklearn.metrics import adjusted_rand_score

    from .atomic import check_output_folder
    from .pipeline import cluster
    from .synthetic import make_scan

    out = Path(args.out)
    overwrite = _is_previous_demo(out)
    if not overwrite and out.is_dir():
        # the demo has no --overwrite: say what it does replace instead of suggesting one
        raise OutputError(
            f"results folder '{out}' already exists and is not the output of an earlier "
            "gpu4d demo; choose another --out"
        )
    check_output_folder(out, overwrite)
    print("generating the synthetic scan (64x64 positions, 128x128 detector) ...", file=sys.stderr)
    scan = make_scan(scan_shape=(64, 64), detector_shape=(128, 128), drift_px=args.drift, seed=args.seed)
    start = time.perf_counter()
    result = cluster(
        _demo_dataset(scan, args.seed),
        scan.n_regions,
        mask="auto",
        align=True if args.drift else None,
        backend=args.backend,
        progress=True,
    )
    ari = adjusted_rand_score(scan.labels.ravel(), result.labels.ravel())
    result.extra["demo"] = {"seed": args.seed, "drift_px": args.drift, "ari_vs_truth": ari}
    result.save(out, overwrite=overwrite)
    print_result(result, out, time.perf_counter() - start)
    print(f"  ARI against the ground truth: {ari:.3f} ({scan.n_regions} regions)")
    return 0


def _demo_dataset(scan, seed: int):
    """The synthetic scan as a Dataset with its calibrations and a name for the figures."""
    from .dataset import Axis, Dataset

    (ny, nx), (qy, qx) = scan.data.shape[:2], scan.data.shape[2:]
    step, q = scan.scan_step_nm, scan.detector_scale
    return Dataset(
        scan.data,
        (Axis("y", ny, step, 0.0, "nm"), Axis("x", nx, step, 0.0, "nm")),
        (Axis("qy", qy, q, -q * qy / 2, "1/nm"), Axis("qx", qx, q, -q * qx / 2, "1/nm")),
        f"synthetic demo scan (seed {seed})",
    )


def _is_previous_demo(folder: Path) -> bool:
    """The demo may replace its own earlier output, and nothing else."""
    try:
        return "demo" in json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return False


def run_info(args) -> int:
    from . import __version__
    from .backend import backend_report

    versions = {"gpu4d": __version__}
    for module in ("numpy", "numba", "sklearn", "hyperspy", "rsciio", "cupy", "cuml"):
        versions[module] = _version_of(module)
    print("versions:")
    for name, version in versions.items():
        print(f"  {name:10s} {version}")
    print("backends:")
    for name, status in backend_report().items():
        print(f"  {name:10s} {status}")
    return 0


def _version_of(module: str) -> str:
    import importlib
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return "not installed"
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as exc:  # noqa: BLE001 - report, don't crash, on a broken install
        return f"installed but fails to import ({type(exc).__name__})"


if __name__ == "__main__":
    sys.exit(main())
