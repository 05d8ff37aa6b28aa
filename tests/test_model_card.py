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


def test_counts_print_whole_and_scores_with_three_decimals():
    card = _model_card()
    assert card._cell(0.0, "hallucinated_words") == "0"  # printed 0.000 before
    assert card._cell(4.0, "hallucinated_words") == "4" and card._cell(1002.0, "grounded_words") == "1002"
    assert card._cell(1.0, "object_f1") == "1.000" and card._cell(0.0, "pointing_strict") == "0.000"
    assert card._cell(5.43966, "CIDEr-D") == "5.440" and card._cell(12.0, "CIDEr-D") == "12.000"
    assert card._cell(float("nan"), "METEOR") == "n/a" and card._cell(None, "METEOR") == "n/a"


def test_columns_are_named_by_run_folder_or_file_and_never_clash():
    card = _model_card()
    assert card.column_names(["default", "runs/scenes-none/best.pt", "/tmp/old-default.pt"]) == [
        "default", "scenes-none", "old-default"]  # the old rule named the last one "tmp"
    assert card.column_names(["runs/a/last.pt", "x/model.pt", "y/model.pt", "best.pt"]) == [
        "a-last", "model#1", "model#2", "best"]
