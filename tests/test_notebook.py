"""notebooks/attention_walkthrough.ipynb runs top to bottom, offline, on a CPU.

The notebook uses the embedded default model. When this install does not have it yet (it is
trained separately), the test makes a tiny untrained checkpoint and points the notebook at it
through `CAPTIONER_CHECKPOINT`, the hook the notebook offers users for their own models; the
numbers are then meaningless, but every cell still has to run and print its lines.

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

import pytest
import torch

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from captioner.api import DEFAULT_CHECKPOINT  # noqa: E402
from captioner.checkpoint import save_checkpoint  # noqa: E402
from captioner.config import Config, ModelConfig  # noqa: E402
from captioner.model.caption_model import CaptionModel  # noqa: E402
from captioner.data.scenes import COLORS, SHAPES, SIZES  # noqa: E402
from captioner.words.vocab import SPECIALS, Vocab  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "attention_walkthrough.ipynb"
KERNEL_CHECK = "import sys, json; print('KERNEL ' + json.dumps(sys.prefix))"


def tiny_checkpoint(path: Path) -> Path:
    """Untrained, 96 px and a 3 x 3 grid (P = 9, so a top-5 exists); offline encoder weights."""
    cfg = Config(model=ModelConfig(image_size=96, grid=3, embed_dim=8, attention_dim=8, hidden_dim=8))
    vocab = Vocab([*SPECIALS, "a", "and", *SIZES, *COLORS, *SHAPES])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CaptionModel(config=cfg.model, vocab_size=len(vocab))
    with torch.no_grad():  # an untrained model may end at once; the notebook needs a word
        model.decoder.L_o.bias[vocab.end_id] = -20.0
    return save_checkpoint(path, model=model, config=cfg, vocab=vocab, epoch=0, step=0)


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


def test_notebook_runs(tmp_path, monkeypatch):
    if DEFAULT_CHECKPOINT.is_file():
        monkeypatch.delenv("CAPTIONER_CHECKPOINT", raising=False)
    else:  # the default model is not built yet: run on a tiny one instead (see module docstring)
        monkeypatch.setenv("CAPTIONER_CHECKPOINT", str(tiny_checkpoint(tmp_path / "tiny.pt")))
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
            assert out.output_type != "error"
            if out.output_type == "stream":
                text.append(out.text)
            elif "image/png" in out.get("data", {}):
                images += 1
    text = "".join(text)
    kernel_prefix = json.loads(re.search(r"^KERNEL (.+)$", text, re.M).group(1))
    assert kernel_prefix == sys.prefix  # the venv, not a system Python with another captioner

    match = re.search(r"^sum of alpha over all (\d+) regions = (\S+)$", text, re.M)
    assert match, text
    assert float(match.group(2)) == pytest.approx(1.0, abs=1e-5)
    assert re.search(r"^beta = sigmoid\(f_beta\(h\)\) = 0\.\d{4}", text, re.M), text
    assert "maps identical to greedy decoding's" in text
    for scorer in ("additive", "dot", "scaled_dot", "general"):
        assert re.search(rf"^{scorer} \((un)?trained\)\s+[\d.]+\s+[\d.]+\s+[\d.]+$", text, re.M), scorer
    assert images >= 3  # the input image, the per-word panel and the scorer comparison
