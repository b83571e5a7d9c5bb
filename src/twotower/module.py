"""TwoTowerModule: two encoders, a similarity, negatives and a loss, wired for Lightning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanMetric

from twotower.batch_metrics import Accuracy, RankingMetrics, rankable, top1_accuracy
from twotower.callbacks import last_good_checkpoint
from twotower.errors import TrainingDiverged, check_choice
from twotower.grad_cache import GradCache
from twotower.negatives import Candidates, score_in_batch
from twotower.retrieval.evaluation import CorpusEvaluator, Ranking
from twotower.retrieval.ranking import DEFAULT_METRICS
from twotower.similarity import Similarity


def average_gradients(parameters, world_size: int) -> None:
    """All-reduce every gradient to the processes' mean, in one flat buffer."""
    params = [p for p in parameters if p.requires_grad]
    for p in params:  # every process must send the same layout, used or not
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size
    start = 0
    for g in grads:
        g.copy_(flat[start : start + g.numel()].view_as(g))
        start += g.numel()


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
        scheduler_interval: ``epoch`` steps the scheduler once an epoch, ``step`` once an
            optimizer step (a cosine over the steps of a run shorter than an epoch).
        recall_at: the k of the in-batch Recall@k logged in validation and test.
        metrics: full-corpus metrics logged in validation and test (``ndcg@10`` ...), by
            the module's :class:`~twotower.retrieval.evaluation.CorpusEvaluator`.
        run_depth: documents kept per query in the ranking (the run file's depth).
        config: the resolved run config, kept in checkpoints.
        tokenizer_state: the tokenizer's ``state_dict()``, kept in checkpoints.
        tower_inputs: ``{"query": kwargs, "doc": kwargs}`` the towers were built with beyond
            their config (vocabulary size, feature schema), as plain data for checkpoints.
        grad_cache: rows per tower pass with GradCache (:mod:`twotower.grad_cache`); the
            step then optimises manually, clipping by ``gradient_clip`` (value, algorithm).
        distill: a distillation loss (:mod:`twotower.losses.distillation`) added to ``loss``
            in training steps, with the teacher's vectors bound before training.
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
        scheduler_interval: str = "epoch",
        recall_at: tuple[int, ...] = (1, 5, 10),
        metrics: tuple[str, ...] = DEFAULT_METRICS,
        run_depth: int = 100,
        config: dict | None = None,
        tokenizer_state: dict | None = None,
        tower_inputs: dict | None = None,
        grad_cache: int | None = None,
        gradient_clip: tuple[float | None, str | None] = (None, None),
        distill: nn.Module | None = None,
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
                "grad_cache",
                "gradient_clip",
                "distill",
            ],
            logger=False,
        )
        check_choice("model.scheduler_interval", scheduler_interval, ("epoch", "step"))
        self.optimizer, self.scheduler = optimizer, scheduler
        self.query_tower = query_tower
        self.doc_tower = doc_tower if doc_tower is not None else query_tower
        self.similarity = similarity
        self.negatives = negatives
        self.loss = loss
        self.distill = distill
        self.last_distill: Tensor | None = None  # the last training step's distillation term
        self.train_stats = nn.ModuleDict({k: MeanMetric() for k in ("accuracy", "candidates")})
        self.eval_loss = nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.eval_accuracy = nn.ModuleDict({s: Accuracy() for s in ("val", "test")})
        self.eval_ranking = nn.ModuleDict(
            {s: RankingMetrics(list(recall_at)) for s in ("val", "test")}
        )
        # The full-corpus ranking of validation and test; a bad metric name fails here.
        self.evaluator = CorpusEvaluator(metrics, run_depth)
        self.grad_cache = GradCache(grad_cache) if grad_cache is not None else None
        self.gradient_clip = gradient_clip
        # GradCache runs its own backward passes: Lightning then leaves the step to us.
        self.automatic_optimization = self.grad_cache is None

    def encode_queries(self, inputs: Tensor | dict[str, Tensor]) -> Tensor:
        """Query vectors ``(B, D)`` from tokens ``(B, W, T)`` or a dict of user features."""
        return self.query_tower(inputs)

    def encode_documents(self, inputs: Tensor | dict[str, Tensor]) -> Tensor:
        """Document vectors ``(B, D)`` from tokens ``(B, W, T)`` or a dict of item features."""
        return self.doc_tower(inputs)

    def model_step(self, batch: dict[str, torch.Tensor]):
        """Encode, build candidates and compute the loss; shared by train, val and test."""
        q = self.encode_queries(batch["query"])  # (B, D)
        d = self.encode_documents(batch["doc"])  # (B, D)
        cands = self.negatives(q, d, batch, self.similarity, self.encode_documents)
        return self.objective(cands, batch, q, d), cands, q, d

    def objective(self, cands: Candidates, batch: dict, q: Tensor, d: Tensor) -> Tensor:
        """The step's loss: the supervised loss of the candidates and, in training, the
        weighted distillation term (validation and test report the supervised loss alone)."""
        loss = self.loss(cands.scores, cands.labels, cands.mask)
        if self.distill is None or not self.training:
            return loss
        term = self.distill(cands, batch, q, d)
        self.last_distill = term.detach()
        return self.distill.supervised_weight * loss + self.distill.weight * term

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.grad_cache is None:
            loss, cands, _, _ = self.model_step(batch)
        else:
            loss, cands = self._cached_step(batch)
        n = len(batch["doc_id"])
        if self._logs_this_step():
            self.log("train/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)
            self.log("train/gamma", self.similarity.scale.detach(), batch_size=n)
            if self.last_distill is not None:
                self.log("train/distill", self.last_distill, batch_size=n, sync_dist=True)
        # The batch statistics cost a few passes over the (B, C) scores, as much as the loss:
        # measured on every log_every_n_steps-th batch (epoch means over those batches).
        if batch_idx % self.trainer.log_every_n_steps:
            return loss
        candidates = cands.mask.sum(1)  # (B,)
        if self.global_step == 0 and "label" not in batch and int(candidates.max()) <= 1:
            rank_zero_warn(
                "every query of the first training batch has one candidate, its positive: "
                "the loss is constant and nothing is learned (one document per batch? "
                "check data.batch_size and the negatives)"
            )
        # Epoch means kept in metrics and logged once an epoch: a self.log costs ~1 ms.
        weight = rankable(cands)
        if weight.sum() > 0:  # labelled rows (one candidate each) have nothing to rank
            accuracy = (top1_accuracy(cands) * weight).sum() / weight.sum()
            self.train_stats["accuracy"].update(accuracy.detach(), n)
        self.train_stats["candidates"].update(candidates.float().mean(), n)
        return loss

    def _cached_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, Any]:
        """One optimizer step with GradCache: chunked passes, then clip and step."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # 16-mixed only
        loss, cands = self.grad_cache.backward(self, batch, scaler.scale if scaler else None)
        # Lightning's DDP reducer expects one backward per step; the chunks' passes ran
        # outside it, so the gradients are averaged here, as DDP would.
        if self.trainer.world_size > 1:
            average_gradients(self.parameters(), self.trainer.world_size)
        value, algorithm = self.gradient_clip
        if value:
            self.clip_gradients(
                optimizer, gradient_clip_val=value, gradient_clip_algorithm=algorithm
            )
        optimizer.step()
        self._step_schedulers("step")
        return loss, cands

    def on_train_epoch_end(self) -> None:
        for name, metric in self.train_stats.items():
            if metric.update_called:
                self.log(f"train/{name}", metric.compute())  # compute() syncs processes
            metric.reset()
        if not self.automatic_optimization:
            self._step_schedulers("epoch")

    def _step_schedulers(self, interval: str) -> None:
        """The schedulers of ``interval``, stepped as Lightning does under automatic
        optimization."""
        count = self.current_epoch + 1 if interval == "epoch" else self.global_step
        for config in self.trainer.lr_scheduler_configs:
            if config.interval != interval or count % config.frequency:
                continue
            if not isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                config.scheduler.step()
                continue
            value = self.trainer.callback_metrics.get(self.hparams.scheduler_monitor)
            if value is not None:  # no validation this epoch: nothing to compare
                config.scheduler.step(value)

    def _logs_this_step(self) -> bool:
        """Whether Lightning writes this step's values to the loggers.

        ``self.log`` costs about 1 ms on a CPU (it moves its result state to the value's
        device), so per-step values are logged only on the steps the loggers receive
        (every ``log_every_n_steps``): the same curves, without the cost on other steps.
        """
        connector = getattr(self.trainer, "_logger_connector", None)
        should = getattr(connector, "should_update_logs", True)
        return bool(should or self.trainer.fast_dev_run)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.similarity.clamp_()  # a learnable gamma back inside its bounds, as CLIP does

    @property
    def rankings(self) -> dict[str, Ranking]:
        """The last full-corpus ranking of each stage (``val``, ``test``)."""
        return self.evaluator.rankings

    def _eval_step(self, batch: dict[str, Tensor], stage: str) -> None:
        """Rows: loss and in-batch metrics; query or document batches: the evaluator's."""
        if self.evaluator.takes(batch):
            self.evaluator.collect(self, batch)
            return
        loss, cands, q, d = self.model_step(batch)
        n = len(batch["doc_id"])
        self.eval_loss[stage].update(loss, n)
        self.eval_accuracy[stage].update(cands)
        # Ranking among the local batch's documents, whatever the training negatives, so
        # runs with different negatives, losses and device counts compare.
        ranked = score_in_batch(q, d, batch, self.similarity, global_batch=False)
        self.eval_ranking[stage].update(ranked)

    def _end_eval(self, stage: str) -> None:
        """Log the rows' epoch means (one ``self.log`` each, not one per batch: a call costs
        about 1 ms), then rank the whole corpus for the split's judged queries."""
        if self.eval_loss[stage].update_called:  # data.eval_rows=false: no rows were scored
            kw = {"add_dataloader_idx": False}
            self.log(f"{stage}/loss", self.eval_loss[stage], prog_bar=stage == "val", **kw)
            self.log(f"{stage}/accuracy", self.eval_accuracy[stage], **kw)
            for name, metric in self.eval_ranking[stage].items():
                self.log(f"{stage}/batch/{name}", metric, **kw)
        if self.trainer.sanity_checking:
            self.evaluator.reset()
            return
        datamodule = self.trainer.datamodule
        gather = self.all_gather if self.trainer.world_size > 1 else None
        try:
            ranking = self.evaluator.rank_epoch(
                stage, datamodule.eval_splits[stage], len(datamodule.doc_ids), gather
            )
        except TrainingDiverged as e:
            raise TrainingDiverged(
                f"{e} at step {self.global_step}; last good checkpoint: "
                f"{last_good_checkpoint(self.trainer)}"
            ) from None
        for name, value in (ranking.metrics if ranking else {}).items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "ndcg@10", sync_dist=False)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx=0):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx=0):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    def configure_optimizers(self):
        optimizer = self.optimizer(params=self.parameters())
        if self.scheduler is None:
            return optimizer
        scheduler = {
            "scheduler": self.scheduler(optimizer=optimizer),
            "interval": self.hparams.scheduler_interval,
        }
        if self.automatic_optimization:  # else _step_schedulers reads the monitor itself
            scheduler["monitor"] = self.hparams.scheduler_monitor
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
