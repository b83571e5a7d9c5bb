"""A tiny randomly initialised BERT and its tokenizer, written to disk: no weights needed.

Needs the ``hf`` extra; tests that use it skip without it (the suite passes either way).
"""

from __future__ import annotations

import importlib.util
import string
from pathlib import Path

import torch

HAS_HF = all(importlib.util.find_spec(m) is not None for m in ("transformers", "tokenizers"))


def write_tiny_model(directory: Path) -> Path:
    """A 2-layer, 16-wide BERT whose WordPiece vocabulary covers any ASCII lowercase text."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    chars = string.ascii_lowercase + string.digits + string.punctuation
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *chars, *(f"##{c}" for c in chars)]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.save(str(directory / "tokenizer.json"))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(directory))
    return directory


def hf_overrides(model: Path) -> list[str]:
    """Overrides that train ``tower=transformer`` on the tiny model with its tokenizer."""
    return [f"tower.model={model}", "tokenizer=hf", f"tokenizer.model={model}"]


def uses_hf(cfg) -> bool:
    """Whether a composed config has a transformer tower or the hf tokenizer."""
    from omegaconf import OmegaConf

    targets = [
        OmegaConf.select(cfg, f"{k}._target_") or "" for k in ("tower", "doc_tower", "tokenizer")
    ]
    return any(t.endswith(("TransformerTower", "HFTokenizer")) for t in targets)


def pretrained_fixes(cfg, model: Path) -> list[str]:
    """Overrides that point every transformer tower and the hf tokenizer of ``cfg`` at
    ``model`` (and give a transformer tower its own tokenizer)."""
    from omegaconf import OmegaConf

    def target(key: str) -> str:
        return OmegaConf.select(cfg, f"{key}._target_") or ""

    fixes = [
        f"{k}.model={model}"
        for k in ("tower", "doc_tower")
        if target(k).endswith("TransformerTower")
    ]
    if not target("tokenizer").endswith("HFTokenizer"):
        fixes.append("tokenizer=hf")
    return [*fixes, f"tokenizer.model={model}"]
