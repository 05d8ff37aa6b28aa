"""Caption metrics computed exactly the way the COCO caption toolkit (pycocoevalcap) does.

Papers report BLEU-1..4, METEOR, ROUGE-L and CIDEr-D from ``COCOEvalCap.evaluate()``. That
method cannot run offline (it builds SPICE, whose CoreNLP jars are downloaded on first use), so
this module reproduces what it does with the toolkit's own scorer classes:

1. PTB-tokenize references and candidates as the toolkit does (:mod:`captioner.scoring.ptb`);
2. feed ``{image: [tokenized caption, ...]}`` dictionaries to ``Bleu(4)``, ``Meteor()``,
   ``Rouge()`` and ``Cider()`` (the toolkit's ``Cider`` is CIDEr-D: clipped, Gaussian length
   penalty, x10).

One difference from the toolkit's wrapper code, which only removes a failure mode: METEOR's
Java process is always shut down (the toolkit's ``__del__`` takes a lock that is still held if
scoring raised, and can deadlock or leave the JVM running).

Without Java the Python tokenizer runs and METEOR is reported as unavailable; the report always
says which tokenizer ran. The functions here take captions, not files: the reference and
results files are read by :mod:`captioner.data.annotations`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer as _ptb

from captioner.scoring.ptb import TOKENIZER_JAVA, TOKENIZER_PYTHON, java_available, ptb_tokenize

__all__ = [
    "ALL_METRICS",
    "BLEU_METRICS",
    "MetricsInputError",
    "ScoreReport",
    "format_table",
    "score_captions",
]

BLEU_METRICS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
#: Every metric this module knows, in the order papers print them.
ALL_METRICS: tuple[str, ...] = (*BLEU_METRICS, "METEOR", "ROUGE-L", "CIDEr-D", "SPICE")

# pycocoevalcap is a namespace package (no __init__.py), so locate it through a module file.
_SPICE_DIR = Path(_ptb.__file__).resolve().parent.parent / "spice"
_SPICE_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


class MetricsInputError(ValueError):
    """Captions that cannot be scored without giving a wrong number (files: AnnotationError)."""


@dataclass(frozen=True)
class ScoreReport:
    """Corpus-level scores for one set of candidates, plus everything needed to trust them.

    ``scores`` are fractions exactly as the toolkit returns them (papers print them x100).
    A metric that could not be computed is absent from ``scores`` and present in
    ``unavailable`` with the reason, so a missing number is never mistaken for a zero.
    """

    scores: dict[str, float]
    tokenizer: str
    num_images: int
    warnings: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------------


class _ClosingMeteor(Meteor):
    """The toolkit's Meteor, plus a ``close()`` that always ends the JVM.

    The parent's ``__del__`` acquires ``self.lock``; if ``compute_score`` raised half-way the
    lock is still held and garbage collection would block forever. ``close`` ignores the lock:
    it is only called once scoring is over.
    """

    def close(self) -> None:
        proc = getattr(self, "meteor_p", None)
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass  # broken pipe from a JVM that already died
        proc.kill()
        proc.wait()

    def __del__(self) -> None:
        self.close()


def _spice_jars_present() -> bool:
    return all((_SPICE_DIR / "lib" / jar).is_file() for jar in _SPICE_CORENLP_JARS)


def _example_ids(ids: Sequence[Hashable], k: int = 5) -> str:
    shown = ", ".join(repr(i) for i in list(ids)[:k])
    return shown + (", ..." if len(ids) > k else "")


def _resolve_metrics(metrics: Sequence[str] | None) -> tuple[list[str], bool]:
    """Requested metric names in paper order, and whether SPICE was asked for explicitly."""
    if metrics is None:
        return list(ALL_METRICS), False
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in ALL_METRICS]
    if unknown:
        raise MetricsInputError(f"unknown metric(s) {unknown}; known: {list(ALL_METRICS)}")
    return [m for m in ALL_METRICS if m in metrics], "SPICE" in metrics


def _check_inputs(
    references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]
) -> tuple[list[Hashable], list[str]]:
    """Image ids to score (in reference order) and the warnings the report must carry."""
    warnings: list[str] = []
    for img, cand in candidates.items():
        if not isinstance(cand, str):
            raise MetricsInputError(
                f"candidate for image {img!r} must be a str, got {type(cand).__name__}"
            )
    unknown = [img for img in candidates if img not in references]
    if unknown:
        raise MetricsInputError(
            f"{len(unknown)} of {len(candidates)} candidates have an image id that is not in the "
            f"references (e.g. {_example_ids(unknown)}); wrong split or id type (int vs str)?"
        )
    ids = [img for img in references if img in candidates]
    if not ids:
        raise MetricsInputError("no candidates to score")
    no_refs, blank_refs = [], 0
    for img in ids:
        refs = references[img]
        if isinstance(refs, str) or not all(isinstance(r, str) for r in refs):
            raise MetricsInputError(
                f"references for image {img!r} must be a sequence of str, got {refs!r:.80}"
            )
        if not any(r.strip() for r in refs):
            no_refs.append(img)
        blank_refs += sum(1 for r in refs if not r.strip())
    if no_refs:
        raise MetricsInputError(
            f"{len(no_refs)} images have no non-empty reference caption "
            f"(e.g. {_example_ids(no_refs)}); their scores would be meaningless"
        )
    missing = len(references) - len(ids)
    if missing:
        warnings.append(
            f"{missing} of {len(references)} reference images have no candidate; scored only the "
            f"{len(ids)} images that have one (scores are not comparable to a full-split score)"
        )
    if blank_refs:
        warnings.append(f"{blank_refs} reference captions are empty; scored as empty, as the toolkit would")
    empty = sum(1 for img in ids if not candidates[img].strip())
    if empty:
        warnings.append(f"{empty} candidate captions are empty; scored as empty, as the toolkit would")
    return ids, warnings


def _decide_java(java: bool | None, warnings: list[str]) -> bool:
    """`java` as given, or detected (None); a warning says when the Python tokenizer is used."""
    if java is None:
        java = java_available()
        if not java:
            warnings.append(
                "no working `java` on PATH: tokenized with the Python PTB imitation "
                "(ptb-python); scores may differ slightly from the official toolkit"
            )
    elif java and not java_available():
        raise RuntimeError("java=True but no working `java` executable on PATH")
    elif not java:
        warnings.append("java=False: tokenized with the Python PTB imitation (ptb-python)")
    return java


def _unavailable(wanted: list[str], *, java: bool, spice_explicit: bool, warnings: list[str]) -> dict[str, str]:
    """Metric -> why it cannot run here. SPICE not asked for by name is dropped from `wanted`
    (absent by default, not a failure)."""
    unavailable: dict[str, str] = {}
    if not java:
        for name in ("METEOR", "SPICE"):
            if name in wanted:
                unavailable[name] = f"{name} runs in Java and no Java was used"
    if "SPICE" in wanted and "SPICE" not in unavailable and not _spice_jars_present():
        unavailable["SPICE"] = (
            "SPICE needs Stanford CoreNLP jars that are downloaded at run time; not present in "
            f"{_SPICE_DIR / 'lib'}"
        )
    if "METEOR" in unavailable:
        warnings.append(f"METEOR skipped: {unavailable['METEOR']}")
    if "SPICE" in unavailable and spice_explicit:
        warnings.append(f"SPICE skipped: {unavailable['SPICE']}")
    if "SPICE" in unavailable and not spice_explicit:
        unavailable.pop("SPICE")
        wanted.remove("SPICE")
    return unavailable


def _tokenized(references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str],
               ids: Sequence[Hashable], *, java: bool) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """PTB-tokenize everything in one call -> the scorers' (gts, res) dicts.

    Scorers get consecutive int keys: any hashable id works and SPICE's sort order is stable.
    """
    ref_lists = [list(references[img]) for img in ids]
    flat = [r for refs in ref_lists for r in refs] + [candidates[img] for img in ids]
    tokens = ptb_tokenize(flat, java=java)
    gts: dict[int, list[str]] = {}
    pos = 0
    for k, refs in enumerate(ref_lists):
        gts[k] = tokens[pos : pos + len(refs)]
        pos += len(refs)
    res = {k: [tokens[pos + k]] for k in range(len(ids))}
    return gts, res


def _compute(gts: dict[int, list[str]], res: dict[int, list[str]], wanted: list[str],
             unavailable: dict[str, str], warnings: list[str]) -> dict[str, float]:
    """Run each wanted scorer that can run; a Java scorer that fails is reported, not raised."""
    scores: dict[str, float] = {}
    if any(m in wanted for m in BLEU_METRICS):
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        for name, value in zip(BLEU_METRICS, bleu):
            if name in wanted:
                scores[name] = float(value)
    if "METEOR" in wanted and "METEOR" not in unavailable:
        meteor = _ClosingMeteor()
        try:
            scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
        except (OSError, ValueError) as err:  # JVM died: broken pipe or empty read
            unavailable["METEOR"] = f"METEOR's Java process failed: {err!r}"
            warnings.append(f"METEOR skipped: {unavailable['METEOR']}")
        finally:
            meteor.close()
    if "ROUGE-L" in wanted:
        scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr-D" in wanted:
        scores["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
    if "SPICE" in wanted and "SPICE" not in unavailable:
        try:
            from pycocoevalcap.spice.spice import Spice

            scores["SPICE"] = float(Spice().compute_score(gts, res)[0])
        except Exception as err:  # noqa: BLE001 - any SPICE failure must not lose other scores
            unavailable["SPICE"] = f"SPICE failed: {err!r}"
            warnings.append(f"SPICE skipped: {unavailable['SPICE']}")
    return scores


def score_captions(
    references: Mapping[Hashable, Sequence[str]],
    candidates: Mapping[Hashable, str],
    *,
    java: bool | None = None,
    metrics: Sequence[str] | None = None,
) -> ScoreReport:
    """Score all candidates in one call, as ``COCOEvalCap.evaluate()`` would.

    One call per set matters: CIDEr-D's idf weights come from the references of the whole set
    and BLEU is a corpus statistic, so averaging per-batch scores gives a different number.

    Args:
        references: image id -> reference captions (raw text; tokenized here).
        candidates: image id -> one generated caption (raw text).
        java: ``None`` detects Java; ``False`` forces the pure-Python tokenizer and skips
            METEOR; ``True`` requires Java.
        metrics: subset of ``ALL_METRICS`` to compute (``None``: all that can run). Leaving out
            METEOR avoids its JVM, which takes seconds to load its paraphrase table.

    Raises:
        MetricsInputError: a candidate id is not among the references, an image has no
            reference, or a caption is not a string.
    """
    wanted, spice_explicit = _resolve_metrics(metrics)
    ids, warnings = _check_inputs(references, candidates)
    java = _decide_java(java, warnings)
    unavailable = _unavailable(wanted, java=java, spice_explicit=spice_explicit, warnings=warnings)
    gts, res = _tokenized(references, candidates, ids, java=java)
    scores = _compute(gts, res, wanted, unavailable, warnings)
    if "CIDEr-D" in scores and len(ids) == 1:
        warnings.append(
            "CIDEr-D is 0 by construction for a single image: its idf weights come from the "
            "scored set, and every n-gram of one image has idf log(1/1) = 0"
        )
    ordered = {m: scores[m] for m in ALL_METRICS if m in scores}
    return ScoreReport(
        scores=ordered,
        tokenizer=TOKENIZER_JAVA if java else TOKENIZER_PYTHON,
        num_images=len(ids),
        warnings=warnings,
        unavailable=unavailable,
    )


# --------------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------------


def format_table(report: ScoreReport) -> str:
    """Aligned plain-text table of a report (fractions and the x100 numbers papers print)."""
    rows = [("metric", "score", "x100")]
    for name in ALL_METRICS:
        if name in report.scores:
            value = report.scores[name]
            rows.append((name, f"{value:.4f}", f"{100 * value:.1f}" if math.isfinite(value) else "nan"))
        elif name in report.unavailable:
            rows.append((name, "n/a", ""))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = [f"{a:<{w0}}  {b:>{w1}}  {c:>{w2}}".rstrip() for a, b, c in rows]
    lines.insert(1, "-" * (w0 + w1 + w2 + 4))
    lines.append(f"images: {report.num_images}   tokenizer: {report.tokenizer}")
    for name, reason in report.unavailable.items():
        lines.append(f"n/a {name}: {reason}")
    for message in report.warnings:
        lines.append(f"warning: {message}")
    return "\n".join(lines)
