"""The GCIDE reverse-dictionary builder on a tiny fake dictd pair (gzip text plus index)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from prepare.gcide import _B64, COUNTS, build, clean_sense, main, mask, split_of

# (index words, entry text); entries are concatenated in this order, as in a .dict file
ENTRIES = [
    (["00-database-short"], "00-database-short\n   Fake Dictionary v0.1\n"),
    (
        ["Abacus", "Abaci", "Abacus harmonicus"],
        'Abacus \\Ab"a*cus\\ ([a^]b"[.a]*k[u^]s), n.; pl. {Abaci}. [L. abacus,\n'
        "   Gr. 'a`bax.]\n"
        "   1. A table strewn with sand, anciently used for drawing and\n"
        "      calculating. [Obs.]\n"
        "      [1913 Webster]\n\n"
        "            The abacus of the ancients was a board. --Smith.\n"
        "      [1913 Webster]\n\n"
        "   2. A frame with sliding beads, as used in the Chinese abaci,\n"
        "      for reckoning.\n"
        "      [1913 Webster]\n\n"
        "   {Abacus harmonicus} (Mus.), an ancient diagram showing the\n"
        "      keys of an instrument. --Crabb.\n"
        "      [1913 Webster]\n",
    ),
    (
        ["Bilberry"],
        'Bilberry \\Bil"ber*ry\\, n. [Dan. b[o^]lleb[ae]r.]\n'
        "   A small dark blue fruit of the heath.\n"
        "   [1913 Webster]\n",
    ),
    (
        ["Whortleberry"],
        'Whortleberry \\Whor"tle*ber`ry\\, n.\n'
        "   A small dark blue fruit of the heath.\n"
        "   [1913 Webster]\n",
    ),
    (
        ["Quillet"],
        'Quillet \\Quil"let\\, n. [Cf. L. quidlibet.]\n   A quibble.\n   [1913 Webster]\n',
    ),
    (
        ["Runner"],
        'Runner \\Run"ner\\, n.\n'
        "   1. One who runs; a racer.\n      [1913 Webster]\n\n"
        "   2. One that runs.\n      [1913 Webster]\n",
    ),
    (
        ["Zinc"],
        "Zinc \\Zinc\\, n. [G. zink.] (Chem.)\n"
        "   A bluish white metal; as, sheet zinc.\n"
        "   [1913 Webster]\n",
    ),
]
EXPECTED = [  # (headword, query text) in dictionary order
    ("Abacus", "A table strewn with sand, anciently used for drawing and calculating."),
    ("Abacus", "A frame with sliding beads, as used in the Chinese, for reckoning."),
    ("Abacus harmonicus", "(Mus.) an ancient diagram showing the keys of an instrument."),
    ("Runner", "One who; a racer."),
    ("Zinc", "(Chem.) A bluish white metal."),
]
HEADWORDS = ["Abacus", "Abacus harmonicus", "Bilberry", "Quillet", "Runner", "Whortleberry", "Zinc"]


def b64(n: int) -> str:
    digits = ""
    while True:
        n, r = divmod(n, 64)
        digits = _B64[r] + digits
        if not n:
            return digits


@pytest.fixture
def dictd(tmp_path: Path) -> Path:
    root = tmp_path / "dictd"
    root.mkdir()
    data, rows = b"", []
    for words, text in ENTRIES:
        raw = text.encode()
        rows += [f"{w}\t{b64(len(data))}\t{b64(len(raw))}\n" for w in words]
        data += raw
    (root / "gcide.index").write_text("".join(sorted(rows)))
    with gzip.open(root / "gcide.dict.dz", "wb") as f:
        f.write(data)
    return root


def read(out: Path) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
    """(doc id -> headword, query id -> text, split -> qrels rows)."""
    docs = {d["_id"]: d["text"] for d in map(json.loads, (out / "corpus.jsonl").open())}
    queries = {q["_id"]: q["text"] for q in map(json.loads, (out / "queries.jsonl").open())}
    qrels = {s: (out / f"qrels/{s}.tsv").read_text().splitlines() for s in ("train", "dev", "test")}
    return docs, queries, qrels


def test_build_cleans_masks_and_drops(dictd: Path, tmp_path: Path):
    counts = build(dictd, tmp_path / "out")
    docs, queries, qrels = read(tmp_path / "out")
    assert sorted(docs.values()) == HEADWORDS  # with those left without queries; not "Abaci"
    answer = {}
    for split, rows in qrels.items():
        assert rows[0] == "query-id\tcorpus-id\tscore"
        for row in rows[1:]:
            qid, doc, score = row.split("\t")
            answer[qid] = docs[doc]
            assert score == "1" and split_of(docs[doc]) == split  # the headword decides the split
    assert [(answer[q], queries[q]) for q in sorted(queries)] == EXPECTED
    assert all(" " not in i for i in [*docs, *queries])
    assert list(counts)[: len(COUNTS)] == list(COUNTS)  # no misspelt counter
    assert counts["dropped: same text, different answers"] == 2  # Bilberry, Whortleberry
    assert counts["dropped: under 3 words"] == 1  # "A quibble."
    assert counts["dropped: too little left after masking"] == 1  # "One that runs."
    readme = (tmp_path / "out/README.md").read_text()
    assert "Fake Dictionary v0.1" in readme and "sha256" in readme


def test_split_is_a_function_of_the_headword():
    assert split_of("Abacus") == split_of("abacus") == split_of(" ABACUS ")
    splits = [split_of(f"word{i}") for i in range(2000)]
    assert 0.75 < splits.count("train") / 2000 < 0.85
    assert {"dev", "test"} <= set(splits)


def test_clean_and_mask():
    raw = "\\Foo\\ A table [L. tabula] {strewn} with sand; as, a foo table. [Obs.] --Bacon."
    assert clean_sense(raw) == "A table strewn with sand."
    assert clean_sense('To go. "He went." --Shak.') == "To go."
    assert mask("To run; a runner's pace, as he ran.", ["Run"], {"ran"}) == (
        "To; a pace, as he.",
        3,
    )
    assert mask("Pencils of lead pencil makers.", ["Lead pencil"], set()) == (
        "Pencils of makers.",
        1,
    )


def test_rebuild_is_byte_identical(dictd: Path, tmp_path: Path):
    out = tmp_path / "out"
    build(dictd, out)
    first = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    build(dictd, out, overwrite=True)
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dictd", "out"]  # no temp dirs left


def test_refuses_to_overwrite(dictd: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    main(["--dictd", str(dictd), "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        main(["--dictd", str(dictd), "--out", str(out)])
    assert e.value.code == 2 and "--overwrite" in capsys.readouterr().err
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="notes.txt"):  # --overwrite replaces only a build
        build(dictd, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "corpus.jsonl").is_file()
