"""The example notebooks run from top to bottom (nbclient, in a fresh Jupyter kernel), in a
temporary folder; a failing cell (the region 2 ARI assertion among them) fails the test."""

from __future__ import annotations

from pathlib import Path

import nbclient
import nbformat

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_region1_to_region2_notebook_runs(tmp_path):
    notebook = nbformat.read(EXAMPLES / "region1_to_region2.ipynb", as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "the notebook is stored without outputs"
    )
    nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    assert "region 2: adjusted Rand index against its truth" in text
    assert not [output for output in outputs if output.output_type == "error"]
    # the figures and the summary tables are displayed, not printed as reprs
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 3
    assert sum("text/html" in output.get("data", {}) for output in outputs) >= 3
    assert (tmp_path / "region1-model" / "summary.json").is_file()
