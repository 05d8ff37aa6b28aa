"""captioner.scoring.coco_metrics reproduces the COCO caption toolkit (pycocoevalcap) number for number.

The Java-dependent tests are marked `java`: they skip when no Java runs (conftest.py), or fail
when CAPTIONER_REQUIRE_JAVA is set, as in CI; the pinned golden values still check the
pure-Python path then. METEOR's JVM takes 7-10 s to load its paraphrase table, so two start in
all: one inside `score_captions` for the fixture report (the real path, checked for leftover
processes), and one shared by the other METEOR tests (METEOR's EVAL protocol is stateless
between calls, so sharing the process cannot change a score).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from pathlib import Path

import pytest

from captioner.data.annotations import load_references, load_results
from captioner.scoring import coco_metrics as M
from captioner.scoring.coco_metrics import MetricsInputError, ScoreReport, format_table, score_captions
from captioner.scoring.ptb import java_available, ptb_tokenize

FIXTURES = Path(__file__).parent / "fixtures"
REFS_JSON = FIXTURES / "captions_refs.json"  # 6 COCO images, 3-5 references each
RESULTS_JSON = FIXTURES / "captions_results.json"  # one imperfect candidate per image

# Golden values: pycocoevalcap 1.2's own COCOEvalCap.evaluate() on the two fixture files (COCO
# objects from pycocotools, SPICE replaced by a stub because its jars download at run time),
# printed with repr(); `test_toolkit_evaluate_reproduces_golden` re-derives them the same way.
GOLDEN = {
    "BLEU-1": 0.888888888872428,
    "BLEU-2": 0.8388704927913556,
    "BLEU-3": 0.7381034965803602,
    "BLEU-4": 0.6288460404978675,
    "METEOR": 0.4022266029936784,
    "ROUGE-L": 0.7964747160084453,
    "CIDEr-D": 2.294679465291539,
}

needs_java = pytest.mark.java

# Ordinary COCO-style captions covering the punctuation captions actually contain: the Python
# tokenizer must give exactly the Java tokens on all of them.
COMMON_CAPTIONS = [
    "A man riding a wave on top of a surfboard.",
    "a kitchen with a stove , sink , and refrigerator .",
    "Two dogs (one brown) playing in the park!",
    "There's a cat's toy on the bed; it's red.",
    "A sign that says \"STOP\" near the road.",
    "he's holding a sign saying 'no parking'.",
    "A PLATE OF FOOD WITH BROCCOLI.",
    "a clock tower at 12:30 p.m. in the U.S. city",
    "Mr. Smith stands on St. Paul street, etc.",
    "a 3-year-old boy eats a hot-dog... so good",
    "a man in a t-shirt -- and a woman - in red",
    "what is this?! a dog? a cat!!",
    "a dog. a cat on a mat",
    "the no. 5 bus and 1,000 people at 3.5 km",
    "people's hands, dogs' bowls and James' car",
    "they're playing tennis; we've seen it; I'M here; can't won't",
    "a bathroom with a toilet, sink, and shower/tub combo.",
    "salt & pepper on a [wooden] {table}",
    "caf\u00e9 with \u201csmart\u201d signs and it\u2019s \u2014 open\u2026",
    "the word \u2018love\u2019 written in sand",
    "a b c d.",
    "",
    "   ",
    "...",
]


@pytest.fixture(scope="module")
def fixture_captions() -> tuple[dict[int, list[str]], dict[int, str]]:
    return load_references(REFS_JSON), load_results(RESULTS_JSON)


@pytest.fixture(scope="module")
def java_report(fixture_captions) -> ScoreReport:
    refs, cands = fixture_captions
    return score_captions(refs, cands)


_SHARED_PIDS: set[int] = set()  # the shared METEOR process is expected to be alive


@pytest.fixture(scope="module")
def shared_meteor():
    meteor = M._ClosingMeteor()
    _SHARED_PIDS.add(meteor.meteor_p.pid)
    yield meteor
    meteor.close()


class _BorrowedMeteor:
    """Stands in for a fresh METEOR process inside score_captions, without starting a JVM."""

    def __init__(self, meteor):
        self._meteor = meteor

    def compute_score(self, gts, res):
        return self._meteor.compute_score(gts, res)

    def close(self):
        pass  # the module fixture owns the process


# ---------------------------------------------------------------------------------------------
# Agreement with the toolkit
# ---------------------------------------------------------------------------------------------


@needs_java
def test_fixture_scores_equal_golden(java_report):
    assert java_report.tokenizer == "ptb-java"
    assert java_report.num_images == 6
    assert java_report.warnings == [] and java_report.unavailable == {}
    assert list(java_report.scores) == list(GOLDEN)  # SPICE absent: its jars are not installed
    for name, value in GOLDEN.items():
        assert java_report.scores[name] == pytest.approx(value, abs=1e-9), name


@needs_java
@pytest.mark.slow
def test_toolkit_evaluate_reproduces_golden(monkeypatch, shared_meteor):
    """The reference path: COCOEvalCap.evaluate() itself, with only SPICE stubbed out (and its
    Meteor() handed the already running METEOR process of this module)."""
    import pycocoevalcap.eval as toolkit
    from pycocotools.coco import COCO

    monkeypatch.setattr(toolkit, "Meteor", lambda: shared_meteor)

    class NoSpice:
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

        def method(self):
            return "SPICE"

    monkeypatch.setattr(toolkit, "Spice", NoSpice)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(REFS_JSON))
        res = coco.loadRes(str(RESULTS_JSON))
        evaluator = toolkit.COCOEvalCap(coco, res)
        evaluator.params["image_id"] = res.getImgIds()
        evaluator.evaluate()
    names = {"Bleu_1": "BLEU-1", "Bleu_2": "BLEU-2", "Bleu_3": "BLEU-3", "Bleu_4": "BLEU-4",
             "METEOR": "METEOR", "ROUGE_L": "ROUGE-L", "CIDEr": "CIDEr-D"}
    for toolkit_name, name in names.items():
        assert float(evaluator.eval[toolkit_name]) == pytest.approx(GOLDEN[name], abs=1e-12)


@needs_java
def test_java_tokenizer_equals_toolkit_ptbtokenizer(fixture_captions):
    """One batched JVM call gives exactly what the toolkit's PTBTokenizer gives per dict."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs, cands = fixture_captions
    captions = [c for rs in refs.values() for c in rs] + list(cands.values()) + COMMON_CAPTIONS
    expected = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert ptb_tokenize(captions, java=True) == [expected[i][0] for i in range(len(captions))]


@needs_java
def test_line_breaks_cannot_shift_captions_between_images():
    """The toolkit only replaces '\\n': a '\\r' or U+2028 inside a caption makes Java emit an
    extra line and every later caption lands on the wrong image. Ours folds them to spaces."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = ["a red\rbus", "two dogs\u2028running", "a cat"]
    toolkit = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    assert toolkit[1] == ["bus"]  # the toolkit's silent misalignment
    assert ptb_tokenize(captions, java=True) == ["a red bus", "two dogs running", "a cat"]
    assert ptb_tokenize(captions, java=False) == ["a red bus", "two dogs running", "a cat"]


@needs_java
def test_identical_candidates_score_perfectly(monkeypatch, shared_meteor):
    monkeypatch.setattr(M, "_ClosingMeteor", lambda: _BorrowedMeteor(shared_meteor))
    refs = {
        1: ["a man riding a wave on a surfboard"],
        2: ["two dogs playing with a red frisbee"],
        3: ["a kitchen with a stove and a sink"],
    }
    report = score_captions(refs, {k: v[0] for k, v in refs.items()})
    s = report.scores
    # BLEU's smoothing is (correct + 1e-15) / (guess + 1e-9): 1 - 1e-9/guess, not exactly 1.
    for name in M.BLEU_METRICS:
        assert s[name] == pytest.approx(1.0, abs=1e-9) and s[name] < 1.0
    assert s["METEOR"] == 1.0  # METEOR 1.5 returns exactly 1.0 for identical strings
    assert s["ROUGE-L"] == 1.0
    # CIDEr-D: cosine 1 for every n, x10; "a" occurs in every image (idf 0) but each vector
    # still has other non-zero entries.
    assert s["CIDEr-D"] == pytest.approx(10.0, abs=1e-9)


def test_identical_three_word_captions_give_toolkit_bleu4_floor():
    """Below 4 tokens there are no 4-grams: the toolkit's BLEU-4 is (1e-15/1e-9)**(1/4), not 1."""
    refs = {1: ["a red bus"], 2: ["two small dogs"]}
    report = score_captions(refs, {1: "a red bus", 2: "two small dogs"}, java=False,
                            metrics=("BLEU-3", "BLEU-4"))
    assert report.scores["BLEU-3"] == pytest.approx(1.0, abs=1e-9)
    assert report.scores["BLEU-4"] == pytest.approx(1e-6 ** 0.25, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# nltk's corpus BLEU as an independent implementation
# ---------------------------------------------------------------------------------------------


def _fixture_tokens(fixture_captions):
    refs, cands = fixture_captions
    ids = list(cands)
    gts = {i: ptb_tokenize(refs[i], java=False) for i in ids}
    res = {i: ptb_tokenize([cands[i]], java=False) for i in ids}
    return ids, gts, res


def test_nltk_corpus_bleu_agrees_with_toolkit(fixture_captions):
    """Same numbers with nltk's defaults (closest reference length, shorter on ties, no
    smoothing) and uniform weights 1/n. The only difference is the toolkit's epsilons,
    (correct + 1e-15) / (guess + 1e-9), a relative error of about 1e-9 / guess per order:
    here 1.7e-11. So 1e-9 holds whenever every n-gram order has at least one match."""
    from nltk.translate.bleu_score import corpus_bleu
    from pycocoevalcap.bleu.bleu import Bleu

    ids, gts, res = _fixture_tokens(fixture_captions)
    toolkit, _ = Bleu(4).compute_score(gts, res, verbose=0)
    refs = [[r.split() for r in gts[i]] for i in ids]
    hyps = [res[i][0].split() for i in ids]
    for n in range(1, 5):
        ours = corpus_bleu(refs, hyps, weights=(1.0 / n,) * n)
        assert ours == pytest.approx(toolkit[n - 1], abs=1e-9)
        assert ours != toolkit[n - 1]  # the epsilons are real, just tiny
    assert toolkit[0] == pytest.approx(GOLDEN["BLEU-1"], abs=1e-12)


def test_nltk_corpus_bleu_differs_when_a_candidate_is_shorter_than_n(fixture_captions):
    """nltk counts max(1, #n-grams) in a precision's denominator, the toolkit max(0, len-n+1):
    a 2-token candidate adds 1 to nltk's 3- and 4-gram denominators, and BLEU-3/4 drop by ~6e-3
    while BLEU-1/2 still agree. Papers' numbers are the toolkit's."""
    from nltk.translate.bleu_score import corpus_bleu
    from pycocoevalcap.bleu.bleu import Bleu

    ids, gts, res = _fixture_tokens(fixture_captions)
    res = dict(res)
    res[ids[0]] = [" ".join(res[ids[0]][0].split()[:2])]
    toolkit, _ = Bleu(4).compute_score(gts, res, verbose=0)
    refs = [[r.split() for r in gts[i]] for i in ids]
    hyps = [res[i][0].split() for i in ids]
    nltk_scores = [corpus_bleu(refs, hyps, weights=(1.0 / n,) * n) for n in range(1, 5)]
    assert nltk_scores[:2] == pytest.approx(toolkit[:2], abs=1e-9)
    for n in (3, 4):
        assert toolkit[n - 1] - nltk_scores[n - 1] > 1e-3


# ---------------------------------------------------------------------------------------------
# Without Java
# ---------------------------------------------------------------------------------------------


def test_python_fallback_reproduces_golden_except_meteor(fixture_captions):
    refs, cands = fixture_captions
    report = score_captions(refs, cands, java=False)
    assert report.tokenizer == "ptb-python"
    assert "METEOR" not in report.scores and "METEOR" in report.unavailable
    assert any("METEOR skipped" in w for w in report.warnings)
    # The fixture's punctuation (periods, commas, parentheses, quotes, "'s") tokenizes exactly
    # as in Java, so the other scores are equal, not merely close.
    for name, value in GOLDEN.items():
        if name != "METEOR":
            assert report.scores[name] == pytest.approx(value, abs=1e-12), name


def test_autodetect_with_empty_path_falls_back(fixture_captions, monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert not java_available()
    refs, cands = fixture_captions
    report = score_captions(refs, cands)
    assert report.tokenizer == "ptb-python"
    assert set(report.unavailable) == {"METEOR"}
    assert any("java" in w.lower() for w in report.warnings)
    assert report.scores["CIDEr-D"] == pytest.approx(GOLDEN["CIDEr-D"], abs=1e-12)


def test_java_required_but_missing_is_an_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="java=True"):
        score_captions({1: ["a dog"]}, {1: "a dog"}, java=True)


@needs_java
def test_python_tokenizer_matches_java_on_common_captions(fixture_captions):
    refs, cands = fixture_captions
    captions = [c for rs in refs.values() for c in rs] + list(cands.values()) + COMMON_CAPTIONS
    assert ptb_tokenize(captions, java=False) == ptb_tokenize(captions, java=True)


def test_python_tokenizer_known_forms():
    """Stanford behaviours the fallback imitates, pinned so they work without Java too."""
    got = ptb_tokenize(
        ["Two dogs (brown) play!", "what?!", "a dog. a cat", "a b c d.", "It's Mr. Smith's",
         "x\u2019s \u201cq\u201d", "a*b=c"],
        java=False,
    )
    assert got == [
        "two dogs -lrb- brown -rrb- play",  # -lowerCase runs before the filter: -lrb- survives
        "what ?!",  # a run is one token, not in the toolkit's PUNCTUATIONS
        "a dog a cat",
        "a b c d.",  # a single letter + period is an initial
        "it 's mr. smith 's",
        "x 's q",
        "a * b = c",
    ]


# ---------------------------------------------------------------------------------------------
# Metric selection and the JVMs
# ---------------------------------------------------------------------------------------------


@needs_java  # without Java, METEOR is never started anyway
def test_metric_subset_never_starts_meteor(fixture_captions, monkeypatch):
    def boom():
        raise AssertionError("METEOR's JVM was started")

    monkeypatch.setattr(M, "_ClosingMeteor", boom)
    refs, cands = fixture_captions
    report = score_captions(refs, cands, metrics=("BLEU-4", "CIDEr-D"))
    assert list(report.scores) == ["BLEU-4", "CIDEr-D"]
    assert report.scores["BLEU-4"] == pytest.approx(GOLDEN["BLEU-4"], abs=1e-9)
    assert report.unavailable == {}


def test_unknown_metric_name_is_rejected():
    with pytest.raises(MetricsInputError, match="BLEU4"):
        score_captions({1: ["a dog"]}, {1: "a dog"}, metrics=("BLEU4",), java=False)


def test_spice_absent_unless_asked(monkeypatch, tmp_path):
    monkeypatch.setattr(M, "_SPICE_DIR", tmp_path)  # no CoreNLP jars here
    refs = {1: ["a dog on a red couch"]}
    default = score_captions(refs, {1: "a dog on a couch"}, java=False, metrics=None)
    assert "SPICE" not in default.scores and "SPICE" not in default.unavailable


@needs_java
def test_spice_asked_for_without_its_jars_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(M, "_SPICE_DIR", tmp_path)  # no CoreNLP jars here
    asked = score_captions({1: ["a dog on a red couch"]}, {1: "a dog on a couch"},
                           metrics=("SPICE", "BLEU-1"))
    assert "downloaded at run time" in asked.unavailable["SPICE"]
    assert str(tmp_path) in asked.unavailable["SPICE"]
    assert any("SPICE skipped" in w for w in asked.warnings)
    assert list(asked.scores) == ["BLEU-1"]


def _java_children() -> list[tuple[int, str]]:
    """(pid, command name) of this process's child processes, zombies included, from /proc."""
    me = os.getpid()
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == me:
            found.append((int(stat.parent.name), name))
    return found


@needs_java
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_no_java_process_left_behind(java_report):
    assert java_report.scores  # the fixture report started PTBTokenizer and METEOR
    leftover = [(pid, n) for pid, n in _java_children() if "java" in n and pid not in _SHARED_PIDS]
    assert leftover == []


@needs_java
def test_meteor_process_that_dies_is_reaped_and_reported(monkeypatch):
    """A METEOR JVM that dies mid-scoring (here a stand-in process that exits after one line)
    must neither hang nor leave a process behind, and must not cost the other scores."""
    import subprocess
    import sys
    import threading

    started = []

    class DyingMeteor(M._ClosingMeteor):
        def __init__(self):  # noqa: D107 - same attributes as pycocoevalcap's Meteor
            self.meteor_p = subprocess.Popen(
                [sys.executable, "-c", "import sys; sys.stdin.readline()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            self.lock = threading.Lock()
            started.append(self.meteor_p)

    monkeypatch.setattr(M, "_ClosingMeteor", DyingMeteor)
    report = score_captions({1: ["a dog on a couch"]}, {1: "a dog on a couch"},
                            metrics=("METEOR", "ROUGE-L"))
    assert "METEOR" in report.unavailable and "failed" in report.unavailable["METEOR"]
    assert report.scores == {"ROUGE-L": 1.0}
    (proc,) = started
    assert proc.returncode is not None  # waited for: no zombie


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def test_unknown_candidate_ids_are_an_error():
    refs = {1: ["a dog"], 2: ["a cat"]}
    with pytest.raises(MetricsInputError, match=r"2 of 3 candidates.*'7'"):
        score_captions(refs, {1: "a dog", "7": "x", 8: "y"}, java=False, metrics=("BLEU-1",))


def test_references_without_candidates_warn_and_score_the_intersection():
    refs = {1: ["a dog on a couch"], 2: ["a cat on a mat"], 3: ["a bus"]}
    report = score_captions(refs, {1: "a dog on a couch"}, java=False, metrics=("BLEU-1",))
    assert report.num_images == 1
    assert any("2 of 3 reference images have no candidate" in w for w in report.warnings)
    assert report.scores["BLEU-1"] == pytest.approx(1.0, abs=1e-9)


def test_empty_candidates_warn_and_score_as_empty():
    refs = {1: ["a dog on a couch"], 2: ["a cat on a mat"]}
    report = score_captions(refs, {1: "a dog on a couch", 2: "  "}, java=False,
                            metrics=("BLEU-1", "ROUGE-L"))
    assert any("1 candidate captions are empty" in w for w in report.warnings)
    assert report.scores["ROUGE-L"] == pytest.approx(0.5)  # 1.0 and 0.0, averaged
    # 5 of 5 unigrams right, but 5 candidate tokens against 10 reference tokens: BP = e^-1.
    assert report.scores["BLEU-1"] == pytest.approx(math.exp(-1.0), rel=1e-8)


def test_single_image_cider_is_zero_and_says_why():
    report = score_captions({1: ["a dog on a red couch"]}, {1: "a dog on a red couch"},
                            java=False, metrics=("CIDEr-D",))
    assert report.scores["CIDEr-D"] == 0.0
    assert any("single image" in w for w in report.warnings)


@pytest.mark.parametrize("bad_refs", [[], ["", "  "]])
def test_images_without_references_are_an_error(bad_refs):
    with pytest.raises(MetricsInputError, match="no non-empty reference"):
        score_captions({1: bad_refs, 2: ["a cat"]}, {1: "a dog", 2: "a cat"}, java=False)


def test_references_given_as_a_string_are_an_error():
    with pytest.raises(MetricsInputError, match="sequence of str"):
        score_captions({1: "a dog on a couch"}, {1: "a dog"}, java=False)


def test_non_string_candidate_is_an_error():
    with pytest.raises(MetricsInputError, match="must be a str"):
        score_captions({1: ["a dog"]}, {1: ["a dog"]}, java=False)


# ---------------------------------------------------------------------------------------------
# Display
# ---------------------------------------------------------------------------------------------


def test_format_table_is_aligned_and_complete():
    report = ScoreReport(
        scores={"BLEU-1": 0.71234, "BLEU-4": 0.25, "CIDEr-D": 0.9512},
        tokenizer="ptb-python",
        num_images=5000,
        warnings=["1 candidate captions are empty"],
        unavailable={"METEOR": "no Java"},
    )
    text = format_table(report)
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "score", "x100"]
    rows = {line.split()[0]: line for line in lines[2:6]}
    assert rows["BLEU-1"].split() == ["BLEU-1", "0.7123", "71.2"]
    assert rows["CIDEr-D"].split() == ["CIDEr-D", "0.9512", "95.1"]
    assert rows["METEOR"].split() == ["METEOR", "n/a"]
    # scores right-aligned in one column
    assert len({rows[m].index(".") for m in ("BLEU-1", "BLEU-4", "CIDEr-D")}) == 1
    assert "tokenizer: ptb-python" in text and "5000" in text
    assert "n/a METEOR: no Java" in text and "warning: 1 candidate captions are empty" in text
