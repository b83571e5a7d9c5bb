"""Build a reverse-dictionary retrieval set (BEIR layout) from the GCIDE dictd files.

A query is one cleaned definition (one sense); its relevant document is its headword; the corpus
is every headword, including those left without a query. Run::

    python -m prepare.gcide --dictd /usr/share/dictd --out data/gcide [--overwrite]

``RULES`` lists what is kept, cut and dropped (the output's ``README.md`` repeats it).

>>> clean_sense('A table {strewn} with sand; as, an abacus. [Obs.] --Crabb.')
'A table strewn with sand.'
>>> mask("To run; a runner's pace, as he ran.", ["Run"], {"ran"})
('To; a pace, as he.', 3)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

from twotower.errors import DataError

MIN_WORDS, MAX_WORDS = 3, 64
SPLITS = (("train", 80), ("dev", 90), ("test", 100))  # cumulative percent of sha1 buckets
OUTPUTS = ("corpus.jsonl", "queries.jsonl", "README.md") + tuple(
    f"qrels/{name}.tsv" for name, _ in SPLITS
)
COUNTS = (
    "entries decoded as cp1252",
    "entries skipped: metadata (00-*)",
    "entries skipped: no headword line",
    "entries parsed",
    "senses found",
    "dropped: sub-entry phrase is not an index word",
    "dropped: pointer (See X; Same as X)",
    f"dropped: under {MIN_WORDS} words",
    "masked: senses that named their answer",
    "dropped: too little left after masking",
    f"truncated to {MAX_WORDS} words",
    "dropped: same text, different answers",
    "dropped: same text, same answer (repeat)",
)
RULES = f"""\
- Entries: `00-*` metadata and entries that do not begin with `Headword \\pron\\` (fragments)
  are skipped. An entry that is not UTF-8 (3 in v0.48, each with one stray Windows-1252 byte:
  ’ ç ¹) is decoded as cp1252, so no character is lost or replaced.
- Headwords: the forms on an entry's first line (`Loadstone \\..\\, Lodestone \\..\\`); the entry's
  senses answer to the first form. A sub-entry (`{{Lead pencil}}, a pencil ...`) answers to its
  phrase when the phrase is an index word, and is dropped otherwise. Headwords are deduplicated
  case-insensitively, shown in lowercase if that form occurs, else the first in sort order.
- Senses: numbered (`1.`), lettered (`(a)`) and unnumbered paragraphs. A sense ends at its
  first source tag (`[1913 Webster]`), so the quotations after it go; so do `Note:`, `Syn:`
  and `-- {{derived}}` blocks, a line that only introduces lettered senses (`signifying:`),
  and pure pointers (`See Foo.`, `Same as Foo.` up to 6 words).
- Cleaning: the header (pronunciation, part of speech, inflections, etymology) goes, but a
  domain label ending it (`(Bot.)`) is put before senses without their own; GCIDE character
  codes become letters or symbols (`[ae]` ae, `["e]` e, `[deg]` \u00b0); `\\..\\`, every `[...]`
  (etymology, `[Obs.]`), `--Author.` citations with the quotation before them, quoted
  sentences, `; as, ...` usage examples, a leading `pl.`, `Hence,` or `etc.` and a next
  headword glued to the last line are cut; `{{...}}` keep their words; domain labels such as
  `(Arch.)` stay; whitespace is normalised.
- Leak: the answer's words are removed (not replaced). For a one-word answer: every form on
  the entry's first line, the inflections and variants its header lists (`{{Led}}`, `{{Abaci}}`),
  its hyphenated parts and its base after a prefix (4+ letters: `crown` for `Triple-crowned`,
  `prince` for `Unprince`); then words sharing a crude stem with any of these (`runner`,
  `carouses`, `wide` for `Widen`), words they begin (4+ letters: `leadership`) and words sharing
  all their letters but the last two (6+: `dijudicates` for `Dijudicant`). For a phrase (words
  with spaces): the phrase, its last word in any inflection. The query is dropped if fewer than
  {MIN_WORDS} words or under half of its words remain.
- Length: under {MIN_WORDS} words (domain labels not counted) is dropped; over {MAX_WORDS}
  words is truncated to the first {MAX_WORDS}.
- Duplicates (lowercase, whitespace-normalised): a text with several answers is removed
  everywhere; a text repeated with one answer is kept once.
- Splits: sha1 of the lowercase headword, 80/10/10 train/dev/test: every query of a headword is
  in that headword's split, so no dev/test answer is a train positive.
- Ids: corpus `w` + 6-digit rank of the lowercase headword in sorted order; queries `q` + 7
  digits in dictionary order. Both are stable for a given dictionary file.
"""

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SYMBOLS = {
    "ae": "ae", "AE": "AE", "oe": "oe", "OE": "OE", "=ae": "ae", "aum": "a", "add": "a",
    "asl": "a", "udd": "u", "imac": "i", "=oo": "oo", "oo^": "oo", "ng": "ng", "th": "th",
    "eth": "th", "thorn": "th", "yogh": "gh", "deg": "\u00b0", "root": "\u221a", "sect": "\u00a7",
    "pounds": "\u00a3", "prime": "\u2032", "bprime": "\u2033",
}  # fmt: skip
for _i, _name in enumerate(
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho"
    " sigma tau upsilon phi chi psi omega".split()
):
    _SYMBOLS[_name] = chr(0x3B1 + _i + (_i > 16))  # skip final sigma (and its capital's gap)
    _SYMBOLS[_name.capitalize()] = chr(0x391 + _i + (_i > 16))
# letters fold to ASCII like the index does ("Leuc[ae]na" is indexed as "Leucaena")
_CODE = re.compile(
    r"\[(?:[`'\"^~=.\-,*]([A-Za-z])|([A-Za-z])[\^~]|("
    + "|".join(map(re.escape, sorted(_SYMBOLS, key=len, reverse=True)))
    + r"))\]"
)
_SOURCE = re.compile(
    r"\[(?:1913 Webster|Webster|WordNet|PJC|Century|RDH|RHUD|AS(?![.\w]))[^\[\]]*\]"
)
_HEADWORD = re.compile(r"([^\\\n]+?)\s*\\[^\\]{0,300}\\")
_MORE_FORMS = re.compile(  # after a pronunciation, maybe a respelling and a part of speech
    r"(?:\s*\([^()\n]*\))?(?:,\s*[a-z]{1,4}\.(?: [a-z]\.)?)?,?\s*(?:(?:or|&)\s+)?"
    r"([^\\\n,(\[{&]+?)\s*\\[^\\]{0,300}\\"
)
_FORM_LEAD = re.compile(
    r"^[.;,\s]*(?:(?:also|and|or|formerly|pl\.|fem\.|masc\.|[a-z]\.)\s+)*", re.I
)
_STRAY = re.compile(r"(?<=[.)\]])[ \t]+([A-Za-z][\w\-' ]{0,40})$")
_KIND = re.compile(  # what a body line starts; the group that matches names it
    r"(?P<skip>\s*(?:(?:Note|Syn|Usage)\s*:|-- ?\{))|(?P<sense> {0,4}\d+\.(?:\s|$))"
    r"|(?P<lettered> {0,10}\([a-z]\)\s)|(?P<sub> {0,4}\{)"
)
_PHRASES = re.compile(r"(?:(?:\{[^{}]*\}|\[[^\[\]]*\]|or\b|etc\.|,|;)\s*)+")
_LABEL = r"\((?=[A-Z])(?:[\w&,' -]{0,40}\.[\w.&,' -]{0,40}|[A-Z][a-z]+(?: [A-Z&][a-z]*)*)\)"
_LABELS = re.compile(rf"(?:(?:{_LABEL}|\([a-z]\))\s*[,.]?\s*)+")  # with sense letters: (a)
_INFLECTION = re.compile(
    r"(?:(?:imp|p\. ?p|pr|pl|n|pres|superl|compar|sing|pret|p)\.|also)\s*(?:&\s*)?$", re.I
)
_CLEAN = [  # (pattern, replacement) in order; each comment says what the pattern removes
    (re.compile(r"\\[^\\]*\\"), " "),  # a pronunciation
    (re.compile(r"\((?=[^()]*[*`])[^()]*\)"), " "),  # a respelling: (an*ji"na pek"to*ris)
    (re.compile(r'"[^"]{0,400}"\s*(?=--\S)'), " "),  # a quotation before its author
    (re.compile(r" --(?=[A-Z0-9(]).*"), ""),  # a citation runs to the end of a sense
    (re.compile(r" -- ?\{[^{}]*[*\"`][^{}]*\}.*"), ""),  # run-on derivatives: -- {Far"a*diz`er}
    (re.compile(r'"[^"]{0,400}[.!?]"'), " "),  # a quoted sentence: a usage example
]
_BRACKET = re.compile(r"\[[^\[\]]*\]")
_EXAMPLE = re.compile(r"(?:[;,:.] ?| )as[,:](?: .*?)?(?=\. [A-Z]|\.?$)")  # "; as, a lead pipe"
_LEADING = re.compile(r"^(?:(?:Hence|pl\.|etc\.|i\. ?e\.)[,:]?\s+)+")  # "pl. The bowels"
_BRACES = re.compile(r"\{([^{}]*)\}")
_TIDY = [  # on single-spaced text
    (re.compile(r"\. \. \."), "..."),
    (re.compile(r"\( ?[,;]? ?\)"), ""),
    (re.compile(r" (?=[,;:.)])"), ""),
    (re.compile(r"\( "), "("),
    (re.compile(r"([,;:])(?: ?[,;:])+"), r"\1"),
    (re.compile(r"[,;:] ?\."), "."),
    (re.compile(r"(?:[,;] | )See(?: also| under)? ?[.,;]?$"), ""),  # a pointer whose target went
]
_COUNTED = re.compile(r"\S*[A-Za-z0-9\u00c0-\u024f]\S*")
_WORD = re.compile(r"[A-Za-z0-9\u00c0-\u024f]+")
_SUFFIXES = set(
    "s es ed en ing er ers est ly ness ment ments ation ations ion ions ity ies ied y al ic ical"
    " ous ive able ible ism ist ists ize ized ise ised".split()
)
_PREFIXES = tuple(
    "un mis dis re in im non de pre over under out counter anti semi sub super co en em be fore"
    " inter trans".split()
)
_SUFFIX_LENGTHS = sorted({len(x) for x in _SUFFIXES}, reverse=True)


def b64(s: str) -> int:
    """Decode a dictd index number: ``b64('IBT') == 32851``."""
    n = 0
    for c in s:
        n = n * 64 + _B64.index(c)
    return n


def read_dictd(dictd: Path, counts: Counter) -> tuple[list[str], set[str], str]:
    """Read ``gcide.index`` and ``gcide.dict.dz``.

    Returns (entry texts in file order, every lowercased index word, the database's name).
    """
    index, dz = dictd / "gcide.index", dictd / "gcide.dict.dz"
    for path in (index, dz):
        if not path.is_file():
            raise DataError(path, None, None, "not found (is dict-gcide installed?)")
    words_at: dict[tuple[int, int], list[str]] = defaultdict(list)
    for n, line in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataError(index, n, None, "expected word<TAB>offset<TAB>length")
        words_at[(b64(parts[1]), b64(parts[2]))].append(parts[0])
    with gzip.open(dz) as f:  # dictzip is gzip plus a random-access table we do not need
        data = f.read()
    entries, database = [], "unknown database"
    for (offset, length), words in sorted(words_at.items()):
        raw = data[offset : offset + length]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # GCIDE is ASCII but for a few cp1252 bytes (’ ç)
            text = raw.decode("cp1252", errors="replace")
            counts["entries decoded as cp1252"] += 1
        if any(w.startswith("00-") for w in words):
            counts["entries skipped: metadata (00-*)"] += 1
            if "00-database-short" in words:
                database = " ".join(text.split()[1:])
        else:
            entries.append(text)
    return entries, {w.lower() for ws in words_at.values() for w in ws}, database


def plain(s: str) -> str:
    """A headword as shown: codes decoded, pronunciation marks gone, spaces normalised."""
    s = _CODE.sub(_decode, s)
    return " ".join(re.sub(r"[*`\"]", "", s).split())


def _decode(m: re.Match) -> str:
    return m.group(1) or m.group(2) or _SYMBOLS[m.group(3)]


def key(headword: str) -> str:
    """The headword's identity: lowercase, spaces normalised."""
    return " ".join(headword.lower().split())


@dataclass
class Entry:
    """One dictionary entry: headword forms, listed inflections and raw (answer, sense) pairs."""

    forms: list[str]
    inflections: set[str] = field(default_factory=set)
    senses: list[tuple[str | None, str]] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)  # sub-entry headwords


def parse_entry(text: str, index_words: set[str]) -> Entry | None:
    """Split an entry into headword forms and raw senses; ``None`` without a headword line.

    A sense answers to the first form, a sub-entry to its phrase, or to ``None`` when the phrase
    is not an index word (dropped later, and counted).
    """
    # the next entry's headword sometimes trails the last line: "The hyoid bone. Hyoideal"
    head, newline, last = text.rstrip().rpartition("\n")
    m = _STRAY.search(last)
    text = head + newline + (last[: m.start()] if m and key(m.group(1)) in index_words else last)
    m = _HEADWORD.match(text)
    if not m:
        return None
    forms, pos = [plain(m.group(1))], m.end()
    while m := _MORE_FORMS.match(text, pos):
        form = _FORM_LEAD.sub("", plain(m.group(1)))  # "Also Adrenalin", "; fem. Debutante"
        forms += [form] if key(form) in index_words else []
        pos = m.end()
    lines = text[pos:].split("\n")
    cut = _header_end(lines)
    header = " ".join(lines[:cut])
    entry = Entry(forms, _inflections(header))
    m = re.search(_LABEL + "$", _BRACKET.sub("", header).rstrip(" .,;]"))
    header_label = m.group() if m else ""
    answer: str | None = forms[0]
    parent = ""  # the label of the sense that lettered senses belong to
    for kind, body in _blocks(lines[cut:]):
        if kind == "skip":
            continue
        if kind == "sub":
            phrase = plain(m.group(1)) if (m := _BRACES.match(body)) else ""
            answer = phrase if key(phrase) in index_words else None
            entry.phrases += [phrase] if answer else []
            body = _PHRASES.sub("", body, count=1).lstrip(".,;: ")
        elif kind == "sense":
            answer, body = forms[0], re.sub(r"^(\d+)\.\s*(?:\1 )?", "", body)  # "1. 1 a nerve"
        label, body = _split_label(body)
        if kind == "lettered":
            label = label or parent
        else:  # "3. (Arch.)" over "(a) ..." "(b) ..." labels them
            parent = label = label or (header_label if kind != "sub" else "")
        if body and not (body.endswith(":") and kind != "lettered"):  # "forms signifying:"
            entry.senses.append((answer, f"{label} {body}".strip()))
    return entry


def _kind(line: str) -> str | None:
    return m.lastgroup if (m := _KIND.match(line)) else None


def _header_end(lines: list[str]) -> int:
    """Index of the first body line: the header goes on while a ``[`` is open or a line starts
    with a bracket, a label, an abbreviation or a listed form (``pl.``, ``(Chem.)``, ``{Abaci}``).
    """
    depth, pron_open = 0, False
    for i, line in enumerate(lines):
        s = line.strip()
        if i and s and _kind(line) in ("sense", "lettered", "skip"):
            return i  # even after an unclosed bracket
        if i and s and not depth and s[0] not in "[(\\" and not (i == 1 and pron_open):
            if s[0] != "{":
                if not re.fullmatch(r"[A-Za-z]{1,6}\.[,;]?|&|or", s.split()[0]):
                    return i
            elif not _INFLECTION.search(lines[i - 1].rstrip()):  # else "pl.\n {Abilities}"
                return i
        # only [...] spans lines, and the pronunciation's (...) on the first line: a stray "(" or
        # "{" elsewhere must not swallow the body
        depth = max(0, depth + line.count("[") - line.count("]"))
        pron_open = i == 0 and line.count("(") > line.count(")")
    return len(lines)


def _blocks(lines: list[str]) -> list[tuple[str, str]]:
    """Body lines -> (kind, text); a block ends at its first source tag, dropping quotations."""
    blocks: list[tuple[str, list[str]]] = [("para", [])]
    closed, after_gap = False, True
    for line in lines:
        kind = _kind(line)
        if kind == "sub" and not (after_gap or closed):
            kind = None  # a wrapped line that starts with "{"; sub-entries follow a gap
        if kind:
            blocks.append((kind, []))
            closed = False
        after_gap = not line.strip()
        if closed:
            continue
        if m := _SOURCE.search(line):
            line, closed = line[: m.start()], True
        blocks[-1][1].append(line)
    return [(kind, " ".join(" ".join(text).split())) for kind, text in blocks]


def _split_label(text: str) -> tuple[str, str]:
    """``'(Arch.), (a) The top'`` -> ``('(Arch.)', 'The top')``."""
    m = _LABELS.match(text)
    if not m:
        return "", text
    return " ".join(re.findall(_LABEL, m.group())), text[m.end() :].lstrip(".,;: ")


def _inflections(header: str) -> set[str]:
    """Words in braces the header lists as inflections or variants (``pl. {Abaci}``)."""
    found, prev_end, prev_ok = set(), 0, False
    for m in _BRACES.finditer(header):
        before = re.sub(r"\([^()]*\)", "", header[prev_end : m.start()])
        listed = prev_ok and re.fullmatch(r"[\s,&]*(?:or)?\s*", before)  # "{Ran} or {Run}"
        prev_ok = bool(_INFLECTION.search(before) or listed)
        if prev_ok:
            found.add(plain(m.group(1)).lower())
        prev_end = m.end()
    return found


def clean_sense(raw: str) -> str:
    """Strip GCIDE markup from one sense, keeping the definition's words."""
    s = _CODE.sub(_decode, " ".join(raw.split()))
    for pattern, repl in _CLEAN:
        s = pattern.sub(repl, s)
    while (t := _BRACKET.sub(" ", s)) != s:  # etymology, usage labels; nested
        s = t
    s = _EXAMPLE.sub("", " ".join(s.replace("[", " ").replace("]", " ").split()))
    s = _BRACES.sub(lambda m: re.sub(r"[*`]|(?<=\w)\"(?=\w)", "", m.group(1)), s)
    label, body = _split_label(tidy(s))
    return f"{label} {_LEADING.sub('', body)}".strip()


def tidy(s: str) -> str:
    """Normalise spaces and the punctuation that removals leave behind."""
    s = " ".join(s.replace("{", " ").replace("}", " ").split())
    for pattern, repl in _TIDY:
        s = pattern.sub(repl, s)
    return " ".join(s.split()).strip(" ,;:-")


@cache
def stems(word: str) -> frozenset[str]:
    """Crude stems: the word with none, one or two suffixes off, each also without a final
    e/i/y or a doubled consonant (``carousing`` -> carous, ``running`` -> run)."""
    found, frontier = {word}, [word]
    for _ in range(2):
        frontier = [
            w[:-n] for w in frontier for n in _SUFFIX_LENGTHS
            if w[-n:] in _SUFFIXES and len(w) - n >= 3
        ]  # fmt: skip
        found.update(frontier)
    for w in list(found):
        if len(w) > 3 and (w[-1] in "eiy" or w[-1] == w[-2] not in "aeiou"):
            found.add(w[:-1])
    return frozenset(w for w in found if len(w) >= 3)


class _Answer(NamedTuple):
    singles: set[str]  # the answer's words (for a one-word answer) and their variants
    stems: frozenset[str]
    heads: set[str]  # first 3 letters of every stem: every match starts with one
    phrases: list[list[str]]  # the answer's multi-word forms, as words
    needles: tuple[str, ...]  # a text without any of these has nothing to mask
    prefixes: tuple[str, ...]  # singles of 4+ letters: the words they begin are masked


@lru_cache(maxsize=4096)  # an entry's senses share their answer
def _answer(forms: tuple[str, ...], inflections: frozenset[str]) -> _Answer:
    singles = {w.lower() for w in [*forms, *inflections] if " " not in w}  # maybe hyphenated
    singles |= {p for w in singles if "-" in w for p in _WORD.findall(w) if len(p) >= 4}
    singles |= {
        w[len(p) :] for w in singles if w.startswith(_PREFIXES)
        for p in _PREFIXES if w.startswith(p) and len(w) - len(p) >= 4
    }  # fmt: skip
    answer_stems = frozenset().union(*map(stems, singles))
    heads = {w[:3] for w in answer_stems}
    phrases = [words for f in forms if len(words := _WORD.findall(f.lower())) > 1]
    needles = tuple(heads | singles | {p[0] for p in phrases})
    prefixes = tuple(w for w in singles if len(w) >= 4)
    return _Answer(singles, answer_stems, heads, phrases, needles, prefixes)


def mask(text: str, forms: list[str], inflections: set[str]) -> tuple[str, int]:
    """Remove the answer's words from a definition; returns (text, words removed)."""
    a = _answer(tuple(forms), frozenset(inflections))
    low = text.lower()
    if not any(s in low for s in a.needles):
        return text, 0  # the common case, so it is worth the shortcut
    tokens = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
    spans = [
        (start, end)
        for start, end, w in tokens
        if w in a.singles
        or w[:3] in a.heads
        and (
            stems(w) & a.stems
            or w.startswith(a.prefixes)
            or any(len(os.path.commonprefix((w, h))) >= max(6, len(h) - 2) for h in a.singles)
        )
    ]
    for words in a.phrases:  # its words in order, the last one in any inflection
        for i in range(len(tokens) - len(words) + 1):
            run = tokens[i : i + len(words)]
            if (
                [w for _, _, w in run[:-1]] == words[:-1]
                and run[-1][2].startswith(words[-1])
                and all(re.fullmatch(r"[ '-]{1,3}", text[x[1] : y[0]]) for x, y in pairwise(run))
            ):
                spans.append((run[0][0], run[-1][1]))
    kept, last = [], 0
    for start, end in sorted(spans):
        if start < last:
            continue
        end += len(re.match(r"(?:'s)?-?", text[end:]).group())  # "lead's", "lead-colored"
        kept.append(text[last : start - (start > 0 and text[start - 1] == "-")])
        last = end
    return (tidy(" ".join([*kept, text[last:]])), len(kept)) if kept else (text, 0)


def n_words(text: str) -> int:
    """Words with a letter or digit, domain labels not counted."""
    return len(_COUNTED.findall(_split_label(text)[1]))


def is_pointer(text: str) -> bool:
    """A sense that only points elsewhere: ``See Tapeworm.``, ``Same as Thar.``"""
    body = _split_label(text)[1].lower()
    return body.startswith("see ") or body.startswith("same as ") and n_words(body) <= 6


def split_of(headword: str) -> str:
    """train/dev/test from sha1 of the lowercase headword (stable across runs and machines)."""
    bucket = int(hashlib.sha1(key(headword).encode("utf-8")).hexdigest(), 16) % 100
    return next(name for name, upto in SPLITS if bucket < upto)


def extract(
    entries: list[str], index_words: set[str], counts: Counter
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Parse, clean and mask every sense: returns ({headword key: shown form}, [(key, text)])."""
    forms_of: dict[str, set[str]] = defaultdict(set)
    queries = []
    for text in entries:
        entry = parse_entry(text, index_words)
        if entry is None:
            counts["entries skipped: no headword line"] += 1
            continue
        counts["entries parsed"] += 1
        for form in entry.forms + entry.phrases:
            forms_of[key(form)].add(form)
        for answer, raw in entry.senses:
            counts["senses found"] += 1
            if not answer:
                counts["dropped: sub-entry phrase is not an index word"] += 1
                continue
            text = clean_sense(raw)
            if is_pointer(text):
                counts["dropped: pointer (See X; Same as X)"] += 1
                continue
            if n_words(text) < MIN_WORDS:
                counts[f"dropped: under {MIN_WORDS} words"] += 1
                continue
            main = answer == entry.forms[0]
            masked, removed = mask(
                text, entry.forms if main else [answer], entry.inflections if main else set()
            )
            counts["masked: senses that named their answer"] += removed > 0
            if n_words(masked) < max(MIN_WORDS, n_words(text) / 2):
                counts["dropped: too little left after masking"] += 1
                continue
            if len(words := masked.split()) > MAX_WORDS:
                counts[f"truncated to {MAX_WORDS} words"] += 1
                masked = " ".join(words[:MAX_WORDS])
            queries.append((key(answer), masked))
    forms_of.pop("", None)
    shown = {k: min(v, key=lambda f: (f != f.lower(), f)) for k, v in forms_of.items()}
    return shown, queries


def dedup(queries: list[tuple[str, str]], counts: Counter) -> list[tuple[str, str]]:
    """Drop every copy of a text with several answers, and repeats of a text with one."""
    answers: dict[str, set[str]] = defaultdict(set)
    for answer, text in queries:
        answers[" ".join(text.lower().split())].add(answer)
    kept, seen = [], set()
    for answer, text in queries:
        norm = " ".join(text.lower().split())
        if len(answers[norm]) > 1:
            counts["dropped: same text, different answers"] += 1
        elif norm in seen:
            counts["dropped: same text, same answer (repeat)"] += 1
        else:
            seen.add(norm)
            kept.append((answer, text))
    return kept


def build(dictd: Path, out: Path, overwrite: bool = False) -> Counter:
    """Build the BEIR directory ``out`` from ``dictd``, print counts; returns them."""
    started = time.perf_counter()
    check_target(out, overwrite)
    counts = Counter(dict.fromkeys(COUNTS, 0))  # a fixed order for the printout and README
    entries, index_words, database = read_dictd(dictd, counts)
    shown, queries = extract(entries, index_words, counts)
    queries = dedup(queries, counts)
    doc_id = {k: f"w{i:06d}" for i, k in enumerate(sorted(shown))}
    counts["corpus: headwords"] = len(doc_id)
    files = {"corpus.jsonl": "".join(_jsonl(doc_id[k], shown[k], title="") for k in doc_id)}
    lines, qrels = [], {name: ["query-id\tcorpus-id\tscore\n"] for name, _ in SPLITS}
    for i, (answer, text) in enumerate(queries):
        lines.append(_jsonl(f"q{i:07d}", text))
        qrels[split_of(answer)].append(f"q{i:07d}\t{doc_id[answer]}\t1\n")
    files["queries.jsonl"] = "".join(lines)
    for name, rows in qrels.items():
        files[f"qrels/{name}.tsv"] = "".join(rows)
        counts[f"queries: {name}"] = len(rows) - 1
        counts[f"headwords with queries: {name}"] = len({r.split("\t")[1] for r in rows[1:]})
    command = f"python -m prepare.gcide --dictd {dictd} --out {out}"
    files["README.md"] = readme(dictd, database, command, counts)
    write_dir(out, files, overwrite)
    for name, n in counts.items():
        print(f"{name:<48} {n:>8}")
    print(f"wrote {out} in {time.perf_counter() - started:.1f} s")
    return counts


def _jsonl(id_: str, text: str, **extra: str) -> str:
    return json.dumps({"_id": id_, **extra, "text": text}, ensure_ascii=False) + "\n"


def readme(dictd: Path, database: str, command: str, counts: Counter) -> str:
    """The output's README: provenance, command, counts and rules (no timestamps)."""
    sums = [
        f"- `{p.name}` sha256 `{hashlib.sha256(p.read_bytes()).hexdigest()}`"
        for p in (dictd / "gcide.index", dictd / "gcide.dict.dz")
    ]
    return "\n".join(
        [
            "# GCIDE reverse dictionary (BEIR layout)",
            "",
            "Query: one definition (one sense). Relevant document: its headword. Corpus: every",
            "headword. Files: `corpus.jsonl`, `queries.jsonl`, `qrels/{train,dev,test}.tsv`.",
            "",
            "## Source",
            f"- {database}",
            f"- {debian_package(dictd / 'gcide.index')}",
            *sums,
            "",
            "## Build",
            f"    {command}",
            "",
            "## Counts",
            "| what | n |",
            "| --- | ---: |",
            *(f"| {name} | {n} |" for name, n in counts.items()),
            "",
            "## Rules",
            RULES,
        ]
    )


def debian_package(path: Path) -> str:
    """``'Debian package dict-gcide 0.48.5+nmu2'``, or a note when dpkg does not know the file."""
    try:
        owner = subprocess.run(
            ["dpkg-query", "-S", str(path.resolve())], capture_output=True, text=True, timeout=10
        )
        name = owner.stdout.split(":")[0].strip()
        version = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "not from an installed Debian package (no dpkg-query)"
    if owner.returncode or version.returncode:
        return "not from an installed Debian package"
    return f"Debian package {name} {version.stdout.strip()}"


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; even then, one holding other files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    present = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if not p.is_dir())
    if present and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass --overwrite to replace a previous build")
    foreign = [p for p in present if p not in OUTPUTS]
    if foreign:  # --overwrite replaces a build, never files someone else put there
        raise FileExistsError(f"{out} holds files a build does not write: {', '.join(foreign)}")


def write_dir(out: Path, files: dict[str, str], overwrite: bool) -> None:
    """Write ``files`` into a temporary sibling of ``out``, then swap it in."""
    check_target(out, overwrite)  # again: the directory may have changed while we parsed
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    tmp.mkdir()
    try:
        for name, content in files.items():
            (tmp / name).parent.mkdir(exist_ok=True)
            (tmp / name).write_bytes(content.encode("utf-8"))
        if out.exists():
            out.rename(old)
        try:
            tmp.rename(out)
        except OSError:
            old.rename(out)  # put the previous build back
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dictd", type=Path, default=Path("/usr/share/dictd"))
    parser.add_argument("--out", type=Path, default=Path("data/gcide"))
    parser.add_argument("--overwrite", action="store_true", help="replace a previous build")
    args = parser.parse_args(argv)
    try:
        build(args.dictd, args.out, args.overwrite)
    except (DataError, FileExistsError) as e:
        print(f"twotower: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
