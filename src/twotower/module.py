"""TwoTowerModule: two encoders, a similarity, negatives and a loss, wired for Lightning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import move_data_to_device, rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric

from twotower.callbacks import last_good_checkpoint
from twotower.data.features import FeatureStore
from twotower.data.tokens import TokenStore
from twotower.errors import TrainingDiverged
from twotower.metrics import Accuracy, RankingMetrics, rankable, top1_accuracy
from twotower.negatives import Candidates, score_in_batch
from twotower.retrieval.evaluation import Ranking, evaluate
from twotower.retrieval.ranking import DEFAULT_METRICS, parse_metrics
from twotower.similarity import Similarity


class TwoTowerModule(pl.LightningModule):
    """A query tower and a document tower fused only at the similarity (late fusion).

    Args:
        query_tower: maps query tokens ``(B, W, T)`` to ``(B, D)``.
        doc_tower: maps document tokens to ``(B, D)``; ``None`` shares the query tower
            (one set of weights for both sides, as the seed's shared embedding).
        similarity: gamma-scaled cosine or dot.
        negatives: builds each query's candidates (see :mod:`twotower.negatives`).
        loss: maps ``(scores, labels, mask)`` to a scalar.
        optimizer: a partial optimizer taking the parameters (Hydra ``_partial_: true``).
        scheduler: an optional partial LR scheduler taking the optimizer.
        scheduler_monitor: metric a ReduceLROnPlateau scheduler watches.
        recall_at: the k of the in-batch Recall@k logged in validation and test.
        metrics: full-corpus metrics logged in validation and test (``ndcg@10`` ...).
        run_depth: documents kept per query in the test ranking (the run file's depth).
        config: the resolved run config, kept in checkpoints.
        tokenizer_state: the tokenizer's ``state_dict()``, kept in checkpoints.
        tower_inputs: ``{"query": kwargs, "doc": kwargs}`` the towers were built with beyond
            their config (vocabulary size, feature schema), as plain data for checkpoints.
    """

    def __init__(
        self,
        query_tower: nn.Module,
        doc_tower: nn.Module | None,
        similarity: Similarity,
        negatives: Callable[..., Candidates],
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_monitor: str = "val/loss",
        recall_at: tuple[int, ...] = (1, 5, 10),
        metrics: tuple[str, ...] = DEFAULT_METRICS,
        run_depth: int = 100,
        config: dict | None = None,
        tokenizer_state: dict | None = None,
        tower_inputs: dict | None = None,
    ):
        super().__init__()
        # Only plain data goes into checkpoints (they load with weights_only=True): the
        # resolved run config and tokenizer state, enough to rebuild and use the towers.
        self.save_hyperparameters(
            ignore=[
                "query_tower",
                "doc_tower",
                "similarity",
                "negatives",
                "loss",
                "optimizer",
                "scheduler",
            ],
            logger=False,
        )
        self.optimizer, self.scheduler = optimizer, scheduler
        self.query_tower = query_tower
        self.doc_tower = doc_tower if doc_tower is not None else query_tower
        self.similarity = similarity
        self.negatives = negatives
        self.loss = loss
        self.eval_loss = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.eval_accuracy = nn.ModuleDict({s: Accuracy() for s in ("val", "test")})
        self.eval_ranking = nn.ModuleDict(
            {s: RankingMetrics(list(recall_at)) for s in ("val", "test")}
        )
        parse_metrics(metrics)  # a bad name fails here, not after the first epoch
        self.metrics, self.run_depth = list(metrics), run_depth
        self._encoded: dict[str, list[tuple[Tensor, Tensor]]] = {"query": [], "doc": []}
        self.rankings: dict[str, Ranking] = {}  # the last full-corpus ranking per stage

    def encode_queries(self, inputs: Tensor | dict[str, Tensor]) -> Tensor:
        """Query vectors ``(B, D)`` from tokens ``(B, W, T)`` or a dict of user features."""
        return self.query_tower(inputs)

    def encode_documents(self, inputs: Tensor | dict[str, Tensor]) -> Tensor:
        """Document vectors ``(B, D)`` from tokens ``(B, W, T)`` or a dict of item features."""
        return self.doc_tower(inputs)

    @torch.inference_mode()
    def embed(self, store: TokenStore | FeatureStore, side: str, batch_size: int = 1024) -> Tensor:
        """Search-ready vectors ``(N, D)`` of every row of ``store`` (``side``: query or doc).

        Vectors are prepared for inner product (normalised for cosine), on the CPU.
        """
        encode = {"query": self.encode_queries, "doc": self.encode_documents}[side]
        out = []
        for start in range(0, len(store), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(store)))
            inputs = move_data_to_device(store.batch(rows), self.device)
            out.append(self.similarity.prepare(encode(inputs)).cpu())
        return torch.cat(out).float() if out else torch.zeros(0, 0)

    def model_step(self, batch: dict[str, torch.Tensor]):
        """Encode, build candidates and compute the loss; shared by train, val and test."""
        q = self.encode_queries(batch["query"])  # (B, D)
        d = self.encode_documents(batch["doc"])  # (B, D)
        cands = self.negatives(q, d, batch, self.similarity, self.encode_documents)
        return self.loss(*cands), cands, q, d

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, cands, _, _ = self.model_step(batch)
        n = len(batch["doc_id"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("train/gamma", self.similarity.scale.detach(), batch_size=n)
        # The batch statistics cost a few passes over the (B, C) scores, as much as the loss:
        # measured on every log_every_n_steps-th batch (epoch means over those batches).
        if batch_idx % self.trainer.log_every_n_steps:
            return loss
        kw = {"on_step": False, "on_epoch": True, "batch_size": n, "sync_dist": True}
        candidates = cands.mask.sum(1)  # (B,)
        if self.global_step == 0 and "label" not in batch and int(candidates.max()) <= 1:
            rank_zero_warn(
                "every query of the first training batch has one candidate, its positive: "
                "the loss is constant and nothing is learned (one document per batch? "
                "check data.batch_size and the negatives)"
            )
        weight = rankable(cands)
        if weight.sum() > 0:  # labelled rows (one candidate each) have nothing to rank
            accuracy = (top1_accuracy(cands) * weight).sum() / weight.sum()
            self.log("train/accuracy", accuracy, **kw)
        self.log("train/candidates", candidates.float().mean(), **kw)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.similarity.clamp_()  # a learnable gamma back inside its bounds, as CLIP does

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        """Rows: loss and in-batch metrics; query or document batches: encode for the ranking."""
        if "doc" not in batch:  # the split's judged queries
            vectors = self.similarity.prepare(self.encode_queries(batch["query"]))
            self._encoded["query"].append((batch["index"], vectors))
            return
        if "query" not in batch:  # the corpus
            vectors = self.similarity.prepare(self.encode_documents(batch["doc"]))
            self._encoded["doc"].append((batch["index"], vectors))
            return
        loss, cands, q, d = self.model_step(batch)
        n = len(batch["doc_id"])
        self.eval_loss[stage].update(loss, n)
        self.eval_accuracy[stage].update(cands)
        # Ranking among the local batch's documents, whatever the training negatives, so
        # runs with different negatives, losses and device counts compare.
        ranked = score_in_batch(q, d, batch, self.similarity, global_batch=False)
        self.eval_ranking[stage].update(ranked)
        kw = {"batch_size": n, "add_dataloader_idx": False}
        self.log(f"{stage}/loss", self.eval_loss[stage], prog_bar=stage == "val", **kw)
        self.log(f"{stage}/accuracy", self.eval_accuracy[stage], **kw)
        for name, metric in self.eval_ranking[stage].items():
            self.log(f"{stage}/batch/{name}", metric, **kw)

    def _gather(self, kind: str, n: int) -> tuple[Tensor, Tensor]:
        """The ``(n, D)`` vectors encoded this epoch (from every process) and a present mask."""
        parts = self._encoded[kind]
        self._encoded[kind] = []
        index = torch.cat([i for i, _ in parts])
        vectors = torch.cat([v for _, v in parts]).float()
        if self.trainer.world_size > 1:  # samplers pad to equal shards: shapes agree
            index = self.all_gather(index).flatten()
            vectors = self.all_gather(vectors).flatten(0, -2)
        out = vectors.new_zeros(n, vectors.shape[-1])
        out[index] = vectors
        present = torch.zeros(n, dtype=torch.bool, device=out.device)
        present[index] = True
        return out.cpu(), present.cpu()

    def _rank_corpus(self, stage: str) -> None:
        """Rank the whole corpus for the split's judged queries and log the metrics."""
        if self.trainer.sanity_checking or not self._encoded["doc"]:
            self._encoded = {"query": [], "doc": []}
            return
        datamodule = self.trainer.datamodule
        split = datamodule.eval_splits[stage]
        queries, q_present = self._gather("query", len(split.query_ids))
        docs, d_present = self._gather("doc", len(datamodule.doc_ids))
        for side, vectors in (("query", queries), ("document", docs)):
            if not torch.isfinite(vectors).all():
                raise TrainingDiverged(
                    f"{stage}: the {side} tower gives non-finite vectors at step "
                    f"{self.global_step}; last good checkpoint: "
                    f"{last_good_checkpoint(self.trainer)}"
                )
        if not (q_present.all() and d_present.all()):
            rank_zero_warn(
                f"{stage}: ranked {int(d_present.sum())}/{len(d_present)} documents for "
                f"{int(q_present.sum())}/{len(q_present)} queries (limit_{stage}_batches?): "
                "the full-corpus metrics cover only those"
            )
        ranking = evaluate(
            queries,
            docs,
            split.judged,
            self.metrics,
            depth=self.run_depth,
            query_present=q_present,
            doc_present=d_present,
            exclude=split.exclude,
            candidates=split.candidates,
        )
        self.rankings[stage] = ranking
        for name, value in ranking.metrics.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "ndcg@10", sync_dist=False)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx=0):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._rank_corpus("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx=0):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._rank_corpus("test")

    def configure_optimizers(self):
        optimizer = self.optimizer(params=self.parameters())
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.scheduler_monitor},
        }
