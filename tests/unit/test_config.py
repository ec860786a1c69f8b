"""JobConfig: YAML < env < flags precedence, and errors that name the key (and line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchtrack.config import JobConfig, load_config
from batchtrack.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


def test_yaml_values_are_used(tmp_path: Path) -> None:
    path = _write(tmp_path, "corpus: s3://b/v\noutput: /o\nclip:\n  length_frames: 30\nunit:\n  max_videos: 2\n")
    cfg = load_config(path)
    assert cfg.corpus == "s3://b/v"
    assert cfg.clip.length_frames == 30
    assert cfg.unit.max_videos == 2
    assert cfg.model.name == "tiny-synthetic"


def test_env_overrides_yaml_and_flags_override_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "corpus: a\noutput: b\nactors:\n  num_actors: 1\n")
    monkeypatch.setenv("BATCHTRACK_ACTORS__NUM_ACTORS", "3")
    assert load_config(path).actors.num_actors == 3
    assert load_config(path, actors={"num_actors": 5}).actors.num_actors == 5


def test_none_flags_do_not_mask_file_values(tmp_path: Path) -> None:
    path = _write(tmp_path, "corpus: a\noutput: b\nprompts: p.jsonl\n")
    assert load_config(path, prompts=None).prompts == "p.jsonl"


def test_unknown_yaml_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "corpus: a\noutput: b\nclip:\n  length_frames: 10\n  overlapp: 3\n")
    with pytest.raises(ConfigError, match=r"job\.yaml, line 5: unknown key 'clip\.overlapp'"):
        load_config(path)


def test_bad_value_names_key_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "corpus: a\noutput: b\nactors:\n  num_gpus: -1\n")
    with pytest.raises(ConfigError, match=r"line 4: key 'actors\.num_gpus'.*got -1"):
        load_config(path)


def test_clips_no_longer_overlap_so_an_old_overlap_key_is_named_as_unknown() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'clip\.overlap_frames'"):
        load_config(corpus="a", output="b", clip={"length_frames": 10, "overlap_frames": 2})


def test_unknown_env_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHTRACK_CLIPS__LENGTH_FRAMES", "3")
    with pytest.raises(ConfigError, match="BATCHTRACK_CLIPS__LENGTH_FRAMES"):
        load_config(corpus="a", output="b")


def test_bad_env_value_names_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCHTRACK_ACTORS__NUM_ACTORS", "many")
    with pytest.raises(ConfigError, match=r"key 'actors\.num_actors'"):
        load_config(corpus="a", output="b")


def test_missing_required_keys_are_named() -> None:
    with pytest.raises(ConfigError, match="key 'output'"):
        load_config(corpus="a")


def test_non_mapping_yaml_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_redacted_masks_credentials() -> None:
    cfg = JobConfig.model_validate(
        {"corpus": "a", "output": "b", "storage_options": {"key": "AKIA123", "secret": "s3cr3t", "endpoint_url": "x"}}
    )
    text = str(cfg.redacted())
    assert "AKIA123" not in text
    assert "s3cr3t" not in text
    assert "'endpoint_url': 'x'" in text


def test_concept_recondition_interval_defaults_to_sam3s_and_comes_from_yaml_env_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_config(corpus="a", output="b").concept.recondition_every == 16  # recondition_every_nth_frame
    path = _write(tmp_path, "corpus: a\noutput: b\nconcept:\n  recondition_every: 4\n")
    assert load_config(path).concept.recondition_every == 4
    monkeypatch.setenv("BATCHTRACK_CONCEPT__RECONDITION_EVERY", "0")  # 0: never
    assert load_config(path).concept.recondition_every == 0
    assert load_config(path, concept={"recondition_every": 2}).concept.recondition_every == 2


def test_a_negative_recondition_interval_names_the_key_line_and_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "corpus: a\noutput: b\nconcept:\n  recondition_every: -1\n")
    expected = r"job\.yaml, line 4: key 'concept\.recondition_every': .*greater than or equal to 0 \(got -1\)"
    with pytest.raises(ConfigError, match=expected):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown key 'concept\.recondition_evry'"):
        load_config(corpus="a", output="b", concept={"recondition_evry": 4})
    monkeypatch.setenv("BATCHTRACK_CONCEPT__RECONDITION_EVERY", "often")
    with pytest.raises(ConfigError, match=r"key 'concept\.recondition_every'.*got 'often'"):
        load_config(corpus="a", output="b")
