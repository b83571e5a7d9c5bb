"""Distillation: the three losses against hand-computed values, the teacher's vectors and
their cache, and training end to end from a checkpoint, an export and a model directory."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.hf_tiny import hf_overrides
from tests.test_grad_cache import assert_same_gradients, gradients, module_and_batch
from tests.test_hard_negatives import OneHot
from twotower.data.base import Catalogue
from twotower.errors import ConfigError
from twotower.grad_cache import GradCache
from twotower.losses.embedding_distill import EmbeddingDistillation
from twotower.losses.kl_distill import KLDistillation
from twotower.losses.margin_mse import MarginMSE
from twotower.negatives import (
    CrossBatchMemory,
    InBatchNegatives,
    PresampledNegatives,
    SampledNegatives,
    UniformNegatives,
)
from twotower.similarity import Similarity
from twotower.teacher import TeacherVectors, read_cache, teacher_vectors
from twotower.train import train

ALL = torch.ones(1, 3, dtype=torch.bool)


# -- the losses, by hand ----------------------------------------------------------------------
def test_kl_matches_a_hand_computed_value_and_ignores_masked_candidates():
    kl = KLDistillation(teacher_temperature=1.0, student_temperature=2.0)
    student = torch.tensor([[2.0, 0.0, 40.0], [1.0, 5.0, 0.0]])
    teacher = torch.tensor([[1.0, 0.5, -30.0], [0.0, 2.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])  # row 2: one candidate
    # Row 1 over its two valid candidates: student (2, 0) / 2, teacher (1, 0.5) / 1.
    p_t = [
        math.exp(1) / (math.exp(1) + math.exp(0.5)),
        math.exp(0.5) / (math.exp(1) + math.exp(0.5)),
    ]
    log_p_s = [1 - math.log(math.e + 1), -math.log(math.e + 1)]
    expected = sum(p * (math.log(p) - s) for p, s in zip(p_t, log_p_s, strict=True))
    got = kl.divergence(student, teacher, mask)  # row 2 is skipped
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert kl.divergence(teacher * 2, teacher, torch.ones(2, 3, dtype=torch.bool)).item() == (
        pytest.approx(0.0, abs=1e-6)
    )  # the same distribution (student / 2 = teacher): no divergence


def test_margin_mse_matches_a_hand_computed_value():
    loss = MarginMSE(teacher_scale=10.0)
    student = torch.tensor([[3.0, 1.0, 0.5]])
    teacher = torch.tensor([[0.5, 0.1, 0.4]])  # margins x 10: 4 and 1
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    # Student margins 2 and 2.5: ((2 - 4)^2 + (2.5 - 1)^2) / 2.
    assert loss.margins(student, teacher, labels, ALL).item() == pytest.approx(3.125)
    masked = torch.tensor([[True, True, False]])
    assert loss.margins(student, teacher, labels, masked).item() == pytest.approx(4.0)


@pytest.mark.parametrize("kind, expected", [("mse", 0.5), ("cosine", (1 - 2**-0.5) / 2)])
def test_embedding_loss_matches_a_hand_computed_value(kind, expected):
    loss = EmbeddingDistillation(kind=kind)
    teacher = TeacherVectors(
        torch.tensor([4]), torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    )
    loss.teacher = teacher
    q, d = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    batch = {"query_id": torch.tensor([4]), "doc_id": torch.tensor([0])}
    # mse: query ((1 - 2)^2 + 0) / 2 = 0.5, document (1 + 0) / 2 = 0.5; cosine: 0 and 1 - 1/sqrt 2.
    assert loss(None, batch, q, d).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "loss",
    [KLDistillation(teacher_temperature=1.0), MarginMSE(teacher_scale=1.0)],
    ids=["kl", "margin_mse"],
)
def test_a_student_equal_to_its_teacher_distils_to_zero_under_logq(loss):
    # logQ subtracts log p (3/6, 1/6, 1/6) from the student's scores; the teacher's have no
    # such shift, so only the scores before it can match the teacher's.
    g = torch.Generator().manual_seed(0)
    queries, docs = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    teacher = TeacherVectors(torch.tensor([0, 1, 2]), queries, docs)
    negatives = InBatchNegatives(logq="counted")
    pairs = torch.tensor([0, 0, 0, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 2, 2])
    negatives.bind(Catalogue(range(3), *pairs))
    batch = {"query_id": torch.tensor([0, 1, 2]), "doc_id": torch.tensor([0, 1, 2])}
    cands = negatives(queries, docs, batch, Similarity(kind="dot", scale=1.0), None)
    assert not torch.allclose(cands.scores, queries @ docs.T)  # the correction is on
    loss.teacher = teacher
    got = loss(cands, batch, queries, docs)
    torch.testing.assert_close(got, torch.tensor(0.0), atol=1e-6, rtol=0)


def test_loss_options_are_checked():
    with pytest.raises(ConfigError, match="teacher_temperature"):
        KLDistillation(teacher_temperature=0)
    with pytest.raises(ConfigError, match="kind"):
        EmbeddingDistillation(kind="l1")
    with pytest.raises(ConfigError, match="weight"):
        MarginMSE(weight=-1)


# -- the teacher's vectors --------------------------------------------------------------------
def test_teacher_scores_are_dot_products_of_the_cached_vectors():
    teacher = TeacherVectors(
        torch.tensor([3, 7]),
        torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
        torch.tensor([[1.0, 1.0], [2.0, 0.0], [0.0, 3.0]]),
    )
    shared = teacher.scores(torch.tensor([7, 3]), torch.tensor([0, 2]))
    assert shared.tolist() == [[1.0, 3.0], [1.0, 0.0]]
    per_row = teacher.scores(torch.tensor([7, 3]), torch.tensor([[2, 1], [1, -1]]))
    assert per_row.tolist() == [[3.0, 0.0], [2.0, 1.0]]  # -1 (padding) reads row 0, masked anyway
    with pytest.raises(RuntimeError, match="query id 5 has no teacher vector"):
        teacher.query(torch.tensor([3, 5]))


def fake_data(doc_texts=("alpha", "beta", "gamma")):
    """What the teacher reads from a datamodule: training queries, texts, document ids."""
    catalogue = SimpleNamespace(
        positive_query=torch.tensor([2, 0, 2]), query_rows=torch.tensor([1, -1, 0])
    )
    return SimpleNamespace(
        catalogue=lambda: catalogue,
        query_texts=["query two", "query zero"],
        doc_ids=["a", "b", "c"],
        doc_texts=list(doc_texts),
    )


def test_teacher_cache_is_reused_and_invalidated_by_the_teacher_or_the_data(tmp_path, monkeypatch):
    calls = []

    def encode(settings, queries, doc_ids, docs):
        calls.append(queries)
        seed = len(calls)
        return torch.full((len(queries), 2), float(seed)), torch.full((len(docs), 2), -seed * 1.0)

    monkeypatch.setattr("twotower.teacher.encode_with_teacher", encode)
    ckpt = tmp_path / "teacher.ckpt"
    ckpt.write_bytes(b"weights one")
    settings = {"source": str(ckpt), "cache_dir": str(tmp_path / "cache")}
    vectors, entry = teacher_vectors(settings, fake_data())
    assert not entry["cached"] and calls == [["query zero", "query two"]]  # ids 0, 2 in order
    assert vectors.query_ids.tolist() == [0, 2] and vectors.docs.shape == (3, 2)
    again, entry = teacher_vectors(settings, fake_data())
    assert entry["cached"] and len(calls) == 1
    assert torch.equal(again.queries, vectors.queries) and torch.equal(again.docs, vectors.docs)
    ckpt.write_bytes(b"weights two")  # another teacher
    assert not teacher_vectors(settings, fake_data())[1]["cached"] and len(calls) == 2
    changed = fake_data(doc_texts=("alpha", "beta", "delta"))  # another corpus
    assert not teacher_vectors(settings, changed)[1]["cached"] and len(calls) == 3
    cached, entry = teacher_vectors(settings, changed)
    assert entry["cached"] and len(calls) == 3
    # A cache directory left half-written (no meta.json) is encoded again, not read.
    path = Path(entry["path"])
    (path / "meta.json").unlink()
    assert read_cache(path, "any") is None
    assert not teacher_vectors(settings, changed)[1]["cached"] and len(calls) == 4
    nothing = {**settings, "cache_dir": None}  # no cache: encoded every time
    teacher_vectors(nothing, changed)
    teacher_vectors(nothing, changed)
    assert len(calls) == 6


def test_teacher_settings_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError) as info:
        teacher_vectors({"source": "no_such_model_dir_or_package"}, fake_data())
    assert info.value.key == "teacher.source"
    with pytest.raises(ConfigError) as info:
        teacher_vectors({"source": str(tmp_path), "pooling": "max"}, fake_data())
    assert info.value.key == "teacher.pooling"
    with pytest.raises(ConfigError) as info:
        teacher_vectors({"source": "x", "temperature": 2}, fake_data())
    assert info.value.key == "teacher"
    with pytest.raises(ConfigError, match="no such checkpoint file"):
        teacher_vectors({"source": str(tmp_path / "gone.ckpt")}, fake_data())


# -- end to end -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A checkpoint of a tiny model trained on the default synthetic data: the teacher."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import TINY
    from twotower.config_check import CONF_DIR

    out = tmp_path_factory.mktemp("teacher")
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", [*TINY, f"paths.output_dir={out}", "~logger", "trainer.limit_train_batches=6"]
        )
    return Path(train(cfg)["best_checkpoint"])


def distill_cfg(make_cfg, tmp_path, source, *overrides):
    return make_cfg(
        f"teacher.source={source}", f"teacher.cache_dir={tmp_path / 'cache'}", "~logger", *overrides
    )


@pytest.mark.parametrize("distill", ["kl", "margin_mse", "embedding"])
def test_each_distillation_loss_trains_from_a_checkpoint_teacher(
    make_cfg, tmp_path, teacher_ckpt, distill
):
    cfg = make_cfg(
        f"teacher.source={teacher_ckpt}",
        f"teacher.cache_dir={tmp_path / 'cache'}",
        "logger=csv",
        f"distill={distill}",
    )
    result = train(cfg)
    assert result["global_step"] == 3 and result["teacher"]["cached"] is False
    assert math.isfinite(result["metrics"]["val/ndcg@10"])
    logged = Path(cfg.paths.output_dir).rglob("metrics.csv")
    header = next(iter(logged)).read_text().splitlines()[0]
    assert "train/distill" in header
    assert train(cfg)["teacher"]["cached"] is True  # the second run reads the cache


def test_distillation_changes_the_training_loss_by_its_weight(make_cfg, tmp_path, teacher_ckpt):
    """loss = supervised_weight * supervised + weight * distill, in training steps only."""
    from twotower.teacher import TeacherCache

    cfg = distill_cfg(make_cfg, tmp_path, teacher_ckpt, "distill=kl", "distill.weight=3.0")
    module, batch = module_and_batch(cfg)
    vectors, _ = teacher_vectors(TeacherCache(cfg.teacher).settings, module_datamodule(cfg))
    module.distill.bind(vectors, module)
    total, cands, q, d = module.model_step(batch)
    supervised = module.loss(cands.scores, cands.labels, cands.mask)
    term = module.distill(cands, batch, q, d)
    assert term > 0
    torch.testing.assert_close(total, supervised + 3.0 * term)
    module.eval()
    evaluated, *_ = module.model_step(batch)
    torch.testing.assert_close(evaluated, supervised)  # validation: the supervised loss alone


def module_datamodule(cfg):
    from twotower.build import instantiate

    dm = instantiate(cfg.data, "data", tokenizer=instantiate(cfg.tokenizer, "tokenizer"))
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("distill", ["kl", "embedding"])
def test_grad_cache_gives_the_distilled_gradients_of_the_full_batch(
    make_cfg, tmp_path, teacher_ckpt, distill
):
    size = ["tower.output_dim=16"] if distill == "embedding" else []  # teacher: 128
    cfg = distill_cfg(
        make_cfg, tmp_path, teacher_ckpt, f"distill={distill}", "tower.dropout=0.0", *size
    )
    module, batch = module_and_batch(cfg)
    vectors, _ = teacher_vectors(dict(cfg.teacher), module_datamodule(cfg))
    module.distill.bind(vectors, module)
    full, _, _, _ = module.model_step(batch)
    full.backward()
    expected = gradients(module)
    if distill == "embedding":  # the projection to the teacher's size learns too
        assert any(name.startswith("distill.projection") for name in expected)
    cached, _ = GradCache(chunk_size=5).backward(module, batch)
    assert_same_gradients(expected, gradients(module))
    torch.testing.assert_close(cached, full.detach(), atol=1e-6, rtol=1e-6)


def test_embedding_projection_is_checkpointed(make_cfg, tmp_path, teacher_ckpt):
    from twotower.checkpoint import load_module

    cfg = distill_cfg(make_cfg, tmp_path, teacher_ckpt, "distill=embedding", "tower.output_dim=16")
    result = train(cfg)
    module, _, _ = load_module(result["best_checkpoint"])
    state = torch.load(result["best_checkpoint"], weights_only=True)["state_dict"]
    teacher_dim = json.loads(Path(result["teacher"]["path"], "meta.json").read_text())["dim"]
    assert module.distill.projection.weight.shape == (teacher_dim, 16)
    torch.testing.assert_close(module.distill.projection.weight, state["distill.projection.weight"])


def test_an_export_teacher_gives_its_checkpoint_s_vectors(tmp_path, teacher_ckpt):
    from hydra import compose, initialize_config_dir

    from twotower.checkpoint import load_module
    from twotower.config_check import CONF_DIR
    from twotower.export import export

    directory = tmp_path / "export"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        export(compose("export", overrides=[f"ckpt={teacher_ckpt}", f"out={directory}"]))
    _, _, cfg = load_module(teacher_ckpt)  # the teacher's own data
    dm = module_datamodule(cfg)
    from_ckpt, _ = teacher_vectors({"source": str(teacher_ckpt)}, dm)
    from_export, _ = teacher_vectors({"source": str(directory)}, dm)
    torch.testing.assert_close(from_export.queries, from_ckpt.queries, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_export.docs, from_ckpt.docs, atol=1e-5, rtol=1e-5)


def test_a_model_directory_teacher_distils_into_a_dssm(make_cfg, tmp_path, tiny_hf):
    cfg = distill_cfg(make_cfg, tmp_path, tiny_hf, "distill=kl")
    result = train(cfg)
    assert result["teacher"]["dim"] == 16 and result["global_step"] == 3


def test_the_fine_tuned_transformer_is_a_teacher(make_cfg, tmp_path, tiny_hf):
    student = make_cfg("tower=transformer", *hf_overrides(tiny_hf), "~logger")
    ckpt = train(student)["best_checkpoint"]
    cfg = distill_cfg(
        make_cfg, tmp_path, ckpt, "distill=margin_mse", f"paths.output_dir={tmp_path}/s"
    )
    assert train(cfg)["teacher"]["queries"] > 0


def test_feature_data_have_no_texts_for_a_teacher(make_cfg, tmp_path, teacher_ckpt):
    from tests.recdata import write_atomic
    from tests.test_recommendation import rec_cfg

    write_atomic(tmp_path / "toy")
    cfg = rec_cfg(make_cfg, tmp_path / "toy", f"teacher.source={teacher_ckpt}", "distill=kl")
    with pytest.raises(ConfigError, match="^teacher.source=.*distillation needs text data"):
        train(cfg)


EMBEDDING = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))  # document vectors
DOT = Similarity(kind="dot", scale=1.0)
TRAINING = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3])  # (query, document) positives


def embed(ids):
    return EMBEDDING[ids.long()]


def xbm_with_a_queue():
    xbm = CrossBatchMemory(memory_size=3).train()
    ids = torch.tensor([4, 5, 6])
    xbm(embed(ids), embed(ids), {"doc_id": ids, "query_id": ids + 3}, DOT, embed)  # queue: 4-6
    return xbm


def hard_negatives():
    negatives = InBatchNegatives(hard_negatives=2, hard_sample="top").train()
    negatives.bind(Catalogue(OneHot(), *TRAINING))
    negatives.hard.set_table(torch.tensor([[7, 8], [9, -1], [10, 11]]))
    return negatives


STRATEGIES = {
    "in_batch": InBatchNegatives,
    "mixed": lambda: InBatchNegatives(num_uniform=5),
    "hard": hard_negatives,
    "xbm": xbm_with_a_queue,
    "sampled": lambda: SampledNegatives(num_negatives=2),
    "uniform": lambda: UniformNegatives(num_negatives=3),
    "presampled": PresampledNegatives,
    "presampled_shared": lambda: PresampledNegatives(share_across_batch=True),
    "labelled": PresampledNegatives,
}


@pytest.mark.parametrize("name", STRATEGIES)
def test_candidates_carry_their_document_ids(name):
    """Each strategy's ``doc_ids`` are the indices of the documents it scored, column by
    column: every valid candidate's score is its query against that document's vector."""
    torch.manual_seed(0)
    negatives = STRATEGIES[name]()
    if negatives.catalogue is None:
        negatives.bind(Catalogue(OneHot(), *TRAINING))
    doc_id = torch.tensor([1, 5, 6] if name == "labelled" else [1, 2, 3])
    batch = {"query_id": torch.tensor([0, 1, 2]), "doc_id": doc_id}
    if name.startswith("presampled"):
        batch["neg"] = batch["neg_id"] = torch.tensor([[4, 5], [6, 7], [8, 9]])
    if name == "labelled":  # one candidate a row: query 0's positive, two negative rows
        batch["label"] = torch.tensor([1.0, 0.0, 0.0])
    q = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    c = negatives.train()(q, embed(doc_id), batch, DOT, embed)
    ids = c.doc_ids.expand_as(c.scores)  # (B, C), shared columns or per row
    assert c.mask.sum() > (c.labels > 0).sum()  # negatives to check, not only positives
    expected = (q[:, None, :] * embed(ids.clamp(min=0))).sum(-1)  # (B, C)
    torch.testing.assert_close(c.scores[c.mask], expected[c.mask])
    rows, cols = (c.labels > 0).nonzero(as_tuple=True)
    assert torch.equal(ids[rows, cols], doc_id[rows])  # a positive is the row's own document


def test_ddp_distils_the_global_batch_as_one_process_does(make_cfg, tmp_path, teacher_ckpt):
    """2 processes: process 0 encodes the teacher's cache, the other reads it, and the KL over
    the gathered candidates (their document ids gathered alike) equals one process's loss."""
    from tests.test_ddp import COMMON, LOCAL_BATCH, run_ddp

    teacher = [f"teacher.source={teacher_ckpt}", f"teacher.cache_dir={tmp_path / 'cache'}"]
    rows = run_ddp(tmp_path / "ddp", tmp_path, "distill=kl", *teacher)
    ddp_loss = float(next(r for r in rows if r.get("train/loss"))["train/loss"])
    ddp_term = float(next(r for r in rows if r.get("train/distill"))["train/distill"])

    cfg = make_cfg(*COMMON, f"data.batch_size={2 * LOCAL_BATCH}", "distill=kl", *teacher)
    module, _ = module_and_batch(cfg)
    dm = module_datamodule(cfg)
    vectors, entry = teacher_vectors(dict(cfg.teacher), dm)
    assert entry["cached"]  # the DDP run wrote it
    module.distill.bind(vectors, module)
    batch = dm.datasets["train"].__getitems__(list(range(2 * LOCAL_BATCH)))
    loss, cands, q, d = module.model_step(batch)
    assert abs(ddp_loss - loss.item()) < 1e-5, (ddp_loss, loss.item())
    assert abs(ddp_term - module.last_distill.item()) < 1e-5
