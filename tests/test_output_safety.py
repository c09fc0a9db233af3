"""A results folder never replaces or deletes anything but an earlier gpu4d result.

Every way an input can sit inside ``--out`` (the folder of the scan, a folder above it, an earlier
results folder the scan was copied into, a folder behind a symbolic link, an input folder such as a
.zspy store), and every kind of existing folder ``--overwrite`` meets, through the CLI as a user
runs it, for cluster, sweep and live, and through the Python API. Each case checks that the command
fails with one line naming the folder, that every byte of every file is still there, and that
nothing looking like a result was left behind.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import gpu4d
from gpu4d.atomic import RESULT_MARKER, check_output_folder, result_folder
from gpu4d.errors import OutputError

from .conftest import make_two_phase_scan


def _snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (hidden ones included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def scan_dir(tmp_path: Path) -> Path:
    """A user's folder: the scan, a neighbouring scan and a notes file."""
    folder = tmp_path / "session"
    folder.mkdir()
    np.save(folder / "scan.npy", make_two_phase_scan().data)
    np.save(folder / "other_scan.npy", make_two_phase_scan(seed=1).data)
    (folder / "notes.txt").write_text("beam current 50 pA\n")
    return folder


def _assert_refused(result, *names: str) -> None:
    assert result.code != 0
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    for name in names:
        assert name in lines[0], lines[0]


CLUSTER = ("cluster", "-k", "2", "-q", "--no-figures", "--n-init", "1")
SWEEP = ("sweep", "-k", "2:3", "-q", "--no-figures")


@pytest.mark.parametrize("command", [CLUSTER, SWEEP], ids=["cluster", "sweep"])
def test_out_equal_to_the_scans_folder_is_refused(run_cli, scan_dir, command):
    before = _snapshot(scan_dir)
    result = run_cli(command[0], scan_dir / "scan.npy", *command[1:], "--out", scan_dir, "--overwrite")
    _assert_refused(result, str(scan_dir), "input")
    assert _snapshot(scan_dir) == before


@pytest.mark.parametrize("command", [CLUSTER, SWEEP], ids=["cluster", "sweep"])
def test_out_above_the_scans_folder_is_refused(run_cli, scan_dir, command):
    parent = scan_dir.parent
    before = _snapshot(parent)
    result = run_cli(command[0], scan_dir / "scan.npy", *command[1:], "--out", parent, "--overwrite")
    _assert_refused(result, str(parent))
    assert _snapshot(parent) == before


def test_out_equal_to_the_scan_file_is_refused(run_cli, scan_dir):
    before = _snapshot(scan_dir)
    scan = scan_dir / "scan.npy"
    result = run_cli(*CLUSTER[:1], scan, *CLUSTER[1:], "--out", scan, "--overwrite")
    _assert_refused(result, str(scan))
    assert _snapshot(scan_dir) == before


def test_out_through_a_link_to_the_scans_folder_is_refused(run_cli, scan_dir, tmp_path):
    link = tmp_path / "results-link"
    link.symlink_to(scan_dir, target_is_directory=True)
    before = _snapshot(scan_dir)
    result = run_cli(*CLUSTER[:1], scan_dir / "scan.npy", *CLUSTER[1:], "--out", link, "--overwrite")
    _assert_refused(result, str(link))
    assert _snapshot(scan_dir) == before


def test_out_inside_an_input_folder_is_refused(run_cli, tmp_path):
    """A .zspy store is a folder: results written into it would change the input."""
    hs = pytest.importorskip("hyperspy.api")
    store = tmp_path / "scan.zspy"
    hs.signals.Signal2D(make_two_phase_scan().data).save(store)
    before = _snapshot(store)
    result = run_cli(*CLUSTER[:1], store, *CLUSTER[1:], "--out", store / "results")
    _assert_refused(result, str(store / "results"), "inside the input")
    assert _snapshot(store) == before
    assert not (store / "results").exists()


def test_earlier_result_holding_the_input_is_not_replaced(run_cli, scan_dir, tmp_path):
    """Clustering a file of an earlier result into that same result folder."""
    out = tmp_path / "res"
    assert run_cli(*CLUSTER[:1], scan_dir / "scan.npy", *CLUSTER[1:], "--out", out).code == 0
    # the user keeps a copy of the scan with its results, then clusters that copy into the folder
    (out / "scan.npy").write_bytes((scan_dir / "scan.npy").read_bytes())
    before = _snapshot(out)
    result = run_cli(*CLUSTER[:1], out / "scan.npy", *CLUSTER[1:], "--out", out, "--overwrite")
    _assert_refused(result, str(out))
    assert _snapshot(out) == before


def test_folder_that_is_not_a_result_is_not_replaced(run_cli, scan_dir, tmp_path):
    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("\\section{Results}\n")
    before = _snapshot(other)
    result = run_cli(*CLUSTER[:1], scan_dir / "scan.npy", *CLUSTER[1:], "--out", other, "--overwrite")
    _assert_refused(result, str(other), "not an earlier gpu4d result")
    assert _snapshot(other) == before


def test_earlier_result_with_a_users_file_added_is_not_replaced(run_cli, scan_dir, tmp_path):
    out = tmp_path / "res"
    assert run_cli(*CLUSTER[:1], scan_dir / "scan.npy", *CLUSTER[1:], "--out", out).code == 0
    (out / "my_analysis.ipynb").write_text("{}")
    before = _snapshot(out)
    result = run_cli(*CLUSTER[:1], scan_dir / "scan.npy", *CLUSTER[1:], "--out", out, "--overwrite")
    _assert_refused(result, "my_analysis.ipynb")
    assert _snapshot(out) == before


@pytest.mark.parametrize("command", [CLUSTER, SWEEP], ids=["cluster", "sweep"])
def test_earlier_result_is_replaced_with_overwrite(run_cli, scan_dir, tmp_path, command):
    out = tmp_path / "res"
    scan = scan_dir / "scan.npy"
    assert run_cli(command[0], scan, *command[1:], "--out", out).code == 0
    assert (out / RESULT_MARKER).is_file()
    first = _snapshot(out)
    rerun = run_cli(command[0], scan, *command[1:], "--seed", "5", "--out", out, "--overwrite")
    assert rerun.code == 0, rerun.err
    assert (out / RESULT_MARKER).is_file()
    summary = "summary.json" if command is CLUSTER else "sweep.json"
    assert json.loads((out / summary).read_text())["parameters"]["random_state"] == 5
    assert set(_snapshot(out)) == set(first)
    assert sorted(p.name for p in out.parent.iterdir()) == ["res", "session"]  # nothing aside


def test_result_written_before_the_marker_existed_is_replaced(run_cli, scan_dir, tmp_path):
    out = tmp_path / "res"
    scan = scan_dir / "scan.npy"
    assert run_cli(*CLUSTER[:1], scan, *CLUSTER[1:], "--out", out).code == 0
    (out / RESULT_MARKER).unlink()  # as an earlier gpu4d version wrote it
    assert run_cli(*CLUSTER[:1], scan, *CLUSTER[1:], "--out", out, "--overwrite").code == 0
    assert (out / RESULT_MARKER).is_file()


def test_empty_folder_is_replaced_with_overwrite(run_cli, scan_dir, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    result = run_cli(*CLUSTER[:1], scan_dir / "scan.npy", *CLUSTER[1:], "--out", out, "--overwrite")
    assert result.code == 0, result.err
    assert (out / "labels.npy").is_file()


def test_empty_out_is_refused(run_cli, scan_dir):
    before = _snapshot(scan_dir)
    result = run_cli(*CLUSTER[:1], scan_dir / "scan.npy", *CLUSTER[1:], "--out", "")
    _assert_refused(result, "--out", "empty")
    assert _snapshot(scan_dir) == before


def test_mask_file_inside_out_is_refused(run_cli, scan_dir, tmp_path):
    out = tmp_path / "res"
    scan = scan_dir / "scan.npy"
    assert run_cli(*CLUSTER[:1], scan, *CLUSTER[1:], "--out", out).code == 0
    mask = out / "mask.npy"  # the mask of the earlier run, reused as an input
    before = _snapshot(out)
    result = run_cli(*CLUSTER[:1], scan, *CLUSTER[1:], "--mask", mask, "--out", out, "--overwrite")
    _assert_refused(result, str(out), "mask.npy")
    assert _snapshot(out) == before


def test_live_from_a_file_inside_out_is_refused(run_cli, shared_data, tmp_path):
    """A .mib the detector writes is an input of ``gpu4d live`` too."""
    source = shared_data / "quantumdetector" / "001_4x2_6bit.mib"
    folder = tmp_path / "acq"
    folder.mkdir()
    for suffix in (".mib", ".hdr"):
        (folder / f"acq{suffix}").write_bytes(source.with_suffix(suffix).read_bytes())
    before = _snapshot(folder)
    result = run_cli("live", folder / "acq.mib", "-k", "2", "--scan", "2x4", "-q", "--no-figures",
                     "--out", folder, "--overwrite")
    assert result.code != 0
    assert "Traceback" not in result.err
    assert str(folder) in result.err and "input" in result.err
    assert _snapshot(folder) == before


def test_api_save_into_the_scans_folder_is_refused(scan_dir):
    result = gpu4d.cluster(str(scan_dir / "scan.npy"), 2, n_init=1)
    before = _snapshot(scan_dir)
    with pytest.raises(OutputError, match="holds the input"):
        result.save(scan_dir, overwrite=True)
    assert _snapshot(scan_dir) == before


def test_result_folder_rechecks_before_replacing(tmp_path):
    """A file the user drops into the old folder while a long run works is not deleted."""
    out = tmp_path / "res"
    with result_folder(out) as tmp:
        (tmp / "labels.npy").write_bytes(b"old")
    with pytest.raises(OutputError, match="figure_for_paper.svg.*finished results are in"):
        with result_folder(out, overwrite=True) as tmp:
            (tmp / "labels.npy").write_bytes(b"new")
            (out / "figure_for_paper.svg").write_text("<svg/>")
    assert (tmp / "labels.npy").read_bytes() == b"new"  # the finished run is kept, and said where
    assert (out / "labels.npy").read_bytes() == b"old"
    assert (out / "figure_for_paper.svg").is_file()


def test_check_output_folder_names_the_foreign_file(tmp_path):
    out = tmp_path / "res"
    with result_folder(out) as tmp:
        (tmp / "k02").mkdir()
        (tmp / "k02" / "labels.npy").write_bytes(b"x")
    (out / "k02" / "raw_scan.npy").write_bytes(b"y")
    with pytest.raises(OutputError, match=r"k02/raw_scan\.npy"):
        check_output_folder(out, overwrite=True)
