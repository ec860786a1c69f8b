"""One-way layering (style.md): model/ and baselines/ never import ray, fsspec or pyarrow; io/ imports neither
torch nor ray; only pipeline/ imports ray; nothing in batchtrack imports jobs/ or tests/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "batchtrack"
FORBIDDEN = {
    "model": {"ray", "fsspec", "pyarrow", "s3fs", "batchtrack.pipeline", "batchtrack.io", "batchtrack.eval"},
    "io": {"torch", "ray", "batchtrack.pipeline", "batchtrack.model.tracker"},
    "synthetic": {"ray", "batchtrack.pipeline"},
    "eval": {"ray", "batchtrack.pipeline"},
    "baselines": {"ray", "fsspec", "pyarrow", "batchtrack.pipeline", "batchtrack.io", "batchtrack.eval"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _violations(package: str) -> list[str]:
    found = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for name in _imports(path):
            for banned in FORBIDDEN[package]:
                if name == banned or name.startswith(banned + "."):
                    found.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_layering(package: str) -> None:
    assert _violations(package) == []


def test_only_pipeline_imports_ray() -> None:
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if "pipeline" not in path.parts
        and path.name != "demo.py"
        and any(n == "ray" or n.startswith("ray.") for n in _imports(path))
    ]
    assert offenders == []


def test_layering_check_detects_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import ray.data\nfrom torch import nn\n")
    assert {"ray.data", "torch"} <= _imports(bad)
