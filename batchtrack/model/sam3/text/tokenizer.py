"""SAM 3's text tokenizer: CLIP's byte-level BPE over a 49,408-token vocabulary, padded to a fixed context.

A phrase becomes ids in five steps, each the one CLIP (and so SAM 3's checkpoint) was trained with:
1. clean: `ftfy.fix_text` (mojibake, unicode normalisation), HTML entities unescaped twice, whitespace runs
   collapsed to one space, stripped, lower-cased;
2. split into pre-tokens: a special token, an English contraction suffix ('s 't 're 've 'm 'll 'd), a run of
   letters, a single digit, or a run of anything else that is not whitespace;
3. each pre-token's UTF-8 bytes mapped to printable characters (so every byte string has a spelling), the
   last one marked as a word end (`</w>`);
4. byte-pair merges applied in the order the vocabulary file lists them (lowest rank first);
5. `<start_of_text>` + ids + `<end_of_text>`, truncated to the context length (the last id is then forced
   back to `<end_of_text>`) and right-padded with 0.

Padding uses id 0, which is also the id of the token "!": SAM 3's text encoder treats every 0 as padding,
so this is kept as is (see `TextFeatures.padding_mask`).

The vocabulary file `assets/bpe_simple_vocab_16e6.txt.gz` is OpenAI CLIP's (MIT, see assets/NOTICE).
"""

from __future__ import annotations

import gzip
import html
from collections.abc import Sequence
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

import ftfy
import regex
import torch

DEFAULT_BPE_PATH = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
SAM3_CONTEXT_LENGTH = 32  # SAM 3's text encoder positions; CLIP itself used 77
START_OF_TEXT = "<start_of_text>"
END_OF_TEXT = "<end_of_text>"
PAD_ID = 0
# CLIP's vocabulary: 256 byte symbols, the same 256 as word ends, 48,894 merges, 2 special tokens = 49,408.
_NUM_MERGES = 49152 - 256 - 2
_WORD_END = "</w>"
_CACHE_LIMIT = 100_000  # pre-token spellings kept; a long job sees few distinct phrases, but stay bounded


# Bytes whose Latin-1 character is printable and not whitespace: they stand for themselves.
_PRINTABLE_BYTES = (*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1))
_OTHER_BYTES = tuple(b for b in range(256) if b not in set(_PRINTABLE_BYTES))
# The vocabulary lists byte symbols in this order (printable first), so a byte's id is not its value.
_VOCAB_BYTE_ORDER = _PRINTABLE_BYTES + _OTHER_BYTES


@lru_cache(maxsize=1)
def byte_symbols() -> tuple[str, ...]:
    """The printable character standing for each byte value 0..255 (index = byte).

    Printable Latin-1 bytes stand for themselves; the other 68 (controls, space, soft hyphen...) are given
    the code points 256, 257, ... in byte order, so no byte is spelled with whitespace or a control character.
    """
    symbols = [chr(b) for b in range(256)]
    for shifted, byte in enumerate(_OTHER_BYTES):
        symbols[byte] = chr(256 + shifted)
    return tuple(symbols)


def clean_text(text: str) -> str:
    """Step 1 of the module docstring: the cleaned, lower-cased phrase the splitter sees."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


@lru_cache(maxsize=4)
def _read_merges(path: Path) -> tuple[tuple[str, str], ...]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    # Line 0 is a version header; the vocabulary uses the first _NUM_MERGES merges of the file.
    pairs = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    bad = [i + 1 for i, p in enumerate(pairs) if len(p) != 2]
    if len(pairs) != _NUM_MERGES or bad:
        raise ValueError(
            f"BPE vocabulary {path}: expected {_NUM_MERGES} merge lines of two symbols after the header, "
            f"got {len(pairs)} lines" + (f", malformed lines {bad[:5]}" if bad else "")
        )
    return tuple((a, b) for a, b in pairs)


class Tokenizer:
    """Phrases → (B, context_length) int64 ids, as SAM 3's `SimpleTokenizer` makes them.

    >>> tok = Tokenizer()
    >>> tok(["a red car"]).shape
    torch.Size([1, 32])
    >>> tok.decode(tok.encode("A  Red car!"))
    'a red car ! '
    """

    def __init__(self, bpe_path: str | Path | None = None, context_length: int = SAM3_CONTEXT_LENGTH) -> None:
        if context_length < 2:
            raise ValueError(f"context_length must hold at least the start and end tokens, got {context_length}")
        self.bpe_path = Path(bpe_path) if bpe_path is not None else DEFAULT_BPE_PATH
        if not self.bpe_path.is_file():
            raise FileNotFoundError(f"BPE vocabulary {self.bpe_path} does not exist")
        self.context_length = context_length
        merges = _read_merges(self.bpe_path.resolve())
        symbols = byte_symbols()
        listed = [symbols[b] for b in _VOCAB_BYTE_ORDER]
        vocab = [*listed, *(s + _WORD_END for s in listed), *(a + b for a, b in merges), START_OF_TEXT, END_OF_TEXT]
        self._ids: dict[str, int] = {token: i for i, token in enumerate(vocab)}
        self._tokens: list[str] = vocab
        self._ranks: dict[tuple[str, str], int] = {pair: rank for rank, pair in enumerate(merges)}
        self._byte_symbol = symbols
        self._symbol_byte: dict[str, int] = {s: b for b, s in enumerate(symbols)}
        self.sot_token_id = self._ids[START_OF_TEXT]
        self.eot_token_id = self._ids[END_OF_TEXT]
        self.vocab_size = len(vocab)
        specials = "|".join(regex.escape(t) for t in (START_OF_TEXT, END_OF_TEXT))
        # Alternatives are tried in this order at each position (step 2 of the module docstring).
        self._split = regex.compile(
            specials + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
        )
        self._cache: dict[str, tuple[str, ...]] = {START_OF_TEXT: (START_OF_TEXT,), END_OF_TEXT: (END_OF_TEXT,)}

    def _merge(self, spelled: str) -> tuple[str, ...]:
        """Step 4: apply the merges to one pre-token (already spelled in byte symbols)."""
        cached = self._cache.get(spelled)
        if cached is not None:
            return cached
        parts = [*spelled[:-1], spelled[-1] + _WORD_END]
        while len(parts) > 1:
            # A pair's rank is unique to it, so the lowest rank names one pair (wherever it occurs).
            rank, at = min((self._ranks.get(pair, _NUM_MERGES), i) for i, pair in enumerate(pairwise(parts)))
            if rank == _NUM_MERGES:
                break
            first, second = parts[at], parts[at + 1]
            # Every non-overlapping occurrence of the pair, left to right, merges in the same step.
            merged: list[str] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        result = tuple(parts)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[spelled] = result
        return result

    def encode(self, text: str) -> list[int]:
        """The ids of `text` without start/end tokens, padding or truncation."""
        ids: list[int] = []
        for piece in self._split.findall(clean_text(text)):
            # Special tokens are printable ASCII, spelled as themselves, and cached as single tokens.
            ids.extend(self._ids[token] for token in self._merge(self._spell(piece)))
        return ids

    def _spell(self, piece: str) -> str:
        return "".join(self._byte_symbol[b] for b in piece.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids` (word ends become spaces; special tokens are spelled out; invalid UTF-8 replaced)."""
        out = bytearray()
        for i in ids:
            token = self._tokens[i]
            if token in (START_OF_TEXT, END_OF_TEXT):
                out += token.encode("utf-8")
                continue
            word_end = token.endswith(_WORD_END)
            out += bytes(self._symbol_byte[c] for c in (token[: -len(_WORD_END)] if word_end else token))
            if word_end:
                out += b" "
        return out.decode("utf-8", errors="replace")

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """(B, context_length) int64: start, ids, end; truncated with the end token kept last; 0-padded."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length if context_length is not None else self.context_length
        if length < 2:
            raise ValueError(f"context_length must hold at least the start and end tokens, got {length}")
        out = torch.full((len(texts), length), PAD_ID, dtype=torch.long)  # (B, L)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > length:
                ids = [*ids[: length - 1], self.eot_token_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out


@lru_cache(maxsize=1)
def default_tokenizer() -> Tokenizer:
    """The shipped vocabulary at SAM 3's context length, built once per process (reading it takes ~0.2 s)."""
    return Tokenizer()
