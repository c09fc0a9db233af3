"""``.ci/run``: runs the command written after README's ``<!-- test-command -->`` marker, with
GPU4D_REQUIRE_SHARED_DATA=1 so that missing sample data fails CI, and turns pytest's "no tests
collected" (exit 5) into a failure. Checked on a copy of the script beside a README of our own."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .helpers import REPO_ROOT

CI_RUN = REPO_ROOT / ".ci" / "run"


def run_ci(tmp_path: Path, command: str) -> subprocess.CompletedProcess:
    (tmp_path / ".ci").mkdir()
    shutil.copy(CI_RUN, tmp_path / ".ci" / "run")
    (tmp_path / "README.md").write_text(
        f"# project\n\nSet up and test:\n\n<!-- test-command -->\n```bash\n{command}\n```\n\nMore text.\n"
    )
    return subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_runs_the_readme_command_with_shared_data_required(tmp_path):
    done = run_ci(tmp_path, 'echo "flag=$GPU4D_REQUIRE_SHARED_DATA" && echo second')
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == ["flag=1", "second"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("status, expected", [(3, 3), (5, 1)])
def test_ci_fails_when_the_command_fails_or_collects_nothing(tmp_path, status, expected):
    done = run_ci(tmp_path, f"exit {status}")
    assert done.returncode == expected
    if status == 5:
        assert "ci: pytest collected no tests" in done.stderr


def test_readme_test_command_runs_both_suites():
    """The README's command (what CI runs) runs the main suite and the simulator suite."""
    text = (REPO_ROOT / "README.md").read_text()
    command = text.split("<!-- test-command -->", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert "-m pytest -q tests" in command
    assert "NUMBA_ENABLE_CUDASIM=1" in command and "tests/cudasim" in command
