"""data/model_card.py's per-family table, from the scores `evaluate` returns."""
from __future__ import annotations

from conftest import load_data_script


def _model_card():
    return load_data_script("model_card")


def test_family_table_has_a_row_per_family_and_a_blank_where_a_set_has_none():
    card = _model_card()
    heldout = {"by_background": {"flat": {"object_f1": 0.9, "exact_set_accuracy": 0.8, "images": 10},
                                 "stripes": {"object_f1": 0.5, "exact_set_accuracy": 0.25, "images": 4}}}
    reserved = {"by_background": {"waves": {"object_f1": 0.7, "exact_set_accuracy": 0.5, "images": 6}}}
    lines = card.family_table([("default: heldout", heldout), ("default: reserved", reserved)])
    assert lines[0].endswith("| default: heldout | default: reserved |")
    assert lines[2:] == ["| flat | 0.900 / 0.800 (10) |  |", "| stripes | 0.500 / 0.250 (4) |  |",
                         "| waves |  | 0.700 / 0.500 (6) |"]
    assert card.family_table([("coco", {"object_f1": 0.5})]) == []
