"""File readers: every bad input names its file, line and field; formats are detected."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from twotower.data.readers.beir import load_beir
from twotower.data.readers.files import read_jsonl, read_table
from twotower.data.readers.pairs import load_pairs
from twotower.errors import ConfigError, DataError

DATA = Path(__file__).parent / "data"
EXTENSIONS = (".tsv", ".csv", ".jsonl", ".parquet")


def where(name: str, line: int | None, field: str | None = None) -> str:
    """A regex for the start of a DataError message about ``name``."""
    at = name if line is None else f"{name}:{line}"
    return re.escape(f"{at}: field '{field}':" if field else f"{at}:")


def write_table(path: Path, columns: list[str], rows: list[list]) -> Path:
    """Write rows as the extension says; lists become JSON arrays in TSV / CSV."""
    if path.suffix == ".parquet":
        pq.write_table(
            pa.Table.from_pylist([dict(zip(columns, r, strict=True)) for r in rows]), path
        )
    elif path.suffix == ".jsonl":
        lines = [json.dumps(dict(zip(columns, r, strict=True)), ensure_ascii=False) for r in rows]
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    else:
        cells = [[json.dumps(v) if isinstance(v, list) else str(v) for v in r] for r in rows]
        with open(path, "w", encoding="utf-8", newline="") as f:
            if path.suffix == ".tsv":  # unquoted, as the reader expects
                f.writelines("\t".join(r) + "\n" for r in [columns, *cells])
            else:
                csv.writer(f).writerows([columns, *cells])
    return path


# --- BEIR ---------------------------------------------------------------------------------

CORPUS = [
    '{"_id": "d1", "title": "Tea", "text": "Green tea is not fermented."}',
    '{"_id": "d2", "title": "", "text": "Black tea is fully fermented."}',
    '{"_id": "d3", "text": "Coffee holds caffeine."}',
    '{"_id": 4, "title": "Only a title", "text": " "}',
]
QUERIES = ['{"_id": "q1", "text": "tea fermentation"}', '{"_id": "q2", "text": "caffeine"}']
HEADER = "query-id\tcorpus-id\tscore\n"
QRELS = HEADER + "q1\td1\t2\nq1\td2\t1\nq1\td3\t0\nq2\t4\t1\n"


def make_beir(root: Path, corpus=CORPUS, queries=QUERIES, qrels=None) -> Path:
    """A BEIR folder; list entries are lines (bytes are written as they are)."""
    (root / "qrels").mkdir(parents=True)
    for name, lines in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        raw = [line if isinstance(line, bytes) else line.encode() for line in lines]
        (root / name).write_bytes(b"".join(line + b"\n" for line in raw))
    for split, text in (qrels if qrels is not None else {"test": QRELS}).items():
        (root / "qrels" / f"{split}.tsv").write_text(text, encoding="utf-8")
    return root


def test_beir_round_trip(tmp_path):
    data = load_beir(make_beir(tmp_path, qrels={"test": QRELS, "dev": HEADER}))
    assert data.corpus_ids == ["d1", "d2", "d3", "4"]
    assert data.corpus_texts[0] == "Tea Green tea is not fermented."
    assert data.corpus_texts[1:] == [
        "Black tea is fully fermented.",
        "Coffee holds caffeine.",
        "Only a title",
    ]
    assert data.query_ids == ["q1", "q2"] and data.query_texts[1] == "caffeine"
    # Graded, two relevant documents for q1, grade 0 kept; no train file: no train split.
    assert data.qrels == {"test": {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"4": 1}}, "dev": {}}
    assert data.skipped == {}


def test_beir_missing_folder_and_files(tmp_path):
    with pytest.raises(DataError, match=where("nowhere", None) + " no such folder"):
        load_beir(tmp_path / "nowhere")
    root = make_beir(tmp_path / "b")
    (root / "queries.jsonl").unlink()
    with pytest.raises(DataError, match=where("queries.jsonl", None) + " no such file"):
        load_beir(root)


@pytest.mark.parametrize(
    ("name", "field", "bad", "problem"),
    [
        (
            "corpus.jsonl",
            None,  # no guessed field: the line and column of the syntax error
            '{"_id": "d2", "text": "broken}',
            "malformed JSON: Unterminated string starting at column 23",
        ),
        ("corpus.jsonl", None, '["d2", "text"]', "not a JSON object: got an array"),
        ("corpus.jsonl", "_id", '{"text": "no id"}', "missing"),
        ("corpus.jsonl", "text", '{"_id": "d2", "title": "no text"}', "missing"),
        ("corpus.jsonl", "text", '{"_id": "d2", "title": " ", "text": ""}', "empty document"),
        ("corpus.jsonl", "_id", '{"_id": "d1", "text": "x"}', "duplicate id 'd1': first on line 1"),
        ("corpus.jsonl", "_id", '{"_id": "d 2", "text": "x"}', "id 'd 2' is empty or holds white"),
        (
            "corpus.jsonl",
            "text",
            b'{"_id": "d2", "text": "\xff"}',
            "not UTF-8 (byte 0xff at column 24",
        ),
        ("queries.jsonl", "text", '{"_id": "q2", "text": "  "}', "empty query"),
    ],
)
def test_beir_bad_text_rows(tmp_path, name, field, bad, problem):
    lines = {"corpus.jsonl": CORPUS[:1], "queries.jsonl": QUERIES[:1]}
    lines[name] = [lines[name][0], bad]  # the bad row is line 2
    root = make_beir(tmp_path, lines["corpus.jsonl"], lines["queries.jsonl"], qrels={})
    with pytest.raises(DataError, match=where(name, 2, field) + " " + re.escape(problem)):
        load_beir(root)


@pytest.mark.parametrize(
    ("qrels", "line", "field", "problem"),
    [
        ("q1\td1\t1\n", 1, None, "no header line: expected columns query-id, corpus-id, score"),
        (HEADER + "q1\td1\t1\nq9\td1\t1\n", 3, "query-id", "unknown query id 'q9'"),
        (HEADER + "q1\td9\t1\n", 2, "corpus-id", "unknown document id 'd9'"),
        (HEADER + "q1\td1\t1.5\n", 2, "score", "not an integer grade: '1.5'"),
        (HEADER + "q1\td1\n", 2, "score", "wrong column count: expected 3"),
        (HEADER + "q1\td1\t1\nq1\td1\t2\n", 3, "score", "grade 2 contradicts grade 1"),
        ("query-id\tdoc-id\tscore\nq1\td1\t1\n", 1, "corpus-id", "missing column"),
        # int() refuses 4400 digits; a float cannot hold 400: both once crashed
        (HEADER + "q1\td1\t" + "1" * 4400 + "\n", 2, "score", "grade out of range: more than 9"),
        (HEADER + "q1\td1\t-" + "9" * 10 + "\n", 2, "score", "grade out of range"),
    ],
)
def test_beir_bad_qrels(tmp_path, qrels, line, field, problem):
    root = make_beir(tmp_path, qrels={"test": qrels})
    with pytest.raises(DataError, match=where("test.tsv", line, field) + " " + re.escape(problem)):
        load_beir(root, splits=("test",))


DEEP = "[" * 5000  # deeper than Python's recursion limit


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        pytest.param(
            '{"_id": ' + "1" * 4400 + ', "text": "x"}',
            "malformed JSON: an integer with more than 4300 digits",
            id="integer-too-long",
        ),
        pytest.param(
            '{"_id": "d2", "text": ' + DEEP + "}",
            "malformed JSON: nested too deeply to read",
            id="too-deep",
        ),
        pytest.param(
            b'{"_id": "\xff", "text": ' + DEEP.encode() + b"}",
            "not UTF-8 (byte 0xff at column 10)",
            id="not-utf8-and-too-deep",
        ),
    ],
)
def test_beir_json_python_cannot_read_names_the_line(tmp_path, bad, problem):
    # These once ended in ValueError / RecursionError tracebacks (found by test_fuzz_readers).
    root = make_beir(tmp_path, [CORPUS[0], bad], QUERIES, qrels={})
    with pytest.raises(DataError, match=where("corpus.jsonl", 2) + " " + re.escape(problem)):
        load_beir(root)


def test_json_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2, "b" 3}\r\n')
    with pytest.raises(DataError) as err:
        list(read_jsonl(path))
    assert str(err.value) == f"{path}:3: malformed JSON: Expecting ':' delimiter at column 14"
    assert (err.value.line, err.value.field) == (3, None)


def test_beir_skip_drops_counts_and_warns(tmp_path, caplog):
    corpus = [
        *CORPUS[:3],
        '{"_id": "d4", "text": ""}',  # line 4: empty
        b'{"_id": "d5", "text": "\xff"}',  # line 5: not UTF-8
        '{"_id": "d6", "text": "fine"}',
    ]
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td4\t1\nq7\td1\t1\nq2\td3\tx\nq2\td6\t1\n"
    root = make_beir(tmp_path, corpus, QUERIES, {"test": qrels})
    with caplog.at_level(logging.WARNING, logger="twotower.data"):
        data = load_beir(root, on_error="skip")
    assert data.corpus_ids == ["d1", "d2", "d3", "d6"]
    assert data.qrels == {"test": {"q1": {"d1": 1}, "q2": {"d6": 1}}}
    assert data.skipped == {
        "corpus.jsonl:empty text": 1,
        "corpus.jsonl:not UTF-8": 1,
        "qrels/test.tsv:unknown corpus-id": 1,
        "qrels/test.tsv:unknown query-id": 1,
        "qrels/test.tsv:non-integer score": 1,
    }
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "skipped 2 bad rows" in warnings[0] and "corpus.jsonl:4: field 'text'" in warnings[0]
    assert "skipped 3 bad rows" in warnings[1] and "test.tsv:3: field 'corpus-id'" in warnings[1]


def test_beir_skip_still_raises_file_level_problems(tmp_path):
    root = make_beir(tmp_path, qrels={"test": "q1\td1\t1\n"})
    with pytest.raises(DataError, match=where("test.tsv", 1) + " no header line"):
        load_beir(root, on_error="skip")
    with pytest.raises(ConfigError, match="on_error='ignore'"):
        load_beir(root, on_error="ignore")


# --- pair files ---------------------------------------------------------------------------

FORMS = {
    "pairs": (["query", "doc"], [["q1", "d1"], ["q2", "d2"]]),
    "labelled": (["label", "query", "doc"], [[1, "q1", "d1"], [0, "q2", "d2"]]),
    "neg_k": (
        ["query", "doc", "neg_1", "neg_2"],
        [["q1", "d1", "n1", "n2"], ["q2", "d2", "n3", "n4"]],
    ),
    "list": (
        ["query", "doc", "negatives"],
        [["q1", "d1", ["n1", "n2"]], ["q2", "d2", ["n3", "n4"]]],
    ),
}


@pytest.mark.parametrize("ext", EXTENSIONS)
@pytest.mark.parametrize("form", FORMS)
def test_pair_formats_detected(tmp_path, ext, form):
    data = load_pairs(write_table(tmp_path / f"rows{ext}", *FORMS[form]))
    assert data.format == {"neg_k": "presampled", "list": "presampled"}.get(form, form)
    lines = [1, 2] if ext == ".jsonl" else [2, 3]  # a table's header (or schema) is line 1
    assert (data.queries, data.docs, data.lines) == (["q1", "q2"], ["d1", "d2"], lines)
    assert data.labels == ([1.0, 0.0] if form == "labelled" else None)
    presampled = [["n1", "n2"], ["n3", "n4"]]
    assert data.negatives == (presampled if data.format == "presampled" else None)


def test_pair_labels_accept_numbers_and_strings(tmp_path):
    values = (0, 1, 0.0, 1.0, "0", "1", "1.0")
    path = tmp_path / "labels.jsonl"
    path.write_text(
        "".join(json.dumps({"label": v, "query": "q", "doc": "d"}) + "\n" for v in values)
    )
    assert load_pairs(path).labels == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0]


def test_pair_unknown_columns_logged(tmp_path, caplog):
    path = write_table(tmp_path / "p.tsv", ["id", "query", "doc"], [["7", "q", "d"]])
    with caplog.at_level(logging.INFO, logger="twotower.data"):
        assert load_pairs(path).format == "pairs"
    assert "ignoring unknown columns id" in caplog.text


def test_chinese_pairs():
    data = load_pairs(DATA / "zh_pairs.tsv")
    assert data.format == "pairs" and len(data.queries) == 20
    assert data.queries[0] == "北京有哪些必去的景点"
    assert data.docs[-1].startswith("过量摄入咖啡因") and data.lines[-1] == 21


NEG_2_THEN_1 = '{"query": "q", "doc": "d", "negatives": ["a", "b"]}\n' + (
    '{"query": "q", "doc": "d", "negatives": ["a"]}\n'
)


@pytest.mark.parametrize(
    ("name", "text", "line", "field", "problem"),
    [
        ("p.tsv", "boil rice\tadd water\n", 1, None, "no header line: expected columns query, doc"),
        ("p.csv", "q,d\nq1,d1\n", 1, None, "no header line"),
        (
            "p.tsv",
            "query\tpassage\nq1\td1\n",
            1,
            "doc",
            "missing column: the header has query, pass",
        ),
        ("p.tsv", "query\tdoc\nq1\td1\nq2\t \n", 3, "doc", "empty text"),
        ("p.jsonl", '{"query": "q1", "doc": "d1"}\n\n{"query": "q2"}\n', 3, "doc", "missing"),
        (
            "p.jsonl",
            '{"query": "q1", "doc": "d1",}\n',
            1,
            None,
            "malformed JSON: Expecting property name enclosed in double quotes at column 29",
        ),
        ("p.tsv", "label\tquery\tdoc\n1\tq1\td1\n2\tq2\td2\n", 3, "label", "not 0 or 1: '2'"),
        ("p.jsonl", '{"label": true, "query": "q", "doc": "d"}\n', 1, "label", "not 0 or 1: True"),
        (
            "p.jsonl",
            NEG_2_THEN_1,
            2,
            "negatives",
            "wrong negatives count: 1 negatives, but the first row (line 1",
        ),
        ("p.tsv", 'query\tdoc\tnegatives\nq\td\t["a", ""]\n', 2, "negatives[1]", "empty text"),
        (
            "p.tsv",
            'query\tdoc\tnegatives\nq\td\t["a"\n',
            2,
            "negatives",
            "malformed JSON array: Expecting ',' delimiter at column 5 of the field",
        ),
        ("p.tsv", "query\tdoc\tneg_1\tneg_3\nq\td\ta\tb\n", 1, "neg_2", "missing: negative col"),
        ("p.tsv", "label\tquery\tdoc\tneg_1\n1\tq\td\ta\n", 1, "label", "cannot be combined with"),
        (
            "p.tsv",
            "query\tdoc\nq1\td1\tx\n",
            2,
            None,
            "wrong column count: expected 2 (query, doc)",
        ),
        ("p.csv", 'query,doc\n"a\nb",d\nq,"open\n', 4, None, "malformed CSV"),
        ("p.txt", "query\tdoc\n", None, None, "unknown extension .txt: expected one of .tsv, .csv"),
        ("p.tsv", "", None, None, "empty file"),
        ("p.tsv", "query\tdoc\n", None, None, "no rows"),
    ],
)
def test_pair_bad_input(tmp_path, name, text, line, field, problem):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=where(name, line, field) + " " + re.escape(problem)):
        load_pairs(tmp_path / name)


@pytest.mark.parametrize(("ext", "field"), [(".tsv", "doc"), (".jsonl", "doc"), (".csv", "query")])
def test_pair_not_utf8(tmp_path, ext, field):
    sep = {".tsv": b"\t", ".csv": b","}.get(ext)
    if sep is None:
        raw = b'{"query": "q1", "doc": "d1"}\n{"query": "q2", "doc": "d\xff2"}\n'
    else:
        bad = [b"q2", b"d\xff2"] if field == "doc" else [b"q\xff2", b"d2"]
        raw = sep.join([b"query", b"doc"]) + b"\n" + sep.join([b"q1", b"d1"]) + b"\n"
        raw += sep.join(bad) + b"\n"
    (tmp_path / f"p{ext}").write_bytes(raw)
    with pytest.raises(DataError, match=where(f"p{ext}", 3 if sep else 2, field) + " not UTF-8"):
        load_pairs(tmp_path / f"p{ext}")


def test_pair_parquet_missing_column_and_null(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"query": ["q1"], "passage": ["d1"]}), path)
    with pytest.raises(DataError, match=where("p.parquet", 1, "doc") + " missing column"):
        load_pairs(path)
    pq.write_table(pa.table({"query": ["q1", "q2"], "doc": ["d1", None]}), path)
    with pytest.raises(DataError, match=where("p.parquet", 3, "doc") + " missing"):
        load_pairs(path)
    path.write_bytes(b"not parquet")
    with pytest.raises(DataError, match=where("p.parquet", None) + " not a readable Parquet"):
        load_pairs(path)


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [
        pytest.param(
            "query\tdoc\tneg_" + "1" * 4400 + "\nq\td\ta\n",
            1,
            "neg_1",
            "missing: negative columns must run neg_1..neg_K without gaps",
            id="neg-column-number-too-long",
        ),
        pytest.param(
            "query\tdoc\tnegatives\nq\td\t" + DEEP + "\n",
            2,
            "negatives",
            "malformed JSON array: nested too deeply or an integer too long to read",
            id="negatives-too-deep",
        ),
        pytest.param(
            "query\tdoc\tnegatives\nq\td\t[" + "1" * 4400 + "]\n",
            2,
            "negatives",
            "malformed JSON array: nested too deeply or an integer too long",
            id="negatives-integer-too-long",
        ),
        pytest.param(
            'query,"i\nd"\nq,7\n',
            1,
            "doc",
            "missing column: the header has query, i\\nd",  # escaped: the message is one line
            id="column-name-with-newline",
        ),
    ],
)
def test_pair_values_python_cannot_read_name_line_and_field(tmp_path, text, line, field, problem):
    # The first three once ended in ValueError / RecursionError tracebacks.
    path = tmp_path / ("p.csv" if "," in text.partition("\n")[0] else "p.tsv")
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=where(path.name, line, field) + " " + re.escape(problem)):
        load_pairs(path)


def test_pair_parquet_values_python_cannot_hold_and_duplicate_columns(tmp_path):
    path = tmp_path / "p.parquet"
    for name, values in [
        ("when", pa.array([0, 2**31 - 1], pa.date32())),  # once an OverflowError
        ("ts", pa.array([0, 2**62], pa.timestamp("us"))),
    ]:
        pq.write_table(pa.table({"query": ["q1", "q2"], "doc": ["d1", "d2"], name: values}), path)
        with pytest.raises(DataError, match=where("p.parquet", 3, name) + " a .* value Python"):
            load_pairs(path)
        assert load_pairs(path, on_error="skip").queries == ["q1"]
    columns = [pa.array(["q"]), pa.array(["d1"]), pa.array(["d2"])]
    pq.write_table(pa.Table.from_arrays(columns, names=["query", "doc", "doc"]), path)
    with pytest.raises(DataError, match=where("p.parquet", 1, "doc") + " duplicate column"):
        load_pairs(path)  # once kept one of the two silently


def test_pair_skip_drops_counts_and_warns(tmp_path, caplog):
    path = tmp_path / "p.tsv"
    path.write_bytes(
        b"label\tquery\tdoc\n1\tq1\td1\n2\tq2\td2\n0\tq3\t\n1\tq\xff4\td4\n0\tq5\td5\n"
    )
    with caplog.at_level(logging.WARNING, logger="twotower.data"):
        data = load_pairs(path, on_error="skip")
    assert (data.queries, data.labels, data.lines) == (["q1", "q5"], [1.0, 0.0], [2, 6])
    assert data.skipped == {f"{path}:{r}": 1 for r in ("bad label", "empty text", "not UTF-8")}
    assert "skipped 3 bad rows" in caplog.text and "p.tsv:3: field 'label'" in caplog.text


# Other column names (sentence-transformers' among them), the mapping that reads them, and
# the format and negatives read.
TWO_NEGATIVES = [["n1", "n2"], ["n3", "n4"]]
MAPPED = {
    "pairs": (
        ["question", "answer"],
        [["q1", "d1"], ["q2", "d2"]],
        {"query": "question", "doc": "answer"},
        "pairs",
        None,
    ),
    "triplets": (
        ["anchor", "positive", "negative"],
        [["q1", "d1", "n1"], ["q2", "d2", "n3"]],
        {"query": "anchor", "doc": "positive", "neg": ["negative"]},
        "presampled",
        [["n1"], ["n3"]],
    ),
    "one-negative-column-by-name": (
        ["anchor", "positive", "negative"],
        [["q1", "d1", "n1"], ["q2", "d2", "n3"]],
        {"query": "anchor", "doc": "positive", "neg": "negative"},
        "presampled",
        [["n1"], ["n3"]],
    ),
    "two-negative-columns": (
        ["anchor", "positive", "negative_1", "negative_2"],
        [["q1", "d1", "n1", "n2"], ["q2", "d2", "n3", "n4"]],
        {"query": "anchor", "doc": "positive", "neg": ["negative_1", "negative_2"]},
        "presampled",
        TWO_NEGATIVES,
    ),
    "list-column": (
        ["query", "pos", "hard"],
        [["q1", "d1", ["n1", "n2"]], ["q2", "d2", ["n3", "n4"]]],
        {"doc": "pos", "negatives": "hard"},  # query keeps its own name
        "presampled",
        TWO_NEGATIVES,
    ),
    "labels": (
        ["clicked", "q", "d"],
        [[1, "q1", "d1"], [0, "q2", "d2"]],
        {"query": "q", "doc": "d", "label": "clicked"},
        "labelled",
        None,
    ),
}


@pytest.mark.parametrize("ext", EXTENSIONS)
@pytest.mark.parametrize("form", MAPPED)
def test_pair_columns_map_other_names(tmp_path, ext, form):
    columns, rows, mapping, fmt, negatives = MAPPED[form]
    data = load_pairs(write_table(tmp_path / f"rows{ext}", columns, rows), columns=mapping)
    assert data.format == fmt
    assert (data.queries, data.docs) == (["q1", "q2"], ["d1", "d2"])
    assert data.labels == ([1.0, 0.0] if fmt == "labelled" else None)
    assert data.negatives == negatives


def test_pair_columns_only_rename(tmp_path, caplog):
    # A file without the mapped negative columns is pairs (a validation file of a triplet run);
    # the file's own "query" column, not mapped, is another column and ignored.
    mapping = {"query": "anchor", "doc": "positive", "neg": ["negative"]}
    path = write_table(tmp_path / "val.tsv", ["query", "anchor", "positive"], [["x", "q", "d"]])
    with caplog.at_level(logging.INFO, logger="twotower.data"):
        data = load_pairs(path, columns=mapping)
    assert (data.format, data.queries, data.docs) == ("pairs", ["q"], ["d"])
    assert "ignoring unknown columns query" in caplog.text


@pytest.mark.parametrize(
    ("text", "line", "field", "problem"),
    [
        (
            "anchor\tpositive\tnegative_1\nq\td\tn\n",
            1,
            "negative_2",
            "missing column: data.columns.neg",
        ),
        ("anchor\tpositive\nq\t \n", 2, "positive", "empty text"),
        (
            "anchor\tpositive\nq\n",
            2,
            "positive",
            "wrong column count: expected 2 (anchor, positive)",
        ),
        (
            "anchor\tanswer\nq\td\n",
            1,
            "positive",
            "missing column: the header has anchor, answer; "
            "the query and document columns are anchor and positive (data.columns)",
        ),
    ],
)
def test_pair_columns_errors_name_the_files_columns(tmp_path, text, line, field, problem):
    (tmp_path / "p.tsv").write_text(text, encoding="utf-8")
    mapping = {"query": "anchor", "doc": "positive", "neg": ["negative_1", "negative_2"]}
    with pytest.raises(DataError, match=where("p.tsv", line, field) + " " + re.escape(problem)):
        load_pairs(tmp_path / "p.tsv", columns=mapping)


@pytest.mark.parametrize(
    ("columns", "key", "problem"),
    [
        ({"question": "q"}, "columns", "unknown key 'question': the keys are query, doc, label"),
        ({"query": ""}, "columns.query", "must be a column name"),
        ({"query": ["a", "b"]}, "columns.query", "must be a column name"),
        ({"neg": []}, "columns.neg", "must be a column name or a list of them"),
        ({"neg": ["a"], "negatives": "b"}, "columns", "give neg (columns of one negative each)"),
        ({"query": "text", "doc": "text"}, "columns", "names the column 'text' twice"),
        ("question", "columns", "must map names to columns"),
    ],
)
def test_pair_columns_mapping_is_checked(tmp_path, columns, key, problem):
    path = write_table(tmp_path / "p.tsv", ["query", "doc"], [["q", "d"]])
    with pytest.raises(ConfigError, match=re.escape(f"{key}=") + ".*" + re.escape(problem)):
        load_pairs(path, columns=columns)


@pytest.mark.parametrize("ext", EXTENSIONS)
@pytest.mark.parametrize("names", [["question", "answer"], ["anchor", "positive", "negative"]])
def test_pair_header_of_other_names_names_the_accepted_ones_and_data_columns(tmp_path, ext, names):
    path = write_table(tmp_path / f"p{ext}", names, [[f"text {i}" for i in range(len(names))]])
    with pytest.raises(DataError) as err:
        load_pairs(path)
    message = str(err.value)
    assert message.startswith(f"{path}:1: ") and len(message.splitlines()) == 1
    assert "query, doc and optionally label, neg_1..neg_K or negatives" in message
    assert "data.columns={query: question, doc: answer}" in message
    assert "data.on_error=skip" not in message  # skipping cannot help a file of other names


def test_data_columns_from_the_command_line_reach_the_datamodule(tmp_path):
    from hydra import compose, initialize_config_dir

    from twotower.build import instantiate
    from twotower.config_check import CONF_DIR
    from twotower.data.components.tokenizers import TrigramTokenizer

    rows = [["a question", "its answer"], ["another question", "another answer"]]
    path = write_table(tmp_path / "qa.tsv", ["question", "answer"], rows)
    base = ["data=pairs", f"data.train={path}", f"data.val={path}", "data.cache_dir=null"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", [*base, "data.columns={query: question, doc: answer}"])
        bad = compose("train", [*base, "data.columns={query: question, document: answer}"])
    dm = instantiate(cfg.data, "data", tokenizer=TrigramTokenizer())
    dm.setup("fit")
    assert dm.train_format == "pairs" and sorted(dm.doc_texts) == ["another answer", "its answer"]
    with pytest.raises(ConfigError, match=r"data.columns=.*unknown key 'document'"):
        instantiate(bad.data, "data", tokenizer=TrigramTokenizer())


# --- data.on_error=skip, named where it can help ------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("p.tsv", "label\tquery\tdoc\n1\tq1\td1\n2\tq2\td2\n"),  # a bad label
        ("p.jsonl", '{"query": "q1", "doc": "d1"}\n{"query": "q2", "doc": " "}\n'),  # empty doc
        ("p.csv", "query,doc\nq1,d1\nq2,d2,extra\n"),  # wrong column count
    ],
)
def test_a_bad_row_says_that_skip_drops_it(tmp_path, name, text):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_pairs(tmp_path / name)
    assert str(err.value).endswith(" (data.on_error=skip drops bad rows)")
    assert len(load_pairs(tmp_path / name, on_error="skip").queries) == 1


def test_beir_bad_row_says_that_skip_drops_it_and_a_bad_file_does_not(tmp_path):
    root = make_beir(tmp_path / "a", [*CORPUS, '{"_id": "d9", "text": ""}'])
    with pytest.raises(DataError) as err:
        load_beir(root)
    assert str(err.value) == (
        f"{root / 'corpus.jsonl'}:5: field 'text': empty document: title and text are blank "
        "(data.on_error=skip drops bad rows)"
    )
    root = make_beir(tmp_path / "b", qrels={"test": "q1\td1\t1\n"})  # no header line
    with pytest.raises(DataError, match="no header line") as err:
        load_beir(root)
    assert "on_error" not in str(err.value)


# --- low-level readers --------------------------------------------------------------------


def test_read_jsonl_lines_and_bom(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n  \n{"a": 2}\r\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"a": 2})]


def test_read_table_csv_quotes_keep_line_numbers(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('query,doc\n"a, b","two\nlines"\n\nq,"say ""hi"""\n', encoding="utf-8")
    columns, rows = read_table(path, required=("query", "doc"))
    assert columns == ["query", "doc"]
    assert list(rows) == [
        (2, {"query": "a, b", "doc": "two\nlines"}),
        (5, {"query": "q", "doc": 'say "hi"'}),
    ]


def test_read_table_tsv_keeps_quotes_literal(tmp_path):
    path = tmp_path / "x.tsv"
    path.write_text('query\tdoc\n"quoted" q\tit\'s "d"\n', encoding="utf-8")
    assert list(read_table(path)[1]) == [(2, {"query": '"quoted" q', "doc": 'it\'s "d"'})]
