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


def _dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in _dockerfile_instructions():
        if op == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(args)))
    return env


def _rayjob_containers() -> list[dict[str, Any]]:
    cluster = _load(INFRA / "kuberay" / "rayjob.yaml")["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"]] + [w["template"]["spec"] for w in cluster["workerGroupSpecs"]]
    return [{**c, "volumes": pod.get("volumes", [])} for pod in pods for c in pod["containers"]]


def test_image_command_rayjob_entrypoint_and_cluster_submit_command_agree() -> None:
    entrypoint = _load(INFRA / "kuberay" / "rayjob.yaml")["spec"]["entrypoint"]
    cmd = next(args for op, args in _dockerfile_instructions() if op == "CMD")
    assert shlex.join(json.loads(cmd)) == entrypoint
    launcher_doc = (INFRA / "cluster" / "gpu.yaml").read_text()
    assert f"-- \\\n#       {entrypoint}" in launcher_doc or f"-- {entrypoint}" in launcher_doc


def test_the_checkpoint_comes_from_object_storage_and_nothing_in_infra_overrides_it() -> None:
    from batchtrack.config import load_config
    from batchtrack.model.configs import SAM21_NAMES
    from batchtrack.trackers import check_model_weights

    _, config = _entrypoint_script_and_config(_load(INFRA / "kuberay" / "rayjob.yaml")["spec"]["entrypoint"])
    model = load_config(ROOT / config).model
    assert model.name in SAM21_NAMES and model.checkpoint is not None
    assert model.checkpoint.startswith("s3://") and model.checkpoint.endswith(".pt")
    check_model_weights(model)  # a SAM 2.1 size with its checkpoint: no random weights
    for path in [*INFRA.rglob("*.yaml"), INFRA / "docker" / "Dockerfile"]:
        text = path.read_text()
        assert "/models/" not in text, f"{path} names a local checkpoint path no image provides"
        assert "BATCHTRACK_MODEL" not in text, f"{path} overrides the config's model"


def test_every_pod_mounts_a_checkpoint_cache_where_the_image_puts_it() -> None:
    cache = _dockerfile_env()["XDG_CACHE_HOME"]
    containers = _rayjob_containers()
    assert len(containers) >= 2
    for container in containers:
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env.get("XDG_CACHE_HOME") == cache, container["name"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volume = next(name for name, path in mounts.items() if path == cache)
        assert volume in {v["name"] for v in container["volumes"]}, container["name"]
    launcher = _load(INFRA / "cluster" / "gpu.yaml")["docker"]["run_options"]
    assert any(opt.endswith(f":{cache}") for opt in launcher)
