"""Tokenisation and the vocabulary: specials, min_freq, order, round trips."""

from __future__ import annotations

import json

import pytest
import torch

from captioner.words.vocab import SPECIALS, Vocab, tokenize


def test_tokenize_lowercases_and_drops_punctuation():
    assert tokenize("A man, riding a horse's back. 3 Dogs!") == [
        "a", "man", "riding", "a", "horse", "'s", "back", "3", "dogs",
    ]
    assert tokenize("  ...  ") == []


def test_specials_have_fixed_ids():
    v = Vocab(list(SPECIALS) + ["dog"])
    assert SPECIALS == ("<pad>", "<start>", "<end>", "<unk>")
    assert (v.pad_id, v.start_id, v.end_id, v.unk_id) == (0, 1, 2, 3)
    assert [v.to_list()[i] for i in range(4)] == list(SPECIALS)
    assert len(v) == 5 and "dog" in v and "cat" not in v


def test_constructor_validates():
    with pytest.raises(ValueError, match="first 4 words"):
        Vocab(["<start>", "<pad>", "<end>", "<unk>", "a"])
    with pytest.raises(ValueError, match="duplicates"):
        Vocab(list(SPECIALS) + ["a", "b", "a"])
    with pytest.raises(TypeError):
        Vocab("abc")


def test_build_min_freq_and_deterministic_order():
    caps = [["b", "a", "c"], ["a", "b", "d"], ["a", "c", "b"], ["e", "<unk>"]]
    v = Vocab.build(caps, min_freq=2)
    # a and b 3 times, c twice, d and e once; ties alphabetical; specials never counted.
    assert v.to_list() == list(SPECIALS) + ["a", "b", "c"]
    assert Vocab.build(list(reversed(caps)), min_freq=2) == v
    assert Vocab.build(caps, min_freq=1).to_list()[4:] == ["a", "b", "c", "d", "e"]
    with pytest.raises(ValueError):
        Vocab.build(caps, min_freq=0)


def test_encode_decode_round_trip():
    v = Vocab.build([tokenize("a red circle and a blue star")] * 5)
    ids = v.encode(["a", "red", "circle", "zebra"])
    assert ids[-1] == v.unk_id and v.start_id not in ids and v.end_id not in ids
    assert v.decode(ids) == ["a", "red", "circle", "<unk>"]
    seq = [v.start_id] + v.encode(["a", "blue", "star"]) + [v.end_id, v.id("red"), v.pad_id]
    assert v.decode(seq) == ["a", "blue", "star"]  # stops at <end>
    assert v.decode(torch.tensor([v.pad_id, v.start_id, v.id("red"), v.pad_id])) == ["red"]
    with pytest.raises(TypeError):
        v.encode("a red circle")  # a string, not tokens
    with pytest.raises(ValueError, match="out of range"):
        v.decode([len(v)])


def test_save_load_and_list_round_trip(tmp_path):
    v = Vocab.build([["x", "y", "y"]], min_freq=1)
    v.save(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text()) == {"words": v.to_list()}
    assert Vocab.load(tmp_path / "vocab.json") == v
    assert Vocab(v.to_list()) == v and hash(Vocab(v.to_list())) == hash(v)
    assert v != Vocab(list(SPECIALS))

    (tmp_path / "bad.json").write_text('{"words": [')
    with pytest.raises(ValueError, match=r"bad\.json: malformed JSON at line 1"):
        Vocab.load(tmp_path / "bad.json")
    (tmp_path / "wrong.json").write_text('{"words": ["a"]}')
    with pytest.raises(ValueError, match=r"wrong\.json: .*first 4 words"):
        Vocab.load(tmp_path / "wrong.json")
