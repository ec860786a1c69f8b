"""A hand-written job output in the work-unit layout (see output_fixture.py), one per session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from .output_fixture import Truth, write_fake_output


@dataclass(frozen=True)
class FakeOutput:
    path: str
    truth: Truth


@pytest.fixture(scope="session")
def fake_output(tmp_path_factory: pytest.TempPathFactory) -> FakeOutput:
    folder: Path = tmp_path_factory.mktemp("fake") / "out"
    return FakeOutput(str(folder), write_fake_output(str(folder)))
