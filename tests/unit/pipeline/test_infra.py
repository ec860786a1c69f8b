"""infra/: the KubeRay RayJob, the Ray cluster launcher YAML and the Dockerfile are checked, not just stored."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml

ROOT = Path(__file__).resolve().parents[3]
INFRA = ROOT / "infra"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _entrypoint_script_and_config(command: str) -> tuple[str, str]:
    words = shlex.split(command)
    assert words[0] == "python", command
    config = words[words.index("--config") + 1]
    return words[1], config


def test_rayjob_has_the_fields_kuberay_requires() -> None:
    job = _load(INFRA / "kuberay" / "rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    assert re.fullmatch(r"2\.\d+\.\d+", cluster["rayVersion"])
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["template"]["spec"]["containers"][0]["image"]
    workers = cluster["workerGroupSpecs"]
    assert workers and all(w["minReplicas"] <= w["replicas"] <= w["maxReplicas"] for w in workers)
    gpus = [
        c["resources"]["limits"].get("nvidia.com/gpu")
        for w in workers
        for c in w["template"]["spec"]["containers"]
    ]
    assert any(g is not None and int(g) >= 1 for g in gpus)
    assert yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"]
    assert spec["shutdownAfterJobFinishes"] is True


def test_rayjob_entrypoint_runs_the_job_script_with_a_config_that_loads() -> None:
    from batchtrack.config import load_config

    spec = _load(INFRA / "kuberay" / "rayjob.yaml")["spec"]
    script, config = _entrypoint_script_and_config(spec["entrypoint"])
    assert script == "jobs/track_corpus.py" and (ROOT / script).is_file()
    cfg = load_config(ROOT / config)
    assert cfg.actors.num_gpus >= 1


def test_rayjob_image_matches_the_cluster_launcher_image() -> None:
    spec = _load(INFRA / "kuberay" / "rayjob.yaml")["spec"]["rayClusterSpec"]
    cluster = _load(INFRA / "cluster" / "gpu.yaml")
    assert spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == cluster["docker"]["image"]


def test_cluster_launcher_yaml_validates_against_rays_own_schema() -> None:
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = _load(INFRA / "cluster" / "gpu.yaml")
    jsonschema.validate(config, schema)
    broken = {**config, "max_workers": "many"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_cluster_launcher_has_gpu_workers_and_a_head_that_tracks_nothing() -> None:
    config = _load(INFRA / "cluster" / "gpu.yaml")
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["CPU"] == 0
    assert any(t.get("resources", {}).get("GPU", 0) >= 1 for t in types.values())
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (INFRA / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_installs_torch_before_the_project() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0][0] == "FROM"
    pip_runs = [args for op, args in instructions if op == "RUN" and "pip install" in args]
    assert re.search(r"pip install torch==\d", pip_runs[0]), pip_runs
    project = next(i for i, args in enumerate(pip_runs) if re.search(r'pip install "?\.', args))
    assert project > 0


def test_dockerfile_copies_what_the_job_needs_and_drops_root() -> None:
    instructions = _dockerfile_instructions()
    copied = " ".join(args for op, args in instructions if op == "COPY")
    for needed in ("pyproject.toml", "batchtrack", "jobs"):
        assert needed in copied
        assert (ROOT / needed).exists()
    assert ("USER", "ray") in instructions
    known = {"FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "CMD", "ARG", "LABEL", "EXPOSE", "ENTRYPOINT"}
    assert {op for op, _ in instructions} <= known
