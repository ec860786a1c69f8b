"""From a job's ModelConfig to a tracker: weights required or explicitly random, runtime overrides that
arrive, checkpoint URIs through the per-node cache (fsspec's in-memory filesystem stands in for a remote)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
import torch

from batchtrack.config import ModelConfig, load_config
from batchtrack.errors import ConfigError
from batchtrack.io import checkpoint_cache
from batchtrack.io.checkpoint_cache import fetch_checkpoint
from batchtrack.model.configs import get_config
from batchtrack.model.loading.build import build_tracker
from batchtrack.model.loading.checkpoint import save_safetensors
from batchtrack.model.tracker.tracker import Tracker
from batchtrack.trackers import check_model_weights, checkpoint_hash, load_tracker


@pytest.fixture
def memory_fs() -> Iterator[fsspec.AbstractFileSystem]:
    fs = fsspec.filesystem("memory")
    yield fs
    if fs.exists("/ckpt"):  # the memory filesystem is process-wide
        fs.rm("/ckpt", recursive=True)


@pytest.fixture(scope="module")
def test_tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    path = tmp_path_factory.mktemp("weights") / "test-tiny.safetensors"
    save_safetensors(Tracker(get_config("test-tiny")), path)
    return path


@pytest.mark.parametrize("name", ["sam2.1_hiera_tiny", "sam2.1_hiera_large"])
def test_a_model_without_shipped_weights_needs_a_checkpoint_flag(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"model '{name}' ships no weights: give .*--checkpoint.*--random-weights"):
        check_model_weights(ModelConfig(name=name))
    with pytest.raises(ConfigError, match="ships no weights: pass checkpoint=PATH"):
        build_tracker(name, device="cpu")


def test_random_weights_only_when_asked_and_the_same_every_time() -> None:
    check_model_weights(ModelConfig(name="sam2.1_hiera_large", random_weights=True))
    assert checkpoint_hash(ModelConfig(name="sam2.1_hiera_large", random_weights=True)) == "random-0"
    torch.manual_seed(123)
    first = build_tracker("test-tiny", device="cpu", random_weights=True)
    state = torch.get_rng_state()
    second = build_tracker("test-tiny", device="cpu", random_weights=True)
    assert torch.equal(state, torch.get_rng_state()), "random weights must not consume the caller's RNG"
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_random_weights_and_a_checkpoint_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match=r"model\.random_weights and model\.checkpoint exclude each other"):
        load_config(corpus="c", output="o", model={"name": "sam2.1_hiera_tiny", "checkpoint": "x.pt",
                                                   "random_weights": True})


def test_baselines_take_no_weights() -> None:
    with pytest.raises(ConfigError, match="classical baseline, which has no weights"):
        check_model_weights(ModelConfig(name="baseline-flow", random_weights=True))


def test_image_size_encoder_batch_and_cond_limit_reach_the_tracker(test_tiny_weights: Path) -> None:
    cfg = ModelConfig(
        name="test-tiny", checkpoint=str(test_tiny_weights), image_size=128, encoder_batch_size=2, max_cond_frames=3
    )
    tracker = load_tracker(cfg, "cpu")
    assert isinstance(tracker, Tracker)
    assert (tracker.config.image_size, tracker.config.encoder_batch_size) == (128, 2)
    assert tracker.config.max_cond_frames_in_attn == 3
    assert tracker.new_bank().max_cond_frames == 3
    assert tracker.sam_prompt_encoder.image_size == 128
    defaults = load_tracker(ModelConfig(name="test-tiny"), "cpu")
    assert isinstance(defaults, Tracker) and defaults.config == get_config("test-tiny")


def test_a_checkpoint_path_and_its_file_uri_hash_to_the_file_content(test_tiny_weights: Path) -> None:
    expected = hashlib.sha256(test_tiny_weights.read_bytes()).hexdigest()[:16]
    assert checkpoint_hash(ModelConfig(name="test-tiny", checkpoint=str(test_tiny_weights))) == expected
    assert checkpoint_hash(ModelConfig(name="test-tiny", checkpoint=test_tiny_weights.as_uri())) == expected


def test_a_missing_checkpoint_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.checkpoint .*absent\.pt does not exist"):
        checkpoint_hash(ModelConfig(name="test-tiny", checkpoint=str(tmp_path / "absent.pt")))


def test_a_remote_checkpoint_is_downloaded_once_into_a_content_named_file(
    memory_fs: fsspec.AbstractFileSystem, test_tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = test_tiny_weights.read_bytes()
    memory_fs.pipe("/ckpt/model.safetensors", data)
    downloads = _count_downloads(monkeypatch)
    cache = tmp_path / "cache"
    first = fetch_checkpoint("memory://ckpt/model.safetensors", cache_dir=cache)
    second = fetch_checkpoint("memory://ckpt/model.safetensors", cache_dir=cache)
    digest = hashlib.sha256(data).hexdigest()
    assert first == second and len(downloads) == 1
    assert first.path == cache / "blobs" / f"{digest}.safetensors" and first.path.read_bytes() == data
    assert not list((cache / "blobs").glob(".partial-*"))

    cfg = ModelConfig(name="test-tiny", checkpoint="memory://ckpt/model.safetensors", cache_dir=str(cache))
    assert checkpoint_hash(cfg) == digest[:16]
    tracker = load_tracker(cfg, "cpu")
    assert isinstance(tracker, Tracker)
    assert len(downloads) == 1

    memory_fs.pipe("/ckpt/model.safetensors", data + b"\0")  # the object changed: fetched again
    assert fetch_checkpoint("memory://ckpt/model.safetensors", cache_dir=cache).sha256 != digest
    assert len(downloads) == 2


def test_actors_starting_together_download_once(
    memory_fs: fsspec.AbstractFileSystem, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory_fs.pipe("/ckpt/big.pt", b"x" * (3 * checkpoint_cache.CHUNK + 5))
    downloads = _count_downloads(monkeypatch)
    results: list[Path] = []

    def start_actor() -> None:
        results.append(fetch_checkpoint("memory://ckpt/big.pt", cache_dir=tmp_path).path)

    threads = [threading.Thread(target=start_actor) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(downloads) == 1 and len(set(results)) == 1 and len(results) == 4


def _count_downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = checkpoint_cache._download

    def counting(fs: fsspec.AbstractFileSystem, path: str, uri: str, cache: Path) -> tuple[Path, str]:
        calls.append(uri)
        return real(fs, path, uri, cache)

    monkeypatch.setattr(checkpoint_cache, "_download", counting)
    return calls
