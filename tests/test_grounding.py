"""Pointing game and attention mass on hand-made attention maps and boxes.

Geometry used throughout: a 140 x 70 px image under a 7 x 7 grid, so a cell is 20 px wide and
10 px high (non-square on purpose: swapping x/y or width/height breaks the tests). Cell (r, c)
covers x in [20c, 20c+20) and y in [10r, 10r+10).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from captioner.scoring.grounding import (
    COCO_SYNONYMS,
    Box,
    GroundingInputError,
    GroundingResult,
    pointing_game,
    scene_word_to_category,
    summarize_grounding,
)

W, H, G = 140, 70, 7
SIZE = (W, H)
VOCAB = {"dog": "dog", "cat": "cat", "hot dog": "hot dog"}
DOG = Box("dog", x=40.0, y=20.0, w=20.0, h=10.0)  # exactly cell (r=2, c=2)


def peak(r: int, c: int, value: float = 1.0) -> np.ndarray:
    """A (G, G) map with `value` at (r, c) and the rest spread evenly (sums to 1)."""
    amap = np.full((G, G), (1.0 - value) / (G * G - 1))
    amap[r, c] = value
    return amap


def maps(*amaps: np.ndarray) -> np.ndarray:
    return np.stack(amaps)  # (T, G, G)


def uniform() -> np.ndarray:
    return np.full((G, G), 1.0 / (G * G))


def test_argmax_in_box_is_a_hit():
    res = pointing_game(["a", "dog"], maps(uniform(), peak(2, 2, 0.5)), [DOG], SIZE, VOCAB, slack=0)
    assert (res.hits, res.total, res.hallucinated) == (1, 1, 0)
    assert res.accuracy == 1.0


def test_argmax_far_from_box_is_a_miss():
    res = pointing_game(["dog"], maps(peak(6, 6)), [DOG], SIZE, VOCAB, slack=1)
    assert (res.hits, res.total, res.hallucinated) == (0, 1, 0)
    assert res.accuracy == 0.0


@pytest.mark.parametrize(
    ("cell", "slack", "hit"),
    [
        ((3, 3), 0, False),  # diagonal neighbour
        ((3, 3), 1, True),
        ((1, 2), 1, True),  # one row up
        ((2, 1), 1, True),  # one column left
        ((2, 4), 1, False),  # two columns right
        ((4, 2), 1, False),  # two rows down
        ((2, 4), 2, True),
        ((0, 0), 2, True),
    ],
)
def test_slack_dilates_the_box_by_whole_cells(cell, slack, hit):
    res = pointing_game(["dog"], maps(peak(*cell)), [DOG], SIZE, VOCAB, slack=slack)
    assert res.hits == int(hit) and res.total == 1


def test_box_touching_a_cell_only_at_its_edge_does_not_cover_it():
    # x in [40, 60) is cell column 2 only; the cell starting at x=60 is not overlapped.
    assert pointing_game(["dog"], maps(peak(2, 3)), [DOG], SIZE, VOCAB, slack=0).hits == 0
    # A box spanning x in [45, 61] overlaps columns 2 and 3.
    wide = Box("dog", 45.0, 20.0, 16.0, 5.0)
    assert pointing_game(["dog"], maps(peak(2, 3)), [wide], SIZE, VOCAB, slack=0).hits == 1


def test_zero_size_box_still_has_a_cell():
    point = Box("dog", 65.0, 35.0, 0.0, 0.0)  # inside cell (3, 3)
    assert pointing_game(["dog"], maps(peak(3, 3)), [point], SIZE, VOCAB, slack=0).hits == 1


def test_width_and_height_are_not_swapped():
    box = Box("dog", x=100.0, y=10.0, w=20.0, h=10.0)  # cell (r=1, c=5)
    assert pointing_game(["dog"], maps(peak(1, 5)), [box], SIZE, VOCAB, slack=0).hits == 1
    assert pointing_game(["dog"], maps(peak(5, 1)), [box], SIZE, VOCAB, slack=0).hits == 0


def test_any_box_of_the_category_counts_and_other_categories_do_not():
    boxes = [Box("cat", 40.0, 20.0, 20.0, 10.0), Box("dog", 0.0, 60.0, 20.0, 10.0)]
    # Peak on the cat box while saying "dog": miss. Peak on the second dog: hit.
    assert pointing_game(["dog"], maps(peak(2, 2)), boxes, SIZE, VOCAB, slack=0).hits == 0
    assert pointing_game(["dog"], maps(peak(6, 0)), boxes + [DOG], SIZE, VOCAB, slack=0).hits == 1


def test_hallucinated_word_is_a_counted_miss():
    res = pointing_game(["a", "cat", "and", "a", "dog"],
                        maps(uniform(), peak(2, 2), uniform(), uniform(), peak(2, 2)),
                        [DOG], SIZE, VOCAB, slack=1)
    assert (res.hits, res.total, res.hallucinated) == (1, 2, 1)
    assert res.accuracy == 0.5


def test_attention_mass_counts_cells_whose_centre_is_in_the_union_of_boxes():
    # Centres are at x = 20c + 10 and y = 10r + 5. Box A: x in [40, 80], y in [20, 40] holds
    # the centres of cells (2..3, 2..3). Box B overlaps A on (3, 3) and adds (3, 4).
    box_a = Box("dog", 40.0, 20.0, 40.0, 20.0)
    box_b = Box("dog", 70.0, 30.0, 30.0, 10.0)
    amap = np.zeros((G, G))
    amap[2, 2] = amap[2, 3] = amap[3, 2] = amap[3, 3] = 0.1
    amap[3, 4] = 0.2
    amap[0, 0] = 0.4  # the peak, outside: a miss that still has mass inside
    res = pointing_game(["dog"], maps(amap), [box_a, box_b], SIZE, VOCAB, slack=1)
    assert res.hits == 0
    assert res.mass_sum == pytest.approx(0.6)  # (3, 3) counted once
    assert res.mean_mass == pytest.approx(0.6)
    # A box smaller than a cell that holds no centre gets no mass, but can still be hit.
    small = Box("dog", 41.0, 21.0, 5.0, 3.0)
    res_small = pointing_game(["dog"], maps(peak(2, 2, 0.9)), [small], SIZE, VOCAB, slack=0)
    assert (res_small.hits, res_small.mass_sum) == (1, 0.0)


def test_mass_is_averaged_over_counted_words_hallucinated_included():
    amap = peak(2, 2, 0.7)  # DOG holds only the centre of (2, 2)
    res = pointing_game(["dog", "cat"], maps(amap, amap), [DOG], SIZE, VOCAB)
    assert res.mass_sum == pytest.approx(0.7)
    assert res.mean_mass == pytest.approx(0.35)


def test_phrases_are_matched_before_words():
    tokens = ["a", "hot", "dog", "next", "to", "a", "dog"]
    alphas = maps(uniform(), uniform(), peak(2, 2), uniform(), uniform(), uniform(), peak(6, 6))
    boxes = [Box("hot dog", 40.0, 20.0, 20.0, 10.0), Box("dog", 120.0, 60.0, 20.0, 10.0)]
    res = pointing_game(tokens, alphas, boxes, SIZE, VOCAB, slack=0)
    # "hot dog" uses the map of its head "dog" (t=2) -> hit; the lone "dog" (t=6) -> hit.
    assert (res.hits, res.total, res.hallucinated) == (2, 2, 0)


def test_case_and_ties():
    # Upper-case tokens are looked up lower-cased; a flat map points at cell (0, 0).
    res = pointing_game(["DOG"], maps(uniform()), [Box("dog", 0.0, 0.0, 1.0, 1.0)], SIZE, VOCAB, slack=0)
    assert res.hits == 1


def test_no_grounded_words_gives_nan():
    res = pointing_game(["a", "tree"], maps(uniform(), uniform()), [DOG], SIZE, VOCAB)
    assert res == GroundingResult()
    assert math.isnan(res.accuracy) and math.isnan(res.mean_mass)


@pytest.mark.parametrize(
    ("tokens", "alphas", "size", "slack", "message"),
    [
        (["a", "dog"], maps(uniform()), SIZE, 1, "2 tokens but 1 attention maps"),
        (["dog"], np.ones((1, G * G)), SIZE, 1, r"\(T, G, G\)"),
        (["dog"], maps(uniform()), (0, 70), 1, "image_size"),
        (["dog"], maps(uniform()), SIZE, -1, "slack"),
    ],
)
def test_bad_inputs_are_rejected(tokens, alphas, size, slack, message):
    with pytest.raises(GroundingInputError, match=message):
        pointing_game(tokens, alphas, [DOG], size, VOCAB, slack=slack)


def test_results_aggregate_exactly():
    a = GroundingResult(hits=2, total=3, hallucinated=1, mass_sum=0.9)
    b = GroundingResult(hits=1, total=4, hallucinated=0, mass_sum=1.2)
    total = a + b
    assert total == GroundingResult(hits=3, total=7, hallucinated=1, mass_sum=pytest.approx(2.1))
    assert GroundingResult.merge([a, b, GroundingResult()]) == total
    assert GroundingResult.merge([]) == GroundingResult()
    assert total.accuracy == pytest.approx(3 / 7)
    assert total.mean_mass == pytest.approx(0.3)
    summary = summarize_grounding(total)
    assert summary == {
        "pointing_accuracy": pytest.approx(3 / 7),
        "attention_mass_in_box": pytest.approx(0.3),
        "grounded_words": 7,
        "hallucinated_words": 1,
    }


def test_per_image_results_merge_to_the_dataset_score():
    per_image = [
        pointing_game(["dog"], maps(peak(2, 2)), [DOG], SIZE, VOCAB),
        pointing_game(["dog"], maps(peak(6, 6)), [DOG], SIZE, VOCAB),
        pointing_game(["cat", "dog"], maps(uniform(), peak(3, 3)), [DOG], SIZE, VOCAB),
    ]
    merged = GroundingResult.merge(per_image)
    assert (merged.hits, merged.total, merged.hallucinated) == (2, 4, 1)
    assert merged.accuracy == 0.5


# ---------------------------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------------------------

COCO_80 = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
]


def test_coco_synonyms_cover_the_80_categories():
    assert set(COCO_SYNONYMS.values()) == set(COCO_80)
    for name in COCO_80:
        assert COCO_SYNONYMS[name] == name
    assert all(key == key.lower() for key in COCO_SYNONYMS)


@pytest.mark.parametrize(
    ("word", "category"),
    [
        ("man", "person"), ("women", "person"), ("children", "person"), ("people", "person"),
        ("players", "person"), ("girl", "person"), ("bike", "bicycle"), ("bikes", "bicycle"),
        ("motorbike", "motorcycle"), ("plane", "airplane"), ("jets", "airplane"),
        ("kittens", "cat"), ("puppy", "dog"), ("puppies", "dog"), ("laptops", "laptop"),
        ("television", "tv"), ("tvs", "tv"), ("hydrant", "fire hydrant"), ("phone", "cell phone"),
        ("knives", "knife"), ("buses", "bus"), ("sandwiches", "sandwich"), ("sheep", "sheep"),
        ("teddy bears", "teddy bear"), ("hot dogs", "hot dog"), ("fridge", "refrigerator"),
        ("sofa", "couch"), ("mice", "mouse"), ("giraffes", "giraffe"),
    ],
)
def test_coco_synonym_entries(word, category):
    assert COCO_SYNONYMS[word] == category


def test_ambiguous_heads_are_left_out():
    for word in ("light", "sign", "glass", "plant", "baseball", "hot"):
        assert word not in COCO_SYNONYMS


def test_scene_vocabulary_maps_shapes_to_themselves():
    table = scene_word_to_category()
    for shape in ("circle", "square", "triangle", "star", "cross"):
        assert table[shape] == shape
    assert table["crosses"] == "cross" and table["stars"] == "star"
