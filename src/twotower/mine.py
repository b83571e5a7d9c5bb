"""Mine hard negatives and write them as a presampled pair file.

python -m twotower.mine source=RUN/checkpoints/best.ckpt out=data/mined.jsonl rank_min=3
python -m twotower.mine source=bm25 data=beir data.dir=DIR out=data/mined.jsonl

The source ranks the corpus for every training query: a checkpoint (its towers and the exact
blocked search), an export directory (its query tower and its index, exact or faiss), or
``bm25`` (``bm25s`` over the raw texts).

Each training pair (query, relevant document) becomes one JSONL line ``{"query", "doc",
"negatives": [K texts]}``, which ``data=pairs`` reads as the ``presampled`` format. The
negatives come from the query's mined window (:mod:`twotower.retrieval.mining`); a query whose
window keeps fewer than K gets the rest drawn uniformly from its non-relevant documents, and the
count of such fills is printed with each filter's.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch import Tensor

from twotower.build import instantiate
from twotower.checkpoint import load_module
from twotower.config_check import CONF_DIR, check_config, run_cli
from twotower.data.base import REDRAW_ROUNDS
from twotower.errors import ConfigError, check_choice, user_errors
from twotower.mining import is_export, is_text_source, mine_from
from twotower.retrieval.mining import MiningWindow
from twotower.serving import TwoTowerRetriever


def fill(table: Tensor, k: int, how: str, query: Tensor, pos: Tensor, n_docs: int, seed: int):
    """``(Q, k)`` negatives per query row from ``table`` (-1 padded): the first ``k`` kept, or
    ``k`` of them at random; short rows are filled uniformly from the documents that are not
    relevant to the row (``query``, ``pos``: the relevant pairs). Returns them and the fills."""
    g = torch.Generator().manual_seed(seed)
    if how == "random":  # a seeded shuffle of each row's kept entries, pads last
        keys = torch.rand(table.shape, generator=g)
        keys[table < 0] = 2.0
        table = table.gather(1, keys.argsort(dim=1))
    out = table[:, :k]
    if out.shape[1] < k:
        out = torch.cat([out, out.new_full((len(out), k - out.shape[1]), -1)], 1)
    short = out < 0
    drawn = torch.randint(n_docs, out.shape, generator=g)  # (Q, k)
    keys = torch.unique(query.long() * n_docs + pos.long())  # the relevant pairs, sorted
    rows = torch.arange(len(out))[:, None] * n_docs
    for _ in range(REDRAW_ROUNDS):  # then a still-relevant draw stays (training masks it)
        at = torch.searchsorted(keys, rows + drawn).clamp(max=len(keys) - 1)
        bad = keys[at] == rows + drawn
        if not bad.any():
            break
        drawn[bad] = torch.randint(n_docs, (int(bad.sum()),), generator=g)
    out[short] = drawn[short]
    return out, int(short.sum())


def mine(cfg: DictConfig) -> dict:
    """Mine and write ``cfg.out``; returns the counts and timings printed."""
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise ConfigError("out", str(out), "exists (overwrite=true replaces it)")
    check_choice("sample", cfg.sample, ("top", "random"))
    ok = isinstance(cfg.num_negatives, int) and cfg.num_negatives >= 1
    if not ok:
        raise ConfigError("num_negatives", cfg.num_negatives, "must be an integer >= 1")
    window = MiningWindow(cfg.rank_min, cfg.rank_max, cfg.margin, cfg.relative_margin)
    source = str(cfg.source)
    datamodule, module = _datamodule(cfg, source)
    catalogue = datamodule.catalogue()
    if len(datamodule.query_texts) != len(catalogue.queries):
        raise ConfigError(
            "data",
            cfg.data.get("_target_") if cfg.get("data") else None,
            "has no query texts to write (text data only)",
        )
    started = time.perf_counter()
    ids, table, counts, encode_s = mine_from(
        source, module, catalogue, datamodule, window, cfg.batch_size
    )
    mine_s = time.perf_counter() - started
    # One line per training pair, its query's row of the table.
    pos_rows = torch.searchsorted(ids, catalogue.positive_query.long())
    negatives, counts["filled"] = fill(
        table,
        cfg.num_negatives,
        cfg.sample,
        pos_rows,
        catalogue.positive_doc,
        len(catalogue.docs),
        cfg.seed,
    )
    query_rows = catalogue.query_rows[ids]
    texts, docs = datamodule.query_texts, datamodule.doc_texts
    tmp = out.with_name(f".{out.name}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w", encoding="utf-8") as f:
        for row, doc in zip(pos_rows.tolist(), catalogue.positive_doc.tolist(), strict=True):
            line = {
                "query": texts[int(query_rows[row])],
                "doc": docs[doc],
                "negatives": [docs[n] for n in negatives[row].tolist()],
            }
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    result = {
        "queries": len(ids),
        "rows": len(pos_rows),
        "mine_s": mine_s,
        "encode_s": encode_s,
        **counts,
    }
    print(
        f"twotower: mined {len(ids)} queries x {len(docs)} documents in {mine_s:.1f} s "
        f"(encoding {encode_s:.1f} s); wrote {len(pos_rows)} rows to {out}; "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    return result


def _datamodule(cfg: DictConfig, source: str):
    """The data to mine, set up (``cfg.data``, else the checkpoint's training data), and the
    checkpoint's module (``None`` for BM25 and exports)."""
    module = None
    if is_text_source(source):
        if not cfg.get("data"):
            raise ConfigError(
                "data", None, f"must be given with source={source} (data=beir data.dir=DIR)"
            )
        if is_export(source):
            tokenizer = TwoTowerRetriever.load(source).tokenizer
        else:  # BM25 reads the texts: any tokenizer sets the data up
            tokenizer = instantiate(cfg.tokenizer, "tokenizer")
        data_cfg = cfg.data
    else:
        module, tokenizer, train_cfg = load_module(source, "source")
        data_cfg = cfg.data if cfg.get("data") else train_cfg.data
    datamodule = instantiate(data_cfg, "data", tokenizer=tokenizer)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, module


@hydra.main(config_path=str(CONF_DIR), config_name="mine", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        check_config(cfg)
        mine(cfg)


if __name__ == "__main__":
    run_cli(main, str(CONF_DIR), "mine")
