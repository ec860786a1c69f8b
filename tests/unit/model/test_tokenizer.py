"""CLIP's BPE tokenizer as SAM 3 uses it: pinned ids, cleaning, padding, truncation and the shipped vocabulary.

The pinned ids were checked against the official sam3 tokenizer (tests/parity/test_sam3_text_parity.py
compares many more phrases with the oracle itself).
"""

from __future__ import annotations

import fnmatch
import gzip
from pathlib import Path

import pytest
import torch

from batchtrack.model.sam3.text.tokenizer import (
    DEFAULT_BPE_PATH,
    SAM3_CONTEXT_LENGTH,
    Tokenizer,
    byte_symbols,
    clean_text,
    default_tokenizer,
)

SOT, EOT = 49406, 49407
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return default_tokenizer()


def test_phrases_get_clips_ids_padded_to_sams_context(tok: Tokenizer) -> None:
    ids = tok(["a red car", "Hello, World!!"])
    assert ids.dtype == torch.long and ids.shape == (2, SAM3_CONTEXT_LENGTH)
    assert ids[0, :5].tolist() == [SOT, 320, 736, 1615, EOT]
    assert ids[1, :6].tolist() == [SOT, 3306, 267, 1002, 748, EOT]
    assert (ids[0, 5:] == 0).all() and (ids[1, 6:] == 0).all()


def test_special_ids_and_vocabulary_size(tok: Tokenizer) -> None:
    assert (tok.sot_token_id, tok.eot_token_id, tok.vocab_size) == (SOT, EOT, 49408)


def test_a_single_string_is_one_row(tok: Tokenizer) -> None:
    assert torch.equal(tok("dog"), tok(["dog"]))


def test_empty_phrase_is_start_and_end_only(tok: Tokenizer) -> None:
    for text in ("", "   \n\t"):
        assert tok(text)[0, :3].tolist() == [SOT, EOT, 0]


def test_long_phrase_is_truncated_with_the_end_token_last(tok: Tokenizer) -> None:
    ids = tok(" ".join(["dog"] * 50))[0]
    assert ids.shape == (SAM3_CONTEXT_LENGTH,)
    assert ids[0] == SOT and ids[-1] == EOT
    assert (ids[1:-1] == tok.encode("dog")[0]).all()


def test_context_length_can_be_chosen_per_call(tok: Tokenizer) -> None:
    assert tok("a red car", context_length=3)[0].tolist() == [SOT, 320, EOT]
    assert tok("a red car", context_length=77).shape == (1, 77)
    with pytest.raises(ValueError, match="at least the start and end"):
        tok("dog", context_length=1)


def test_cleaning_lowercases_collapses_whitespace_and_unescapes_html(tok: Tokenizer) -> None:
    assert clean_text("  A   RED\n\tCar ") == "a red car"
    assert clean_text("fish &amp;amp; chips") == "fish & chips"
    assert tok.encode("A  RED car") == tok.encode("a red car")


def test_contractions_and_punctuation_are_split_off(tok: Tokenizer) -> None:
    assert tok.encode("don't") == tok.encode("don") + tok.encode("'t")
    assert tok.encode("car!?") == tok.encode("car") + tok.encode("!?")
    assert tok.encode("123") == tok.encode("1") + tok.encode("2") + tok.encode("3")


def test_multibyte_text_round_trips_through_decode(tok: Tokenizer) -> None:
    for text in ("東京タワー", "café crème brûlée", "🙂 emoji 🐶", "a red car"):
        assert tok.decode(tok.encode(text)) == " ".join(clean_text(text).split()) + " "


def test_byte_symbols_are_distinct_and_printable() -> None:
    symbols = byte_symbols()
    assert len(symbols) == len(set(symbols)) == 256
    assert all(s.isprintable() and not s.isspace() for s in symbols)
    assert symbols[ord("a")] == "a" and symbols[ord(" ")] == chr(256 + 32)


def test_explicit_vocabulary_path_gives_the_same_ids(tok: Tokenizer) -> None:
    assert torch.equal(Tokenizer(bpe_path=str(DEFAULT_BPE_PATH))("a red car"), tok("a red car"))


def test_missing_vocabulary_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere\.txt\.gz does not exist"):
        Tokenizer(bpe_path=tmp_path / "nowhere.txt.gz")


def test_truncated_vocabulary_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "short.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\ni n\nt h\n")
    with pytest.raises(ValueError, match="expected 48894 merge lines"):
        Tokenizer(bpe_path=path)


def test_vocabulary_ships_as_package_data_with_its_notice() -> None:
    assets = DEFAULT_BPE_PATH.parent
    assert DEFAULT_BPE_PATH.is_file() and (assets / "NOTICE").is_file()
    assert "MIT" in (assets / "NOTICE").read_text()
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["batchtrack"]
    package = REPO / "batchtrack"
    for path in (DEFAULT_BPE_PATH, assets / "NOTICE"):
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
