"""The job's model, resolved once on the driver: what planning and the actors are handed."""

from __future__ import annotations

import pytest

from batchtrack.config import JobConfig, load_config
from batchtrack.errors import ConfigError
from batchtrack.trackers import resolve_model


def _cfg(model: str, **values: object) -> JobConfig:
    return load_config(None, corpus="/data", output="/out", model={"name": model}, **values)


def test_a_neural_model_has_automatic_mode_and_no_detector_by_default() -> None:
    model = resolve_model(_cfg("tiny-synthetic"))
    assert model.auto is not None and model.no_auto_reason is None
    assert model.checkpoint is None and model.checkpoint_hash.startswith("builtin-")
    assert not model.detector and not model.has_detector


def test_a_baseline_has_no_automatic_mode_and_says_why() -> None:
    model = resolve_model(_cfg("baseline-flow"))
    assert model.auto is None and "classical baseline" in (model.no_auto_reason or "")


def test_concepts_need_a_detector_named_by_where_they_come_from() -> None:
    with pytest.raises(ConfigError, match=r"^--text \(config key text\) needs a model with a concept detector"):
        resolve_model(_cfg("tiny-synthetic", text=["person"]))
    with pytest.raises(ConfigError, match=r"^--text needs"):
        resolve_model(_cfg("tiny-synthetic", text=["person"]), text_source="--text")
    with pytest.raises(ConfigError, match="the prompt manifest's text lines needs"):
        resolve_model(_cfg("tiny-synthetic")).with_concepts("the prompt manifest's text lines")


def test_a_learned_association_without_a_head_is_refused_on_the_driver() -> None:
    assert resolve_model(_cfg("tiny-synthetic", auto={"association": "learned"})).auto is not None  # ships one
    with pytest.raises(ConfigError, match=r"auto\.association='learned'.*'test-tiny' ships none"):
        resolve_model(_cfg("test-tiny", auto={"association": "learned"}))
    # Without automatic mode the head is never read, so its absence is no error.
    assert resolve_model(_cfg("test-tiny", auto={"association": "learned", "enabled": False})).auto is None
