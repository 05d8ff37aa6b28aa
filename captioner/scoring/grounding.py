"""Attention grounding: does the model look at the thing it names?

Caption metrics only compare words. Soft attention also tells us *where* the decoder looked when
it emitted each word, so for words that name an annotated object class we can check the map
against the ground-truth boxes, with two numbers:

* **pointing game** (Zhang et al., "Top-down neural attention by excitation backprop", 2016):
  a hit when the attention map's maximum lies in a box of the named class. The encoder grid is
  coarse (7x7 or 14x14 cells for a 224 px image), so a box is dilated by ``slack`` cells before
  testing; otherwise a small object between two cells could never be hit.
* **attention mass in box**: the share of the map whose cell centres fall inside the boxes of
  the named class. Unlike the pointing game it rewards a map that concentrates, not only peaks,
  on the object.

A named class with no box in the image is *hallucinated*: counted as a miss (and a mass of 0),
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
from captioner.data.scene_spec import SHAPES


class GroundingInputError(ValueError):
    """Inputs to the grounding metric that would give a meaningless number."""


@dataclass(frozen=True)
class GroundingResult:
    """Sufficient statistics of the metrics, so results over images add up exactly.

    ``total`` counts the grounded words, hallucinated ones included; ``mass_sum`` is the sum
    over those words of the attention mass inside their class's boxes.
    """

    hits: int = 0
    total: int = 0
    hallucinated: int = 0
    mass_sum: float = 0.0

    @property
    def accuracy(self) -> float:
        """Pointing-game accuracy, hits / total; nan when no word was grounded."""
        return self.hits / self.total if self.total else math.nan

    @property
    def mean_mass(self) -> float:
        """Mean attention mass inside the named class's boxes; nan when no word was grounded."""
        return self.mass_sum / self.total if self.total else math.nan

    def __add__(self, other: GroundingResult) -> GroundingResult:
        if not isinstance(other, GroundingResult):
            return NotImplemented
        return GroundingResult(
            hits=self.hits + other.hits,
            total=self.total + other.total,
            hallucinated=self.hallucinated + other.hallucinated,
            mass_sum=self.mass_sum + other.mass_sum,
        )

    @classmethod
    def merge(cls, results: Iterable[GroundingResult]) -> GroundingResult:
        """Aggregate per-image results into one dataset-level result."""
        total = cls()
        for result in results:
            total = total + result
        return total


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


def _centre_mask(boxes: Sequence[Box], grid: tuple[int, int], image_size: tuple[int, int]) -> np.ndarray:
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


def pointing_game(
    tokens: Sequence[str],
    alphas: np.ndarray,
    boxes: Sequence[Box],
    image_size: tuple[int, int],
    word_to_category: Mapping[str, str],
    slack: int = 1,
) -> GroundingResult:
    """Pointing-game hits and attention mass for one generated caption.

    Args:
        tokens: the generated words, one per decoding step (no ``<start>``/padding).
        alphas: attention maps, (T, G, G) with T == len(tokens); each map sums to 1 (not
            enforced: mass is reported as-is).
        boxes: ground-truth boxes of the image, in pixels of ``image_size``.
        image_size: (width, height) the boxes refer to; the grid is laid over the whole image.
        word_to_category: lower-case word or phrase -> category name used in ``boxes``.
        slack: cells by which boxes are dilated for the pointing game (not for the mass).

    A tie for the maximum goes to the first cell in row-major order.
    """
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
    grid = (alphas.shape[1], alphas.shape[2])
    by_category: dict[str, list[Box]] = {}
    for b in boxes:
        by_category.setdefault(b.category, []).append(b)

    hits = total = hallucinated = 0
    mass_sum = 0.0
    for t, category in _match_words(tokens, word_to_category):
        total += 1
        cat_boxes = by_category.get(category)
        if not cat_boxes:
            hallucinated += 1
            continue
        amap = alphas[t]  # (G, G)
        r, c = np.unravel_index(int(np.argmax(amap)), grid)
        for b in cat_boxes:
            r0, r1, c0, c1 = _box_cells(b, grid, image_size)
            if r0 - slack <= r <= r1 + slack and c0 - slack <= c <= c1 + slack:
                hits += 1
                break
        mass_sum += float(amap[_centre_mask(cat_boxes, grid, image_size)].sum())
    return GroundingResult(hits=hits, total=total, hallucinated=hallucinated, mass_sum=mass_sum)


def summarize_grounding(result: GroundingResult) -> dict[str, float]:
    """Flat dict for logs and result tables."""
    return {
        "pointing_accuracy": result.accuracy,
        "attention_mass_in_box": result.mean_mass,
        "grounded_words": float(result.total),
        "hallucinated_words": float(result.hallucinated),
    }


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
    "pointing_game",
    "scene_word_to_category",
    "summarize_grounding",
]
