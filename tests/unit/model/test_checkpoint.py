"""Strict checkpoint loading: .pt (`{"model": sd}`) and .safetensors, and errors that name the bad keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from batchtrack.errors import CheckpointError
from batchtrack.model.configs import get_config
from batchtrack.model.loading.build import build_image_encoder
from batchtrack.model.loading.checkpoint import load_state_dict_file, load_strict, save_safetensors
from batchtrack.model.tracker.image_encoder import ImageEncoder
from batchtrack.model.tracker.tracker import Tracker


def _encoder(seed: int) -> ImageEncoder:
    torch.manual_seed(seed)
    encoder = ImageEncoder(get_config("test-tiny").image_encoder)
    with torch.no_grad():
        for p in encoder.parameters():
            p.normal_()
    return encoder


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_pt_file_with_model_key_loads_strictly(tmp_path: Path) -> None:
    source = _encoder(1)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict()}, path)
    target = _encoder(2)
    load_strict(target, load_state_dict_file(path), str(path))
    _assert_same_weights(source, target)


def test_bare_state_dict_pth_loads(tmp_path: Path) -> None:
    source = _encoder(1)
    path = tmp_path / "bare.pth"
    torch.save(source.state_dict(), path)
    target = _encoder(2)
    load_strict(target, load_state_dict_file(path), str(path))
    _assert_same_weights(source, target)


def test_safetensors_round_trip_keeps_weights_and_metadata(tmp_path: Path) -> None:
    from safetensors import safe_open

    source = _encoder(1)
    path = tmp_path / "w" / "tiny.safetensors"
    save_safetensors(source, path, {"model": "test-tiny"})
    target = _encoder(2)
    load_strict(target, load_state_dict_file(path), str(path))
    _assert_same_weights(source, target)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"model": "test-tiny"}


def test_missing_unexpected_and_misshaped_keys_are_named_with_the_file(tmp_path: Path) -> None:
    state = dict(_encoder(1).state_dict())
    del state["neck.convs.0.conv.bias"]
    state["trunk.extra.weight"] = torch.zeros(3)
    state["trunk.pos_embed"] = torch.zeros(1, 8, 5, 5)
    target = _encoder(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_strict(target, state, "bad.pt")
    message = str(info.value)
    assert "checkpoint bad.pt" in message
    assert "1 missing keys: neck.convs.0.conv.bias" in message
    assert "1 unexpected keys: trunk.extra.weight" in message
    assert "1 mis-shaped keys: trunk.pos_embed (file (1, 8, 5, 5), model (1, 8, 4, 4))" in message
    assert info.value.missing == ["neck.convs.0.conv.bias"]
    assert info.value.unexpected == ["trunk.extra.weight"]
    # Nothing was copied: the check happens before load_state_dict.
    for k, v in target.state_dict().items():
        assert torch.equal(v, before[k])


def test_long_key_lists_are_cut_with_a_count() -> None:
    with pytest.raises(CheckpointError, match=r"\d+ missing keys: .*\.\.\. \(\d+ more\)") as info:
        load_strict(_encoder(1), {}, "empty.pt")
    assert len(info.value.missing) == len(_encoder(1).state_dict())
    listed = re.search(r"missing keys: (.*?), \.\.\.", str(info.value))
    assert listed is not None
    assert len(listed.group(1).split(", ")) == 20


def test_unknown_suffix_and_missing_file_are_checkpoint_errors(tmp_path: Path) -> None:
    other = tmp_path / "w.ckpt"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"unknown file type '\.ckpt'"):
        load_state_dict_file(other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict_file(tmp_path / "absent.pt")


def test_corrupt_files_are_checkpoint_errors(tmp_path: Path) -> None:
    for name in ("junk.pt", "junk.safetensors"):
        path = tmp_path / name
        path.write_bytes(b"this is not a checkpoint")
        with pytest.raises(CheckpointError, match=f"checkpoint .*{re.escape(name)} cannot be read"):
            load_state_dict_file(path)


def test_pickled_objects_other_than_tensors_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "optimizer": Path("x")}, path)  # a non-tensor class object
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_state_dict_file(path)
    path2 = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path2)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_state_dict_file(path2)


def test_build_image_encoder_takes_the_image_encoder_part_of_a_full_checkpoint(tmp_path: Path) -> None:
    source = _encoder(1)
    full = {f"image_encoder.{k}": v for k, v in source.state_dict().items()}
    full["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 256)
    path = tmp_path / "full.pt"
    torch.save({"model": full}, path)
    encoder = build_image_encoder("test-tiny", checkpoint=path, device="cpu")
    _assert_same_weights(source, encoder)
    assert not encoder.training


# Copied from the SAM 2.1 reference notes into the repo so a clean clone runs this test.
REFERENCE_STATE_DICT = Path(__file__).resolve().parents[2] / "data" / "sam21_tiny_state_dict.txt"


def test_full_tracker_state_dict_equals_official_tiny_listing() -> None:
    expected = {}
    for line in REFERENCE_STATE_DICT.read_text().splitlines():
        if not line.startswith("#"):
            key, shape, _ = line.split("\t")
            expected[key] = tuple(int(s) for s in shape.strip("()").split(",") if s)
    with torch.device("meta"):
        tracker = Tracker(get_config("sam2.1_hiera_tiny"))
    assert {k: tuple(v.shape) for k, v in tracker.state_dict().items()} == expected


def test_build_tracker_loads_a_pt_checkpoint_strictly_and_rejects_a_foreign_one(tmp_path: Path) -> None:
    from batchtrack.model.loading.build import build_tracker

    torch.manual_seed(3)
    source = Tracker(get_config("test-tiny"))
    path = tmp_path / "test-tiny.pt"
    torch.save({"model": source.state_dict()}, path)
    built = build_tracker("test-tiny", checkpoint=path, device="cpu")
    _assert_same_weights(source, built)
    assert not built.training

    foreign = tmp_path / "encoder-only.safetensors"
    save_safetensors(_encoder(1), foreign)
    pattern = r"encoder-only\.safetensors does not match Tracker: \d+ missing keys: .*unexpected keys: .*trunk\."
    with pytest.raises(CheckpointError, match=pattern):
        build_tracker("test-tiny", checkpoint=foreign, device="cpu")


def test_build_tracker_uses_shipped_weights_when_no_checkpoint_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchtrack.model.loading import build

    torch.manual_seed(4)
    source = Tracker(get_config("test-tiny"))
    save_safetensors(source, tmp_path / "test-tiny.safetensors", {"model": "test-tiny"})
    monkeypatch.setattr(build, "WEIGHTS_DIR", tmp_path)
    _assert_same_weights(source, build.build_tracker("test-tiny", device="cpu"))
