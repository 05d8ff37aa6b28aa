"""Pointing game and attention mass on hand-made attention maps and boxes.

Geometry used throughout: a 140 x 70 px image under a 7 x 7 grid, so a cell is 20 px wide and
10 px high (non-square on purpose: swapping x/y or width/height breaks the tests). Cell (r, c)
covers x in [20c, 20c+20) and y in [10r, 10r+10); its centre is (20c + 10, 10r + 5).

Two hit counts: a *strict* hit (``hits``) needs the centre of the map's maximum cell inside a box
of the named thing; a *slack* hit (``slack_hits``) needs the maximum cell to overlap the box
dilated by ``slack`` whole cells, so with ``slack=0`` it is "the cell overlaps the box".
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from captioner.data.scene_spec import Mention, find_mentions
from captioner.scoring.grounding import (
    COCO_SYNONYMS,
    Box,
    GroundingInputError,
    GroundingResult,
    SceneGrounding,
    pointing_game,
    scene_grounding,
    scene_word_to_category,
    summarize_grounding,
    summarize_scene_grounding,
)

W, H, G = 140, 70, 7
SIZE = (W, H)
VOCAB = {"dog": "dog", "cat": "cat", "hot dog": "hot dog"}
DOG = Box("dog", x=40.0, y=20.0, w=20.0, h=10.0)  # exactly cell (r=2, c=2)
GRID_CELLS = [(r, c) for r in range(G) for c in range(G)]


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
    assert (res.hits, res.slack_hits, res.total, res.hallucinated) == (1, 1, 1, 0)
    assert res.accuracy == res.slack_accuracy == 1.0


@pytest.mark.parametrize("slack", [0, 1, 2])
def test_strict_hit_does_not_depend_on_slack(slack):
    # Only the cell whose centre is in the box is a strict hit, whatever the slack.
    strict = {cell for cell in GRID_CELLS
              if pointing_game(["dog"], maps(peak(*cell)), [DOG], SIZE, VOCAB, slack=slack).hits}
    assert strict == {(2, 2)}


def test_argmax_far_from_box_is_a_miss():
    res = pointing_game(["dog"], maps(peak(6, 6)), [DOG], SIZE, VOCAB, slack=1)
    assert (res.hits, res.slack_hits, res.total, res.hallucinated) == (0, 0, 1, 0)
    assert res.accuracy == res.slack_accuracy == 0.0


@pytest.mark.parametrize(
    ("cell", "slack", "hit"),
    [
        ((2, 2), 0, True),  # the box's own cell
        ((3, 3), 0, False),  # diagonal neighbour
        ((3, 3), 1, True),
        ((1, 2), 1, True),  # one row up
        ((2, 1), 1, True),  # one column left
        ((2, 4), 1, False),  # two columns right
        ((4, 2), 1, False),  # two rows down
        ((2, 4), 2, True),
        ((0, 0), 2, True),
        ((0, 0), 1, False),
    ],
)
def test_slack_dilates_the_box_by_whole_cells(cell, slack, hit):
    res = pointing_game(["dog"], maps(peak(*cell)), [DOG], SIZE, VOCAB, slack=slack)
    assert res.slack_hits == int(hit) and res.total == 1
    assert res.hits == int(cell == (2, 2))  # the strict count ignores the slack


def _hits(cell: tuple[int, int], boxes: list[Box], slack: int) -> tuple[int, int]:
    res = pointing_game(["dog"], maps(peak(*cell)), boxes, SIZE, VOCAB, slack=slack)
    return res.hits, res.slack_hits


def test_box_touching_a_cell_only_at_its_edge_does_not_cover_it():
    # x in [40, 60) is cell column 2 only; the cell starting at x=60 is not overlapped.
    assert _hits((2, 3), [DOG], slack=0) == (0, 0)
    # A box spanning x in [45, 61] overlaps columns 2 and 3.
    wide = Box("dog", 45.0, 20.0, 16.0, 5.0)
    assert _hits((2, 3), [wide], slack=0)[1] == 1


@pytest.mark.parametrize("slack", [0, 1])
def test_cell_overlapping_the_box_with_its_centre_outside_is_only_a_slack_hit(slack):
    # x in [45, 61], y in [20, 25]: overlaps cells (2, 2) and (2, 3). Centre (50, 25) of (2, 2)
    # lies on the box's edge (inside: edges count); centre (70, 25) of (2, 3) is 9 px outside.
    wide = Box("dog", 45.0, 20.0, 16.0, 5.0)
    assert _hits((2, 3), [wide], slack) == (0, 1)
    assert _hits((2, 2), [wide], slack) == (1, 1)
    res = pointing_game(["dog"], maps(peak(2, 3, 0.6)), [wide], SIZE, VOCAB, slack=slack)
    assert res.accuracy == 0.0 and res.slack_accuracy == 1.0
    assert res.mass_sum == pytest.approx(0.4 / (G * G - 1))  # only (2, 2)'s centre is inside


def test_box_smaller_than_a_cell_without_a_centre_is_never_a_strict_hit():
    small = Box("dog", 41.0, 21.0, 5.0, 3.0)  # inside cell (2, 2), away from its centre (50, 25)
    for cell in GRID_CELLS:
        assert _hits(cell, [small], slack=0) == (0, int(cell == (2, 2))), cell
        assert _hits(cell, [small], slack=1)[0] == 0, cell
    assert _hits((3, 3), [small], slack=1) == (0, 1)


def test_zero_size_box_still_has_a_cell():
    point = Box("dog", 65.0, 35.0, 0.0, 0.0)  # inside cell (3, 3), not at its centre (70, 35)
    assert _hits((3, 3), [point], slack=0) == (0, 1)
    assert _hits((3, 4), [point], slack=0) == (0, 0)
    on_centre = Box("dog", 70.0, 35.0, 0.0, 0.0)  # exactly the centre of (3, 3)
    assert _hits((3, 3), [on_centre], slack=0) == (1, 1)


def _reference_hits(cell: tuple[int, int], box: Box, slack: int) -> tuple[int, int]:
    """The definitions written out in pixels, cell by cell, independent of the library."""
    r, c = cell
    cx, cy = 20 * c + 10, 10 * r + 5
    strict = box.x <= cx <= box.x + box.w and box.y <= cy <= box.y + box.h

    def overlaps(rr: int, cc: int) -> bool:  # cell [20cc, 20cc+20) x [10rr, 10rr+10) vs the box
        x0, y0 = 20 * cc, 10 * rr
        in_x = (box.x < x0 + 20 and box.x + box.w > x0) or x0 <= box.x < x0 + 20
        in_y = (box.y < y0 + 10 and box.y + box.h > y0) or y0 <= box.y < y0 + 10
        return in_x and in_y

    near = any(overlaps(rr, cc) for rr in range(r - slack, r + slack + 1) for cc in range(c - slack, c + slack + 1))
    return int(strict), int(near)


def test_hits_agree_with_a_pixel_level_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        x, y = int(rng.integers(0, W - 1)), int(rng.integers(0, H - 1))
        box = Box("dog", float(x), float(y), float(rng.integers(0, W - x)), float(rng.integers(0, H - y)))
        cell = (int(rng.integers(G)), int(rng.integers(G)))
        slack = int(rng.integers(0, 3))
        got = _hits(cell, [box], slack)
        assert got == _reference_hits(cell, box, slack), (box, cell, slack)
        assert got[0] <= got[1]  # a strict hit is always a slack hit
        seen.add(got)
    assert seen == {(0, 0), (0, 1), (1, 1)}  # every case occurred


def test_width_and_height_are_not_swapped():
    box = Box("dog", x=100.0, y=10.0, w=20.0, h=10.0)  # cell (r=1, c=5)
    assert _hits((1, 5), [box], slack=0) == (1, 1)
    assert _hits((5, 1), [box], slack=0) == (0, 0)


def test_any_box_of_the_category_counts_and_other_categories_do_not():
    boxes = [Box("cat", 40.0, 20.0, 20.0, 10.0), Box("dog", 0.0, 60.0, 20.0, 10.0)]
    # Peak on the cat box while saying "dog": miss. Peak on the second dog: hit.
    assert _hits((2, 2), boxes, slack=0) == (0, 0)
    assert _hits((6, 0), boxes + [DOG], slack=0) == (1, 1)
    assert _hits((2, 2), boxes + [DOG], slack=0) == (1, 1)


def test_hallucinated_word_is_a_counted_miss():
    res = pointing_game(["a", "cat", "and", "a", "dog"],
                        maps(uniform(), peak(2, 2), uniform(), uniform(), peak(2, 2)),
                        [DOG], SIZE, VOCAB, slack=1)
    assert (res.hits, res.slack_hits, res.total, res.hallucinated) == (1, 1, 2, 1)
    assert res.accuracy == res.slack_accuracy == 0.5


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
    assert (res.hits, res.slack_hits) == (0, 0)
    assert res.mass_sum == pytest.approx(0.6)  # (3, 3) counted once
    assert res.mean_mass == pytest.approx(0.6)
    # A box smaller than a cell that holds no centre gets no mass and no strict hit, but its
    # cell is a slack hit.
    small = Box("dog", 41.0, 21.0, 5.0, 3.0)
    res_small = pointing_game(["dog"], maps(peak(2, 2, 0.9)), [small], SIZE, VOCAB, slack=0)
    assert (res_small.hits, res_small.slack_hits, res_small.mass_sum) == (0, 1, 0.0)


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
    assert (res.hits, res.slack_hits, res.total, res.hallucinated) == (2, 2, 2, 0)


def test_case_and_ties():
    # Upper-case tokens are looked up lower-cased; a flat map points at cell (0, 0).
    corner = Box("dog", 0.0, 0.0, 20.0, 10.0)  # cell (0, 0)
    res = pointing_game(["DOG"], maps(uniform()), [corner], SIZE, VOCAB, slack=0)
    assert (res.hits, res.slack_hits) == (1, 1)
    # A tie between (4, 4) and (1, 5) goes to (1, 5), the first in row-major order.
    tie = np.zeros((G, G))
    tie[4, 4] = tie[1, 5] = 0.5
    box_15 = Box("dog", 100.0, 10.0, 20.0, 10.0)
    box_44 = Box("dog", 80.0, 40.0, 20.0, 10.0)
    assert pointing_game(["dog"], maps(tie), [box_15], SIZE, VOCAB, slack=0).hits == 1
    assert pointing_game(["dog"], maps(tie), [box_44], SIZE, VOCAB, slack=0).hits == 0


def test_no_grounded_words_gives_nan():
    res = pointing_game(["a", "tree"], maps(uniform(), uniform()), [DOG], SIZE, VOCAB)
    assert res == GroundingResult()
    assert math.isnan(res.accuracy) and math.isnan(res.slack_accuracy) and math.isnan(res.mean_mass)


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
    with pytest.raises(GroundingInputError, match=message):  # the scenes' scorer checks the same
        scene_grounding(tokens, alphas, [DOG], size, slack=slack)


def test_results_aggregate_exactly():
    a = GroundingResult(hits=2, slack_hits=2, total=3, hallucinated=1, mass_sum=0.9)
    b = GroundingResult(hits=1, slack_hits=3, total=4, hallucinated=0, mass_sum=1.2)
    total = a + b
    assert total == GroundingResult(hits=3, slack_hits=5, total=7, hallucinated=1, mass_sum=pytest.approx(2.1))
    assert GroundingResult.merge([a, b, GroundingResult()]) == total
    assert GroundingResult.merge([]) == GroundingResult()
    assert total.accuracy == pytest.approx(3 / 7)
    assert total.slack_accuracy == pytest.approx(5 / 7)
    assert total.mean_mass == pytest.approx(0.3)
    summary = summarize_grounding(total)
    assert list(summary) == ["pointing_strict", "pointing_slack1", "attention_mass_in_box",
                             "attention_entropy", "grounded_words", "hallucinated_words"]
    assert summary == {
        "pointing_strict": pytest.approx(3 / 7),
        "pointing_slack1": pytest.approx(5 / 7),
        "attention_mass_in_box": pytest.approx(0.3),
        "attention_entropy": 0.0,
        "grounded_words": 7,
        "hallucinated_words": 1,
    }
    assert summarize_grounding(total, prefix="color_") == {"color_" + k: v for k, v in summary.items()}


def test_per_image_results_merge_to_the_dataset_score():
    per_image = [
        pointing_game(["dog"], maps(peak(2, 2)), [DOG], SIZE, VOCAB),
        pointing_game(["dog"], maps(peak(6, 6)), [DOG], SIZE, VOCAB),
        pointing_game(["cat", "dog"], maps(uniform(), peak(3, 3)), [DOG], SIZE, VOCAB),
    ]
    merged = GroundingResult.merge(per_image)
    # (2, 2): strict hit; (6, 6): miss; "cat": hallucinated; (3, 3): a neighbour, slack hit only.
    assert (merged.hits, merged.slack_hits, merged.total, merged.hallucinated) == (1, 2, 4, 1)
    assert merged.accuracy == 0.25 and merged.slack_accuracy == 0.5


# ---------------------------------------------------------------------------------------------
# Scenes: a "<color> [size] <shape>" phrase names one object
# ---------------------------------------------------------------------------------------------

RED_CIRCLE = Box("circle", 20.0, 10.0, 20.0, 10.0, color="red")  # cell (1, 1)
BLUE_CIRCLE = Box("circle", 100.0, 50.0, 20.0, 10.0, color="blue")  # cell (5, 5)
GREEN_SQUARE = Box("square", 20.0, 50.0, 20.0, 10.0, color="green")  # cell (5, 1)
SCENE = [RED_CIRCLE, BLUE_CIRCLE, GREEN_SQUARE]


def _scene(words: str, *amaps: np.ndarray, boxes: list[Box] = SCENE, slack: int = 1) -> SceneGrounding:
    tokens = words.split()
    assert len(tokens) == len(amaps)
    return scene_grounding(tokens, maps(*amaps), boxes, SIZE, slack=slack)


def _counts(res: GroundingResult) -> tuple[int, int, int, int]:
    return res.hits, res.slack_hits, res.total, res.hallucinated


def test_scene_phrase_is_scored_against_the_object_of_that_colour_and_shape():
    on_blue = _scene("a blue circle", uniform(), peak(5, 5), peak(5, 5))
    assert _counts(on_blue.shape) == _counts(on_blue.color) == (1, 1, 1, 0)
    # Looking at the other circle is a miss for both words, though it is a circle: the colour
    # decides which box counts.
    on_red = _scene("a blue circle", uniform(), peak(1, 1), peak(1, 1))
    assert _counts(on_red.shape) == _counts(on_red.color) == (0, 0, 1, 0)
    by_class = pointing_game(["a", "blue", "circle"], maps(uniform(), peak(1, 1), peak(1, 1)), SCENE, SIZE,
                             scene_word_to_category())
    assert by_class.hits == 1  # the class-level game would have counted it


def test_colour_word_and_shape_word_maps_are_scored_separately():
    # "red" looks at the red circle; "circle" at the cell beside it (a slack hit only).
    res = _scene("a red circle", uniform(), peak(1, 1, 0.7), peak(1, 2, 0.6))
    assert _counts(res.color) == (1, 1, 1, 0)
    assert _counts(res.shape) == (0, 1, 1, 0)
    assert res.color.mass_sum == pytest.approx(0.7)
    assert res.shape.mass_sum == pytest.approx(0.4 / (G * G - 1))
    # And the other way round.
    swapped = _scene("a red circle", uniform(), peak(5, 5), peak(1, 1))
    assert (_counts(swapped.color), _counts(swapped.shape)) == ((0, 0, 1, 0), (1, 1, 1, 0))
    # Without slack the neighbour no longer counts.
    assert _scene("a red circle", uniform(), peak(1, 1), peak(1, 2), slack=0).shape.slack_hits == 0


def test_a_pair_the_image_lacks_is_hallucinated_for_both_words():
    # Green and square exist, blue and circle exist, but neither a green circle nor a blue square.
    res = _scene("a green circle and a blue square", uniform(), peak(5, 1), peak(1, 1), uniform(), uniform(),
                 peak(5, 5), peak(5, 1))
    for part in (res.shape, res.color):
        assert _counts(part) == (0, 0, 2, 2) and part.mass_sum == 0.0
    # Boxes without a colour (a COCO-style file) name no scene object.
    colourless = [Box("circle", 20.0, 10.0, 20.0, 10.0)]
    res = _scene("a red circle", uniform(), peak(1, 1), peak(1, 1), boxes=colourless)
    assert _counts(res.shape) == _counts(res.color) == (0, 0, 1, 1)


def test_size_word_between_colour_and_shape_is_skipped():
    # Tokens: a(0) red(1) small(2) circle(3). The size word's map is not scored.
    res = _scene("a red small circle", uniform(), peak(1, 1), peak(5, 5), peak(1, 1))
    assert _counts(res.color) == _counts(res.shape) == (1, 1, 1, 0)
    res = _scene("a red small circle", uniform(), peak(5, 5), peak(1, 1), peak(5, 5))
    assert _counts(res.color) == _counts(res.shape) == (0, 0, 1, 0)
    # A size word before the colour is outside the phrase.
    res = _scene("a small red circle", uniform(), peak(5, 5), peak(1, 1), peak(1, 1))
    assert _counts(res.color) == _counts(res.shape) == (1, 1, 1, 0)


def test_every_phrase_counts_and_other_words_do_not():
    tokens = "a red circle to the left of a blue circle".split()
    amaps = [uniform()] * len(tokens)
    amaps[1], amaps[2], amaps[8], amaps[9] = peak(1, 1), peak(1, 1), peak(5, 5), peak(0, 0)
    amaps[5] = peak(5, 5)  # "left": no phrase, not scored
    res = scene_grounding(tokens, maps(*amaps), SCENE, SIZE)
    assert _counts(res.color) == (2, 2, 2, 0)
    assert _counts(res.shape) == (1, 1, 2, 0)  # the second "circle" looked at the corner
    empty = scene_grounding(["a", "circle", "red"], maps(uniform(), peak(1, 1), peak(1, 1)), SCENE, SIZE)
    assert empty == SceneGrounding()
    assert math.isnan(summarize_scene_grounding(empty)["pointing_strict"])


def test_scene_groundings_merge_by_word_kind():
    a = _scene("a red circle", uniform(), peak(1, 1), peak(1, 2))
    b = _scene("a blue circle", uniform(), peak(5, 5), peak(5, 5))
    c = _scene("a purple star", uniform(), peak(0, 0), peak(0, 0))
    merged = SceneGrounding.merge([a, b, c])
    assert merged == a + b + c
    assert merged.color == a.color + b.color + c.color and merged.shape == a.shape + b.shape + c.shape
    assert _counts(merged.color) == (2, 2, 3, 1)
    assert _counts(merged.shape) == (1, 2, 3, 1)
    assert SceneGrounding.merge([]) == SceneGrounding() == SceneGrounding(GroundingResult(), GroundingResult())


def test_scene_summary_names_shape_keys_plainly_and_colour_keys_with_a_prefix():
    res = SceneGrounding(shape=GroundingResult(hits=1, slack_hits=3, total=4, hallucinated=1, mass_sum=1.0,
                                               entropy_sum=2.0),
                         color=GroundingResult(hits=2, slack_hits=2, total=4, hallucinated=1, mass_sum=2.0))
    summary = summarize_scene_grounding(res)
    assert summary == {
        "pointing_strict": 0.25, "pointing_slack1": 0.75, "attention_mass_in_box": 0.25,
        "attention_entropy": 0.5, "grounded_words": 4.0, "hallucinated_words": 1.0,
        "color_pointing_strict": 0.5, "color_pointing_slack1": 0.5, "color_attention_mass_in_box": 0.5,
        "color_attention_entropy": 0.0, "color_grounded_words": 4.0, "color_hallucinated_words": 1.0,
    }
    assert "pointing_accuracy" not in summary


def test_entropy_is_that_of_each_scored_map():
    # A one-hot map has entropy 0, a uniform one log(P), a map split evenly over 2 cells log 2.
    half = np.zeros((G, G))
    half[2, 2] = half[6, 6] = 0.5
    res = pointing_game(["dog", "dog", "cat"], maps(peak(2, 2), uniform(), half), [DOG], SIZE, VOCAB)
    assert res.entropy_sum == pytest.approx(math.log(G * G) + math.log(2))
    assert res.mean_entropy == pytest.approx((math.log(G * G) + math.log(2)) / 3)  # hallucinated "cat" too
    assert math.isnan(GroundingResult().mean_entropy)


def test_find_mentions_gives_token_positions():
    toks = "a small red circle and a blue large star near Red the circle square".split()
    assert find_mentions(toks) == [Mention("red", "circle", 2, 3), Mention("blue", "star", 6, 8)]
    assert find_mentions(["An", "Orange", "Cross"]) == [Mention("orange", "cross", 1, 2)]
    assert find_mentions(["red", "small"]) == [] and find_mentions([]) == []


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
