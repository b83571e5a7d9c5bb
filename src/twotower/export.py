"""Export a checkpoint for serving: towers, tokenizer, document embeddings and a search index.

python -m twotower.export ckpt=PATH out=exports/gcide index=hnsw

The directory loads with :class:`twotower.serving.TwoTowerRetriever` (the layout is in its
docstring) or is searched with ``python -m twotower.search DIR "query"``.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from twotower import __version__
from twotower.build import doc_tower_config, instantiate, restore_kwargs
from twotower.checkpoint import load_module
from twotower.config_check import CONF_DIR, check_config, run_cli
from twotower.errors import ConfigError, user_errors
from twotower.retrieval.evaluation import CorpusEvaluator
from twotower.serving import TOWERS, fingerprint, module_spec


def _kwargs(cfg: DictConfig, **extra: Any) -> dict[str, Any]:
    """A part's constructor arguments from its config node (without ``_target_``)."""
    kwargs = OmegaConf.to_container(cfg, resolve=True)
    kwargs.pop("_target_")
    return {**kwargs, **extra}


def export(cfg: DictConfig) -> Path:
    """Write the export directory ``cfg.out``; returns its path."""
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.overwrite:
        raise ConfigError("out", str(out), "exists and is not empty (overwrite=true replaces it)")
    module, tokenizer, train_cfg = load_module(cfg.ckpt)
    if "features" in (module.hparams.get("tower_inputs") or {}).get("query", {}):
        raise ConfigError(
            "ckpt",
            str(cfg.ckpt),
            "holds feature towers (users and items): the export is a text retriever; "
            "evaluate it with python -m twotower.evaluate",
        )
    datamodule = instantiate(
        cfg.data if cfg.get("data") else train_cfg.data, "data", tokenizer=tokenizer
    )
    datamodule.setup("test")
    index = instantiate(cfg.index, "index")
    # Build in a temporary sibling, then swap in: a failed export leaves nothing half-written.
    # A plain mkdir (not mkdtemp, whose mode 0o700 would be renamed into place): the export
    # gets the mode of any new directory, 0o777 less the umask.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        _write(cfg, out, tmp, module, tokenizer, train_cfg, datamodule, index)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def _write(cfg, out: Path, tmp: Path, module, tokenizer, train_cfg, datamodule, index) -> None:
    """Encode, index and write the export into ``tmp``, then rename it to ``out``."""
    started = time.perf_counter()
    # On disk: each batch goes into a memory-mapped .npy as it is encoded, so the vectors
    # never need to fit in memory (torch.save below then streams them from the file).
    scratch = tmp / "encoded.npy" if cfg.doc_embeddings_on_disk else None
    by_length = getattr(tokenizer, "encode_by_length", False)  # a transformer's tokenizer
    docs = CorpusEvaluator().encode(
        module, datamodule.corpus, "doc", cfg.batch_size, scratch, by_length
    )
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    index.build(docs)  # (D, d)
    index_s = time.perf_counter() - started

    vocab = tokenizer.vocab_size
    doc_cfg = doc_tower_config(train_cfg)
    model = {
        "query_tower": module_spec(
            module.query_tower,
            train_cfg.tower._target_,
            _kwargs(train_cfg.tower, vocab_size=vocab, **restore_kwargs(module.query_tower)),
        ),
        "doc_tower": module_spec(
            module.doc_tower,
            doc_cfg._target_,
            _kwargs(doc_cfg, vocab_size=vocab, **restore_kwargs(module.doc_tower)),
        ),
        "similarity": module_spec(
            module.similarity, train_cfg.similarity._target_, _kwargs(train_cfg.similarity)
        ),
    }
    tokenizer_state = tokenizer.state_dict()
    fp = fingerprint({name: model[name]["state_dict"] for name in TOWERS}, tokenizer_state)
    index.fingerprint = fp
    manifest = {
        "twotower_version": __version__,
        "fingerprint": fp,
        "checkpoint": str(Path(cfg.ckpt).resolve()),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "documents": len(datamodule.doc_ids),
        "dim": docs.shape[1],
        "similarity": train_cfg.similarity.kind,
        "index": index.kind,
        "max_query_words": datamodule.max_query_words,
        "max_doc_words": datamodule.max_doc_words,
        "max_word_tokens": datamodule.max_word_tokens,
        "encode_s": encode_s,
        "index_build_s": index_s,
    }
    torch.save(model, tmp / "model.pt")
    (tmp / "tokenizer.json").write_text(json.dumps(tokenizer_state) + "\n")
    torch.save({"embeddings": docs, "fingerprint": fp}, tmp / "doc_embeddings.pt")
    del docs
    if scratch is not None:
        scratch.unlink()
    with open(tmp / "docs.jsonl", "w", encoding="utf-8") as f:
        for doc_id, text in zip(datamodule.doc_ids, datamodule.doc_texts, strict=True):
            f.write(json.dumps({"_id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    index.save(tmp / "index")
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(
        f"twotower: exported {manifest['documents']} documents (dim {manifest['dim']}, "
        f"{index.kind} index) to {out}: encoding {encode_s:.1f} s, indexing {index_s:.1f} s"
    )


@hydra.main(config_path=str(CONF_DIR), config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        check_config(cfg)
        export(cfg)


if __name__ == "__main__":
    run_cli(main, str(CONF_DIR), "export")
