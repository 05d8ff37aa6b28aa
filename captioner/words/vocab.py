"""Words <-> ids: tokenisation and the vocabulary.

The vocabulary travels inside checkpoints as a plain list of words (``Vocab.to_list()``), so a
model can be rebuilt and decoded without the dataset it was trained on. The four special tokens
always sit at ids 0..3, which lets padding be a literal 0 everywhere (collate, masks, losses).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

__all__ = ["SPECIALS", "PAD", "START", "END", "UNK", "Vocab", "tokenize"]

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
#: Special tokens, always ids 0, 1, 2, 3 in this order.
SPECIALS: tuple[str, ...] = (PAD, START, END, UNK)


@lru_cache(maxsize=1)
def _treebank():
    """Imported on first use: `import nltk` is slow (it pulls in scipy), and captioning an
    image never tokenises text, so the CLI's cold start should not pay for it."""
    from nltk.tokenize import TreebankWordTokenizer

    return TreebankWordTokenizer()  # stateless; Punkt data is not needed (works offline)


# Treebank only splits a full stop at the very end of its input; captions with several
# sentences ("a dog. it runs") would otherwise keep "dog." as a token.
_INNER_PERIOD = re.compile(r"\.(?=\s)")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens of a caption, punctuation dropped.

    Mirrors Karpathy's preprocessing of COCO/Flickr captions: a Penn Treebank split, then only
    tokens containing a letter or digit are kept (so "," and "." go, "'s" and "3" stay).
    """
    text = _INNER_PERIOD.sub(" . ", text.lower())
    return [t for t in _treebank().tokenize(text) if any(c.isalnum() for c in t)]


class Vocab:
    """An immutable word list; a word's id is its position.

    ``words[:4]`` must be :data:`SPECIALS`. Build one from tokenised captions with
    :meth:`build`, persist it with :meth:`save`/:meth:`load` or ``to_list()``.
    """

    pad_id = 0
    start_id = 1
    end_id = 2
    unk_id = 3

    def __init__(self, words: Sequence[str]) -> None:
        if isinstance(words, str):
            raise TypeError("Vocab(words): expected a sequence of words, got a single string")
        words = list(words)
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(
                f"Vocab(words): the first {len(SPECIALS)} words must be {list(SPECIALS)}, "
                f"got {words[: len(SPECIALS)]}"
            )
        index: dict[str, int] = {}
        for i, w in enumerate(words):
            if not isinstance(w, str) or not w:
                raise ValueError(f"Vocab(words): words[{i}] must be a non-empty string, got {w!r}")
            if w in index:
                raise ValueError(f"Vocab(words): words[{i}] {w!r} duplicates words[{index[w]}]")
            index[w] = i
        self._words = tuple(words)
        self._index = index

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_freq: int = 5) -> Vocab:
        """Vocabulary of the tokens seen at least ``min_freq`` times.

        Order is by descending frequency, ties alphabetical, so the same captions always give
        the same ids regardless of the order they are read in. Special tokens in the input are
        not counted (they are always present).
        """
        if min_freq < 1:
            raise ValueError(f"Vocab.build: min_freq must be >= 1, got {min_freq}")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            if isinstance(tokens, str):
                raise TypeError("Vocab.build: expected lists of tokens, got a string; tokenize() it first")
            counts.update(tokens)
        for s in SPECIALS:
            counts.pop(s, None)
        kept = sorted((w for w, c in counts.items() if c >= min_freq and w), key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + kept)

    def to_list(self) -> list[str]:
        """Plain list of words, for checkpoints (``Vocab(vocab.to_list()) == vocab``)."""
        return list(self._words)

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return self._words == other._words

    def __hash__(self) -> int:
        return hash(self._words)

    def __repr__(self) -> str:
        return f"Vocab({len(self)} words)"

    def id(self, word: str) -> int:
        """Id of ``word``, the ``<unk>`` id if it is not in the vocabulary."""
        return self._index.get(word, self.unk_id)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens``; unknown words map to ``<unk>``. No ``<start>``/``<end>`` added."""
        if isinstance(tokens, str):
            raise TypeError("Vocab.encode: expected a list of tokens, got a string; tokenize() it first")
        unk = self.unk_id
        return [self._index.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words of a generated id sequence: skips ``<pad>``/``<start>``, stops at ``<end>``.

        Accepts ints, numpy integers or a 1-D tensor.
        """
        words: list[str] = []
        for raw in ids:
            i = int(raw)
            if i == self.end_id:
                break
            if i == self.pad_id or i == self.start_id:
                continue
            if not 0 <= i < len(self._words):
                raise ValueError(f"Vocab.decode: id {i} out of range for a vocabulary of {len(self)} words")
            words.append(self._words[i])
        return words

    def save(self, path: str | os.PathLike) -> None:
        """Write ``{"words": [...]}`` as UTF-8 JSON."""
        Path(path).write_text(json.dumps({"words": list(self._words)}, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        """Read a file written by :meth:`save`; errors name the file and the problem."""
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: vocabulary file not found") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        if not isinstance(data, dict) or not isinstance(data.get("words"), list):
            raise ValueError(f'{p}: expected an object {{"words": [...]}}')
        try:
            return cls(data["words"])
        except ValueError as e:
            raise ValueError(f"{p}: {e}") from None
