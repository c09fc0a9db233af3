"""Bad and unusual inputs through the ``gpu4d`` command line, each in its own subprocess.

    python benchmarks/adversarial_inputs.py               # every case, 2 at a time
    python benchmarks/adversarial_inputs.py -j 1 -k mib   # the cases whose name holds "mib"

Each case builds its files in a folder of its own (sample files from ../shared/data are copied
there), runs ``gpu4d ...`` and checks:

* no ``Traceback`` on stdout or stderr;
* no byte of any file that existed before the run changed, and none was removed;
* an error: a non-zero exit code and exactly one line on stderr, ``gpu4d: error: ...`` (after at
  most a few ``gpu4d: warning:`` lines), naming what the case expects, and no new folder or file
  left behind (no results folder, no temporary one);
* a success: exit code 0 and a results folder with its ``summary.json`` (``sweep.json``).

Prints one line per case and the number that pass; exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GPU4D_TEST_DATA") or REPO.parent / "shared" / "data")
GPU4D = Path(sys.executable).with_name("gpu4d")

BLO = "blockfile/test1.blo"
MIB = "quantumdetector/001_4x2_6bit.mib"
NINE = "quantumdetector/Single_9_Frame_CounterDepth_6_Rows_256.mib"
RAW = "quantumdetector/Single_9_Frame_CounterDepth_1_Rows_256RAW.mib"
HOT = "quantumdetector/002_merlin_test_roi_sig256x128_nav4x2_hot_pixel_52x_39y.mib"
ARINA = "arina/test_00_master.h5"
ARINA_DATA = "arina/test_00_data_000001.h5"
MIB_FRAME = 65920  # bytes of one frame record of 001_4x2_6bit.mib


@dataclass
class Case:
    name: str
    argv: list  # after "gpu4d"; "{x}" names a path set up by ``setup``, "{out}" the results folder
    expect: str  # "error", "ok" or "any" (either, but cleanly)
    setup: object = None  # setup(folder) -> {name: path}
    message: str = ""  # a fragment the error line must hold ("{x}" filled as in argv)
    out_exists: bool = False  # the results folder exists before the run (set up by ``setup``)
    extra: dict = field(default_factory=dict)


# -- building inputs --------------------------------------------------------------------------


def sample(relative, *, with_hdr=True):
    """Setup: copy a sample file (and its .hdr) into the case folder as {x}."""

    def setup(folder):
        source = SHARED / relative
        target = folder / source.name
        shutil.copy(source, target)
        if with_hdr and source.with_suffix(".hdr").exists():
            shutil.copy(source.with_suffix(".hdr"), target.with_suffix(".hdr"))
        return {"x": target}

    return setup


def npy(array_or_fn, name="scan.npy"):
    def setup(folder):
        array = array_or_fn() if callable(array_or_fn) else array_or_fn
        path = folder / name
        np.save(path, array, allow_pickle=True)
        return {"x": path}

    return setup


def raw_bytes(data: bytes, name: str):
    def setup(folder):
        path = folder / name
        path.write_bytes(data)
        return {"x": path}

    return setup


def edited(relative, edit, name=None, *, hdr_edit=None, keep_hdr=True):
    """Setup: a sample file with its bytes edited by ``edit(bytearray) -> bytes``."""

    def setup(folder):
        source = SHARED / relative
        target = folder / (name or source.name)
        target.write_bytes(bytes(edit(bytearray(source.read_bytes()))))
        hdr = source.with_suffix(".hdr")
        if keep_hdr and hdr.exists():
            text = hdr.read_bytes()
            target.with_suffix(".hdr").write_bytes(hdr_edit(text) if hdr_edit else text)
        return {"x": target}

    return setup


def both(*setups):
    def setup(folder):
        paths = {}
        for s in setups:
            paths.update(s(folder))
        return paths

    return setup


def named(key, setup_fn):
    """Rename the path a setup returns as {x} to {key}."""

    def setup(folder):
        return {key: setup_fn(folder)["x"]}

    return setup


def scan(shape=(3, 4, 16, 16), dtype=np.float32, fill=None, seed=0):
    """A small two-region scan (or ``fill`` for every value)."""

    def make():
        rng = np.random.default_rng(seed)
        data = rng.poisson(5.0, shape).astype(np.float64)
        if len(shape) == 4 and min(shape) > 0:
            data[..., shape[2] // 2, shape[3] // 2] += 200
            data[: shape[0] // 2, :, min(1, shape[2] - 1), 0] += 80
        if fill is not None:
            data[...] = fill
        return data.astype(dtype)

    return make


def with_value(value, where=(1, 2, 5, 5), dtype=np.float32):
    def make():
        data = scan(dtype=np.float64)()
        data[where] = value
        return data.astype(dtype)

    return make


def set_u16(offset, value):
    def edit(data):
        data[offset : offset + 2] = int(value).to_bytes(2, "little")
        return data

    return edit


def set_u32(offset, value):
    def edit(data):
        data[offset : offset + 4] = int(value).to_bytes(4, "little")
        return data

    return edit


def cut(n):
    return lambda data: data[:n]


def frames_line(n):
    return lambda text: re.sub(rb"(Frames in Acquisition \(Number\):\s*)\d+", rb"\g<1>" + str(n).encode(), text)


def folder_input(folder):
    """An input .npy inside a folder {d}: for --out equal to / around the input."""
    d = folder / "data"
    d.mkdir()
    np.save(d / "scan.npy", scan()())
    (d / "notes.txt").write_text("keep me")
    return {"x": d / "scan.npy", "d": d}


def existing_out(kind):
    """The results folder {out} exists before the run: 'other' files, or an earlier result."""

    def setup(folder):
        paths = npy(scan())(folder)
        out = folder / "results"
        if kind == "other":
            out.mkdir()
            (out / "notebook.ipynb").write_text("{}")
        else:  # an earlier gpu4d result, made by gpu4d itself
            subprocess.run([str(GPU4D), "cluster", str(paths["x"]), "-k", "2", "--mask", "none",
                            "--out", str(out), "-q", "--no-figures"], check=True, capture_output=True)
        paths["out"] = out
        return paths

    return setup


def read_only_parent(folder):
    paths = npy(scan())(folder)
    locked = folder / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    paths["out"] = locked / "results"
    return paths


def file_parent(folder):
    paths = npy(scan())(folder)
    blocker = folder / "a_file"
    blocker.write_text("not a folder")
    paths["out"] = blocker / "results"
    return paths


def arina_without_data(folder):
    target = folder / "test_00_master.h5"
    shutil.copy(SHARED / ARINA, target)
    return {"x": target}


def arina_pair(folder):
    for name in (ARINA, ARINA_DATA):
        shutil.copy(SHARED / name, folder / Path(name).name)
    return {"x": folder / "test_00_master.h5", "data": folder / "test_00_data_000001.h5"}


def lying_npy(folder):
    """A .npy header that promises more data than the file holds."""
    path = folder / "lying.npy"
    np.save(path, np.ones((2, 2, 8, 8), np.float32))
    data = path.read_bytes().replace(b"(2, 2, 8, 8)", b"(9, 9, 8, 8)")
    path.write_bytes(data)
    return {"x": path}


def zspy_folder(folder):
    path = folder / "empty.zspy"
    path.mkdir()
    return {"x": path}


def structured():
    return np.zeros((2, 2, 4, 4), dtype=[("a", "f4"), ("b", "i4")])


def object_array():
    a = np.empty((2, 2, 4, 4), object)
    a[...] = 1
    return a


def cases() -> list[Case]:
    c = []
    add = c.append
    blo, mib, nine = sample(BLO), sample(MIB), sample(NINE)
    K2 = ["-k", "2"]
    cluster = lambda *a: ["cluster", "{x}", *K2, *a]  # noqa: E731

    # -- missing, empty, not a file ---------------------------------------------------------------
    add(Case("missing npy", ["cluster", "{dir}/none.npy", *K2], "error", None, "no such file"))
    add(Case("missing blo", ["cluster", "{dir}/none.blo", *K2], "error", None, "no such file"))
    add(Case("empty path", ["cluster", "", *K2], "error", None, "the file path is empty"))
    add(Case("folder as data", cluster(), "error", _subfolder, "is a folder"))
    for suffix in (".npy", ".blo", ".mib", ".hspy", ".h5", ".emd", ".app5"):
        add(Case(f"empty {suffix}", cluster(), "error", raw_bytes(b"", f"empty{suffix}"), "the file is empty (0 bytes)"))
    add(Case("empty .zspy folder", cluster(), "error", zspy_folder, "cannot read"))
    add(Case("unknown extension", cluster(), "error", raw_bytes(b"hello\n", "scan.foo"), "unknown file format '.foo'"))
    add(Case("no extension", cluster(), "error", raw_bytes(b"hello\n", "scan"), "unknown file format"))
    add(Case("text named .npy", cluster(), "error", raw_bytes(b"not numpy\n" * 9, "t.npy"), "not a readable .npy file"))
    add(Case("text named .hspy", cluster(), "error", raw_bytes(b"junk\n" * 50, "t.hspy"), "cannot read this file"))
    noise = np.random.default_rng(0).integers(0, 256, 6000, dtype=np.uint8).tobytes()
    add(Case("noise .blo", cluster(), "error", raw_bytes(noise, "n.blo"), "not a NanoMegas blockfile"))
    add(Case("noise .mib", cluster(), "error", raw_bytes(noise, "n.mib"), "not a Merlin .mib file"))
    add(Case("noise .h5", cluster(), "error", raw_bytes(noise, "n.h5"), "not an HDF5 file"))
    add(Case("noise .dm3", cluster(), "error", raw_bytes(noise, "n.dm3"), "cannot read"))
    add(Case("hdr alone", cluster(), "error", raw_bytes((SHARED / MIB).with_suffix(".hdr").read_bytes(), "alone.hdr"),
             "its data file alone.mib is not beside it"))
    add(Case("hdr for its mib", cluster("--no-figures"), "ok",
             lambda f: {"x": sample(MIB)(f)["x"].with_suffix(".hdr")}))

    # -- truncated, corrupt, lying headers -------------------------------------------------------
    add(Case("npy cut in half", cluster(), "error", lambda f: {"x": _cut_npy(f)}, "not a readable .npy file"))
    add(Case("npy lying header", cluster(), "error", lying_npy, "not a readable .npy file"))
    size = (SHARED / BLO).stat().st_size
    add(Case("blo cut in half", cluster(), "error", edited(BLO, cut(size // 2), "cut.blo"), "truncated"))
    add(Case("blo header cut", cluster(), "error", edited(BLO, cut(20), "cut.blo"), "not a NanoMegas blockfile"))
    add(Case("blo NX 60000", cluster(), "error", edited(BLO, set_u16(24, 60000), "x.blo"), "the header describes 3x60000"))
    add(Case("blo NY 0", cluster(), "error", edited(BLO, set_u16(26, 0), "x.blo"), "a zero size"))
    add(Case("blo DP 0", cluster(), "error", edited(BLO, set_u16(20, 0), "x.blo"), "patterns of 0x0 pixels"))
    add(Case("blo DP 4000", cluster(), "error", edited(BLO, set_u16(20, 4000), "x.blo"), "truncated or corrupt"))
    add(Case("blo data offset past the end", cluster(), "error", edited(BLO, set_u32(12, 10**9), "x.blo"), "truncated or corrupt"))
    add(Case("blo bad magic", cluster(), "error", edited(BLO, set_u16(6, 0x9999), "x.blo"), "not a NanoMegas blockfile"))
    add(Case("mib cut mid-frame", cluster(), "error", edited(MIB, cut(3 * MIB_FRAME + 999), "cut.mib"),
             "promises 8 frames but the file holds 3 and 999 bytes of a cut-off one"))
    add(Case("mib cut at a frame", cluster(), "error", edited(MIB, cut(5 * MIB_FRAME), "cut.mib"),
             "promises 8 frames but the file holds 5"))
    add(Case("mib cut, no hdr", cluster(), "error", edited(MIB, cut(2 * MIB_FRAME + 5), "cut.mib", keep_hdr=False),
             "holds 2 and 5 bytes of a cut-off one"))
    add(Case("mib hdr promises 4", cluster(), "error", edited(MIB, lambda d: d, "m.mib", hdr_edit=frames_line(4)),
             "promises 4; the header belongs to another acquisition"))
    add(Case("mib hdr promises 80", cluster(), "error", edited(MIB, lambda d: d, "m.mib", hdr_edit=frames_line(80)),
             "promises 80 frames but the file holds 8"))
    add(Case("mib hdr garbage", cluster(), "error", edited(MIB, lambda d: d, "m.mib", hdr_edit=lambda t: b"garbage\n"),
             "not a Merlin acquisition header"))
    add(Case("mib frame header corrupt", cluster(), "error", edited(MIB, lambda d: d[:4] + b"xx" + d[6:], "m.mib"),
             "m.mib: frame 0: sequence, chips, width and height should be integers"))
    add(Case("mib header size absurd", cluster(), "error", edited(MIB, lambda d: d[:10] + b"99999" + d[15:], "m.mib"),
             "frame 0"))
    add(Case("1-D mib without --scan", cluster(), "error", nine, "no scan shape"))
    add(Case("1-D mib without hdr", cluster(), "error", sample(NINE, with_hdr=False), "is not beside it"))
    add(Case("1-D mib with --scan 3x3", cluster("--scan", "3x3", "--no-figures"), "ok", nine))
    add(Case("1-D mib with --scan 2x5", cluster("--scan", "2x5"), "error", nine, "needs 10 patterns but"))
    add(Case("RAW mib", cluster(), "error", sample(RAW), "RAW MIB data not supported"))
    add(Case("hot-pixel mib", cluster("--no-figures"), "ok", sample(HOT)))
    add(Case("ARINA data file", ["cluster", "{data}", *K2], "error", arina_pair, "give its master file test_00_master.h5"))
    add(Case("ARINA data missing", cluster(), "error", arina_without_data, "its data file test_00_data_000001.h5 is missing"))
    add(Case("ARINA square", cluster("--mask", "none", "--align", "none", "--no-figures"), "ok", arina_pair))
    add(Case("ARINA --scan 2x8", cluster("--mask", "none", "--align", "none", "--scan", "2x8", "--no-figures"), "ok", arina_pair))
    add(Case("ARINA --scan 3x3", cluster("--scan", "3x3"), "error", arina_pair, "needs 9 patterns but"))
    add(Case("ARINA all zero, mask auto", cluster(), "error", arina_pair, "{x}: mask=auto: the mean pattern is flat"))
    add(Case("py4DSTEM h5", cluster("--mask", "none", "--align", "none", "--no-figures"), "ok", sample("emd/py4DSTEM_size2x3x4x5.h5")))
    add(Case("py4DSTEM h5, default align", cluster("--mask", "none", "--no-figures"), "any", sample("emd/py4DSTEM_size2x3x4x5.h5")))
    add(Case("5-D EMD", cluster(), "error", sample("emd/Si100_4D.emd"), "4D-STEM"))
    add(Case("dm3 single pattern", cluster(), "error", sample("digitalmicrograph/test_diffraction_pattern.dm3"), "single pattern"))
    add(Case("tvips frames", cluster(), "error", sample("tvips/test_tvips_2345_000.tvips"), "no scan shape"))
    add(Case("tvips --scan 2x3", cluster("--mask", "none", "--scan", "2x3", "--no-figures"), "ok",
             sample("tvips/test_tvips_2345_000.tvips")))
    add(Case("TIA preview frames", cluster(), "error",
             both(sample("tia/128x128x5-diffraction_preview_1.ser"), sample("tia/128x128x5-diffraction_preview.emi")),
             "no scan shape"))
    add(Case("MRC movie --scan 12x29", cluster("--mask", "none", "--scan", "12x29", "--no-figures"), "ok",
             sample("mrc_de_roi_scan/ROI_Random_Scan_movie.mrc")))
    add(Case("topspin app5", cluster("--no-figures"), "ok", sample("topspin/topspin_test_B.app5")))
    add(Case("EBSD h5", cluster(), "error", sample("ebsd_kikuchipy/kikuchipy_h5ebsd_Ni_patterns.h5"), ""))

    # -- values -------------------------------------------------------------------------------------
    add(Case("NaN", cluster(), "error", npy(with_value(np.nan)), "(y=1, x=2) contains NaN or Inf"))
    add(Case("+Inf", cluster("--mask", "none"), "error", npy(with_value(np.inf)), "contains NaN or Inf"))
    add(Case("-Inf float64", cluster(), "error", npy(with_value(-np.inf, dtype=np.float64)), "contains NaN or Inf"))
    add(Case("1e300", cluster(), "error", npy(with_value(1e300, dtype=np.float64)), "holds 1e+300, too large for gpu4d's float32 arithmetic"))
    add(Case("-1e300", cluster("--mask", "none"), "error", npy(with_value(-1e300, dtype=np.float64)), "too large for gpu4d's float32 arithmetic"))
    add(Case("1e38 float64", cluster("--no-figures"), "error", npy(with_value(1e38, dtype=np.float64)), "too large"))
    add(Case("1e30 float32, --normalize l2", cluster("--normalize", "l2"), "error", npy(with_value(1e30)), "too large"))
    add(Case("1e30 float32, --normalize none", cluster("--normalize", "none"), "error", npy(with_value(1e30)), "too large"))
    add(Case("1e15 float64 (fits)", cluster("--normalize", "none", "--no-figures"), "ok", npy(with_value(1e15, dtype=np.float64))))
    add(Case("negative int16", cluster("--no-figures"), "ok", npy(lambda: (scan()() - 10).astype(np.int16))))
    add(Case("uint64 2^63", cluster(), "error", npy(with_value(2.0**63, dtype=np.uint64)), "holds 9.22e+18, too large"))
    add(Case("uint64 2^40", cluster("--no-figures"), "ok", npy(with_value(2.0**40, dtype=np.uint64))))
    add(Case("int8", cluster("--no-figures"), "ok", npy(scan(dtype=np.int8))))
    add(Case("float16", cluster("--no-figures"), "ok", npy(scan(dtype=np.float16))))
    add(Case("complex64", cluster(), "error", npy(scan(dtype=np.complex64)), "data type complex64 is not supported"))
    add(Case("bool", cluster(), "error", npy(scan(dtype=bool)), "data type bool is not supported"))
    add(Case("longdouble", cluster(), "error", npy(scan(dtype=np.longdouble)), "is not supported"))
    add(Case("datetime64", cluster(), "error", npy(lambda: np.zeros((2, 2, 4, 4), "datetime64[s]")), "is not supported"))
    add(Case("unicode", cluster(), "error", npy(lambda: np.full((2, 2, 4, 4), "a")), "is not supported"))
    add(Case("structured", cluster(), "error", npy(structured), "is not supported"))
    add(Case("object (pickled)", cluster(), "error", npy(object_array), "not a readable .npy file"))
    add(Case("all zero, mask auto", cluster(), "error", npy(scan(fill=0)), "{x}: mask=auto: the mean pattern is flat"))
    add(Case("all zero, mask none", cluster("--mask", "none", "--align", "none", "--no-figures"), "ok", npy(scan(fill=0))))
    add(Case("all zero, mask none, default align", cluster("--mask", "none"), "any", npy(scan(fill=0))))
    add(Case("constant, sqrt", cluster("--mask", "none", "--align", "none", "--transform", "sqrt", "--no-figures"), "ok", npy(scan(fill=7))))
    add(Case("negative, log1p", cluster("--mask", "none", "--align", "none", "--transform", "log1p", "--no-figures"), "ok", npy(scan(fill=-3))))

    # -- ranks and shapes -----------------------------------------------------------------------------
    add(Case("1-D array", cluster(), "error", npy(lambda: np.ones(7, np.float32)), "data has shape (7,)"))
    add(Case("2-D array", cluster(), "error", npy(lambda: np.ones((5, 6), np.float32)), "a single pattern"))
    add(Case("3-D array", cluster(), "error", npy(lambda: np.ones((6, 8, 8), np.float32)), "no scan shape"))
    add(Case("3-D array --scan 2x3", cluster("--mask", "none", "--scan", "2x3", "--no-figures"), "ok", npy(scan((6, 8, 8)))))
    add(Case("5-D array", cluster(), "error", npy(lambda: np.ones((2, 2, 2, 4, 4), np.float32)), "5-D data"))
    add(Case("0-D array", cluster(), "error", npy(lambda: np.float32(3)), "data has shape ()"))
    add(Case("empty axis", cluster(), "error", npy(lambda: np.ones((2, 0, 4, 4), np.float32)), "empty axis"))
    add(Case("1x1 scan, k=1", ["cluster", "{x}", "-k", "1", "--mask", "none", "--no-figures"], "ok", npy(scan((1, 1, 8, 8)))))
    add(Case("1x1 scan, k=2", cluster("--mask", "none"), "error", npy(scan((1, 1, 8, 8))), "n_clusters=2 should be <= the number of patterns 1"))
    add(Case("1x1 detector", cluster("--mask", "none", "--no-figures"), "any", npy(scan((3, 4, 1, 1)))))
    add(Case("2x2 detector, auto", cluster("--no-figures"), "any", npy(scan((3, 4, 2, 2)))))
    add(Case("1x40 scan line", cluster("--no-figures"), "ok", npy(scan((1, 40, 16, 16)))))

    # -- option values ---------------------------------------------------------------------------------
    for k, message in (("0", "n_clusters=0 should be an integer >= 1"), ("-1", "n_clusters=-1"),
                       ("abc", "invalid int value: 'abc'"), ("1.5", "invalid int value: '1.5'"),
                       ("13", "n_clusters=13 should be <= the number of patterns 12")):
        add(Case(f"-k {k}", ["cluster", "{x}", f"-k={k}"], "error", npy(scan()), message))
    for seed in ("-1", "4294967296", "x"):
        add(Case(f"--seed {seed}", cluster(f"--seed={seed}"), "error", npy(scan()), "argument --seed: invalid seed"))
    for option, value, message in (
        ("--tol", "-1", "expected a number >= 0"), ("--tol", "nan", "expected a number >= 0"),
        ("--max-iter", "0", "max_iter=0 should be an integer >= 1"), ("--n-init", "0", "n_init=0"),
        ("--batch-size", "0", "batch_size must be a positive integer, got 0"), ("--batch-size", "-5", "got -5"),
        ("--mask", "bogus", "mask: cannot parse 'bogus'"), ("--mask", "0", "mask radius must be > 0"),
        ("--mask", "annulus:5,2", "annulus needs 0 <= R1 < R2"), ("--mask", "{dir}/no.npy", "no such file"),
        ("--mask", "-1", "mask radius must be > 0"), ("--mask", "1e9", "masks every detector pixel"),
        ("--normalize", "peak", "invalid choice: 'peak'"), ("--transform", "log", "invalid choice: 'log'"),
        ("--backend", "cuda", "invalid choice: 'cuda'"), ("--reader", "nosuch", "choose one of: "),
        ("--reader", "hspy", "does not apply to .npy files"), ("--align", "sideways", "align"),
        ("--scan", "3by4", "--scan '3by4': expected NYxNX"), ("--scan", "0x12", "both sizes should be >= 1"),
        ("--scan", "4x4", "needs 16 patterns but"),
    ):
        add(Case(f"{option} {value}", cluster(f"{option}={value}"), "error", npy(scan()), message))
    add(Case("--mask wrong shape", cluster("--mask", "{m}"), "error",
             both(npy(scan()), named("m", npy(lambda: np.zeros((4, 4), bool), "m.npy"))), "does not match the detector shape"))
    add(Case("--mask float array", cluster("--mask", "{m}"), "error",
             both(npy(scan()), named("m", npy(lambda: np.full((16, 16), 0.5), "m.npy"))), "expected booleans"))
    add(Case("--reader TIFF on .blo", cluster("--reader", "TIFF"), "error", blo, "cannot read this file"))
    add(Case("--backend gpu", cluster("--backend", "gpu"), "any", npy(scan())))
    add(Case("sweep -k bogus", ["sweep", "{x}", "-k", "two"], "error", npy(scan()), "-k: cannot read 'two'"))
    add(Case("sweep -k 5:2", ["sweep", "{x}", "-k", "5:2"], "error", npy(scan()), "-k is empty"))
    add(Case("sweep -k 0:3", ["sweep", "{x}", "-k", "0:3"], "error", npy(scan()), "k=0 should be >= 1"))
    add(Case("sweep -k 2:40", ["sweep", "{x}", "-k", "2:40"], "error", npy(scan()), "should be <= the number of patterns 12"))
    add(Case("sweep --components 0", ["sweep", "{x}", "--components", "0"], "error", npy(scan()), "--components must be auto"))
    add(Case("sweep --sketch-size 0", ["sweep", "{x}", "--sketch-size", "0"], "error", npy(scan()), "--sketch-size"))
    add(Case("sweep default ks clipped", ["sweep", "{x}", "--no-figures"], "ok", blo))
    add(Case("sweep of one pattern", ["sweep", "{x}", "--mask", "none"], "error", npy(scan((1, 1, 8, 8))), "cannot be split"))
    for url, message in (("merlin://", "expected merlin://HOST"), ("merlin://h:port", "the port should be"),
                         ("merlin://[::1", "not a valid URL"), ("http://h", "unknown scheme 'http'"),
                         ("file://", "needs a path")):
        add(Case(f"live {url}", ["live", url, *K2, "--scan", "2x2"], "error", None, message))
    add(Case("live .txt source", ["live", "{x}", *K2, "--scan", "2x2"], "error", raw_bytes(b"x", "s.txt"), "a live source should be"))
    add(Case("live --scan 2by2", ["live", "merlin://127.0.0.1:1", *K2, "--scan", "2by2"], "error", None, "--scan '2by2'"))
    add(Case("live --timeout nan", ["live", "merlin://127.0.0.1:1", *K2, "--scan", "2x2", "--timeout", "nan"], "error", None, "--timeout"))

    # -- output folders ---------------------------------------------------------------------------------
    add(Case("--out ''", ["cluster", "{x}", *K2, "--out", ""], "error", npy(scan()), "--out"))
    add(Case("--out holds other files", cluster(), "error", existing_out("other"), "already exists", out_exists=True))
    add(Case("--out holds other files, --overwrite", cluster("--overwrite"), "error", existing_out("other"), "", out_exists=True))
    add(Case("--out earlier result", cluster(), "error", existing_out("result"), "already exists", out_exists=True))
    add(Case("--out earlier result, --overwrite", cluster("--mask", "none", "--overwrite", "--no-figures"), "ok",
             existing_out("result"), out_exists=True))
    add(Case("--out is the input's folder, --overwrite", ["cluster", "{x}", *K2, "--overwrite", "--out", "{d}"], "error", folder_input, ""))
    add(Case("--out is the input file", ["cluster", "{x}", *K2, "--overwrite", "--out", "{x}"], "error", folder_input, ""))
    add(Case("--out inside the input's folder's parent", ["cluster", "{x}", *K2, "--overwrite", "--out", "{dir}"], "error", folder_input, ""))
    add(Case("--out under a regular file", cluster(), "error", file_parent, "is not a folder"))
    add(Case("--out in a read-only folder", cluster("--no-figures"), "error" if os.geteuid() else "any", read_only_parent, ""))
    add(Case("sweep --out is the input's folder", ["sweep", "{x}", "-k", "2:3", "--overwrite", "--out", "{d}"], "error", folder_input, ""))
    return c


def _subfolder(folder):
    (folder / "sub").mkdir()
    return {"x": folder / "sub"}


def _cut_npy(folder):
    path = folder / "cut.npy"
    np.save(path, scan()())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# -- running and checking -----------------------------------------------------------------------


def snapshot(folder: Path) -> dict:
    """sha256 of every file under ``folder`` (and the set of folders)."""
    files = {}
    for root, dirs, names in os.walk(folder):
        for d in dirs:
            files[os.path.join(root, d) + "/"] = "dir"
        for n in names:
            p = os.path.join(root, n)
            try:
                files[p] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            except OSError:
                files[p] = "unreadable"
    return files


def run_case(case: Case, root: Path, timeout: float) -> tuple[bool, str, float]:
    folder = Path(tempfile.mkdtemp(prefix="case-", dir=root))
    paths = {"dir": folder, "out": folder / "results"}
    if case.setup is not None:
        try:
            paths.update(case.setup(folder))
        except Exception as exc:  # noqa: BLE001 - a broken case fails, the others still run
            return False, f"setup failed: {type(exc).__name__}: {exc}", 0.0
    fill = lambda text: text.format(**paths) if isinstance(text, str) else str(text)  # noqa: E731
    argv = [fill(a) for a in case.argv]
    if "--out" not in argv:
        argv += ["--out", str(paths["out"])]
    if case.argv[0] in ("cluster", "sweep", "live") and "-q" not in argv:
        argv.append("-q")
    before = snapshot(folder)
    start = time.perf_counter()
    try:
        proc = subprocess.run([str(GPU4D), *argv], capture_output=True, text=True, timeout=timeout, cwd=folder)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s", time.perf_counter() - start
    seconds = time.perf_counter() - start
    after = snapshot(folder)
    problems = []
    if "Traceback" in proc.stderr or "Traceback" in proc.stdout:
        problems.append("traceback: " + proc.stderr.strip().splitlines()[-1][:150])
    changed = [p for p, h in before.items() if after.get(p) != h and not _inside(p, paths["out"], case)]
    if changed:
        problems.append(f"input changed or removed: {changed[:3]}")
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("gpu4d: warning: ")]
    outcome = "error" if proc.returncode != 0 else "ok"
    if case.expect != "any" and outcome != case.expect:
        problems.append(f"expected {case.expect}, got exit {proc.returncode}: {(errors or [''])[-1][:150]}")
    if outcome == "error":
        if len(errors) != 1 or not errors[0].startswith("gpu4d: error: "):
            problems.append(f"{len(errors)} error lines: {errors[:2]}")
        elif case.message and fill(case.message) not in errors[0]:
            problems.append(f"message lacks {fill(case.message)!r}: {errors[0][:200]}")
        new = sorted(set(after) - set(before))
        if new:
            problems.append(f"left behind: {[os.path.relpath(p, folder) for p in new[:3]]}")
    else:
        out = Path(argv[argv.index("--out") + 1])
        marker = {"cluster": "summary.json", "sweep": "sweep.json"}.get(case.argv[0])
        if marker and not (out / marker).is_file():
            problems.append(f"no {marker} in the results folder")
    detail = "; ".join(problems) or (errors[0][:110] if errors else f"ok ({len(lines)} warning lines)")
    _make_removable(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return not problems, detail, seconds


def _inside(path: str, out: Path, case: Case) -> bool:
    """Files of an earlier result that a successful --overwrite may replace."""
    return case.out_exists and case.expect == "ok" and path.startswith(str(out))


def _make_removable(folder: Path) -> None:
    for root, dirs, _ in os.walk(folder):
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o755)
            except OSError:
                pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", "--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("-k", "--keyword", default="", help="only the cases whose name holds this")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case (default 300)")
    args = parser.parse_args(argv)
    if not GPU4D.exists():
        sys.exit(f"no gpu4d executable beside {sys.executable}; pip install -e . first")
    if not SHARED.is_dir():
        sys.exit(f"the sample data folder {SHARED} is missing (set GPU4D_TEST_DATA)")
    selected = [c for c in cases() if args.keyword.lower() in c.name.lower()]
    shared_before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in SHARED.rglob("*") if p.is_file()}
    with tempfile.TemporaryDirectory(prefix="gpu4d-adversarial-") as tmp:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [pool.submit(run_case, case, Path(tmp), args.timeout) for case in selected]
            results = []
            for case, future in zip(selected, futures):
                passed, detail, seconds = future.result()
                results.append(passed)
                print(f"{'PASS' if passed else 'FAIL'}  {case.name:42s} {seconds:5.1f} s  {detail}", flush=True)
    shared_after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in SHARED.rglob("*") if p.is_file()}
    if shared_after != shared_before:
        print("FAIL  the shared sample files changed")
        results.append(False)
    print(f"{sum(results)} of {len(results)} cases pass")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
