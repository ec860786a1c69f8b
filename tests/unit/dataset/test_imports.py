"""batchtrack.dataset reads outputs without Ray, and without torch until to_torch() is called."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "batchtrack" / "dataset"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module if node.module.startswith("batchtrack") else node.module.split(".")[0])
    return names


def test_no_ray_or_pipeline_and_torch_in_one_module() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 5
    found = {path.relative_to(PACKAGE).as_posix(): _imports(path) for path in modules}
    assert [name for name, imports in found.items() if "ray" in imports or "batchtrack.pipeline" in imports] == []
    assert [name for name, imports in found.items() if "torch" in imports] == ["torch_frames.py"]


def test_reading_an_output_does_not_import_torch() -> None:
    code = "import sys, batchtrack, batchtrack.dataset.exports; batchtrack.open_dataset; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
