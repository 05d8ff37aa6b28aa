"""Tokenization exactly as the COCO caption toolkit (pycocoevalcap) does it.

Every caption metric of the toolkit sees captions only after Stanford's ``PTBTokenizer`` (Java),
lower-cased, with the toolkit's ``PUNCTUATIONS`` tokens dropped; a different tokenizer gives
different n-grams and so a different score. This module runs that tokenizer, with three fixes
that only remove failure modes:

* one JVM tokenizes all captions together (the Java tokenizer is line-by-line with
  ``-preserveLines``, so batching does not change any token);
* the temporary file goes to a private temporary directory instead of the installed package
  directory (which may be read-only), and the tokenizer's chatter on stderr is captured;
* every Unicode line break inside a caption becomes a space. The toolkit only replaces ``\\n``;
  a caption holding ``\\r`` or U+2028 makes Java emit an extra line and silently shifts every
  later caption onto the wrong image. The number of output lines is checked as well.

Without Java, a pure-Python tokenizer built from nltk's ``TreebankWordTokenizer`` imitates the
Java tokenizer (identical on ordinary captions; see ``_PythonPTBTokenizer`` for the known
differences). :data:`TOKENIZER_JAVA` and :data:`TOKENIZER_PYTHON` name the two in reports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from pycocoevalcap.tokenizer import ptbtokenizer as _ptb

__all__ = ["PUNCTUATIONS", "TOKENIZER_JAVA", "TOKENIZER_PYTHON", "java_available", "ptb_tokenize"]

TOKENIZER_JAVA = "ptb-java"
TOKENIZER_PYTHON = "ptb-python"

#: Tokens the toolkit deletes after tokenization (its own list, so the two cannot drift apart).
#: Note they are compared *after* ``-lowerCase``, so ``-lrb-`` & co. survive in the toolkit too.
PUNCTUATIONS: frozenset[str] = frozenset(_ptb.PUNCTUATIONS)

_PTB_JAR = Path(_ptb.__file__).resolve().parent / _ptb.STANFORD_CORENLP_3_4_1_JAR

# Everything str.splitlines() treats as a line boundary: Java may split on some of these too.
_LINE_BREAKS = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


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
