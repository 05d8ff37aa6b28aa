"""Caption metrics computed exactly the way the COCO caption toolkit (pycocoevalcap) does.

Papers report BLEU-1..4, METEOR, ROUGE-L and CIDEr-D from ``COCOEvalCap.evaluate()``. That
method cannot run offline (it builds SPICE, whose CoreNLP jars are downloaded on first use), so
this module reproduces what it does with the toolkit's own scorer classes:

1. PTB-tokenize references and candidates with Stanford's ``PTBTokenizer`` (Java), lower-cased,
   then drop the toolkit's ``PUNCTUATIONS`` tokens;
2. feed ``{image: [tokenized caption, ...]}`` dictionaries to ``Bleu(4)``, ``Meteor()``,
   ``Rouge()`` and ``Cider()`` (the toolkit's ``Cider`` is CIDEr-D: clipped, Gaussian length
   penalty, x10).

Differences from the toolkit's wrapper code, each of which only removes a failure mode:

* one JVM tokenizes references and candidates together (the Java tokenizer is line-by-line with
  ``-preserveLines``, so batching does not change any token);
* the temporary file goes to a private temporary directory instead of the installed package
  directory (which may be read-only), and the tokenizer's chatter on stderr is captured;
* every Unicode line break inside a caption becomes a space. The toolkit only replaces ``\\n``;
  a caption holding ``\\r`` or U+2028 makes Java emit an extra line and silently shifts every
  later caption onto the wrong image. The number of output lines is checked as well;
* METEOR's Java process is always shut down (the toolkit's ``__del__`` takes a lock that is still
  held if scoring raised, and can deadlock or leave the JVM running).

Without Java, a pure-Python tokenizer built from nltk's ``TreebankWordTokenizer`` imitates the
Java tokenizer (identical on ordinary captions; see ``_PythonPTBTokenizer`` for the known
differences) and METEOR is reported as unavailable. The report always says which tokenizer ran.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer as _ptb

BLEU_METRICS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
#: Every metric this module knows, in the order papers print them.
ALL_METRICS: tuple[str, ...] = (*BLEU_METRICS, "METEOR", "ROUGE-L", "CIDEr-D", "SPICE")

TOKENIZER_JAVA = "ptb-java"
TOKENIZER_PYTHON = "ptb-python"

#: Tokens the toolkit deletes after tokenization (its own list, so the two cannot drift apart).
#: Note they are compared *after* ``-lowerCase``, so ``-lrb-`` & co. survive in the toolkit too.
PUNCTUATIONS: frozenset[str] = frozenset(_ptb.PUNCTUATIONS)

_PTB_JAR = Path(_ptb.__file__).resolve().parent / _ptb.STANFORD_CORENLP_3_4_1_JAR
# pycocoevalcap is a namespace package (no __init__.py), so locate it through a module file.
_SPICE_DIR = Path(_ptb.__file__).resolve().parent.parent / "spice"
_SPICE_CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")

# Everything str.splitlines() treats as a line boundary: Java may split on some of these too.
_LINE_BREAKS = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


class MetricsInputError(ValueError):
    """Captions or caption files that cannot be scored without giving a wrong number."""


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
# Tokenization
# --------------------------------------------------------------------------------------------


def _one_line(caption: str) -> str:
    """Fold line breaks into spaces so one caption is exactly one tokenizer line."""
    return _LINE_BREAKS.sub(" ", caption)


def _strip_punctuation(token_line: str) -> str:
    """The toolkit's post-processing: split on single spaces and drop punctuation tokens."""
    return " ".join(w for w in token_line.rstrip().split(" ") if w not in PUNCTUATIONS)


def _java_tokenize(captions: Sequence[str]) -> list[str]:
    """Stanford PTBTokenizer with the toolkit's flags, one JVM for all captions."""
    lines = [_one_line(c) for c in captions]
    # Blank lines come back blank; skipping them keeps the line bookkeeping trivially right.
    todo = [i for i, line in enumerate(lines) if line.strip()]
    out = [""] * len(lines)
    if not todo:
        return out
    with tempfile.TemporaryDirectory(prefix="captioner-ptb-") as tmp:
        src = Path(tmp) / "captions.txt"
        src.write_bytes("\n".join(lines[i] for i in todo).encode("utf-8"))
        cmd = [
            "java", "-cp", str(_PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines", "-lowerCase", str(src),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, check=False)
        except FileNotFoundError:
            raise RuntimeError("no `java` executable on PATH for the PTB tokenizer") from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"Stanford PTBTokenizer ({_PTB_JAR}) exited with status {proc.returncode}: "
            f"{proc.stderr.decode('utf-8', 'replace')[-2000:]}"
        )
    token_lines = proc.stdout.decode("utf-8").split("\n")
    if len(token_lines) == len(todo) + 1 and token_lines[-1] == "":
        token_lines.pop()
    if len(token_lines) != len(todo):
        raise RuntimeError(
            f"Stanford PTBTokenizer returned {len(token_lines)} lines for {len(todo)} captions; "
            "refusing to guess which caption belongs to which image"
        )
    for i, line in zip(todo, token_lines):
        out[i] = _strip_punctuation(line)
    return out


class _PythonPTBTokenizer:
    """nltk's Treebank tokenizer, adjusted to behave like Stanford's PTBTokenizer 3.4.1.

    nltk follows the original PTB sed script; Stanford's lexer differs in ways that matter for
    captions, each fixed here and checked against the Java output in the tests:

    * a period is split off *every* word that is not an abbreviation (nltk: only the last one),
      where abbreviations are single letters (``d.``), acronyms (``u.s.``, ``p.m.``) and
      Stanford's list (``mr.``, ``st.``, ``etc.``, ...);
    * runs such as ``?!`` or ``!!!`` stay one token, which the toolkit then does *not* delete;
    * a quote opening a word (``'hello'``) and a hyphen at a word edge (``a -b``) are split;
    * curly quotes, dashes and the ellipsis character are mapped to their ASCII forms;
    * brackets become ``-LRB-``..., and lower-casing happens after, as ``-lowerCase`` does;
    * symbols (``+ = | ~ ^ ° © * \\``) become tokens; ``&amp;`` is read as ``&``; characters
      outside the Basic Multilingual Plane (emoji) are deleted, as Stanford does.

    Known remaining differences (none occurs in ordinary captions): URLs, e-mail addresses,
    ``@name``, ``#tag``, ``at&t``, emoticons such as ``:)``, ``w/``, dialect clitics (``y'all``, ``d'ye``,
    ``rock 'n' roll``) and a period glued before ``...`` (``a... b``).
    """

    # Stanford PTBLexer abbreviation lists (ABMONTH, ABDAYS, ABSTATE, ABTITLE, ABCOMP, ABCOMP2,
    # ABPTIT and friends), reduced to what the Java tokenizer actually keeps with a period
    # whatever the case of the word; verified against the jar word by word.
    _ABBREVIATIONS = frozenset(
        """jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thurs fri
        ala ariz calif colo conn ct dak fla ga ind kan kans ky md mich minn mo mont neb nev okla
        penn tenn va vt wis wisc wyo mr mrs ms dr drs prof profs sen sens rep reps atty attys lt
        col gen messrs gov govs adm rev maj sgt cpl pvt mt capt st ste ave pres lieut hon brig
        cmdr comdr pfc spc supt supts det m mme mlle inc co cos corp pty ptys ppty ltd plc
        bancorp dept bhd assn univ intl sys invt elec natl mfg mtg jr sr bros blvd rd esq etc al
        seq vs cf ft tel est ext sq wm jos alex cie treas rt""".split()
    )
    # Kept only when capitalised (Stanford writes them as ``[A]z``, ``[M]ass``, ...).
    _CAPITALISED_ABBREVIATIONS = frozenset(
        "az ark del ill la mass miss ore pa tex wash".split()
    )
    _ACRONYM = re.compile(r"[A-Za-z](?:\.[A-Za-z])+|(?:ph|ed)\.d|a\.k\.a", re.IGNORECASE)
    _WORD_PERIOD = re.compile(r"^(.*?[^.])\.([)\]}\"'>]*)$")
    _CHAR_MAP = str.maketrans(
        {
            "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
            "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
            "\u2013": " -- ", "\u2014": " -- ", "\u2026": " ... ",
            "\u00a0": " ", "\u2009": " ", "\u200a": " ", "\u200b": " ", "\u202f": " ",
            "\u00bd": "1/2", "\u00bc": "1/4", "\u00be": "3/4",
        }
    )
    _OPENING_SINGLE_QUOTE = re.compile(
        r"(?<!\S)'(?=[A-Za-z])(?!(?:s|m|d|ll|re|ve|t|em|tis|twas)\b|n'(?!\w))", re.IGNORECASE
    )
    _LEADING_HYPHEN = re.compile(r"(?<!\S)-(?=[^\s-])")
    _TRAILING_HYPHEN = re.compile(r"(?<=[^\s-])-(?!\S)")
    _LONG_DASH = re.compile(r"-{3,}")
    _SYMBOL_CANDIDATE = re.compile(r"[^\w\s]")

    @staticmethod
    def _pad_symbol(match: re.Match[str]) -> str:
        """Stanford makes a token of every symbol (Unicode So/Sm/Sk: ``+ = | ~ ^ ° © ´``) and
        of ``*`` and ``\\``; nltk leaves them glued to the neighbouring word."""
        ch = match.group(0)
        if ch in "*\\" or unicodedata.category(ch) in ("So", "Sm", "Sk"):
            return f" {ch} "
        return ch

    def __init__(self) -> None:
        # Imported here: nltk is only needed when Java is missing.
        from nltk.tokenize.treebank import TreebankWordTokenizer

        tok = TreebankWordTokenizer()
        final_period = r'([^\.])(\.)([\]\)}>"\']*)\s*$'
        punctuation = []
        for regexp, repl in TreebankWordTokenizer.PUNCTUATION:
            if regexp.pattern == final_period:
                continue  # periods are handled by _split_periods, abbreviation-aware
            if regexp.pattern == r"[?!]":
                # Runs stay one token ('?!' survives the toolkit's filter); 'a?b' stays whole.
                regexp, repl = re.compile(r"(?<!\S)[?!]+|[?!]+(?!\S)"), r" \g<0> "
            punctuation.append((regexp, repl))
        if len(punctuation) != len(TreebankWordTokenizer.PUNCTUATION) - 1:
            raise RuntimeError("this nltk's TreebankWordTokenizer has unexpected PUNCTUATION rules")
        tok.PUNCTUATION = punctuation  # instance attribute: the nltk class is left untouched
        self._treebank = tok

    def _is_abbreviation(self, stem: str) -> bool:
        """Whether Stanford keeps the period of ``stem + "."`` (``stem`` may start with ``(``)."""
        word = re.search(r"[A-Za-z.]*$", stem).group(0).lstrip(".")
        if not word or word != stem.lstrip("(`\"'[{<"):
            return False
        lower = word.lower()
        if len(word) == 1 or self._ACRONYM.fullmatch(word):
            return True
        if lower in self._ABBREVIATIONS:
            return True
        return lower in self._CAPITALISED_ABBREVIATIONS and word[0].isupper()

    def _split_periods(self, text: str) -> str:
        """Split word-final periods off non-abbreviations, anywhere in the caption."""
        chunks = []
        words = text.split()
        for i, chunk in enumerate(words):
            if chunk.lower() == "no." and i + 1 < len(words) and words[i + 1][:1].isdigit():
                chunks.append(chunk)  # Stanford: 'no. 5' keeps its period
                continue
            if chunk.endswith("..") and not chunk.endswith("..."):
                chunk = chunk[:-2] + " . ."  # Stanford: 'end..' -> 'end . .'
            else:
                m = self._WORD_PERIOD.match(chunk)
                if m and not self._is_abbreviation(m.group(1)):
                    chunk = f"{m.group(1)} . {m.group(2)}"
            chunks.append(chunk)
        return " ".join(chunks)

    def __call__(self, caption: str) -> str:
        text = _one_line(caption).translate(self._CHAR_MAP).replace("&amp;", "&")
        text = "".join(ch for ch in text if ord(ch) <= 0xFFFF)  # Stanford drops e.g. emoji
        text = self._LONG_DASH.sub(" -- ", text)
        text = self._SYMBOL_CANDIDATE.sub(self._pad_symbol, text)
        text = self._split_periods(text)
        text = self._OPENING_SINGLE_QUOTE.sub("' ", text)
        text = self._LEADING_HYPHEN.sub("- ", text)
        text = self._TRAILING_HYPHEN.sub(" -", text)
        tokens = self._treebank.tokenize(text, convert_parentheses=True)
        return " ".join(t.lower() for t in tokens if t.lower() not in PUNCTUATIONS)


def java_available() -> bool:
    """True when a ``java`` on PATH actually starts (a broken JRE stub is not enough)."""
    exe = shutil.which("java")
    if exe is None:
        return False
    try:
        proc = subprocess.run([exe, "-version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def ptb_tokenize(captions: Sequence[str], *, java: bool | None = None) -> list[str]:
    """Tokenize captions the way the toolkit does: lower-cased PTB tokens joined by spaces,
    punctuation removed. ``java=None`` uses Java when it runs, else the Python imitation."""
    if java is None:
        java = java_available()
    if java:
        return _java_tokenize(captions)
    tok = _PythonPTBTokenizer()
    return [tok(c) for c in captions]


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
    unavailable: dict[str, str] = {}

    if java is None:
        java = java_available()
        if not java:
            warnings.append(
                "no working `java` on PATH: tokenized with the Python PTB imitation "
                "(ptb-python); scores may differ slightly from the official toolkit"
            )
    elif java and not java_available():
        raise RuntimeError("java=True but no working `java` executable on PATH")
    else:
        if not java:
            warnings.append("java=False: tokenized with the Python PTB imitation (ptb-python)")

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
        unavailable.pop("SPICE")  # not asked for by name: absent by default, not a failure
        wanted.remove("SPICE")

    # Scorers get consecutive int keys: any hashable id works and SPICE's sort order is stable.
    ref_lists = [list(references[img]) for img in ids]
    flat = [r for refs in ref_lists for r in refs] + [candidates[img] for img in ids]
    tokens = ptb_tokenize(flat, java=java)
    gts: dict[int, list[str]] = {}
    pos = 0
    for k, refs in enumerate(ref_lists):
        gts[k] = tokens[pos : pos + len(refs)]
        pos += len(refs)
    res = {k: [tokens[pos + k]] for k in range(len(ids))}

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
# Files
# --------------------------------------------------------------------------------------------


def _read_json(path: str | os.PathLike[str]) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise MetricsInputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise MetricsInputError(f"{path}: is a directory, not a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MetricsInputError(f"{path}: not valid JSON ({err})") from None


def _field(path: Any, obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    """``obj[key]`` checked for presence and type, with an error that points at the field."""
    if not isinstance(obj, dict) or key not in obj:
        raise MetricsInputError(f"{path}: missing field {where}.{key}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise MetricsInputError(
            f"{path}: field {where}.{key} must be {names}, got {type(value).__name__}"
        )
    return value


def load_references(
    path: str | os.PathLike[str], split: str | None = None
) -> dict[int, list[str]]:
    """Reference captions from a COCO captions file or a Karpathy split file.

    * COCO (``captions_val2014.json``): ``annotations[].image_id`` / ``.caption``; ``split``
      must be None (the file is the split).
    * Karpathy (``dataset_coco.json``, ``dataset_flickr8k.json``...): ``images[].sentences[].raw``
      keyed by ``cocoid`` when present (so results in COCO ids match), else ``imgid``. ``split``
      filters on ``images[].split``; ``"train"`` means train + restval, as in Karpathy's code.
    """
    data = _read_json(path)
    if not isinstance(data, dict):
        raise MetricsInputError(f"{path}: expected a JSON object at the top level")
    refs: dict[int, list[str]] = {}
    if "annotations" in data:
        if split is not None:
            raise MetricsInputError(
                f"{path}: split={split!r} given, but a COCO captions file has no split field"
            )
        anns = _field(path, data, "annotations", "$", list)
        for i, ann in enumerate(anns):
            img = _field(path, ann, "image_id", f"annotations[{i}]", int)
            cap = _field(path, ann, "caption", f"annotations[{i}]", str)
            refs.setdefault(img, []).append(cap)
    elif "images" in data:
        images = _field(path, data, "images", "$", list)
        wanted = None if split is None else ({"train", "restval"} if split == "train" else {split})
        seen_splits: set[str] = set()
        for i, entry in enumerate(images):
            where = f"images[{i}]"
            sentences = _field(path, entry, "sentences", where, list)
            if wanted is not None:
                entry_split = _field(path, entry, "split", where, str)
                seen_splits.add(entry_split)
                if entry_split not in wanted:
                    continue
            key = "cocoid" if "cocoid" in entry else "imgid"
            img = _field(path, entry, key, where, int)
            if img in refs:
                raise MetricsInputError(f"{path}: duplicate image id {where}.{key} = {img}")
            refs[img] = [
                _field(path, s, "raw", f"{where}.sentences[{j}]", str) for j, s in enumerate(sentences)
            ]
        if wanted is not None and not refs:
            raise MetricsInputError(
                f"{path}: no image has split {split!r}; splits present: {sorted(seen_splits)}"
            )
    else:
        raise MetricsInputError(
            f"{path}: neither a COCO captions file (no field 'annotations') nor a Karpathy split "
            "file (no field 'images')"
        )
    return refs


def load_results(path: str | os.PathLike[str]) -> dict[int, str]:
    """Candidates from a COCO results file ``[{"image_id": int, "caption": str}, ...]``.

    Duplicate image ids are an error rather than last-one-wins: the official server rejects
    them too, and a silent choice would change the score.
    """
    data = _read_json(path)
    if not isinstance(data, list):
        raise MetricsInputError(
            f"{path}: a results file is a JSON list of {{image_id, caption}}, got {type(data).__name__}"
        )
    out: dict[int, str] = {}
    dups: list[int] = []
    for i, entry in enumerate(data):
        img = _field(path, entry, "image_id", f"[{i}]", int)
        cap = _field(path, entry, "caption", f"[{i}]", str)
        if img in out:
            dups.append(img)
        out[img] = cap
    if dups:
        raise MetricsInputError(
            f"{path}: {len(dups)} duplicate image_id entries (e.g. {_example_ids(sorted(set(dups)))})"
        )
    return out


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


__all__ = [
    "ALL_METRICS",
    "BLEU_METRICS",
    "MetricsInputError",
    "PUNCTUATIONS",
    "ScoreReport",
    "format_table",
    "java_available",
    "load_references",
    "load_results",
    "ptb_tokenize",
    "score_captions",
]
