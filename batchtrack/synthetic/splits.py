"""The seed splits of the synthetic data: training, validation and test scenes never share a scene seed.

A synthetic video is a pure function of its `SceneSpec`, whose `seed` draws every random choice of the
scene. The three splits are disjoint ranges of that seed:

- `TRAIN`: the seeds training clips are drawn from (`batchtrack.training.data`, uniformly in the range);
- `VALIDATION`: checkpoint selection and tuning only (jobs/train.py scores checkpoints on it);
- `TEST`: reported once per shipped model (bench/quality.py), never used to choose anything.

Validation and test videos take consecutive seeds of their split, in one block per benchmark subset, so
the n-th test video of a subset is the same video on every machine and in every run.

    >>> TRAIN.start, TRAIN.stop
    (0, 2147483647)
    >>> scene_seeds(TEST, "occlusion", 2)
    [4294967296, 4294967297]
    >>> any(s in TRAIN or s in VALIDATION for s in scene_seeds(TEST, "mixed", 100))
    False
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from batchtrack.errors import ConfigError
from batchtrack.synthetic.corpus import (
    BENCHMARK_SUBSETS,
    PROMPTS_FILE,
    SyntheticVideo,
    write_prompts,
    write_synthetic_video,
)
from batchtrack.synthetic.scene import SceneSpec

# Seeds per benchmark subset inside the validation and test ranges.
SUBSET_BLOCK = 2**16


@dataclass(frozen=True)
class SeedRange:
    """Scene seeds `start <= seed < stop` of one split."""

    name: str
    start: int
    stop: int

    def __contains__(self, seed: object) -> bool:
        return isinstance(seed, int | np.integer) and self.start <= int(seed) < self.stop

    def __len__(self) -> int:
        return self.stop - self.start

    def draw(self, rng: np.random.Generator) -> int:
        """One seed drawn uniformly from the range (for the training stream)."""
        return int(rng.integers(self.start, self.stop))


# Training has always drawn scene seeds with `rng.integers(0, 2**31 - 1)`; keeping that range keeps the
# shipped weights' data stream bit for bit. Validation and test lie above it, so no draw can reach them.
TRAIN = SeedRange("train", 0, 2**31 - 1)
VALIDATION = SeedRange("validation", 2**31, 2**31 + len(BENCHMARK_SUBSETS) * SUBSET_BLOCK + 2**24)
TEST = SeedRange("test", 2**32, 2**32 + len(BENCHMARK_SUBSETS) * SUBSET_BLOCK + 2**24)
SPLITS: dict[str, SeedRange] = {split.name: split for split in (TRAIN, VALIDATION, TEST)}


def get_split(name: str) -> SeedRange:
    """The split called `name` ("train", "validation" or "test")."""
    if name not in SPLITS:
        raise ConfigError(f"unknown seed split {name!r}; choose one of {sorted(SPLITS)}")
    return SPLITS[name]


def scene_seeds(split: SeedRange, subset: str, count: int) -> list[int]:
    """The scene seeds of the first `count` videos of `subset` in a validation or test split."""
    if split is TRAIN:
        raise ConfigError("the training split is a stream of random draws, not a list of benchmark videos")
    if subset not in BENCHMARK_SUBSETS:
        raise ConfigError(f"unknown benchmark subset {subset!r}; choose one of {sorted(BENCHMARK_SUBSETS)}")
    if not 1 <= count <= SUBSET_BLOCK:
        raise ConfigError(f"count must be between 1 and {SUBSET_BLOCK}, got {count}")
    first = split.start + list(BENCHMARK_SUBSETS).index(subset) * SUBSET_BLOCK
    seeds = list(range(first, first + count))
    assert seeds[-1] in split
    return seeds


def make_split_videos(
    out_dir: Path | str,
    split: SeedRange,
    subset: str,
    num_videos: int,
    *,
    width: int = 320,
    height: int = 240,
    num_frames: int = 60,
) -> list[SyntheticVideo]:
    """Write the first `num_videos` videos of `subset` in `split` with ground truth and `prompts.jsonl`.

    Video `{subset}_{NNN}` has scene seed `scene_seeds(split, subset, ...)[NNN]` and the subset's knobs
    (`BENCHMARK_SUBSETS`); its object count (2-5) comes from its seed too.
    """
    out = Path(out_dir)
    videos = []
    for index, seed in enumerate(scene_seeds(split, subset, num_videos)):
        spec = SceneSpec(
            seed=seed,
            width=width,
            height=height,
            num_frames=num_frames,
            num_objects=int(np.random.default_rng([seed, 1]).integers(2, 6)),
            **BENCHMARK_SUBSETS[subset],
        )
        videos.append(write_synthetic_video(spec, out, f"{subset}_{index:03d}"))
    write_prompts(out / PROMPTS_FILE, videos)
    return videos
