"""The package's layout: which stage may import which (pyproject.toml's import-linter contracts
hold), and the version is written once.

The contracts (STYLE.md point 1): the model imports no data, training, API or CLI code; scoring
does not import the scenes generator; only the package root and the CLI import the API, and
nothing imports the CLI; only the CLI imports the web server (`captioner.serve`, an optional
extra), which, like the rest of the library, imports neither the API nor the CLI. grimp builds the graph from every import statement, those inside
functions included, and a forbidden contract also catches an import that goes through a third
module. The second test breaks a copy of the package on purpose, so a contract that checks
nothing (a typo in a module name, a linter that is not run) cannot pass unnoticed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = (
    "the model imports no data, training, API or CLI code",
    "scoring does not import the scenes generator",
    "only the package root (re-exports) and the CLI import the API",
    "only the CLI imports the web server",
)


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the package under `root`, with root/pyproject.toml's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}  # wide: no wrapped names
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()",
         "--config", str(root / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )


def test_import_contracts_are_kept() -> None:
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in proc.stdout, proc.stdout


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + text, encoding="utf-8")


def test_a_forbidden_import_breaks_its_contract(tmp_path: Path) -> None:
    shutil.copytree(REPO / "captioner", tmp_path / "captioner",
                    ignore=shutil.ignore_patterns("__pycache__", "assets"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    pkg = tmp_path / "captioner"
    _append(pkg / "model" / "decoder.py", "\nimport captioner.train.loop\n")
    _append(pkg / "scoring" / "__init__.py", "\nfrom captioner.data import scenes\n")
    # Inside functions, where a lazy import would hide from a top-of-file grep.
    _append(pkg / "words" / "vocab.py", "\n\ndef _late():\n    import captioner.api\n")
    _append(pkg / "checkpoint.py", "\n\ndef _late():\n    from captioner import cli\n")
    _append(pkg / "evaluation.py", "\n\ndef _late():\n    import captioner.serve.app\n")
    # The server is under the facades too: it must not import the API (it takes a Captioner).
    _append(pkg / "serve" / "batching.py", "\n\ndef _late():\n    from captioner import api\n")

    proc = lint_imports(tmp_path)
    out = proc.stdout
    assert proc.returncode != 0, out
    assert f"Contracts: 0 kept, {len(CONTRACTS)} broken." in out, out
    for name in CONTRACTS:
        assert name in out.split("Broken contracts", 1)[1], (name, out)
    for line in ("captioner.model.decoder -> captioner.train.loop",
                 "captioner.scoring -> captioner.data.scenes",
                 "captioner.words.vocab -> captioner.api",
                 "captioner.checkpoint -> captioner.cli",
                 "captioner.evaluation -> captioner.serve.app",
                 "captioner.serve.batching -> captioner.api"):
        assert line in out, (line, out)


def test_version_is_pyprojects(capsys) -> None:
    """`captioner --version` and `captioner.__version__` both come from pyproject.toml."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    import captioner
    from captioner.cli import main

    expected = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert captioner.__version__ == expected
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"captioner {expected}\n"
    copies = [p for p in (REPO / "captioner").rglob("*.py") if expected in p.read_text(encoding="utf-8")]
    assert copies == [], f"a second copy of the version {expected}"
