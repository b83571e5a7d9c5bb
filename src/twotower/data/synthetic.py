"""SyntheticDataModule: the quick embedded data set that the default config trains on."""

from __future__ import annotations

import logging

import torch

from twotower.data.base import EvalSplit, RetrievalDataModule, rows_dataset
from twotower.data.components.generator import SyntheticData, SyntheticGenerator, SyntheticSplit
from twotower.data.components.tokenizers import Tokenizer
from twotower.data.components.tokens import TokenStore

log = logging.getLogger("twotower.data")


class SyntheticDataModule(RetrievalDataModule):
    """Synthetic queries and documents (see synthetic.py), tokenised once, batched by indexing.

    Validation and test queries are ranked against the whole corpus (train, val and test
    documents); their documents never appear in training.

    Args:
        tokenizer, format, batch_size, eval_batch_size, num_negatives, labelled_negatives,
            max_query_words, max_doc_words, max_word_tokens, shuffle_train, num_workers, seed:
            see :class:`~twotower.data.base.RetrievalDataModule` (``seed`` seeds the generator).
        num_docs, num_topics, stems_per_topic, queries_per_doc, eval_queries_per_doc,
            typo_rate, variant_rate, synonym_rate: see :class:`SyntheticGenerator`.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        num_docs: int = 7000,
        num_topics: int = 20,
        stems_per_topic: int = 60,
        queries_per_doc: int = 4,
        eval_queries_per_doc: int = 3,
        typo_rate: float = 0.1,
        variant_rate: float = 0.5,
        synonym_rate: float = 0.3,
        **kwargs,
    ):
        super().__init__(tokenizer, **kwargs)
        self.generator = SyntheticGenerator(  # validates its own arguments
            num_docs=num_docs,
            num_topics=num_topics,
            stems_per_topic=stems_per_topic,
            queries_per_doc=queries_per_doc,
            eval_queries_per_doc=eval_queries_per_doc,
            num_negatives=self.num_negatives,
            typo_rate=typo_rate,
            variant_rate=variant_rate,
            synonym_rate=synonym_rate,
            seed=self.seed,
        )
        self.data: SyntheticData | None = None

    def prepare(self) -> None:
        """Generate, fit the tokenizer on the training texts, encode."""
        data = self.generator.generate()
        if not self.tokenizer.is_fitted:  # train texts only: val / test stay unseen
            self.tokenizer.fit(data.train.queries + [data.docs[d] for d in data.train.doc_ids])
        self.data = data
        self.corpus = self.encode(data.docs, self.max_doc_words, "documents")
        self.doc_ids = [str(i) for i in range(len(data.docs))]
        self.doc_texts = data.docs
        self.query_texts = data.train.queries  # the training rows' query store
        for name in ("train", "val", "test"):
            split: SyntheticSplit = getattr(data, name)
            queries = self.encode(split.queries, self.max_query_words, f"{name} queries")
            fmt = self.format if name == "train" else "presampled"
            self.datasets[name] = _dataset(
                split, queries, self.corpus, fmt, self.labelled_negatives
            )
            if name != "train":
                self.eval_splits[name] = _eval_split(split, queries, self.doc_ids)
        splits = (data.train, data.val, data.test)
        log.info(
            "synthetic data: documents train/val/test %s, queries %s, %d %s training rows; "
            "%s vocab_size=%d",
            "/".join(str(len(s.doc_ids)) for s in splits),
            "/".join(str(len(s.queries)) for s in splits),
            len(self.datasets["train"]),
            self.format,
            type(self.tokenizer).__name__,
            self.vocab_size,
        )


def _dataset(
    split: SyntheticSplit, queries: TokenStore, docs: TokenStore, fmt: str, negatives: int
):
    """The rows of one split in format ``fmt`` over the shared corpus ``docs``."""
    pos_id = torch.tensor(split.pos_ids)  # (Q,)
    neg_id = torch.tensor(split.neg_ids).view(len(pos_id), -1)  # (Q, K)
    query_id = torch.tensor(split.query_ids)  # (Q,)
    rows = torch.arange(len(pos_id))
    return rows_dataset(queries, docs, rows, pos_id, neg_id, fmt, negatives, query_id)


def _eval_split(split: SyntheticSplit, queries: TokenStore, doc_ids: list[str]) -> EvalSplit:
    """Identical query texts share an id: one judged query each, with all their positives."""
    first: dict[int, int] = {}
    qrels: dict[str, dict[str, int]] = {}
    for row, (qid, pos) in enumerate(zip(split.query_ids, split.pos_ids, strict=True)):
        first.setdefault(qid, row)
        qrels.setdefault(f"q{qid}", {})[doc_ids[pos]] = 1
    rows = torch.tensor(list(first.values()))
    return EvalSplit(
        queries=queries.select(rows),
        query_ids=[f"q{qid}" for qid in first],
        qrels=qrels,
        doc_ids=doc_ids,
    )
