"""One-way layering (style.md): model/ and baselines/ never import ray, fsspec or pyarrow; io/ imports neither
torch nor ray; only pipeline/ imports ray; nothing in batchtrack imports jobs/ or tests/. Inside model/, each
part imports only parts of a lower rank (design.md §4): configs.py, types.py < nn/ < tracker/ < sam3/, modes/ <
loading/. No two modules import each other, directly or around a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "batchtrack"
# Ranks of the parts of model/: a part imports only parts of a lower rank (and itself), so tracker/ never imports
# sam3/ (the builder passes SAM 3's image encoder in), and sam3/ and modes/ never import each other.
MODEL_RANKS = {"configs": 0, "types": 0, "nn": 1, "tracker": 2, "sam3": 3, "modes": 3, "loading": 4}
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


def _model_part(module: str) -> str | None:
    """The part of model/ a module belongs to ('batchtrack.model.tracker.step' -> 'tracker'); None outside model/."""
    parts = module.split(".")
    if parts[:2] != ["batchtrack", "model"] or len(parts) < 3:
        return None
    return parts[2]


def _model_imports(path: Path) -> set[str]:
    """`_imports`, with `from batchtrack.model import x` read as the module batchtrack.model.x."""
    names = _imports(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "batchtrack.model" and node.level == 0:
            names.update(f"batchtrack.model.{alias.name}" for alias in node.names)
    return names


def _rank_violations(model_dir: Path) -> list[str]:
    """Imports inside `model_dir` (a model/ tree) from a part of the same or a higher rank, or from an unranked part."""
    found = []
    for path in sorted(model_dir.rglob("*.py")):
        relative = path.relative_to(model_dir)
        if relative == Path("__init__.py"):
            continue
        part = relative.parts[0].removesuffix(".py")
        if part not in MODEL_RANKS:
            found.append(f"{relative} is in model/{part}, which has no rank")
            continue
        for name in sorted(_model_imports(path)):
            target = _model_part(name)
            if target is None or target == part:
                continue
            if target not in MODEL_RANKS or MODEL_RANKS[target] >= MODEL_RANKS[part]:
                found.append(f"{relative} ({part}) imports {name} ({target})")
    return found


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


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Every batchtrack module and the batchtrack modules it imports anywhere (lazy and type-only imports too)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            while imported and imported not in modules:  # `from pkg.mod import name` names the module pkg.mod
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):  # a package's own __init__
                targets.add(imported)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_between_modules() -> None:
    assert _cycles(_import_graph()) == []


def test_circle_check_detects_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_model_parts_import_only_lower_ranks() -> None:
    assert _rank_violations(PACKAGE / "model") == []


def test_rank_check_detects_upward_sideways_and_unranked_imports(tmp_path: Path) -> None:
    model = tmp_path / "model"
    files = {
        "tracker/tracker.py": "from batchtrack.model.sam3.dual_neck import Sam3ImageEncoder\n",  # upward
        "sam3/concept.py": "from batchtrack.model.modes import concept\n",  # sideways (same rank)
        "nn/layers.py": "from batchtrack.model.configs import PATCH_STRIDE\nimport torch\n",  # allowed
        "modes/auto.py": "import batchtrack.model.tracker.step\nfrom batchtrack.model.nn.masks import mask_nms\n",
        "extra/thing.py": "\n",  # a part without a rank
    }
    for name, text in files.items():
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_text(text)
    assert _rank_violations(model) == [
        "extra/thing.py is in model/extra, which has no rank",
        "sam3/concept.py (sam3) imports batchtrack.model.modes (modes)",
        "tracker/tracker.py (tracker) imports batchtrack.model.sam3.dual_neck (sam3)",
    ]
