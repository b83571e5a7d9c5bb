"""Teacher vectors for distillation: encoded once, cached on disk, looked up each step.

A teacher is a Hugging Face model (a directory or a package that ships one, as
``tower=transformer`` takes), a twotower checkpoint (``.ckpt``) or a twotower export. It
encodes the whole corpus and every training query once; its score for any (query, document)
pair is then the dot product of two cached vectors, so a step costs no teacher forward pass.
The vectors are written to ``<cache_dir>/teacher-<key>/`` as ``.npy`` files, keyed by the
teacher (the bytes of its files), the encoding settings and the data (the texts encoded and
the document ids): another teacher, another setting or changed data encode again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from twotower.errors import ConfigError, DataError, check, check_choice

log = logging.getLogger(__name__)

KEYS = ("source", "pooling", "normalize", "max_length", "batch_size", "cache_dir")
FORMAT = 1  # the cache layout's version: a new layout encodes again


@dataclass
class TeacherVectors:
    """A teacher's vectors: ``queries`` ``(Q, E)`` of the training query ids ``query_ids``
    ``(Q,)`` (sorted) and ``docs`` ``(N, E)`` of every document, in the data's order."""

    query_ids: Tensor
    queries: Tensor
    docs: Tensor

    def __post_init__(self):
        size = int(self.query_ids.max()) + 1 if len(self.query_ids) else 0
        self.row = torch.full((size,), -1, dtype=torch.long, device=self.queries.device)
        self.row[self.query_ids.long()] = torch.arange(len(self.query_ids), device=self.row.device)

    @property
    def dim(self) -> int:
        return self.docs.shape[1]

    def to(self, device: torch.device | str) -> TeacherVectors:
        if self.docs.device == torch.device(device):
            return self
        moved = (self.query_ids, self.queries, self.docs)
        return TeacherVectors(*(t.to(device) for t in moved))

    def query(self, query_ids: Tensor) -> Tensor:
        """``(B, E)``: the vectors of training query ids ``query_ids`` ``(B,)``."""
        ids = query_ids.long()
        inside = (ids >= 0) & (ids < len(self.row))
        rows = torch.where(inside, self.row[ids.clamp(0, max(len(self.row) - 1, 0))], -1)
        if bool((rows < 0).any()):
            missing = int(ids[rows < 0][0])
            raise RuntimeError(
                f"query id {missing} has no teacher vector: the teacher cache holds the "
                "training queries only (distillation applies to training steps)"
            )
        return self.queries[rows]

    def doc(self, doc_ids: Tensor) -> Tensor:
        """The vectors of documents ``doc_ids`` (any shape; -1, a padding slot, gives row 0)."""
        return self.docs[doc_ids.long().clamp(min=0)]

    def scores(self, query_ids: Tensor, doc_ids: Tensor) -> Tensor:
        """``(B, C)`` teacher dot products of queries ``(B,)`` and candidates ``doc_ids``,
        shared ``(C,)`` (one matmul) or per row ``(B, C)``."""
        q = self.query(query_ids)  # (B, E)
        if doc_ids.dim() == 1:
            return q @ self.doc(doc_ids).T
        return torch.einsum("be,bce->bc", q, self.doc(doc_ids))


# -- teachers -------------------------------------------------------------------------------


def kind_of(source: str) -> str:
    """``export``, ``checkpoint`` or ``hf`` (a model directory or package)."""
    path = Path(str(source)).expanduser()
    if (path / "manifest.json").is_file():
        return "export"
    if path.is_file():
        return "checkpoint"
    return "hf"


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(f"{path.name}:{path.stat().st_size}\n".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def teacher_key(settings: dict[str, Any]) -> str:
    """What identifies the teacher's vectors apart from the data: its files and settings."""
    source = str(settings["source"])
    kind = kind_of(source)
    if kind == "export":
        manifest = json.loads((Path(source) / "manifest.json").read_text())
        files = manifest.get("fingerprint") or _hash_files(
            [p for p in Path(source).iterdir() if p.is_file()]
        )
        used = {}
    elif kind == "checkpoint":
        files, used = _hash_files([Path(source)]), {}
    else:
        from twotower.hf import model_dir

        directory = model_dir(source, "teacher.source")
        weights = [
            p for p in directory.iterdir() if p.suffix in (".json", ".safetensors", ".bin", ".txt")
        ]
        files = _hash_files(weights)
        used = {k: settings[k] for k in ("pooling", "normalize", "max_length")}
    return json.dumps({"kind": kind, "files": files, **used}, sort_keys=True)


class _Encoders(nn.Module):
    """A Hugging Face model as the two encoders :class:`CorpusEvaluator.encode` takes."""

    def __init__(self, tower: nn.Module, normalize: bool):
        super().__init__()
        from twotower.similarity import Similarity

        self.tower = tower.eval()
        self.similarity = Similarity("cosine" if normalize else "dot", scale=1.0)

    @property
    def device(self) -> torch.device:
        return next(self.tower.parameters()).device

    def encode_queries(self, inputs: Tensor) -> Tensor:
        return self.tower(inputs)

    encode_documents = encode_queries


def _encode_texts(model, tokenizer, texts: list[str], side: str, limits: tuple, batch_size: int):
    """Search-ready vectors of ``texts``, encoded by length (little padding), in text order."""
    from twotower.retrieval.evaluation import CorpusEvaluator

    store, _ = tokenizer.encode_store(texts, *limits)
    return CorpusEvaluator().encode(model, store, side, batch_size, by_length=True)


def encode_with_teacher(
    settings: dict[str, Any], query_texts: list[str], doc_ids: list[str], doc_texts: list[str]
) -> tuple[Tensor, Tensor]:
    """The teacher's vectors of ``query_texts`` and of the documents, as float32 tensors."""
    source, batch_size = str(settings["source"]), settings["batch_size"]
    kind = kind_of(source)
    if kind == "export":
        from twotower.serving import TwoTowerRetriever, load_doc_embeddings

        retriever = TwoTowerRetriever.load(source)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a query of unknown words still gets a vector
            chunks = [
                retriever._encode(query_texts[i : i + batch_size], stacklevel=2)
                for i in range(0, len(query_texts), batch_size)
            ]
        queries = torch.cat(chunks) if chunks else torch.zeros(0, 0)
        exported = {doc: i for i, doc in enumerate(retriever.doc_ids)}
        at = [exported.get(doc, -1) for doc in doc_ids]
        missing = [doc for doc, i in zip(doc_ids, at, strict=True) if i < 0]
        if missing:
            raise DataError(
                Path(source, "docs.jsonl"),
                None,
                "_id",
                f"{len(missing)} documents of the data are not in the export (e.g. "
                f"{missing[0]!r}): a teacher export must hold the whole corpus",
            )
        docs = load_doc_embeddings(source)[torch.tensor(at, dtype=torch.long)].float()
        return queries.float(), docs
    if kind == "checkpoint":
        from twotower.checkpoint import load_module

        model, tokenizer, cfg = load_module(source, "teacher.source")
        data = cfg.data
        limits_q = (data.get("max_query_words", 32), data.get("max_word_tokens", 32))
        limits_d = (data.get("max_doc_words", 128), data.get("max_word_tokens", 32))
    else:
        from twotower.data.components.hf_tokenizer import HFTokenizer
        from twotower.towers.transformer import TransformerTower

        tokenizer = HFTokenizer(source, settings["max_length"])
        tower = TransformerTower(
            tokenizer.vocab_size, source, pooling=settings["pooling"], normalize=False
        )
        model = _Encoders(tower, settings["normalize"])
        limits_q = limits_d = (settings["max_length"], None)
    queries = _encode_texts(model, tokenizer, query_texts, "query", limits_q, batch_size)
    docs = _encode_texts(model, tokenizer, doc_texts, "doc", limits_d, batch_size)
    return queries, docs


# -- the cache ------------------------------------------------------------------------------


def check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The ``teacher`` settings with their defaults; a bad key or value is a ConfigError."""
    unknown = set(settings) - set(KEYS)
    check(not unknown, "teacher", sorted(unknown), f"unknown keys; valid: {', '.join(KEYS)}")
    out = {
        "source": settings.get("source"),
        "pooling": settings.get("pooling", "mean"),
        "normalize": settings.get("normalize", True),
        "max_length": settings.get("max_length", 128),
        "batch_size": settings.get("batch_size", 256),
        "cache_dir": settings.get("cache_dir"),
    }
    check(bool(out["source"]), "teacher.source", out["source"], "must name a teacher")
    check_choice("teacher.pooling", out["pooling"], ("mean", "cls", "last"))
    check(isinstance(out["normalize"], bool), "teacher.normalize", out["normalize"], "a bool")
    for key in ("max_length", "batch_size"):
        value = out[key]
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
        check(ok, f"teacher.{key}", value, "must be an integer > 0")
    kind = kind_of(out["source"])
    if kind == "hf" and str(out["source"]).endswith(".ckpt"):
        raise ConfigError("teacher.source", out["source"], "no such checkpoint file")
    if kind == "hf":
        from twotower.hf import model_dir

        model_dir(out["source"], "teacher.source")  # an unknown name fails before any work
    return out


def training_texts(datamodule, source: str) -> tuple[Tensor, list[str]]:
    """The training query ids (sorted) and their texts; a ConfigError for data without texts."""
    catalogue = datamodule.catalogue()
    texts = getattr(datamodule, "query_texts", None)
    if not texts or not getattr(datamodule, "doc_texts", None):
        raise ConfigError(
            "teacher.source",
            source,
            "encodes texts, but these data have none (features): distillation needs text data",
        )
    ids = torch.unique(catalogue.positive_query.long())
    return ids, [texts[int(r)] for r in catalogue.query_rows[ids]]


def data_key(ids: Tensor, query_texts: list[str], doc_ids: list[str], doc_texts: list[str]):
    """sha256 of what the teacher encodes: the training queries' ids and texts, the corpus."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(ids.numpy(), dtype=np.int64).tobytes())
    for part in (query_texts, doc_ids, doc_texts):
        h.update(len(part).to_bytes(8, "little"))
        for text in part:
            h.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()


def cache_path(settings: dict[str, Any], key: str) -> Path | None:
    if settings["cache_dir"] is None:
        return None
    return Path(settings["cache_dir"]) / f"teacher-{key[:24]}"


def read_cache(path: Path, key: str) -> TeacherVectors | None:
    """The vectors cached at ``path`` if they were written for ``key``, else ``None``."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("key") != key or meta.get("format") != FORMAT:
            return None
        arrays = [np.load(path / f"{name}.npy") for name in ("query_ids", "queries", "docs")]
    except (OSError, ValueError):
        return None  # absent, or half of a copy: encode again
    return TeacherVectors(*(torch.from_numpy(a) for a in arrays))


def write_cache(path: Path, key: str, vectors: TeacherVectors, meta: dict[str, Any]) -> None:
    """Write into a temporary directory beside ``path``, then rename: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkdtemp: its mode 0o700 would be renamed into place; a mkdir honours the umask.
    tmp = path.parent / f".{path.name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for name in ("query_ids", "queries", "docs"):
            np.save(tmp / f"{name}.npy", getattr(vectors, name).cpu().numpy())
        (tmp / "meta.json").write_text(json.dumps({**meta, "key": key, "format": FORMAT}))
        if path.exists():  # stale (another key under the same prefix, or a bad copy)
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def teacher_vectors(settings: dict[str, Any], datamodule) -> tuple[TeacherVectors, dict]:
    """The teacher's vectors for ``datamodule``'s training queries and corpus, from the
    cache when it holds them, else encoded (and cached). Returns them and a log entry."""
    settings = check_settings(settings)
    started = time.perf_counter()
    ids, texts = training_texts(datamodule, str(settings["source"]))
    doc_ids, doc_texts = list(datamodule.doc_ids), list(datamodule.doc_texts)
    key = hashlib.sha256(
        (teacher_key(settings) + data_key(ids, texts, doc_ids, doc_texts)).encode()
    ).hexdigest()
    path = cache_path(settings, key)
    vectors = read_cache(path, key) if path is not None else None
    entry = {"source": str(settings["source"]), "queries": len(ids), "documents": len(doc_ids)}
    if vectors is not None:
        entry.update(cached=True, seconds=time.perf_counter() - started, path=str(path))
        return vectors, entry
    queries, docs = encode_with_teacher(settings, texts, doc_ids, doc_texts)
    vectors = TeacherVectors(ids, queries.contiguous(), docs.contiguous())
    entry.update(cached=False, encode_s=time.perf_counter() - started, dim=vectors.dim)
    if path is not None:
        write_cache(path, key, vectors, entry)
        entry["path"] = str(path)
    entry["seconds"] = time.perf_counter() - started
    return vectors, entry


class TeacherCache(pl.Callback):
    """Binds the teacher's vectors to ``module.distill`` before training (``setup``).

    Process 0 encodes (or reads) and writes the cache; the others wait, then read it. The
    log entry (seconds, cached or not) goes into ``metrics.json`` as ``teacher``.
    """

    def __init__(self, settings: dict[str, Any]):
        self.settings = check_settings(dict(settings))
        self.entry: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or module.distill is None or module.distill.teacher is not None:
            return
        datamodule = trainer.datamodule
        if trainer.world_size > 1 and self.settings["cache_dir"] is not None:
            if trainer.is_global_zero:
                teacher_vectors(self.settings, datamodule)
            trainer.strategy.barrier("teacher")
        vectors, self.entry = teacher_vectors(self.settings, datamodule)
        how = "read from the cache" if self.entry["cached"] else "encoded"
        log.info(
            "teacher %s: %d training queries and %d documents %s in %.1f s",
            self.entry["source"],
            self.entry["queries"],
            self.entry["documents"],
            how,
            self.entry["seconds"],
        )
        module.distill.bind(vectors, module)
