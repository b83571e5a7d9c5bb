"""TwoTowerModule: two encoders, a similarity, negatives and a loss, wired for Lightning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MeanMetric

from twotower.metrics import Accuracy, RankingMetrics, rankable, top1_accuracy
from twotower.negatives import Candidates, in_batch
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
        config: the resolved run config, kept in checkpoints.
        tokenizer_state: the tokenizer's ``state_dict()``, kept in checkpoints.
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
        config: dict | None = None,
        tokenizer_state: dict | None = None,
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

    def encode_queries(self, tokens: torch.Tensor) -> torch.Tensor:
        """Query vectors ``(B, D)`` from tokens ``(B, W, T)``."""
        return self.query_tower(tokens)

    def encode_documents(self, tokens: torch.Tensor) -> torch.Tensor:
        """Document vectors ``(B, D)`` from tokens ``(B, W, T)``."""
        return self.doc_tower(tokens)

    def model_step(self, batch: dict[str, torch.Tensor]):
        """Encode, build candidates and compute the loss; shared by train, val and test."""
        q = self.encode_queries(batch["query"])  # (B, D)
        d = self.encode_documents(batch["doc"])  # (B, D)
        cands = self.negatives(q, d, batch, self.similarity, self.encode_documents)
        return self.loss(*cands), cands, q, d

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, cands, _, _ = self.model_step(batch)
        n = batch["query"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
        weight = rankable(cands)
        if weight.sum() > 0:  # labelled rows (one candidate each) have nothing to rank
            accuracy = (top1_accuracy(cands) * weight).sum() / weight.sum()
            self.log("train/accuracy", accuracy, on_epoch=True, batch_size=n, sync_dist=True)
        self.log("train/candidates", cands.mask.sum(1).float().mean(), batch_size=n, sync_dist=True)
        self.log("train/gamma", self.similarity.scale.detach(), batch_size=n)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        loss, cands, q, d = self.model_step(batch)
        n = batch["query"].shape[0]
        self.eval_loss[stage].update(loss, n)
        self.eval_accuracy[stage].update(cands)
        # Ranking among the local batch's documents, whatever the training negatives, so
        # runs with different negatives, losses and device counts compare.
        ranked = in_batch(q, d, batch, self.similarity, global_batch=False)
        self.eval_ranking[stage].update(ranked)
        self.log(f"{stage}/loss", self.eval_loss[stage], prog_bar=stage == "val", batch_size=n)
        self.log(f"{stage}/accuracy", self.eval_accuracy[stage], batch_size=n)
        for name, metric in self.eval_ranking[stage].items():
            self.log(f"{stage}/{name}", metric, prog_bar=name.startswith("mrr"), batch_size=n)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer(params=self.parameters())
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.scheduler_monitor},
        }
