"""Seed splits: training, validation and test scenes are disjoint, and each consumer reads only its own split."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import numpy as np
import pytest

from batchtrack.errors import ConfigError
from batchtrack.synthetic import BENCHMARK_SUBSETS, read_ground_truth
from batchtrack.synthetic.splits import SPLITS, TEST, TRAIN, VALIDATION, get_split, make_split_videos, scene_seeds
from batchtrack.training.config import DataSpec
from batchtrack.training.data import _scene_spec

ROOT = Path(__file__).resolve().parents[3]


def test_the_three_seed_ranges_are_disjoint() -> None:
    ranges = sorted(SPLITS.values(), key=lambda r: r.start)
    assert [r.name for r in ranges] == ["train", "validation", "test"]
    for lower, upper in itertools.pairwise(ranges):
        assert lower.stop <= upper.start
    for split in (VALIDATION, TEST):
        for subset in BENCHMARK_SUBSETS:
            seeds = scene_seeds(split, subset, 50)
            assert all(s in split for s in seeds)
            assert not any(s in other for s in seeds for other in SPLITS.values() if other is not split)


def test_benchmark_subsets_of_a_split_never_share_a_scene() -> None:
    seen = [s for subset in BENCHMARK_SUBSETS for s in scene_seeds(TEST, subset, 100)]
    assert len(seen) == len(set(seen))


def test_training_draws_only_training_seeds_and_its_stream_is_unchanged() -> None:
    spec = DataSpec()
    for step in range(200):
        rng = np.random.default_rng([0, 0, step, 0])
        seed = _scene_spec(rng, spec).seed
        assert seed in TRAIN and seed not in VALIDATION and seed not in TEST
        # The draw the shipped weights were trained with: the same integer from the same stream.
        assert seed == int(np.random.default_rng([0, 0, step, 0]).integers(0, 2**31 - 1))


def test_quality_bench_reads_only_the_test_split_and_training_only_the_validation_split() -> None:
    def split_names(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "batchtrack.synthetic.splits":
                imported |= {alias.name for alias in node.names}
        return imported & {"TRAIN", "VALIDATION", "TEST", "SPLITS", "get_split"}

    assert split_names(ROOT / "bench" / "quality.py") == {"TEST"}
    assert split_names(ROOT / "batchtrack" / "training" / "validation.py") == {"VALIDATION"}
    assert split_names(ROOT / "jobs" / "train.py") == set()


def test_split_videos_use_their_split_seeds_and_are_reproducible(tmp_path: Path) -> None:
    size = {"width": 64, "height": 48, "num_frames": 3}
    a = make_split_videos(tmp_path / "a", TEST, "occlusion", 2, **size)
    b = make_split_videos(tmp_path / "b", TEST, "occlusion", 2, **size)
    v = make_split_videos(tmp_path / "v", VALIDATION, "occlusion", 1, **size)
    assert [x.spec.seed for x in a] == scene_seeds(TEST, "occlusion", 2)
    assert v[0].spec.seed in VALIDATION
    assert a[0].spec.occlusion == BENCHMARK_SUBSETS["occlusion"]["occlusion"]
    assert (tmp_path / "a" / "prompts.jsonl").is_file()
    assert read_ground_truth(a[1].gt_path).rles == read_ground_truth(b[1].gt_path).rles


def test_bad_split_requests_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="training split is a stream"):
        scene_seeds(TRAIN, "mixed", 1)
    with pytest.raises(ConfigError, match="unknown benchmark subset 'snow'"):
        scene_seeds(TEST, "snow", 1)
    with pytest.raises(ConfigError, match="unknown seed split 'dev'"):
        get_split("dev")
