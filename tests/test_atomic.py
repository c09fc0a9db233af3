"""Atomic writing of files and result folders (gpu4d.atomic)."""

from __future__ import annotations

import json
import re
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from gpu4d.atomic import (
    RESULT_MARKER,
    atomic_save_npy,
    atomic_write,
    atomic_write_json,
    check_output_folder,
    result_folder,
)
from gpu4d.errors import OutputError


def _current_umask() -> int:
    mask = os.umask(0o022)  # os.umask can only be read by setting it
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _exists(folder: Path) -> str:
    return re.escape(f"'{folder}' already exists; pass --overwrite")


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file: nothing can be created under it, even by root."""
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


# ------------------------------------------------------------------------------ atomic_write
def test_atomic_write_writes_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    assert atomic_write(target, lambda fh: fh.write(b"abc")) == target
    assert target.read_bytes() == b"abc"
    assert _entries(tmp_path) == ["out.bin"]


def test_atomic_write_gives_usual_permissions(tmp_path: Path) -> None:
    target = atomic_write(tmp_path / "out.bin", lambda fh: fh.write(b"abc"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_UMASK


def test_atomic_write_text_mode(tmp_path: Path) -> None:
    target = atomic_write(tmp_path / "out.txt", lambda fh: fh.write("Å\n"), mode="w")
    assert target.read_text(encoding="utf-8") == "Å\n"


def test_atomic_write_replaces_existing(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    atomic_write(target, lambda fh: fh.write(b"new"))
    assert target.read_bytes() == b"new"
    assert _entries(tmp_path) == ["out.bin"]


def test_atomic_write_failure_keeps_old_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def broken(fh):
        fh.write(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert _entries(tmp_path) == ["out.bin"]


def test_atomic_write_os_error_from_writer_is_output_error(tmp_path: Path) -> None:
    def full(fh):
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write(tmp_path / "out.bin", full)
    assert _entries(tmp_path) == []


def test_atomic_write_under_a_file_is_output_error(a_file: Path) -> None:
    target = a_file / "out.bin"
    message = f"cannot write results to '{target}': Not a directory"
    with pytest.raises(OutputError, match=re.escape(message)):
        atomic_write(target, lambda fh: fh.write(b"abc"))


def test_atomic_write_rejects_unknown_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode='a' should be 'wb' or 'w'"):
        atomic_write(tmp_path / "x", lambda fh: None, mode="a")


# ------------------------------------------------------------------------- npy and JSON
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint16])
def test_atomic_save_npy_round_trip(tmp_path: Path, dtype) -> None:
    array = np.arange(12, dtype=dtype).reshape(3, 4)
    target = atomic_save_npy(tmp_path / "labels.npy", array)
    loaded = np.load(target)
    assert loaded.dtype == array.dtype
    np.testing.assert_array_equal(loaded, array)
    assert _entries(tmp_path) == ["labels.npy"]


def test_atomic_save_npy_adds_no_suffix(tmp_path: Path) -> None:
    atomic_save_npy(tmp_path / "data", np.zeros(3))
    assert _entries(tmp_path) == ["data"]


def test_atomic_write_json_converts_numpy(tmp_path: Path) -> None:
    obj = {
        "k": np.int64(4),
        "inertia": np.float32(1.5),
        "ok": np.bool_(True),
        "centres": np.array([[1, 2], [3, 4]]),
        "silhouette": [float("nan"), 0.5],
        "path": tmp_path,
        "per_k": {np.int64(3): 0.25, 2: np.float64(np.inf)},
        "shape": (2, 3),
    }
    target = atomic_write_json(tmp_path / "summary.json", obj)
    text = target.read_text()
    assert json.loads(text) == {
        "centres": [[1, 2], [3, 4]],
        "inertia": 1.5,
        "k": 4,
        "ok": True,
        "path": str(tmp_path),
        "per_k": {"2": None, "3": 0.25},
        "shape": [2, 3],
        "silhouette": [None, 0.5],
    }
    assert text.index('"centres"') < text.index('"k"')  # sorted
    assert '\n  "k": 4' in text  # indented
    assert text.endswith("}\n")


def test_atomic_write_json_refuses_unknown_objects(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot write an object of type object as JSON"):
        atomic_write_json(tmp_path / "x.json", {"a": object()})
    assert _entries(tmp_path) == []


# ---------------------------------------------------------------------- check_output_folder
def test_check_output_folder_accepts_new_folder(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper"
    assert check_output_folder(target) == target
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_check_output_folder_refuses_existing(tmp_path: Path) -> None:
    target = tmp_path / "results"
    target.mkdir()
    with pytest.raises(OutputError, match=_exists(target)):
        check_output_folder(target)
    assert check_output_folder(target, overwrite=True) == target


def test_check_output_folder_refuses_existing_file(a_file: Path) -> None:
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_output_folder(a_file, overwrite=True)


def test_check_output_folder_under_a_file(a_file: Path) -> None:
    target = a_file / "results"
    message = f"cannot write results to '{target}': '{a_file}' is not a folder"
    with pytest.raises(OutputError, match=re.escape(message)):
        check_output_folder(target)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_check_output_folder_unwritable_parent(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="Permission denied"):
            check_output_folder(locked / "results")
    finally:
        locked.chmod(0o700)


def test_check_output_folder_refuses_to_overwrite_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "work" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work" / "sub")
    with pytest.raises(OutputError, match="refusing to overwrite"):
        check_output_folder(tmp_path / "work", overwrite=True)


# ---------------------------------------------------------------------------- result_folder
def test_result_folder_moves_outputs_into_place(tmp_path: Path) -> None:
    target = tmp_path / "parent" / "results"
    with result_folder(target) as tmp:
        assert tmp.parent == target.parent
        assert tmp.name.startswith(".") and _entries(tmp) == [RESULT_MARKER]
        assert not target.exists()
        atomic_save_npy(tmp / "labels.npy", np.zeros((2, 2)))
    assert _entries(target) == [RESULT_MARKER, "labels.npy"]
    assert _entries(target.parent) == ["results"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~_UMASK


def test_result_folder_refuses_existing_before_work_starts(tmp_path: Path) -> None:
    target = tmp_path / "results"
    target.mkdir()
    (target / "old.txt").write_text("old")
    started = False
    with pytest.raises(OutputError, match=_exists(target)):
        with result_folder(target):
            started = True
    assert not started
    assert _entries(target) == ["old.txt"]
    assert _entries(tmp_path) == ["results"]


def _earlier_result(target: Path) -> None:
    with result_folder(target) as tmp:
        (tmp / "labels.npy").write_text("old")


def test_result_folder_overwrite_replaces(tmp_path: Path) -> None:
    target = tmp_path / "results"
    _earlier_result(target)
    with result_folder(target, overwrite=True) as tmp:
        (tmp / "summary.json").write_text("new")
        assert (target / "labels.npy").exists()  # untouched while the run works
    assert _entries(target) == [RESULT_MARKER, "summary.json"]
    assert _entries(tmp_path) == ["results"]


@pytest.mark.parametrize("exists", [False, True])
def test_result_folder_body_error_changes_nothing(tmp_path: Path, exists: bool) -> None:
    target = tmp_path / "results"
    if exists:
        _earlier_result(target)
    with pytest.raises(RuntimeError, match="boom"):
        with result_folder(target, overwrite=True) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert _entries(tmp_path) == (["results"] if exists else [])
    if exists:
        assert _entries(target) == [RESULT_MARKER, "labels.npy"]


def test_result_folder_under_a_file(a_file: Path) -> None:
    target = a_file / "results"
    with pytest.raises(OutputError, match=re.escape(f"cannot write results to '{target}'")):
        with result_folder(target):
            pytest.fail("the body must not run")


def test_result_folder_keeps_results_if_folder_appears_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "results"
    with pytest.raises(OutputError, match="finished results are in") as info:
        with result_folder(target) as tmp:
            (tmp / "labels.npy").write_bytes(b"x")
            target.mkdir()  # another run got there first
    assert str(tmp) in str(info.value)
    assert _entries(tmp) == [RESULT_MARKER, "labels.npy"]
    assert _entries(target) == []


def test_result_folder_overwrite_of_a_link_keeps_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("keep")
    link = tmp_path / "results"
    link.symlink_to(real, target_is_directory=True)
    with result_folder(link, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert not link.is_symlink() and _entries(link) == [RESULT_MARKER, "new.txt"]
    assert _entries(real) == ["keep.txt"]
