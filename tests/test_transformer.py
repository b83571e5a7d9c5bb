"""tower=transformer and tokenizer=hf on a tiny random BERT built here (no weights needed)."""

import json
import shutil
import sys
import warnings

import pytest
import pytorch_lightning as pl
import torch

from tests.configs import LOSSES
from tests.conftest import TINY, write_beir
from tests.hf_tiny import hf_overrides
from twotower.build import build_for_data, instantiate
from twotower.checkpoint import load_module
from twotower.data.components.hf_tokenizer import HFTokenizer
from twotower.data.components.tokenizers import tokenizer_from_state
from twotower.errors import ConfigError
from twotower.retrieval.runfile import read_run
from twotower.train import train


def test_tokenizer_adds_special_tokens_shifts_ids_and_truncates(tiny_hf):
    tok = HFTokenizer(str(tiny_hf), max_length=6)
    assert tok.tokens("ab c") == [["[CLS]"], ["a"], ["##b"], ["c"], ["[SEP]"]]
    store, cut = tok.encode_store(["ab c", "abcdefgh"], max_words=32)
    ids = store.padded()[..., 0]  # (2, 6)
    vocab = json.loads((tiny_hf / "tokenizer.json").read_text())["model"]["vocab"]
    expected = [vocab[t] + 1 for t in ("[CLS]", "a", "##b", "c", "[SEP]")]  # 0 is padding here
    cls, sep = expected[0], expected[-1]
    assert ids[0].tolist() == [*expected, 0]
    assert ids[1, 0] == cls and ids[1, -1] == sep and cut == 1  # cut to 6, [SEP] kept
    store, cut = tok.encode_store(["ab c"], max_words=4)  # data.max_*_words caps it too
    assert store.padded()[0, :, 0].tolist()[-1] == sep and store.padded().shape[1] == 4


def test_tokenizer_state_rebuilds_it_without_the_model_directory(tiny_hf, tmp_path):
    copy = shutil.copytree(tiny_hf, tmp_path / "model")
    state = HFTokenizer(str(copy)).state_dict()
    shutil.rmtree(copy)
    rebuilt = tokenizer_from_state(state)
    assert rebuilt.state_dict() == state
    assert torch.equal(
        rebuilt.encode(["ab c"], 8)[0], HFTokenizer(str(tiny_hf)).encode(["ab c"], 8)[0]
    )


def test_tower_pools_present_tokens_only(tiny_hf):
    from twotower.towers.transformer import TransformerTower

    tok = HFTokenizer(str(tiny_hf))
    short = tok.encode(["ab c"], 32)[0]  # (1, 5, 1)
    padded = torch.cat([short, torch.zeros(1, 4, 1, dtype=torch.long)], 1)  # more padding
    for pooling in ("mean", "cls", "last"):
        tower = TransformerTower(tok.vocab_size, str(tiny_hf), pooling=pooling).eval()
        assert tower.output_dim == 16
        torch.testing.assert_close(tower(short), tower(padded), rtol=0, atol=1e-5)
    projected = TransformerTower(tok.vocab_size, str(tiny_hf), output_dim=8, normalize=True)
    out = projected(short)
    assert out.shape == (1, 8) and torch.allclose(out.norm(dim=-1), torch.ones(1))


def tower_grads(tower, tokens) -> dict[str, torch.Tensor | None]:
    """Every parameter's gradient after one backward of the summed outputs (None: none)."""
    tower.zero_grad(set_to_none=True)
    tower(tokens).sum().backward()
    return {n: p.grad for n, p in tower.named_parameters()}


def test_freeze_layers_freezes_the_embeddings_and_the_first_blocks(tiny_hf):
    from twotower.towers.transformer import TransformerTower

    tower = TransformerTower(141, str(tiny_hf), freeze_layers=1)
    frozen_prefixes = ("encoder.embeddings.", "encoder.encoder.layer.0.")
    # Word, position and token-type tables and the LayerNorm: all frozen, not the first alone.
    embeddings = {n for n, _ in tower.named_parameters() if n.startswith(frozen_prefixes[0])}
    assert {n.split(".")[2] for n in embeddings} == {
        "word_embeddings",
        "position_embeddings",
        "token_type_embeddings",
        "LayerNorm",
    }
    tokens = HFTokenizer(str(tiny_hf)).encode(["ab c", "de"], 32)[0]
    for name, grad in tower_grads(tower, tokens).items():
        param = tower.get_parameter(name)
        if name.startswith(frozen_prefixes):
            assert not param.requires_grad and grad is None, name
        else:
            assert param.requires_grad and grad is not None and grad.abs().sum() > 0, name
    with pytest.raises(ConfigError, match="^freeze_layers=3: the model has 2 layers"):
        TransformerTower(141, str(tiny_hf), freeze_layers=3)


@pytest.mark.parametrize("freeze_layers", [0, 1])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_hf, freeze_layers):
    from twotower.towers.transformer import TransformerTower

    tokens = HFTokenizer(str(tiny_hf)).encode(["ab c", "de fgh"], 32)[0]
    plain = TransformerTower(141, str(tiny_hf), freeze_layers=freeze_layers)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers 5 deprecates the old call
        checkpointed = TransformerTower(
            141, str(tiny_hf), freeze_layers=freeze_layers, gradient_checkpointing=True
        )

    def enabled(tower) -> bool:  # the flag Hugging Face's layers read
        return any(getattr(m, "gradient_checkpointing", False) for m in tower.encoder.modules())

    assert enabled(checkpointed) and not enabled(plain)
    # Dropout is on (train mode): the recomputation must replay the same masks.
    torch.manual_seed(0)
    expected = tower_grads(plain, tokens)
    torch.manual_seed(0)
    got = tower_grads(checkpointed, tokens)
    assert sum(g is not None for g in got.values()) > 0
    for name, grad in expected.items():
        if grad is None:
            assert got[name] is None, name
        else:
            torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"model": "no_such_model_dir_or_package"}, "model"),
        ({"pooling": "max"}, "pooling"),
        ({"freeze_layers": -1}, "freeze_layers"),
        ({"vocab_size": 10_000}, "vocab_size"),  # a tokenizer that is not the model's
    ],
)
def test_tower_config_errors_name_the_key(tiny_hf, kwargs, key):
    from twotower.towers.transformer import TransformerTower

    args = {"vocab_size": 141, "model": str(tiny_hf), **kwargs}
    with pytest.raises(ConfigError) as info:
        TransformerTower(**args)
    assert info.value.key == key


def test_missing_extra_is_one_line(monkeypatch, tiny_hf):
    from twotower.towers.transformer import TransformerTower

    monkeypatch.setitem(sys.modules, "transformers", None)  # import then fails
    with pytest.raises(ImportError, match=r"^tower=transformer .*pip install 'twotower\[hf\]'$"):
        TransformerTower(141, str(tiny_hf))


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_the_transformer_tower(make_cfg, tiny_hf, loss):
    cfg = make_cfg("tower=transformer", *hf_overrides(tiny_hf), f"loss={loss}", "~logger")
    assert train(cfg)["global_step"] == 3
    # A few steps on one fixed batch, of the towers' weights alone (not the similarity's
    # scale), lower that batch's loss: its gradient reaches the encoders and points downhill.
    pl.seed_everything(cfg.seed)
    dm = instantiate(cfg.data, "data", tokenizer=instantiate(cfg.tokenizer, "tokenizer"))
    dm.setup("fit")
    module = build_for_data(cfg, dm)
    batch = dm.datasets["train"].__getitems__(list(range(16)))

    def batch_loss() -> float:
        with torch.no_grad():
            return float(module.eval().model_step(batch)[0])

    before = batch_loss()
    towers = [*module.query_tower.parameters(), *module.doc_tower.parameters()]
    optimizer = torch.optim.Adam(list(dict.fromkeys(towers)), lr=1e-3)  # once if shared
    for _ in range(5):
        optimizer.zero_grad()
        module.train().model_step(batch)[0].backward()
        optimizer.step()
    after = batch_loss()
    assert after < 0.9 * before, (before, after)


def test_gradients_reach_both_transformer_towers(make_cfg, tiny_hf):
    import hydra

    from twotower.build import build_for_data

    cfg = make_cfg(
        "tower=transformer",
        *hf_overrides(tiny_hf),
        "tower@doc_tower=transformer",
        f"doc_tower.model={tiny_hf}",
        "model.share_towers=false",
    )
    dm = hydra.utils.instantiate(cfg.data, tokenizer=hydra.utils.instantiate(cfg.tokenizer))
    dm.setup("fit")
    module = build_for_data(cfg, dm)
    batch = next(iter(dm.train_dataloader()))
    loss, *_ = module.model_step(batch)
    loss.backward()
    for tower in (module.query_tower, module.doc_tower):
        grads = [p.grad for p in tower.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert module.query_tower is not module.doc_tower


def test_checkpoint_and_export_work_without_the_model_directory(tiny_hf, tmp_path):
    from hydra import compose, initialize_config_dir

    from twotower.config_check import CONF_DIR
    from twotower.export import export
    from twotower.serving import TwoTowerRetriever

    model = shutil.copytree(tiny_hf, tmp_path / "model")
    beir = write_beir(tmp_path / "beir")
    overrides = [o for o in TINY if not o.startswith("data.")]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *overrides,
                "data=beir",
                f"data.dir={beir}",
                "data.cache_dir=null",
                "data.batch_size=16",
                f"paths.output_dir={tmp_path}/out",
                "~logger",
                "tower=transformer",
                *hf_overrides(model),
                "model.share_towers=true",
            ],
        )
        result = train(cfg)
        shutil.rmtree(model)  # the fine-tuned weights and the tokenizer are in the checkpoint
        module, tokenizer, _ = load_module(result["best_checkpoint"])
        assert isinstance(tokenizer, HFTokenizer)
        out = tmp_path / "export"
        export(compose("export", overrides=[f"ckpt={result['best_checkpoint']}", f"out={out}"]))
    retriever = TwoTowerRetriever.load(out)
    run = read_run(tmp_path / "out" / "run.test.trec")
    text = {json.loads(x)["_id"]: json.loads(x)["text"] for x in open(beir / "queries.jsonl")}
    ids = sorted(run)[:5]
    for q, hits in zip(ids, retriever.search([text[q] for q in ids], k=5), strict=True):
        ranked = sorted(run[q].items(), key=lambda x: -x[1])
        assert [h.score for h in hits] == pytest.approx([s for _, s in ranked[:5]], abs=1e-4)


def test_another_tokenizer_is_a_config_error(make_cfg, tiny_hf):
    cfg = make_cfg("tower=transformer", f"tower.model={tiny_hf}", "tokenizer=trigram", "~logger")
    with pytest.raises(ConfigError) as info:
        train(cfg)
    assert info.value.key == "tokenizer._target_" and "use tokenizer=hf" in str(info.value)
