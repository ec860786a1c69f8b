"""The batch job on a multi-node ray.cluster_utils.Cluster: a node that declares a GPU, and a node lost mid-job."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import ray
from ray._private import ray_constants
from ray.cluster_utils import Cluster

from batchtrack.config import load_config
from batchtrack.pipeline.job import JobSummary, run_job

from .conftest import CLIP_FRAMES, Corpus, assert_complete_dataset, read_table

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # The head runs the driver and Ray's own actors but no tracker: trackers must land on worker nodes.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def _run(corpus: Corpus, output: Path, **actors: object) -> JobSummary:
    cfg = load_config(
        None,
        corpus=str(corpus.folder),
        output=str(output),
        prompts=str(corpus.prompts),
        model={"name": "test-tiny"},
        clip={"length_frames": CLIP_FRAMES},
        actors={"num_cpus": 1, **actors},
        unit={"max_videos": 1},
        max_failed_fraction=0.5,
    )
    return run_job(cfg)


def test_actor_placed_on_a_gpu_node_without_cuda_tracks_on_cpu(
    cluster: Cluster, mixed_corpus: Corpus, tmp_path: Path
) -> None:
    cluster.add_node(num_cpus=1)
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    summary = _run(mixed_corpus, tmp_path / "out", num_actors=1, num_gpus=1)
    assert (summary.ok, summary.failed) == (9, 3)
    ok = [c for c in read_table(tmp_path / "out", "clips").to_pylist() if c["status"] == "ok"]
    assert {c["device"] for c in ok} == {"cpu"}
    assert {c["node_id"] for c in ok} == {gpu_node.node_id}
    assert_complete_dataset(tmp_path / "out", mixed_corpus.prompts, lambda name: str(mixed_corpus.folder / name))


def test_a_node_lost_mid_job_is_replaced_and_every_row_lands_once(
    cluster: Cluster, mixed_corpus: Corpus, tmp_path: Path
) -> None:
    raylets = {
        node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid: node for node in cluster.worker_nodes
    }
    assert len(raylets) == 2  # the previous test's nodes: two actors fill them
    output = tmp_path / "out"
    removed: list[str] = []

    def lose_the_node_of_a_busy_actor() -> None:
        me = psutil.Process(os.getpid())
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for proc in me.children(recursive=True):
                try:
                    busy = "UnitTracker)).submit" in " ".join(proc.cmdline())
                    parent = proc.ppid()
                except psutil.Error:
                    continue
                if busy and parent in raylets:
                    removed.append(raylets[parent].node_id)
                    cluster.remove_node(raylets[parent], allow_graceful=False)
                    cluster.add_node(num_cpus=1)  # what an autoscaler would do
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=lose_the_node_of_a_busy_actor, daemon=True)
    thread.start()
    summary = _run(mixed_corpus, output, num_actors=2, num_gpus=0)
    thread.join(timeout=60)
    assert removed, "no node with a busy tracker was caught"
    assert (summary.ok, summary.failed) == (9, 3)
    assert_complete_dataset(output, mixed_corpus.prompts, lambda name: str(mixed_corpus.folder / name))
    nodes = {c["node_id"] for c in read_table(output, "clips").to_pylist() if c["status"] == "ok"}
    assert nodes - set(removed), "no clip was tracked off the lost node"
