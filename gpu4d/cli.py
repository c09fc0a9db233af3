"""The ``gpu4d`` command line: cluster, sweep, classify, live, demo, info."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .defaults import DEFAULT_ALIGN, DEFAULT_TRANSFORM
from .errors import Gpu4dError, InputError, OutputError
from .engine.inline import parse_memory_budget
from .io.scanshape import parse_scan_shape

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(_align_without_value(list(sys.argv[1:] if argv is None else argv)))
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_ERROR
    from .cli_warnings import one_line_warnings

    try:
        with one_line_warnings():
            return args.run(args) or 0
    except Gpu4dError as exc:
        print(f"gpu4d: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_ERROR)
    except KeyboardInterrupt:
        print("gpu4d: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of stdout went away (gpu4d ... | head): nothing more to say, no traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _align_without_value(argv: list) -> list:
    """``--align`` takes an optional METHOD, so argparse would take a file named after it for
    the method (``gpu4d cluster --align scan.npy``): an existing path there is the file, and
    ``--align`` gets no value (written ``--align=``, read as the default method)."""
    for i, token in enumerate(argv[:-1]):
        following = str(argv[i + 1])
        if token == "--align" and not following.startswith("-") and Path(following).exists():
            argv[i] = "--align="
    return argv


def _align_option(value):
    """``--align`` as given (a method, "auto"), True for no value, False for "none"/"off"."""
    if value == "":
        return True
    if isinstance(value, str) and value.strip().lower() in ("none", "off", "no"):
        return False
    return value


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
    cluster.add_argument("file", help=FILE_HELP)
    cluster.add_argument("-k", "--n-clusters", type=int, required=True, help="number of clusters")
    add_scan_option(cluster)
    add_preprocessing_options(cluster)
    add_offset_option(cluster)
    add_run_options(cluster)
    add_scheduler_option(cluster)
    cluster.set_defaults(run=run_cluster)

    sweep = commands.add_parser(
        "sweep", help="cluster one scan for every k of a range, score the ks and suggest one"
    )
    sweep.add_argument("file", help=FILE_HELP)
    sweep.add_argument(
        "-k",
        "--ks",
        default=None,
        help="ks to try: START:STOP (both included), START:STOP:STEP or a list 2,4,6 "
        "(default 2:12, clipped to the number of patterns)",
    )
    add_scan_option(sweep)
    add_preprocessing_options(sweep)
    add_offset_option(sweep)
    add_run_options(sweep)
    add_sweep_options(sweep)
    add_scheduler_option(sweep)
    sweep.set_defaults(run=run_sweep)

    classify = commands.add_parser(
        "classify",
        help="classify a scan with a saved result as the model (no refitting)",
        description="Preprocess a scan as the model's scan was (its mask, transform, "
        "normalization and alignment) and assign every pattern to the model's nearest centroid. "
        "The detector must match the model's; the scan shape may differ.",
    )
    classify.add_argument("file", help=FILE_HELP)
    classify.add_argument("--model", required=True, metavar="DIR",
                          help="a results folder written by cluster (or one kNN subfolder of a sweep)")
    add_scan_option(classify)
    classify.add_argument("--backend", choices=("cpu", "gpu", "auto"), default="cpu",
                          help="cpu, gpu or auto (default cpu)")
    classify.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None,
                          help="patterns per batch (default: from the backend's memory)")
    classify.add_argument("--reader", default=None, help="RosettaSciIO reader name (default: from the file)")
    classify.add_argument("--out", required=True, help="results folder (must not exist, see --overwrite)")
    classify.add_argument("--overwrite", action="store_true",
                          help="replace an existing results folder, if it is an earlier gpu4d result")
    classify.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    classify.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    add_memory_budget_option(classify)
    classify.set_defaults(run=run_classify)

    demo = commands.add_parser("demo", help="cluster the built-in synthetic scan and score it")
    demo.add_argument("--out", default="gpu4d-demo", help="results folder (default: gpu4d-demo)")
    demo.add_argument("--backend", choices=("cpu", "gpu", "auto"), default="auto",
                      help="cpu, gpu, or auto: the GPU when usable, else the CPU (default auto)")
    demo.add_argument("--drift", type=_finite_float("--drift", minimum=0.0), default=0.0,
                      help="descan drift in pixels (default 0)")
    demo.add_argument("--seed", type=_seed, default=7, help="seed of the synthetic scan (default 7)")
    demo.set_defaults(run=run_demo)

    live = commands.add_parser(
        "live",
        help="cluster a scan while it is acquired (Merlin stream, growing .mib)",
        description="Cluster a scan while it is acquired: snapshots in --out every few seconds "
        "(labels.npy/.png, centroids.png, progress.json), then the refined result. Exit codes: "
        "0 complete, 2 error (malformed stream, bad argument; what arrived is saved), "
        "3 incomplete (the stream ended early; the partial result is saved), 130 Ctrl-C "
        "(the partial result is saved). The refinement is one Lloyd run from the live centroids "
        "(--n-init does not apply; --reader neither). With --model DIR the frames are classified "
        "against that saved result instead, as they arrive (its mask, preprocessing and centroids; "
        "no refitting), and the folder receives what 'gpu4d classify' writes.",
    )
    live.add_argument(
        "source", help="merlin://HOST[:PORT] (data port, default 6342) or a .mib being written"
    )
    live.add_argument("-k", "--n-clusters", type=int, default=None,
                      help="number of clusters (required without --model; default with it: the model's)")
    live.add_argument("--model", default=None, metavar="DIR",
                      help="classify the frames with this results folder's model as they arrive "
                      "(its mask, preprocessing and centroids; no refitting) instead of clustering "
                      "(default: none, cluster)")
    add_scan_option(live, required=True)
    add_preprocessing_options(live)
    add_run_options(live)
    live.add_argument("--init-frames", type=_positive_int("--init-frames"), default=None,
                      help="frames of the initial buffer (default max(20 k, 512))")
    live.add_argument("--snapshot-every", type=_finite_float("--snapshot-every", positive=True),
                      default=5.0, metavar="S",
                      help="seconds between snapshots (default 5)")
    live.add_argument("--max-lag", type=_positive_int("--max-lag"), default=None, metavar="FRAMES",
                      help="frames the receiver may get ahead of the clustering before it waits "
                      "(default: the whole scan; frames are never dropped)")
    live.add_argument("--timeout", type=_finite_float("--timeout", positive=True), default=10.0, metavar="S",
                      help="seconds without data before the stream counts as ended (default 10)")
    live.add_argument("--no-refine", action="store_true",
                      help="keep the live result; skip Lloyd over every frame at the end")
    live.add_argument("--spill-dir", default=None,
                      help="folder for the frames of scans too large for memory (default: temp)")
    # Lloyd from the live centroids until no label changes (tol 0 also spares scikit-learn a
    # variance pass over the whole feature matrix)
    live.set_defaults(run=run_live, tol=0.0)

    info = commands.add_parser("info", help="versions and which backends can run here")
    info.set_defaults(run=run_info)
    return parser


FILE_HELP = (
    "4D-STEM file: .blo, .mib (or its .hdr), .hspy, .zspy, .npy, ARINA *_master.h5, EMD/py4DSTEM "
    ".h5 and the other RosettaSciIO formats"
)


def add_scan_option(parser: argparse.ArgumentParser, required: bool = False) -> None:
    if required:
        parser.add_argument("--scan", required=True, metavar="NYxNX",
                            help="scan shape (rows x columns), e.g. 256x256")
    else:
        parser.add_argument(
            "--scan", default=None, metavar="NYxNX",
            help="scan shape (rows x columns), for data that records none (a list of frames, a "
            ".mib without its .hdr, an ARINA master file) or to re-grid the ny*nx patterns "
            "(default: the shape the file records)",
        )


def add_preprocessing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mask",
        default="auto",
        help="detector pixels left out: auto (the direct beam and its halo, plus dead and hot "
        "pixels) | none | R (a disc of radius R on the beam) | CY,CX,R | annulus:R1,R2 (keep "
        "R1 <= r <= R2 around the beam) | MASK.npy (True = masked) (default auto)",
    )
    parser.add_argument(
        "--normalize", choices=("max", "l2", "sum", "none"), default="max",
        help="per-pattern normalization after masking: max (the original method), l2, sum or "
        "none (default max)",
    )
    parser.add_argument(
        "--transform", choices=("none", "sqrt", "log1p"), default=DEFAULT_TRANSFORM,
        help="intensity transform before normalizing: sqrt (counting noise made uniform), none or "
        f"log1p (default {DEFAULT_TRANSFORM})",
    )
    parser.add_argument(
        "--align",
        nargs="?",
        const=True,
        default=DEFAULT_ALIGN,
        metavar="METHOD",
        help="align patterns on the direct beam first: auto (measure the descan, correct it when "
        "the beam wanders by >= 0.5 px) | fit | com | xcorr | none (no value: fit; default auto)",
    )
    parser.add_argument(
        "--backend", choices=("cpu", "gpu", "auto"), default="cpu",
        help="cpu, gpu (CUDA: cupy, numba-cuda, cuML) or auto (the GPU when usable, else the "
        "CPU) (default cpu)",
    )
    parser.add_argument("--batch-size", type=int, default=None,
                        help="patterns per batch (default: ~64 MiB of float32 work on the CPU, "
                        "sized from free memory on the GPU)")
    parser.add_argument("--reader", default=None,
                        help="RosettaSciIO reader name, if several readers claim the file "
                        "(default: chosen from the file)")


def add_offset_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--offset", default="auto", metavar="auto|none|COUNTS",
        help="counts subtracted from every pixel first, a detector's dark level (pedestal): auto "
        "(the level every pixel holds in every sampled frame; 0 for counting detectors) | none | "
        "a number >= 0 (default auto)",
    )
    parser.add_argument(
        "--keep-spikes", action="store_true",
        help="keep transient spikes (cosmic rays, X-ray hits): by default a pixel far brighter "
        "than in the four patterns around it is read as the brightest of those four",
    )
    parser.add_argument(
        "--blur", default="auto", metavar="auto|none|SIGMA",
        help="Gaussian blur of each pattern over the detector before the transform, pooling a "
        "spot's counts at low dose: auto (sigma = detector size / 128 px) | none | sigma in "
        "detector px (default auto; only the features are blurred)",
    )


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=_seed, default=0,
                        help="KMeans random state, 0..4294967295 (default 0)")
    parser.add_argument(
        "--n-init", type=int, default=None,
        help="KMeans initialisations (default: 10 for cluster, 3 per k for sweep)",
    )
    parser.add_argument("--max-iter", type=int, default=300,
                        help="largest number of KMeans (Lloyd) iterations (default 300)")
    parser.add_argument("--tol", type=_finite_float("--tol", minimum=0.0), default=1e-4,
                        help="KMeans stops when the centres move less than this, relative to "
                        "the data's variance (default 1e-4)")
    parser.add_argument("--out", required=True, help="results folder (must not exist, see --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing results folder, if it is an earlier gpu4d "
                        "result (default: refuse)")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_scheduler_option(parser: argparse.ArgumentParser) -> None:
    add_memory_budget_option(parser)
    parser.add_argument(
        "--scheduler", default=None, metavar="ADDRESS",
        help="run the passes over the scan on a Dask cluster, e.g. tcp://10.0.0.5:8786 (each worker "
        "opens the file itself, so it must see the same path; --backend is each worker's) "
        "(default: $DASK_SCHEDULER_ADDRESS if set, else in this process)",
    )


def add_memory_budget_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-budget", default=None, metavar="SIZE",
        help="host memory the raw scan may take to be kept between passes, e.g. 8G or 512M, so "
        "that later passes read memory, not the file (.blo and .npy are read directly and never "
        "copied; .mib, HDF5 formats, ARINA and dask arrays are kept when they fit) (default: 1G, "
        "at most a quarter of the free memory; 0: never)",
    )


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exact",
        action="store_true",
        help="full-dimensional KMeans for every k (slow; holds the whole feature matrix); "
        "default: KMeans on the leading principal components",
    )
    parser.add_argument(
        "--components",
        default="auto",
        help="principal coordinates KMeans runs on: auto (95%% of the sketch's variance, 16-64) "
        "or N (default auto)",
    )
    parser.add_argument(
        "--sketch-size", type=_positive_int("--sketch-size"), default=48,
        help="width of the randomized PCA (default 48)",
    )


def _seed(text: str) -> int:
    """argparse type of --seed: an integer numpy accepts as a seed."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid seed {text!r}: expected an integer in 0..{2**32 - 1}"
        ) from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"invalid seed {value}: expected an integer in 0..{2**32 - 1}")
    return value


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer >= 1")
        return value

    parse.__name__ = name
    return parse


def _finite_float(name: str, *, minimum: float | None = None, positive: bool = False):
    """argparse type: a finite number (NaN and inf refused), >= minimum or > 0."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = math.isfinite(value) and (minimum is None or value >= minimum) and (not positive or value > 0)
        if not ok:
            rule = "> 0" if positive else f">= {minimum:g}" if minimum is not None else "finite"
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a number {rule}")
        return value

    parse.__name__ = name
    return parse


def cluster_kwargs(args) -> dict:
    """Keyword arguments of ``gpu4d.cluster`` from parsed CLI options."""
    return {
        "mask": args.mask,
        "normalize": args.normalize,
        "transform": args.transform,
        "align": _align_option(args.align),
        **({"offset": args.offset, "spikes": not args.keep_spikes, "blur": args.blur} if hasattr(args, "offset") else {}),
        "backend": args.backend,
        "batch_size": args.batch_size,
        "reader": args.reader,
        "scan_shape": parse_scan_shape(args.scan, name="--scan"),
        "random_state": args.seed,
        **({} if args.n_init is None else {"n_init": args.n_init}),
        "max_iter": args.max_iter,
        "tol": args.tol,
        "progress": not args.quiet,
        **({"scheduler": args.scheduler} if getattr(args, "scheduler", None) is not None else {}),
        **({"memory_budget": parse_memory_budget(args.memory_budget, "--memory-budget")}
           if getattr(args, "memory_budget", None) is not None else {}),
    }


def input_files(args) -> list[str]:
    """The paths a run reads (scan, mask file): checked against --out before any work starts."""
    candidates = [getattr(args, name, None) for name in ("file", "source", "mask", "model")]
    return [c for c in candidates if isinstance(c, str) and c and Path(c).exists()]


def run_cluster(args) -> int:
    from .atomic import check_output_folder
    from .pipeline import cluster

    check_output_folder(args.out, args.overwrite, inputs=input_files(args))
    start = time.perf_counter()
    result = cluster(args.file, args.n_clusters, **cluster_kwargs(args))
    result.save(args.out, overwrite=args.overwrite, figures=not args.no_figures)
    print_result(result, args.out, time.perf_counter() - start)
    return 0


def run_classify(args) -> int:
    from .atomic import check_output_folder
    from .model import classify

    check_output_folder(args.out, args.overwrite, inputs=input_files(args))
    start = time.perf_counter()
    result = classify(
        args.model, args.file, batch_size=args.batch_size, backend=args.backend, reader=args.reader,
        scan_shape=parse_scan_shape(args.scan, name="--scan"), progress=not args.quiet,
        memory_budget=parse_memory_budget(args.memory_budget, "--memory-budget"),
    )
    result.save(args.out, overwrite=args.overwrite, figures=not args.no_figures)
    print_result(result, args.out, time.perf_counter() - start)
    print(f"  model    {args.model} (classified, no refitting: the inertia is the new scan's)")
    return 0


def run_sweep(args) -> int:
    from .atomic import check_output_folder
    from .sweep import parse_ks, sweep

    ks = None if args.ks is None else parse_ks(args.ks, name="-k")
    components = args.components.strip().lower()
    if components != "auto":
        if not components.isdigit() or int(components) < 1:
            raise InputError(f"--components must be auto or an integer >= 1; got {args.components!r}")
        components = int(components)
    check_output_folder(args.out, args.overwrite, inputs=input_files(args))
    start = time.perf_counter()
    result = sweep(
        args.file,
        ks,
        **cluster_kwargs(args),
        exact=args.exact,
        n_components=components,
        sketch_size=args.sketch_size,
    )
    result.save(args.out, overwrite=args.overwrite, figures=not args.no_figures)
    print_sweep(result, args.out, time.perf_counter() - start)
    return 0


def print_sweep(result, out, seconds: float) -> None:
    first = result[result.ks[0]]
    info = result.components
    if info["mode"] == "exact":
        space = "exact mode: full-dimensional KMeans"
    else:
        space = (
            f"reduced mode: regions from KMeans atoms on {info['n_components']} of {info['sketch_size']} "
            f"principal components ({info['explained_variance_ratio_kept']:.1%} of the variance)"
        )
    print(f"{first.source}: {first.labels.shape[0]}x{first.labels.shape[1]} scan, k = {result.ks[0]}..{result.ks[-1]}")
    print(f"  backend  {first.backend_description}")
    print(f"  space    {space}")
    if first.mask.detector_offset:
        print(f"  offset   {first.mask.detector_offset:g} counts (the detector's dark level) subtracted from every pixel")
    print("       k      inertia  silhouette  calinski-harabasz  davies-bouldin  separation  stability")
    for i, k in enumerate(result.ks):
        mark = " <" if k == result.suggested_k else ""
        s = {name: values[i] for name, values in result.scores.items()}
        stability = f"{s['stability']:9.3f}" if "stability" in s else f"{'-':>9s}"
        print(
            f"  {k:6d}  {s['inertia']:11.5g}  {s['silhouette']:10.3f}  {s['calinski_harabasz']:17.5g}"
            f"  {s['davies_bouldin']:14.3f}  {s['separation']:10.2f}  {stability}{mark}"
        )
    print(f"  suggested k = {result.suggested_k}: {result.suggestion['reason']}")
    stages = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items() if isinstance(v, float))
    print(f"  time     {seconds:.2f} s ({stages})")
    print(f"  results  {out}")


def run_live(args) -> int:
    """``gpu4d live``: see ``gpu4d.live.runner`` for what is written and the exit codes."""
    from .live.runner import LiveRun
    from .live.sources import check_source

    if args.reader is not None:
        raise InputError("--reader does not apply to live sources")
    scan_shape = parse_scan_shape(args.scan, name="--scan")
    check_source(args.source)  # a malformed URL fails here, before a results folder exists
    if args.model is None and args.n_clusters is None:
        raise InputError("-k/--n-clusters is required without --model")
    options = {"backend": args.backend, "batch_size": args.batch_size, "spill_dir": args.spill_dir}
    if args.model is None:
        options.update(mask=args.mask, normalize=args.normalize, transform=args.transform,
                       align=_align_option(args.align), random_state=args.seed, init_frames=args.init_frames)
    else:
        _refuse_with_model(args)
    run = LiveRun(
        args.source, args.n_clusters, scan_shape, model=args.model,
        out=args.out, overwrite=args.overwrite, figures=not args.no_figures,
        snapshot_every_s=args.snapshot_every, display=not args.quiet, max_lag_frames=args.max_lag,
        timeout_s=args.timeout, refine=not args.no_refine, max_iter=args.max_iter, tol=args.tol,
        **options,
    )
    start = time.perf_counter()
    outcome = run.run()
    progress = outcome.progress
    if outcome.result is not None and outcome.status == "complete":
        print_result(outcome.result, args.out, time.perf_counter() - start)
    print(
        f"  live     {progress['frames_received']} of {progress['frames_expected']} frames received, "
        f"{progress['frames_processed']} processed, {progress['rate_fps']:.0f} frames/s, "
        f"largest lag {progress['max_lag_frames_seen']} frames; {outcome.status}"
    )
    if args.model is not None:
        print(f"  model    {args.model} (classified live, no refitting)")
    if outcome.out is not None and outcome.status != "complete":
        print(f"  results  {outcome.out} (partial)")
    if outcome.message:
        print(f"gpu4d: {'error' if outcome.exit_code == EXIT_ERROR else outcome.status}: "
              f"{' '.join(outcome.message.split())}", file=sys.stderr)
    return outcome.exit_code


def _refuse_with_model(args) -> None:
    """With --model, the model's preprocessing is used: a preprocessing option given too is an
    error, not silently ignored."""
    given = {"--mask": args.mask != "auto", "--normalize": args.normalize != "max",
             "--transform": args.transform != DEFAULT_TRANSFORM, "--align": args.align != DEFAULT_ALIGN,
             "--init-frames": args.init_frames is not None}
    for name, differs in given.items():
        if differs:
            raise InputError(f"{name} does not apply with --model: the model's preprocessing is used")


def print_result(result, out, seconds: float) -> None:
    sizes = ", ".join(f"{i}: {n}" for i, n in enumerate(result.cluster_sizes))
    mask = result.mask.describe()
    mask_text = mask["kind"]
    if "centre" in mask:
        mask_text += f" (centre {mask['centre'][0]:.1f}, {mask['centre'][1]:.1f}"
        mask_text += f", radius {mask['radius']:.1f})" if "radius" in mask else ")"
    if result.mask.bad_pixels_text:
        mask_text += f"; also masked: {result.mask.bad_pixels_text}"
    if result.mask.detector_offset:
        mask_text += f"; detector offset {result.mask.detector_offset:g} counts subtracted"
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
    from .io.dataset import Axis, Dataset

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
    for module in ("numpy", "numba", "sklearn", "hyperspy", "rsciio", "h5py", "hdf5plugin", "cupy", "cuml"):
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
        found = importlib.import_module(module)
        return getattr(found, "__version__", None) or getattr(found, "version", None) or "installed"
    except Exception as exc:  # noqa: BLE001 - report, don't crash, on a broken install
        return f"installed but fails to import ({type(exc).__name__})"


def run() -> None:
    """The ``gpu4d`` executable: ``main``, then exit without the interpreter's teardown.

    Once numba has compiled or loaded a kernel, Python's teardown spends about 0.4 s freeing
    numba's LLVM objects, memory the operating system reclaims at once; that was 5% of a
    sweep's wall time. Every result is written and closed by now; the streams are flushed and
    the exit handlers run before ``os._exit``. (``main`` itself returns, for in-process use.)
    """
    import atexit
    import logging
    import os

    code = main()
    logging.shutdown()
    atexit._run_exitfuncs()  # what a normal exit runs first (temporary folders, thread pools)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # gpu4d ... | head: the reader has gone
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
