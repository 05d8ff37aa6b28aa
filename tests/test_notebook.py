"""notebooks/attention_walkthrough.ipynb runs top to bottom, offline, on a CPU.

The notebook runs on the embedded default model (`CAPTIONER_CHECKPOINT`, the hook it offers
users for their own models, is unset for the run).

Kernel: nbclient starts the `python3` kernelspec. jupyter_client launches a spec whose argv[0]
is plain "python" with the *current* interpreter (sys.executable), so under `.venv/bin/python
-m pytest` the kernel is the venv's Python; a cell appended to the in-memory copy checks
that through sys.prefix (the venv's python is a symlink, so comparing resolved executables
would not tell the venv from the system Python).
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "attention_walkthrough.ipynb"
KERNEL_CHECK = "import sys, json; print('KERNEL ' + json.dumps(sys.prefix))"


def test_committed_notebook_has_no_outputs_and_is_generated():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    sys.path.insert(0, str(NOTEBOOK.parent))
    try:
        import make_notebook
    finally:
        sys.path.remove(str(NOTEBOOK.parent))
    assert make_notebook.build() == nb, "the .ipynb is stale: rerun notebooks/make_notebook.py"


@pytest.mark.slow  # a Jupyter kernel and the default model: seconds
def test_notebook_runs(monkeypatch):
    monkeypatch.delenv("CAPTIONER_CHECKPOINT", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(KERNEL_CHECK))
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error

    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            elif "image/png" in out.get("data", {}):
                images += 1
    text = "".join(text)
    kernel_prefix = json.loads(re.search(r"^KERNEL (.+)$", text, re.M).group(1))
    assert kernel_prefix == sys.prefix  # the venv, not a system Python with another captioner

    match = re.search(r"^sum of alpha over all (\d+) regions = (\S+)$", text, re.M)
    assert match, text
    assert match.group(1) == "196"  # the default model's 14 x 14 grid
    assert float(match.group(2)) == pytest.approx(1.0, abs=1e-5)
    assert re.search(r"^beta = sigmoid\(f_beta\(h\)\) = 0\.\d{4}", text, re.M), text
    assert "maps identical to greedy decoding's" in text
    for scorer in ("additive", "dot", "scaled_dot", "general"):
        assert re.search(rf"^{scorer} \((un)?trained\)\s+[\d.]+\s+[\d.]+\s+[\d.]+$", text, re.M), scorer
    assert images >= 3  # the input image, the per-word panel and the scorer comparison
