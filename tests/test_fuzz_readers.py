"""Property tests of the file readers: any input ends in a result or a DataError.

Each reader gets valid but odd files (BOM, CRLF, blank lines, quotes, tabs inside JSON,
non-ASCII, integer ids, repeated rows, NaN in ignored keys, nine-digit grades), which it must
read whole, and files with one named fault (random bytes, a junk line, bad UTF-8, broken, deep
or over-long JSON, missing or extra columns and cells, empty fields, duplicate ids, NaN/inf
labels, a cut file, CR-only line ends, Parquet values Python cannot hold), one parametrised
test per fault so that each is tried. For every input the reader must

- return, and then hold every input row (rows in == rows out, or rows out + skipped rows), or
- raise :class:`DataError` naming one of the files, a line inside it, and a field that the
  file or the format names, in a one-line message;

and nothing else: no other exception type and no hang (each case has a time limit).
``--hypothesis-show-statistics`` prints the cases each test ran and how they ended;
``TWOTOWER_FUZZ_SCALE=20`` runs 20 times as many.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from twotower.data.readers.atomic import TYPES, read_atomic
from twotower.data.readers.beir import QRELS_COLUMNS, load_beir
from twotower.data.readers.files import RowError, printable
from twotower.data.readers.pairs import load_pairs
from twotower.errors import DataError

SECONDS_PER_CASE = 10  # a reader that takes longer on a file of a few lines hangs
SCALE = int(os.environ.get("TWOTOWER_FUZZ_SCALE", "1"))


def fuzz(max_examples: int):
    """Deterministic settings, sized so that the whole file runs in about 20 s on one core."""
    return settings(
        max_examples=max_examples * SCALE,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def hang(signum, frame):
        raise TimeoutError(f"the reader ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@contextmanager
def scratch(workdir: Path) -> Iterator[Path]:
    """A fresh folder per case (hypothesis reuses a test's fixtures across its cases)."""
    with tempfile.TemporaryDirectory(dir=workdir) as name:
        yield Path(name)


def count_lines(path: Path, data: bytes) -> int:
    """Lines of a text file; of a Parquet file, rows + 1 (its schema counts as line 1)."""
    if path.suffix != ".parquet":
        return data.count(b"\n") + 1
    try:
        return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows + 1
    except (pa.ArrowException, OSError):
        return 1


def outcome(read: Callable[[], Any], files: dict[Path, bytes], known: set[str]) -> Any:
    """``read()``'s result, or ``None`` after checking that its DataError names the problem.

    Args:
        files: every file the reader may blame, with its bytes.
        known: field names the format defines; a field may also be any name the blamed file
            holds (a column of its header), with control characters escaped.
    """
    try:
        with time_limit(SECONDS_PER_CASE):
            result = read()
    except DataError as err:
        event("ends in a DataError")
        message = str(err)
        assert len(message.splitlines()) == 1, f"not one line: {message!r}"
        path = Path(err.path)
        assert path in files or path in {p.parent for p in files}, f"names no input: {message}"
        assert message.startswith(err.path), message
        if isinstance(err, RowError):
            assert err.line is not None, f"a row error without its line: {message}"
        if err.line is not None:
            assert path in files, message
            n_lines = count_lines(path, files[path])
            assert 1 <= err.line <= n_lines, f"line {err.line} of {n_lines}: {message}"
        if err.field is not None:
            text = printable(files.get(path, b"").decode("utf-8", "replace"))
            assert err.field in known or err.field in text, f"odd field: {message}"
        return None
    event("ends in a result")
    return result


# --- bytes: valid variations and faults shared by all readers -----------------------------
#
# A case is valid (but odd) or faulty. A faulty case has one named fault, a test parameter (so
# that each kind is tried: hypothesis's own choices clump), plus now and then another at random.

HUGE_INT = "1" * 4400  # over Python's 4300-digit limit of int()
DEEP = "[" * 20_000  # deeper than the recursion limit, which hypothesis raises by 2000
BAD_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"]
JUNK_LINE = st.one_of(
    st.binary(max_size=24),
    st.text(max_size=24).map(str.encode),
    st.sampled_from(
        [DEEP.encode(), HUGE_INT.encode(), b"null", b"[]", b'"text"', b"1.5", b"{", b"}", b"NaN",
         b"\xef\xbb\xbf{}", b"\x00", b"\r", b"\t\t", b"\t", b","]
    ),
)  # fmt: skip
RANDOM_FILE = st.one_of(st.binary(max_size=200), st.sampled_from([b"", b"\xef\xbb\xbf", b"\n\n"]))
BYTE_FAULTS = ["junk line", "bad UTF-8", "CR line ends", "cut short"]


def flip(draw, faulty: bool, odds: int = 12) -> bool:
    """A background fault here: 1 in ``odds`` when the case is faulty, else never."""
    return faulty and draw(st.integers(1, odds)) == 1


@st.composite
def text_file(draw, lines: list[bytes], fault: str | None, blank: list[bytes]) -> bytes:
    """``lines`` as a file: LF or CRLF, perhaps a BOM, blank lines and no final newline; and
    ``fault`` if it is one of :data:`BYTE_FAULTS`."""
    lines = list(lines)
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(1 if lines else 0, len(lines))), draw(st.sampled_from(blank)))
    eol = b"\r" if fault == "CR line ends" else draw(st.sampled_from([b"\n", b"\r\n"]))
    if fault == "junk line":
        lines.insert(draw(st.integers(0, len(lines))), draw(JUNK_LINE))
    if fault == "bad UTF-8" and lines:
        i = draw(st.integers(0, len(lines) - 1))
        at = draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:at] + draw(st.sampled_from(BAD_UTF8)) + lines[i][at:]
    data = b"".join(line + eol for line in lines)
    if data and draw(st.booleans()):
        data = data[: -len(eol)]
    if fault == "cut short":
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.integers(0, 3)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data


def nonblank_lines(data: bytes) -> list[bytes]:
    """The non-blank lines of a JSON Lines file (ASCII whitespace is blank; BOM dropped)."""
    lines = data.split(b"\n")
    if lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    return [line for line in lines if line.strip(b" \t\n\r\x0b\x0c")]


def bad_json_lines(a: str, b: str) -> dict[str, list[bytes]]:
    """JSON lines with keys ``a`` and ``b`` that no reader can take, by fault."""
    return {
        "JSON syntax": [
            f'{{"{a}": "x", "{b}": "y"}} {{"{a}": "z"}}'.encode(),
            f'{{"{a}": "x", "{b}": "y",}}'.encode(),
            f'{{"{a}": "x" "{b}": "y"}}'.encode(),
            f"{{'{a}': 'x', '{b}': 'y'}}".encode(),
            f'{{"{a}": "x", "{b}": "a\tb\x01c"}}'.encode(),  # raw control characters
        ],
        "JSON integer too long": [f'{{"{a}": {HUGE_INT}, "{b}": "x"}}'.encode()],
        "JSON too deep": [f'{{"{a}": "x", "{b}": {DEEP}}}'.encode()],
        "not UTF-8 and too deep": [f'{{"{a}": "\xff", "{b}": {DEEP}}}'.encode("latin-1")],
    }


# --- texts --------------------------------------------------------------------------------

ODD_TEXTS = [
    '"quoted", text', "it's", "a\\b", "é", "北京有哪些景点", "\u00a0x", "x\u2028y", "x\x85y",
    "x\x0by", "NaN", "null", "1", "[1]", "{}", "\ufeffbom", "a,b", ' "', "  padded  ",
]  # fmt: skip
BAD_TEXTS = ["", " ", "\t", "\n", "\r", "\r\n", "\u3000", "a\tb", "a\nb", "a\rb", "\x00"]
WORDS = ["tea", "green", "black", "coffee", "rice", "water", "boil", "cat", "dog"]
WORD = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join)


def texts(forbidden: str = "") -> st.SearchStrategy[str]:
    """Non-blank texts, odd ones included, without the ``forbidden`` characters."""
    odd = [t for t in ODD_TEXTS if not set(t) & set(forbidden)]
    return st.one_of(WORD, WORD, st.sampled_from(odd), st.text(min_size=1, max_size=8)).filter(
        lambda t: t.strip() and not set(t) & set(forbidden)
    )


TEXT = texts()
TSV_TEXT = texts("\t\n\r")  # a TSV field cannot hold a tab or a line end
BAD_TEXT = st.one_of(st.sampled_from(BAD_TEXTS), st.none(), st.integers(), st.lists(WORD))


# --- BEIR ---------------------------------------------------------------------------------

BAD_IDS = ["", " ", "a b", "d\t1", "\u00a0", None, True, 1.5, float("nan"), [1], {"a": 1}]
EXTRA_VALUES = st.one_of(
    st.none(), st.integers(), st.floats(), st.lists(WORD, max_size=2), TEXT, st.just(10**40)
)
# Ids: strings (non-ASCII, quotes, no whitespace) or integers; distinct as text.
BEIR_ID = st.one_of(
    st.integers(0, 10**6),
    st.text(min_size=1, max_size=6).filter(lambda t: t.split() == [t]),
    st.sampled_from(["d1", "d2", "q1", 'x"1', "é1", "北京"]),
)
BEIR_BAD_JSON = bad_json_lines("_id", "text")
TEXT_FAULTS = ["bad value", "missing key", "duplicate id", "no rows", "JSON cut", *BEIR_BAD_JSON]
QRELS_FAULTS = ["header", "bad cell", "row width", "score out of range"]
BEIR_FAULTS = [
    *(f"{name}: {f}" for name in ("corpus.jsonl", "queries.jsonl") for f in TEXT_FAULTS),
    *(f"qrels: {f}" for f in QRELS_FAULTS),
    *(f"{name}: {f}" for name in ("corpus.jsonl", "queries.jsonl", "qrels") for f in BYTE_FAULTS),
    "random bytes",
]


def target(fault: str | None, name: str) -> str | None:
    """The part of ``fault`` (``"corpus.jsonl: duplicate id"``) that concerns file ``name``."""
    if fault is None or not fault.startswith(f"{name}: "):
        return None
    return fault.removeprefix(f"{name}: ")


@st.composite
def beir_texts(draw, faulty: bool, fault: str | None, kind: str) -> tuple[list[str], bytes]:
    """The ids and bytes of corpus.jsonl (``kind="document"``) or queries.jsonl."""
    n = 0 if fault == "no rows" else draw(st.integers(1, 5))
    ids = draw(st.lists(BEIR_ID, min_size=n, max_size=n, unique_by=str))
    objects = []
    for doc_id in ids:
        obj: dict[str, Any] = {"_id": doc_id, "text": draw(TEXT)}
        if kind == "document" and draw(st.booleans()):
            obj["title"] = draw(st.one_of(TEXT, st.just(""), st.none()))
        if draw(st.integers(0, 3)) == 0:
            obj[draw(st.sampled_from(["metadata", "url", "_id2", "TEXT"]))] = draw(EXTRA_VALUES)
        objects.append(obj)
    at = draw(st.integers(0, len(objects) - 1)) if objects else 0
    if objects and (fault == "bad value" or flip(draw, faulty)):
        key = draw(st.sampled_from(["_id", "text", "title"]))
        objects[at][key] = draw(st.one_of(st.sampled_from(BAD_IDS), BAD_TEXT))
    if objects and fault == "missing key":
        del objects[at][draw(st.sampled_from(sorted(objects[at])))]
    if len(objects) > 1 and fault == "duplicate id":
        objects[at]["_id"] = objects[at - 1]["_id"]
    lines = [json.dumps(obj, ensure_ascii=draw(st.booleans())).encode() for obj in objects]
    if lines and fault == "JSON cut":
        lines[at] = lines[at][: draw(st.integers(0, len(lines[at]) - 1))]
    if lines and fault in BEIR_BAD_JSON:
        lines[at] = draw(st.sampled_from(BEIR_BAD_JSON[fault]))
    data = draw(text_file(lines, fault, [b"", b"  ", b"\t"]))
    return [str(i) for i in ids], data


@st.composite
def qrels_file(draw, faulty: bool, fault: str | None, queries: list[str], docs: list[str]):
    header = draw(st.permutations(QRELS_COLUMNS))
    if draw(st.integers(0, 3)) == 0:
        header.insert(draw(st.integers(0, 3)), "note")
    if fault == "header":
        change = draw(st.sampled_from(["drop", "repeat", "none"]))
        if change == "drop":
            del header[draw(st.integers(0, len(header) - 1))]
        elif change == "repeat":
            header.append(draw(st.sampled_from(header)))
        else:
            header = []
    scores = st.one_of(
        st.integers(-2, 3).map(str),
        st.sampled_from(["+3", " 2 ", "999999999", "-0", "007", "0" * 12 + "1"]),
    )
    bad = {
        "query-id": st.sampled_from(["q9", "", " q1", "Q1"]),
        "corpus-id": st.sampled_from(["d9", "", "d1 "]),
        "score": st.sampled_from(["1.5", "nan", "inf", "", "x", '"1"', "１", "1e3", "--1"]),
    }
    grades: dict[tuple[str, str], str] = {}
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        pair = (draw(st.sampled_from(queries)), draw(st.sampled_from(docs)))
        grade = grades.setdefault(pair, draw(scores))  # a repeat has the same grade
        rows.append({"query-id": pair[0], "corpus-id": pair[1], "score": grade, "note": "n"})
    at = draw(st.integers(0, len(rows) - 1))
    if fault == "bad cell" or flip(draw, faulty):
        name = draw(st.sampled_from(QRELS_COLUMNS))
        rows[at][name] = draw(bad[name])
    if fault == "score out of range":
        rows[at]["score"] = draw(st.sampled_from([HUGE_INT, "9" * 400, "-" + "9" * 10]))
    cells = [[row.get(name, "x") for name in header or QRELS_COLUMNS] for row in rows]
    if fault == "row width":
        cells[at] = cells[at][:-1] if draw(st.booleans()) else [*cells[at], "extra"]
    lines = [b"\t".join(c.encode() for c in r) for r in ([header] if header else []) + cells]
    return draw(text_file(lines, fault, [b""]))


@st.composite
def beir_folder(draw, fault: str | None) -> dict[str, bytes]:
    faulty = fault is not None
    if fault == "random bytes":
        return {"corpus.jsonl": draw(RANDOM_FILE), "queries.jsonl": draw(RANDOM_FILE)}
    doc_ids, corpus = draw(beir_texts(faulty, target(fault, "corpus.jsonl"), "document"))
    query_ids, queries = draw(beir_texts(faulty, target(fault, "queries.jsonl"), "query"))
    files = {"corpus.jsonl": corpus, "queries.jsonl": queries}
    splits = draw(st.lists(st.sampled_from(["train", "dev", "test"]), unique=True))
    if target(fault, "qrels") and not splits:
        splits = ["test"]
    if doc_ids and query_ids:
        for split in splits:
            qrels = qrels_file(faulty, target(fault, "qrels"), query_ids, doc_ids)
            files[f"qrels/{split}.tsv"] = draw(qrels)
    return files


def oracle_ids(data: bytes) -> list[str]:
    """The ids of a corpus or queries file that loaded: one per non-blank line."""
    return [str(json.loads(line)["_id"]) for line in nonblank_lines(data)]


def oracle_qrels(data: bytes) -> set[tuple[str, str]]:
    """The (query, document) pairs of a qrels file that loaded."""
    text = data.decode("utf-8").removeprefix("\ufeff")
    rows = [line.removesuffix("\r").split("\t") for line in text.split("\n")]
    header = [name.strip() for name in rows[0]]
    q, d = header.index("query-id"), header.index("corpus-id")
    rows = [r for r in rows[1:] if r != [""]]
    assert all(len(r) == len(header) for r in rows), "a row of the wrong width"
    return {(r[q], r[d]) for r in rows}


@fuzz(max_examples=200)
@given(files=beir_folder(None), skip=st.booleans())
def test_beir_reader_holds_every_row_of_valid_folders(workdir, files, skip):
    assert check_beir(workdir, files, skip) is not None


@pytest.mark.parametrize("fault", BEIR_FAULTS)
@fuzz(max_examples=8)
@given(data=st.data(), skip=st.booleans())
def test_beir_reader_ends_faulty_folders_in_data_or_a_data_error(workdir, fault, data, skip):
    check_beir(workdir, data.draw(beir_folder(fault), label="files"), skip)


def check_beir(workdir: Path, files: dict[str, bytes], skip: bool) -> Any:
    with scratch(workdir) as root:
        (root / "qrels").mkdir()
        paths = {root / name: data for name, data in files.items()}
        for path, data in paths.items():
            path.write_bytes(data)
        known = {"_id", "text", "title", *QRELS_COLUMNS}
        read = lambda: load_beir(root, on_error="skip" if skip else "raise")  # noqa: E731
        data = outcome(read, paths, known)
        if data is None:
            return None
        for name, ids in (("corpus.jsonl", data.corpus_ids), ("queries.jsonl", data.query_ids)):
            if skip:
                skipped = sum(n for k, n in data.skipped.items() if k.startswith(f"{name}:"))
                assert len(ids) + skipped == len(nonblank_lines(files[name])), data.skipped
            else:
                assert ids == oracle_ids(files[name])
        assert len(data.corpus_texts) == len(data.corpus_ids)
        assert len(data.query_texts) == len(data.query_ids)
        for split, qrels in data.qrels.items():
            pairs = {(q, d) for q, docs in qrels.items() for d in docs}
            if not skip:
                assert pairs == oracle_qrels(files[f"qrels/{split}.tsv"])
        return data


# --- pair files ---------------------------------------------------------------------------

FORMS = {
    "pairs": ["query", "doc"],
    "labelled": ["label", "query", "doc"],
    "neg_k": ["query", "doc"],  # + neg_1 .. neg_K
    "list": ["query", "doc", "negatives"],
}
LABELS = [0, 1, 0.0, 1.0, "0", "1", "0.0", "1.0", " 1 "]
BAD_LABELS = [2, -1, True, None, "", "yes", "01", float("nan"), float("inf"), 10**30, HUGE_INT]
BAD_NEGATIVES = ['["a"', "[1, 2]", [], None, "a", 3, [1, 2], [["a"]], ["a", None], ["a", " "]]
BAD_COLUMNS = ["label", "negatives", "neg_1", "neg_7", "doc", "", "query"]
ODD_NAMES = ["id", "i\nd", "i\rd"]  # ignored columns; the name is no trouble but in messages
# Parquet values Python cannot hold (year 10**9) or that are not text.
ODD_ARROW = [
    lambda n: pa.array([2**62] * n, pa.timestamp("us")),
    lambda n: pa.array([2**31 - 1] * n, pa.date32()),
    lambda n: pa.array([1] * n, pa.decimal128(38, 2)),
    lambda n: pa.array([b"\xff"] * n, pa.binary()),
    lambda n: pa.array([{"a": 1}] * n),
    lambda n: pa.array([2**64 - 1] * n, pa.uint64()),
]
PAIR_BAD_JSON = {**bad_json_lines("query", "doc"), **bad_json_lines("label", "query")}
PAIR_FAULTS = {
    "all": ["column missing", "column added", "column neg_<4400 digits>", "bad text",
            "short or long row", "no rows", "random bytes"],
    "labelled": ["bad label"],
    "list": ["bad negatives", "negatives too deep", "negatives integer too long",
             "negatives count"],
    ".tsv": BYTE_FAULTS,
    ".csv": [*BYTE_FAULTS, "CSV unquoted", "CSV open quote"],
    ".jsonl": [*BYTE_FAULTS, *PAIR_BAD_JSON],
    ".parquet": ["odd Arrow column", "odd Arrow query", "duplicate column", "cut short"],
}  # fmt: skip


PAIR_CASES = [
    (ext, fault)
    for ext in (".tsv", ".csv", ".jsonl", ".parquet")
    for fault in PAIR_FAULTS["all"]
    + PAIR_FAULTS["labelled"]
    + PAIR_FAULTS["list"]
    + PAIR_FAULTS[ext]
]


@st.composite
def pair_rows(draw, form: str, fault: str | None, ext: str):
    """Columns and rows in ``form``, with ``fault`` if it is about columns or values."""
    faulty = fault is not None
    k = draw(st.integers(1, 3))
    columns = FORMS[form] + ([f"neg_{i}" for i in range(1, k + 1)] if form == "neg_k" else [])
    columns = draw(st.permutations(columns))
    if draw(st.integers(0, 3)) == 0:
        extra = "id" if ext == ".tsv" else draw(st.sampled_from(ODD_NAMES))
        columns.insert(draw(st.integers(0, len(columns))), extra)
    if fault == "column missing":
        del columns[draw(st.integers(0, len(columns) - 1))]
    if fault == "column added":
        columns.insert(draw(st.integers(0, len(columns))), draw(st.sampled_from(BAD_COLUMNS)))
    if fault == "column neg_<4400 digits>":
        columns.append("neg_" + HUGE_INT)
    text = TSV_TEXT if ext == ".tsv" else TEXT
    pool = draw(st.lists(text, min_size=1, max_size=3))  # repeated texts are fine
    text = st.one_of(text, st.sampled_from(pool))
    cell = {
        "label": st.sampled_from(LABELS),
        "negatives": st.lists(TEXT, min_size=k, max_size=k),  # JSON in TSV escapes a tab
        **dict.fromkeys(ODD_NAMES, st.one_of(st.integers(), st.floats(), TSV_TEXT)),
    }
    n = 0 if fault == "no rows" else draw(st.integers(1, 6))
    rows = [[draw(cell.get(name, text)) for name in columns] for _ in range(n)]
    at = draw(st.integers(0, n - 1)) if n else 0
    bad = {
        "bad text": BAD_TEXT,
        "bad label": st.sampled_from(BAD_LABELS),
        "bad negatives": st.sampled_from(BAD_NEGATIVES),
        "negatives too deep": st.just(DEEP),
        "negatives integer too long": st.just(f'["a", {HUGE_INT}]'),
        "negatives count": st.lists(TEXT, min_size=k + 1, max_size=k + 1),
    }
    if rows and (fault in bad or flip(draw, faulty)):
        names = {"bad label": ["label"]}.get(fault, ["negatives"] if "negatives" in fault else [])
        j = columns.index(names[0]) if names else draw(st.integers(0, len(columns) - 1))
        rows[at][j] = draw(bad.get(fault, BAD_TEXT))
    if ext == ".parquet":  # one type a column, as Parquet has
        for j, name in enumerate(columns):
            if name not in ("query", "doc") and len({type(r[j]) for r in rows}) > 1:
                for r in rows:
                    r[j] = str(r[j])
    return columns, rows


def delimited_cell(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


@st.composite
def pair_file(draw, ext: str, fault: str | None) -> bytes:
    form = draw(st.sampled_from(sorted(FORMS)))
    form = next((f for f in ("labelled", "list") if fault in PAIR_FAULTS[f]), form)
    if fault == "random bytes":
        return draw(RANDOM_FILE)
    columns, rows = draw(pair_rows(form, fault, ext))
    if ext == ".parquet":
        return draw(parquet_file(fault, columns, rows))
    if ext == ".jsonl":
        records = [dict(zip(columns, r, strict=True)) for r in rows]
        lines = [json.dumps(r, ensure_ascii=draw(st.booleans())).encode() for r in records]
        if fault in PAIR_BAD_JSON:
            lines.insert(
                draw(st.integers(0, len(lines))), draw(st.sampled_from(PAIR_BAD_JSON[fault]))
            )
        return draw(text_file(lines, fault, [b"", b"  ", b"\t"]))
    cells = [[delimited_cell(v) for v in r] for r in rows]
    if cells and fault == "short or long row":
        row = cells[draw(st.integers(0, len(cells) - 1))]
        row.append("extra") if draw(st.booleans()) else row.pop()
    if ext == ".tsv" or fault == "CSV unquoted":
        sep = "\t" if ext == ".tsv" else ","
        return draw(text_file([sep.join(r).encode() for r in [columns, *cells]], fault, [b""]))
    out = io.StringIO()
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    # csv quotes a field with a line end only if the terminator holds it: quote all after LF
    quoting = csv.QUOTE_ALL if eol == "\n" else csv.QUOTE_MINIMAL
    csv.writer(out, lineterminator=eol, quoting=quoting).writerows([columns, *cells])
    data = out.getvalue().encode()
    if fault == "CSV open quote":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b'"' + data[at:]
    if fault in BYTE_FAULTS:
        data = draw(text_file(data.split(b"\n"), fault, [b""]))
    elif draw(st.integers(0, 3)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data


@st.composite
def parquet_file(draw, fault: str | None, columns: list[str], rows: list[list[Any]]) -> bytes:
    names = list(dict.fromkeys(columns))
    records = [dict(zip(columns, r, strict=True)) for r in rows]
    try:
        table = pa.Table.from_pylist(records) if records else None
    except (pa.ArrowException, OverflowError):  # mixed types in a column: write them as text
        table = pa.Table.from_pylist([{k: str(v) for k, v in r.items()} for r in records])
    if table is None:
        table = pa.table({name: pa.array([], pa.string()) for name in names})
    if fault == "odd Arrow column":
        table = table.append_column("extra", draw(st.sampled_from(ODD_ARROW))(len(table)))
    if fault == "odd Arrow query" and "query" in table.column_names:
        odd = draw(st.sampled_from(ODD_ARROW))(len(table))
        table = table.set_column(table.column_names.index("query"), "query", odd)
    if fault == "duplicate column":
        name = draw(st.sampled_from(table.column_names))
        table = table.append_column(name, table.column(name))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    data = sink.getvalue()
    if fault == "cut short":
        data = data[: draw(st.integers(0, len(data)))]
    return data


def oracle_pairs(path: Path, data: bytes) -> list[dict[str, Any]]:
    """The rows of a pair file, read with the standard library or pyarrow."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in nonblank_lines(data)]
    text = data.decode("utf-8").removeprefix("\ufeff")
    if path.suffix == ".csv":
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r]
    else:
        lines = [line.removesuffix("\r") for line in text.split("\n")]
        rows = [line.split("\t") for line in lines if line]
    header = [name.strip() for name in rows[0]]
    return [dict(zip(header, r, strict=True)) for r in rows[1:]]


def rows_in(path: Path, data: bytes) -> int | None:
    """Rows a skipping reader must account for, where the file says (not in CSV)."""
    if path.suffix == ".parquet":
        return count_lines(path, data) - 1
    if path.suffix == ".jsonl":
        return len(nonblank_lines(data))
    if path.suffix == ".tsv":  # every non-empty line after the header
        return sum(1 for line in data.split(b"\n")[1:] if line not in (b"", b"\r"))
    return None


@pytest.mark.parametrize("ext", [".tsv", ".csv", ".jsonl", ".parquet"])
@fuzz(max_examples=80)
@given(data=st.data(), skip=st.booleans())
def test_pair_reader_holds_every_row_of_valid_files(workdir, ext, data, skip):
    assert check_pairs(workdir, ext, data.draw(pair_file(ext, None), label="content"), skip)


@pytest.mark.parametrize(("ext", "fault"), PAIR_CASES)
@fuzz(max_examples=8)
@given(data=st.data(), skip=st.booleans())
def test_pair_reader_ends_faulty_files_in_rows_or_a_data_error(workdir, ext, fault, data, skip):
    check_pairs(workdir, ext, data.draw(pair_file(ext, fault), label="content"), skip)


def check_pairs(workdir: Path, ext: str, content: bytes, skip: bool) -> Any:
    with scratch(workdir) as root:
        path = root / f"pairs{ext}"
        path.write_bytes(content)
        known = {"query", "doc", "label", "negatives", *(f"neg_{k}" for k in range(1, 8))}
        known |= {f"negatives[{i}]" for i in range(3)}
        read = lambda: load_pairs(path, on_error="skip" if skip else "raise")  # noqa: E731
        pairs = outcome(read, {path: content}, known)
        if pairs is None:
            return None
        n = len(pairs.queries)
        assert len(pairs.docs) == len(pairs.lines) == n
        assert pairs.labels is None or (len(pairs.labels) == n and set(pairs.labels) <= {0, 1})
        assert pairs.negatives is None or len(pairs.negatives) == n
        if skip:
            expected = rows_in(path, content)
            if expected is not None:
                assert n + sum(pairs.skipped.values()) == expected, pairs.skipped
        else:
            rows = oracle_pairs(path, content)
            assert pairs.queries == [r["query"] for r in rows]
            assert pairs.docs == [r["doc"] for r in rows]
        return pairs


# --- RecBole atomic files -------------------------------------------------------------------

FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
    st.sampled_from(["", "nan", "inf", "-inf", "1e400", " 2.5 ", "-0", "1E3", "1" * 400]),
)
BAD_FLOATS = ["abc", HUGE_INT + "x", "１", "1,5", "--1", "0x10", "2.5.1", "\x00"]
TOKENS = st.one_of(st.just(""), TSV_TEXT)
CELLS = {
    "token": TOKENS,
    "token_seq": st.lists(TOKENS, max_size=3).map(" ".join),
    "float": FLOATS,
    "float_seq": st.lists(FLOATS, max_size=3).map(" ".join),
}
FIELD_NAMES = ["user_id", "item_id", "rating", "title", "北京", "a b", "x\x85y"]
ATOMIC_FAULTS = ["header", "bad float", "bad text", "row width", "random bytes", *BYTE_FAULTS]


@st.composite
def atomic_file(draw, fault: str | None) -> bytes:
    if fault == "random bytes":
        return draw(RANDOM_FILE)
    names = draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=4, unique=True))
    types = [draw(st.sampled_from(TYPES)) for _ in names]
    header = [f"{n}:{t}" for n, t in zip(names, types, strict=True)]
    if fault == "header":  # no type, an unknown type, no name, a repeated field
        i = draw(st.integers(0, len(header) - 1))
        header[i] = draw(st.sampled_from([names[i], f"{names[i]}:int", ":token", header[0], ""]))
    rows = [[draw(CELLS[t]) for t in types] for _ in range(draw(st.integers(1, 6)))]
    at = draw(st.integers(0, len(rows) - 1))
    if fault in ("bad float", "bad text") or flip(draw, fault is not None):
        floats = [j for j, t in enumerate(types) if t.startswith("float")]
        j = draw(st.sampled_from(floats or [0])) if fault == "bad float" else 0
        rows[at][j] = draw(st.sampled_from(BAD_FLOATS if fault == "bad float" else BAD_TEXTS))
    if fault == "row width":
        rows[at] = rows[at][:-1] if draw(st.booleans()) else [*rows[at], "extra"]
    lines = [line.encode() for line in ["\t".join(header), *map("\t".join, rows)]]
    return draw(text_file(lines, fault, [b"", b"  "]))


def oracle_atomic(data: bytes) -> list[list[str]]:
    """The data rows of an atomic file that loaded: non-blank lines split on tabs."""
    lines = data.decode("utf-8").replace("\r\n", "\n").removeprefix("\ufeff").split("\n")
    return [line.split("\t") for line in lines[1:] if line.strip() or "\t" in line]


@fuzz(max_examples=200)
@given(content=atomic_file(None))
def test_atomic_reader_holds_every_row_of_valid_files(workdir, content):
    assert check_atomic(workdir, content) is not None


@pytest.mark.parametrize("fault", ATOMIC_FAULTS)
@fuzz(max_examples=15)
@given(data=st.data())
def test_atomic_reader_ends_faulty_files_in_a_table_or_a_data_error(workdir, fault, data):
    check_atomic(workdir, data.draw(atomic_file(fault), label="content"))


def check_atomic(workdir: Path, content: bytes) -> Any:
    with scratch(workdir) as root:
        path = root / "data.inter"
        path.write_bytes(content)
        table = outcome(lambda: read_atomic(path), {path: content}, set())
        if table is None:
            return None
        rows = oracle_atomic(content)
        assert len(table) == len(rows)
        assert all(len(r) == len(table.types) for r in rows), "a row of the wrong width"
        for j, (name, kind) in enumerate(table.types.items()):
            assert len(table[name]) == len(rows)
            if kind == "token":
                assert table[name] == [r[j] for r in rows]
        return table
