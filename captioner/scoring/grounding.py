"""Attention grounding: does the model look at the thing it names?

Caption metrics only compare words. Soft attention also tells us *where* the decoder looked when
it emitted each word, so for words that name an annotated object we can check the map against
the ground-truth boxes, with three numbers:

* **pointing game, strict** (the headline; Zhang et al., "Top-down neural attention by
  excitation backprop", 2016): a hit when the centre of the attention map's maximum cell lies
  inside the named object's box. A map that peaks beside the object is a miss.
* **pointing game with slack** (secondary): the box is dilated by ``slack`` cells (1 by
  default) before testing, so a peak in a cell next to the box counts. It is lenient on a
  coarse grid: it reported 0.96 for a model whose peaks mostly sat just outside the objects.
* **attention mass in box**: the share of the map whose cell centres fall inside the named
  object's box. Unlike the pointing game it rewards a map that concentrates, not only peaks,
  on the object. The maps' mean entropy (nats; log P for a uniform map) says how spread they are.

For COCO a word names a class, and any box of that class counts. For the synthetic scenes a
"<color> <shape>" phrase names one object, and both its colour word and its shape word are
scored against that object's box (:func:`scene_grounding`).

A named object with no box in the image is *hallucinated*: counted as a miss (and a mass of 0),
and reported separately so that grounding failures and naming failures can be told apart.

The boxes and image sizes come from :func:`captioner.data.annotations.load_instances`, which
reads and checks the COCO instances file; nothing here reads files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from captioner.data.annotations import Box
from captioner.data.scene_spec import SHAPES, find_mentions


class GroundingInputError(ValueError):
    """Inputs to the grounding metric that would give a meaningless number."""


@dataclass(frozen=True)
class GroundingResult:
    """Sufficient statistics of the metrics, so results over images add up exactly.

    ``total`` counts the grounded words, hallucinated ones included; ``hits`` are strict hits
    (the maximum cell's centre inside a box), ``slack_hits`` hits on boxes dilated by the slack;
    ``mass_sum`` is the sum over the words of the attention mass inside their boxes.
    """

    hits: int = 0
    slack_hits: int = 0
    total: int = 0
    hallucinated: int = 0
    mass_sum: float = 0.0
    entropy_sum: float = 0.0  # of the words' maps, in nats (log P for a uniform map)

    @property
    def accuracy(self) -> float:
        """Strict pointing-game accuracy, hits / total; nan when no word was grounded."""
        return self.hits / self.total if self.total else math.nan

    @property
    def slack_accuracy(self) -> float:
        """Pointing-game accuracy with the slack, slack_hits / total; nan when none grounded."""
        return self.slack_hits / self.total if self.total else math.nan

    @property
    def mean_entropy(self) -> float:
        """Mean entropy (nats) of the grounded words' maps; nan when no word was grounded."""
        return self.entropy_sum / self.total if self.total else math.nan

    @property
    def mean_mass(self) -> float:
        """Mean attention mass inside the named class's boxes; nan when no word was grounded."""
        return self.mass_sum / self.total if self.total else math.nan

    def __add__(self, other: GroundingResult) -> GroundingResult:
        if not isinstance(other, GroundingResult):
            return NotImplemented
        return GroundingResult(
            hits=self.hits + other.hits,
            slack_hits=self.slack_hits + other.slack_hits,
            total=self.total + other.total,
            hallucinated=self.hallucinated + other.hallucinated,
            mass_sum=self.mass_sum + other.mass_sum,
            entropy_sum=self.entropy_sum + other.entropy_sum,
        )

    @classmethod
    def merge(cls, results: Iterable[GroundingResult]) -> GroundingResult:
        """Aggregate per-image results into one dataset-level result."""
        return sum(results, cls())


def _box_cells(box: Box, grid: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Inclusive cell index range ``(r0, r1, c0, c1)`` of the cells the box overlaps.

    Cell ``c`` covers ``[c*W/G, (c+1)*W/G)``; it overlaps ``[x, x+w]`` iff
    ``floor(x*G/W) <= c <= ceil((x+w)*G/W) - 1``. A zero-width box still touches the cell that
    contains it. Working in integer cell indices makes dilation by ``slack`` cells exact.
    """
    gh, gw = grid
    width, height = image_size
    x0, x1 = box.x * gw / width, (box.x + box.w) * gw / width
    y0, y1 = box.y * gh / height, (box.y + box.h) * gh / height
    c0, r0 = math.floor(x0), math.floor(y0)
    c1 = max(c0, math.ceil(x1) - 1)
    r1 = max(r0, math.ceil(y1) - 1)
    return r0, r1, c0, c1


def centre_mask(boxes: Sequence[Box], grid: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
    """Boolean (Gh, Gw) mask of cells whose centre lies inside (or on) any of the boxes."""
    gh, gw = grid
    width, height = image_size
    cx = (np.arange(gw) + 0.5) * width / gw  # (Gw,)
    cy = (np.arange(gh) + 0.5) * height / gh  # (Gh,)
    mask = np.zeros((gh, gw), dtype=bool)
    for b in boxes:
        inside_x = (cx >= b.x) & (cx <= b.x + b.w)  # (Gw,)
        inside_y = (cy >= b.y) & (cy <= b.y + b.h)  # (Gh,)
        mask |= inside_y[:, None] & inside_x[None, :]  # (Gh, Gw)
    return mask


def _match_words(tokens: Sequence[str], word_to_category: Mapping[str, str]) -> list[tuple[int, str]]:
    """(token index, category) for each mention, longest phrase first.

    Keys of ``word_to_category`` may be phrases (``"teddy bear"``, ``"hot dog"``): a phrase is
    attributed to its last token, the head noun, and its words are not matched again, so
    "hot dog" never also counts as a dog.
    """
    lowered = [t.lower() for t in tokens]
    max_len = max((len(k.split()) for k in word_to_category), default=1)
    mentions: list[tuple[int, str]] = []
    i = 0
    while i < len(lowered):
        for n in range(min(max_len, len(lowered) - i), 0, -1):
            phrase = " ".join(lowered[i : i + n])
            if phrase in word_to_category:
                mentions.append((i + n - 1, word_to_category[phrase]))
                i += n
                break
        else:
            i += 1
    return mentions


def _check_inputs(tokens: Sequence[str], alphas: np.ndarray, image_size: tuple[int, int], slack: int) -> np.ndarray:
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 3:
        raise GroundingInputError(f"alphas must be (T, G, G), got shape {alphas.shape}")
    if alphas.shape[0] != len(tokens):
        raise GroundingInputError(
            f"{len(tokens)} tokens but {alphas.shape[0]} attention maps; pass one map per "
            "generated word (drop the maps of <end>/padding steps)"
        )
    width, height = image_size
    if width <= 0 or height <= 0:
        raise GroundingInputError(f"image_size must be positive (width, height), got {image_size}")
    if slack < 0:
        raise GroundingInputError(f"slack must be >= 0, got {slack}")
    return alphas


def _score_word(amap: np.ndarray, boxes: Sequence[Box], image_size: tuple[int, int], slack: int) -> GroundingResult:
    """One word's map (G, G) against the boxes of what it names; no boxes: hallucinated."""
    p = amap[amap > 0]
    entropy = float(-(p * np.log(p)).sum())
    if not boxes:
        return GroundingResult(total=1, hallucinated=1, entropy_sum=entropy)
    grid = (amap.shape[0], amap.shape[1])
    r, c = np.unravel_index(int(np.argmax(amap)), grid)
    inside = centre_mask(boxes, grid, image_size)  # (G, G)
    slack_hit = False
    for b in boxes:
        r0, r1, c0, c1 = _box_cells(b, grid, image_size)
        slack_hit |= r0 - slack <= r <= r1 + slack and c0 - slack <= c <= c1 + slack
    return GroundingResult(hits=int(inside[r, c]), slack_hits=int(slack_hit), total=1,
                           mass_sum=float(amap[inside].sum()), entropy_sum=entropy)


def pointing_game(
    tokens: Sequence[str],
    alphas: np.ndarray,
    boxes: Sequence[Box],
    image_size: tuple[int, int],
    word_to_category: Mapping[str, str],
    slack: int = 1,
) -> GroundingResult:
    """Pointing-game hits (strict and with slack) and attention mass for one caption, where a
    word names a class and any box of that class counts.

    Args:
        tokens: the generated words, one per decoding step (no ``<start>``/padding).
        alphas: attention maps, (T, G, G) with T == len(tokens); each map sums to 1 (not
            enforced: mass is reported as-is).
        boxes: ground-truth boxes of the image, in pixels of ``image_size``.
        image_size: (width, height) the boxes refer to; the grid is laid over the whole image.
        word_to_category: lower-case word or phrase -> category name used in ``boxes``.
        slack: cells by which boxes are dilated for the secondary, lenient hit count.

    A tie for the maximum goes to the first cell in row-major order. A box that contains no cell
    centre (an object smaller than a cell) can be hit only with slack.
    """
    alphas = _check_inputs(tokens, alphas, image_size, slack)
    by_category: dict[str, list[Box]] = {}
    for b in boxes:
        by_category.setdefault(b.category, []).append(b)
    return GroundingResult.merge(
        _score_word(alphas[t], by_category.get(category, []), image_size, slack)
        for t, category in _match_words(tokens, word_to_category))


@dataclass(frozen=True)
class SceneGrounding:
    """Grounding of the synthetic scenes' "<color> <shape>" phrases, by word kind."""

    shape: GroundingResult = GroundingResult()
    color: GroundingResult = GroundingResult()

    def __add__(self, other: SceneGrounding) -> SceneGrounding:
        return SceneGrounding(self.shape + other.shape, self.color + other.color)

    @classmethod
    def merge(cls, results: Iterable[SceneGrounding]) -> SceneGrounding:
        return sum(results, cls())


def scene_grounding(
    tokens: Sequence[str],
    alphas: np.ndarray,
    boxes: Sequence[Box],
    image_size: tuple[int, int],
    slack: int = 1,
) -> SceneGrounding:
    """Each "<color> [size] <shape>" phrase's colour word and shape word, scored against the box
    of the object the phrase names (the one with that colour and shape; ``Box.color``).

    A phrase naming a pair the image does not have is hallucinated, for both words: the model
    named no real object, so there is nothing it should have looked at.
    """
    alphas = _check_inputs(tokens, alphas, image_size, slack)
    shape, color = GroundingResult(), GroundingResult()
    for m in find_mentions(tokens):
        target = [b for b in boxes if b.category == m.shape and b.color == m.color]
        shape = shape + _score_word(alphas[m.shape_index], target, image_size, slack)
        color = color + _score_word(alphas[m.color_index], target, image_size, slack)
    return SceneGrounding(shape=shape, color=color)


def summarize_grounding(result: GroundingResult, prefix: str = "") -> dict[str, float | int]:
    """Flat dict for logs and result tables: the strict pointing game first, then the lenient
    one (its name assumes the default slack of 1 cell, which evaluation uses), the mass in box,
    the maps' mean entropy and the counts (ints, so that tables and JSON print them whole).
    ``prefix`` names the word kind ("color_")."""
    return {
        f"{prefix}pointing_strict": result.accuracy,
        f"{prefix}pointing_slack1": result.slack_accuracy,
        f"{prefix}attention_mass_in_box": result.mean_mass,
        f"{prefix}attention_entropy": result.mean_entropy,
        f"{prefix}grounded_words": int(result.total),
        f"{prefix}hallucinated_words": int(result.hallucinated),
    }


def summarize_scene_grounding(result: SceneGrounding) -> dict[str, float | int]:
    """Shape words under the plain names (comparable with COCO's), colour words as ``color_*``."""
    return summarize_grounding(result.shape) | summarize_grounding(result.color, prefix="color_")


# --------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------

# Category -> words naming it (singular forms; plurals are added by _plural). Multi-word
# categories are listed by their full name and by their head word where that is unambiguous in
# captions ("hydrant", "phone"); heads that are not ("light", "sign", "glass" of any kind,
# "plant") stay out, and "bear" / "dog" inside "teddy bear" / "hot dog" are taken care of by
# phrase matching.
_COCO_WORDS: dict[str, tuple[str, ...]] = {
    "person": ("person", "man", "woman", "boy", "girl", "child", "kid", "people", "player",
               "guy", "lady", "gentleman", "surfer", "skier", "snowboarder", "skateboarder",
               "batter", "pitcher", "catcher", "rider"),
    "bicycle": ("bicycle", "bike"),
    "car": ("car", "automobile", "sedan", "taxi", "cab", "suv"),
    "motorcycle": ("motorcycle", "motorbike", "motor bike", "scooter", "moped"),
    "airplane": ("airplane", "plane", "jet", "aeroplane", "airliner", "aircraft"),
    "bus": ("bus",),
    "train": ("train", "locomotive"),
    "truck": ("truck", "pickup"),
    "boat": ("boat", "ship", "sailboat", "canoe", "kayak", "yacht"),
    "traffic light": ("traffic light", "stoplight", "stop light", "traffic signal"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter", "meter"),
    "bench": ("bench",),
    "bird": ("bird", "pigeon", "seagull", "gull", "duck", "parrot"),
    "cat": ("cat", "kitten", "kitty"),
    "dog": ("dog", "puppy", "pup"),
    "horse": ("horse", "pony", "foal"),
    "sheep": ("sheep", "lamb"),
    "cow": ("cow", "cattle", "calf", "bull", "ox"),
    "elephant": ("elephant",),
    "bear": ("bear",),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack", "back pack"),
    "umbrella": ("umbrella", "parasol"),
    "handbag": ("handbag", "purse", "hand bag"),
    "tie": ("tie", "necktie"),
    "suitcase": ("suitcase", "luggage", "suit case"),
    "frisbee": ("frisbee",),
    "skis": ("skis",),
    "snowboard": ("snowboard",),
    # Not "baseball"/"football": mostly adjectives in captions ("a baseball player").
    "sports ball": ("sports ball", "ball", "soccer ball", "tennis ball"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat", "bat"),
    "baseball glove": ("baseball glove", "glove", "mitt"),
    "skateboard": ("skateboard", "skate board"),
    "surfboard": ("surfboard", "surf board"),
    "tennis racket": ("tennis racket", "racket", "racquet"),
    "bottle": ("bottle",),
    "wine glass": ("wine glass",),
    "cup": ("cup", "mug"),
    "fork": ("fork",),
    "knife": ("knife",),
    "spoon": ("spoon",),
    "bowl": ("bowl",),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "burger", "hamburger"),
    "orange": ("orange",),
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog", "hotdog"),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut"),
    "cake": ("cake", "cupcake"),
    "chair": ("chair", "stool"),
    "couch": ("couch", "sofa"),
    "potted plant": ("potted plant", "houseplant"),
    "bed": ("bed",),
    "dining table": ("dining table", "table"),
    "toilet": ("toilet",),
    "tv": ("tv", "television", "tv set"),
    "laptop": ("laptop", "notebook computer"),
    "mouse": ("mouse",),
    "remote": ("remote", "remote control", "controller"),
    "keyboard": ("keyboard",),
    "cell phone": ("cell phone", "phone", "cellphone", "smartphone", "mobile phone"),
    "microwave": ("microwave",),
    "oven": ("oven", "stove"),
    "toaster": ("toaster",),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge"),
    "book": ("book",),
    "clock": ("clock",),
    "vase": ("vase",),
    "scissors": ("scissors",),
    "teddy bear": ("teddy bear", "teddy", "teddybear", "stuffed bear"),
    "hair drier": ("hair drier", "hair dryer", "hairdryer", "blow dryer"),
    "toothbrush": ("toothbrush", "tooth brush"),
}

_IRREGULAR_PLURALS = {
    "person": "persons", "man": "men", "woman": "women", "child": "children",
    "gentleman": "gentlemen", "mouse": "mice", "knife": "knives", "calf": "calves",
    "ox": "oxen", "foal": "foals", "people": "people", "sheep": "sheep", "cattle": "cattle",
    "skis": "skis", "scissors": "scissors", "broccoli": "broccoli", "luggage": "luggage",
    "aircraft": "aircraft", "lady": "ladies", "kitty": "kitties", "pony": "ponies",
    "puppy": "puppies", "tv": "tvs", "suv": "suvs",
}


def _plural(phrase: str) -> str:
    """English plural of a phrase's last word; enough for the fixed vocabulary above."""
    *head, last = phrase.split()
    if last in _IRREGULAR_PLURALS:
        plural = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "ch", "sh")):
        plural = last + "es"
    else:
        plural = last + "s"
    return " ".join([*head, plural])


def _build_coco_synonyms() -> dict[str, str]:
    table: dict[str, str] = {}
    for category, words in _COCO_WORDS.items():
        for word in words:
            for form in (word, _plural(word)):
                if table.setdefault(form, category) != category:
                    raise AssertionError(f"{form!r} names both {table[form]!r} and {category!r}")
    return table


#: Lower-case word or phrase -> COCO category name, singular and plural (80 categories).
COCO_SYNONYMS: dict[str, str] = _build_coco_synonyms()

SCENE_SHAPES: tuple[str, ...] = SHAPES  # defined once, in the scenes spec


def scene_word_to_category() -> dict[str, str]:
    """Vocabulary for the synthetic shape scenes: each shape word (and its plural) names itself."""
    table = {shape: shape for shape in SCENE_SHAPES}
    table.update({_plural(shape): shape for shape in SCENE_SHAPES})
    return table


__all__ = [
    "Box",
    "COCO_SYNONYMS",
    "GroundingInputError",
    "GroundingResult",
    "SCENE_SHAPES",
    "SceneGrounding",
    "pointing_game",
    "scene_grounding",
    "scene_word_to_category",
    "summarize_grounding",
    "summarize_scene_grounding",
]
