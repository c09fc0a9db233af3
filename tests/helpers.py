"""Small helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).parents[1]
#: The real sample files (see shared/data/README.md); they live beside the repository, or
#: where GPU4D_TEST_DATA says.
SHARED_DATA = Path(os.environ.get("GPU4D_TEST_DATA") or REPO_ROOT.parent / "shared" / "data")
#: CI sets GPU4D_REQUIRE_SHARED_DATA=1 (``.ci/run``): there a missing sample file fails the tests
#: that need it instead of skipping them, so a green run means they ran.
REQUIRE_SHARED_DATA = os.environ.get("GPU4D_REQUIRE_SHARED_DATA", "") not in ("", "0")


def missing_data(message: str):
    """Skip the test, or fail it where the shared data is required (GPU4D_REQUIRE_SHARED_DATA)."""
    if REQUIRE_SHARED_DATA:
        pytest.fail(f"{message}; GPU4D_REQUIRE_SHARED_DATA is set, so this is a failure", pytrace=False)
    pytest.skip(message)


def sample_path(relative: str) -> Path:
    """The sample file ``relative`` under the shared data folder; skips (or, where the data is
    required, fails) the calling test when it is absent. Only this file is needed."""
    path = SHARED_DATA / relative
    if not path.is_file():
        missing_data(f"sample file {path} is absent (the shared data folder is {SHARED_DATA})")
    return path


class LazyPaths(dict):
    """A dict whose callable values are called at their first lookup, so that
    ``"{blo} -k 2".format_map(paths)`` needs (and skips for) only the files the text names."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if callable(value):
            value = value()
            self[key] = value
        return value


def bytes_read_by_this_process() -> int:
    """Bytes this process has got from read() calls so far (Linux: ``rchar`` of /proc/self/io);
    file reads by gpu4d show up here, memory-mapped reads do not."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"])


#: Skip marker for tests that count file reads through /proc/self/io.
needs_proc_io = pytest.mark.skipif(
    not Path("/proc/self/io").exists(), reason="counts file reads with Linux's /proc/self/io"
)


def run_main(argv) -> tuple[int, str, str]:
    """``gpu4d.cli.main(argv)`` in-process with stdout and stderr captured: (exit code, stdout,
    stderr); argparse's SystemExit gives its code. Usable in module-scoped fixtures, where the
    ``run_cli`` fixture is not."""
    from gpu4d.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


#: The detector of ``same_phase_scans`` and the second scan's shape.
SAME_PHASE_DETECTOR = (64, 64)
SAME_PHASE_SECOND = (20, 28)


def same_phase_scans(drift_px: float):
    """Two scans of the same three grains, for models applied to another scan: make_scan draws
    the crystal orientations from their own stream of the seed, independent of the scan shape,
    and the grain layout from another, so a (20, 28) scan of seed 1 has the (32, 32) scan's
    phases in another layout."""
    from gpu4d.synthetic import make_scan

    options = dict(n_grains=3, defect=False, seed=1, drift_px=drift_px)
    first = make_scan((32, 32), SAME_PHASE_DETECTOR, **options)
    second = make_scan(SAME_PHASE_SECOND, SAME_PHASE_DETECTOR, **options)
    return first, second


class CountingArray:
    """An array-like over ``data`` that counts the bytes read out of it, as a lazily loaded
    file (a dask array over a reader) is read."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.bytes_read = 0

    def __getitem__(self, key):
        out = self.data[key]
        self.bytes_read += out.nbytes
        return out
