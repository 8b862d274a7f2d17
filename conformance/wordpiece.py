"""BERT's uncased WordPiece tokenizer, enough to feed real sentences to the corpus's text
encoder: lower-case, strip accents, split off punctuation, then greedy longest-match pieces
from the vocabulary (``##`` marks a piece that continues a word)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np

MAX_WORD_CHARS = 100  # longer words become [UNK], as in BERT


def load_vocab(path: Path) -> dict[str, int]:
    """Token → id, one token per line, the id being the line number."""
    return {line: i for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")) if line}


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def basic_words(text: str) -> list[str]:
    """Lower-cased, accent-free words with every punctuation mark a word of its own."""
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn"
                   and not (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"))
    words = []
    for chunk in text.split():
        current = ""
        for ch in chunk:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                words.append(ch)
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return words


def word_pieces(word: str, vocab: dict[str, int]) -> list[str]:
    """Greedy longest-match-first split of one word; [UNK] when no split exists."""
    if len(word) > MAX_WORD_CHARS:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def encode_batch(texts: list[str], vocab: dict[str, int], max_len: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """input_ids and attention_mask (int64, padded to the longest text): [CLS] pieces [SEP]."""
    rows = []
    for text in texts:
        pieces = [p for w in basic_words(text) for p in word_pieces(w, vocab)][:max_len - 2]
        rows.append([vocab["[CLS]"]] + [vocab[p] for p in pieces] + [vocab["[SEP]"]])
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), vocab["[PAD]"], dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return ids, mask
