"""`batchtrack export`: writes each format; user errors are one line on stderr and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchtrack.cli import main

from .conftest import FakeOutput
from .output_fixture import VIDEO_A, VIDEO_B


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("sav", f"{VIDEO_A}_auto.json"), ("ytvis", "instances.json"), ("davis", f"Annotations/{VIDEO_B}/00004.png")],
)
def test_export_writes_the_format(fake_output: FakeOutput, tmp_path: Path, fmt: str, expected: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", fake_output.path, str(tmp_path), "--format", fmt]) == 0
    assert (tmp_path / expected).is_file()
    assert "exported 2 videos (3 tracks" in capsys.readouterr().out


def test_missing_output_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "dest"), "--format", "sav"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("batchtrack: error:") and "no committed units" in err


def test_unknown_video_exits_2(fake_output: FakeOutput, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", fake_output.path, str(tmp_path), "--format", "davis", "--video", "f" * 16])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ffffffffffffffff" in err


def test_bad_storage_option_exits_2(fake_output: FakeOutput, tmp_path: Path) -> None:
    assert main(["export", fake_output.path, str(tmp_path), "--format", "sav", "--storage-option", "novalue"]) == 2


def test_unknown_format_is_an_argparse_error(fake_output: FakeOutput, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", fake_output.path, str(tmp_path), "--format", "coco"])
    assert exc.value.code == 2
