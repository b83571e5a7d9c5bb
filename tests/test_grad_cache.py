"""GradCache: the chunked step gives the full batch's loss and gradients, and trains."""

import copy

import pytest
import pytorch_lightning as pl
import torch

from tests.recdata import write_atomic
from tests.test_recommendation import rec_cfg
from twotower.build import build_for_data, instantiate
from twotower.errors import ConfigError
from twotower.grad_cache import GradCache, take
from twotower.module import TwoTowerModule
from twotower.train import train

ROWS = 16


def module_and_batch(cfg):
    pl.seed_everything(cfg.seed)
    dm = instantiate(cfg.data, "data", tokenizer=instantiate(cfg.tokenizer, "tokenizer"))
    dm.setup("fit")
    module = build_for_data(cfg, dm).train()
    return module, dm.datasets["train"].__getitems__(list(range(ROWS)))


def gradients(module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return grads


def chunked_reference(module, batch, chunk: int):
    """The uncached step with the chunks' forward order (the dropout masks GradCache draws):
    every chunk's graph kept, one backward."""

    def encode(tower, inputs):
        n = len(next(t for t in _leaves(inputs)))
        return torch.cat([tower(take(inputs, i, i + chunk)) for i in range(0, n, chunk)])

    q = encode(module.query_tower, batch["query"])
    d = encode(module.doc_tower, batch["doc"])
    cands = module.negatives(q, d, batch, module.similarity, lambda x: encode(module.doc_tower, x))
    loss = module.objective(cands, batch, q, d)
    loss.backward()
    return loss.detach()


def _leaves(inputs):
    if isinstance(inputs, torch.Tensor):
        yield inputs
    else:
        for v in inputs.values() if isinstance(inputs, dict) else inputs:
            yield from _leaves(v)


def assert_same_gradients(expected, got):
    assert expected.keys() == got.keys()
    assert any(name.startswith("query_tower") for name in got)
    assert any(name.startswith("doc_tower") for name in got) or "share" in str(got.keys())
    for name, grad in expected.items():
        assert grad.abs().sum() > 0 or got[name].abs().sum() == 0, name
        torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("tower", ["mlp", "lstm", "cnn"])
@pytest.mark.parametrize(
    "loss", ["listwise_softmax", "pairwise_hinge", "pairwise_logistic", "pointwise"]
)
def test_cached_gradients_equal_the_full_batch(make_cfg, tower, loss):
    # No dropout: the reference is the plain one-pass step over all 16 rows.
    cfg = make_cfg(f"tower={tower}", f"loss={loss}", "tower.dropout=0.0")
    module, batch = module_and_batch(cfg)
    full, _, _, _ = module.model_step(batch)
    full.backward()
    expected = gradients(module)
    cached, _ = GradCache(chunk_size=5).backward(module, batch)  # chunks of 5, 5, 5, 1
    assert_same_gradients(expected, gradients(module))
    torch.testing.assert_close(cached, full.detach(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("tower", ["mlp", "lstm", "cnn"])
def test_dropout_masks_are_replayed(make_cfg, tower):
    cfg = make_cfg(f"tower={tower}", "tower.dropout=0.3")
    module, batch = module_and_batch(cfg)
    torch.manual_seed(7)
    reference = chunked_reference(module, batch, chunk=4)
    expected = gradients(module)
    torch.manual_seed(7)
    cached, _ = GradCache(chunk_size=4).backward(module, batch)
    assert_same_gradients(expected, gradients(module))
    torch.testing.assert_close(cached, reference, atol=1e-6, rtol=1e-6)
    # Dropout is on: other masks give another loss, so the equality above needs the replay.
    torch.manual_seed(8)
    assert abs(chunked_reference(module, batch, chunk=4) - reference) > 1e-4
    module.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "negatives",
    [
        ["negatives=mixed", "negatives.num_uniform=6", "negatives.logq=counted"],
        ["negatives=uniform", "negatives.num_negatives=4"],
        ["negatives=xbm", "negatives.memory_size=32"],
    ],
    ids=["mixed_logq", "uniform", "xbm"],
)
def test_documents_the_negatives_encode_are_cached_too(make_cfg, negatives):
    cfg = make_cfg(*negatives, "tower.dropout=0.0")
    module, batch = module_and_batch(cfg)
    with torch.no_grad():
        module.model_step(take(batch, 8, 16))  # xbm: the queue now holds 8 vectors
    state = copy.deepcopy(module.negatives.state_dict())
    torch.manual_seed(3)  # the same uniform draws on both sides
    full, cands, _, _ = module.model_step(batch)
    full.backward()
    expected = gradients(module)
    assert cands.scores.shape[1] != ROWS  # not the plain in-batch layout: drawn or remembered
    module.negatives.load_state_dict(state)
    torch.manual_seed(3)
    GradCache(chunk_size=3).backward(module, batch)
    assert_same_gradients(expected, gradients(module))


def test_feature_towers(make_cfg, tmp_path):
    directory = tmp_path / "toy"
    write_atomic(directory)
    cfg = rec_cfg(make_cfg, directory, "data.text_fields=[title]", "tower.dropout=0.0")
    module, batch = module_and_batch(cfg)
    full, _, _, _ = module.model_step(batch)
    full.backward()
    expected = gradients(module)
    GradCache(chunk_size=6).backward(module, batch)
    assert_same_gradients(expected, gradients(module))


@pytest.mark.parametrize(
    "schedule", [["scheduler=cosine"], ["scheduler=plateau", "scheduler.patience=0"]]
)
def test_training_with_grad_cache_matches_training_without(make_cfg, schedule):
    # The schedulers step by hand under GradCache (manual optimization), as Lightning would.
    common = ("tower.dropout=0.0", "~logger", "trainer.max_epochs=2")
    plain = train(make_cfg(*common, *schedule))
    cached = train(make_cfg(*common, *schedule, "model.grad_cache.chunk_size=4"))
    assert cached["global_step"] == plain["global_step"] == 6
    for key in ("val/ndcg@10", "test/ndcg@10", "test/mrr@10"):
        got, want = cached["metrics"][key], plain["metrics"][key]
        assert abs(got - want) < 1e-4, (key, got, want)


def test_gradient_clipping_is_applied_by_the_module(make_cfg, monkeypatch):
    # Lightning does not clip under manual optimization: the module's own call is the only one.
    norms = []

    def record(module, optimizer):  # Lightning calls it just before optimizer.step
        grads = [p.grad.detach() for p in module.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    monkeypatch.setattr(TwoTowerModule, "on_before_optimizer_step", record)
    result = train(
        make_cfg("model.grad_cache.chunk_size=4", "trainer.gradient_clip_val=0.01", "~logger")
    )
    assert result["global_step"] == len(norms) == 3
    # clip_grad_norm_ rescales a larger norm to 0.01; unclipped, these norms are over 1.
    torch.testing.assert_close(torch.tensor(norms), torch.full((3,), 0.01), rtol=1e-3, atol=0)


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.grad_cache.chunk_size=0", "model.grad_cache.chunk_size"),
        ("trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches"),
    ],
)
def test_bad_options_name_their_key(make_cfg, override, key):
    cfg = make_cfg("model.grad_cache.chunk_size=4", override)
    with pytest.raises(ConfigError, match=key):
        train(cfg)
