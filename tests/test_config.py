"""Every option of every config group composes and builds on tiny data as train() builds it;
every config mistake ends in one line naming the key, before training."""

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

import twotower.build
from tests.conftest import TINY, write_beir
from tests.hf_tiny import HAS_HF, pretrained_fixes, uses_hf, write_tiny_model
from tests.recdata import inter_lines, toy_interactions, write_lines
from twotower.build import build_for_data, instantiate
from twotower.config_check import CONF_DIR, check_config, check_node, target_nodes
from twotower.errors import ConfigError
from twotower.train import train

# +sweep=<name> and +launcher=<name> choose Hydra plugins: test_sweep.py composes and builds them.
ELSEWHERE = {"sweep", "launcher"}
INDEX_CONFIGS = ("evaluate", "export")  # the primary configs with an index group


def options(group: str) -> list[str]:
    """The options of a config group: the YAML files of its directory."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def group_options():
    for group in sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir()):
        if group not in ELSEWHERE:
            for option in options(group):
                yield group, option
                if group == "tower":  # the same file as the document tower's own choice
                    yield "tower@doc_tower", option


def write_ml100k(directory: Path) -> Path:
    """The toy interactions of tests/recdata.py under MovieLens-100K's names and fields (the
    ml100k experiments select its features by name)."""
    rows = toy_interactions()
    users, items = sorted({r.user for r in rows}), sorted({r.item for r in rows})
    user = [
        f"{u}\t{20 + k % 4}\t{'MF'[k % 2]}\tjob{k % 3}\t5510{k % 5}" for k, u in enumerate(users)
    ]
    item = [f"{i}\tMovie {k}\t{1990 + k % 4}\tAction Drama" for k, i in enumerate(items)]
    write_lines(directory / "ml-100k.inter", inter_lines(rows))
    fields = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"
    write_lines(directory / "ml-100k.user", [fields, *user])
    fields = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
    write_lines(directory / "ml-100k.item", [fields, *item])
    return directory


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Per data module class, the values that point it at tiny data (a new one needs its own)."""
    root = tmp_path_factory.mktemp("data")
    pairs = str(Path(__file__).parent / "data" / "zh_pairs.tsv")
    synthetic = (o.removeprefix("data.").split("=") for o in TINY if o.startswith("data."))
    return {
        "SyntheticDataModule": {key: int(value) for key, value in synthetic},
        "BeirDataModule": {"dir": str(write_beir(root / "beir")), "cache_dir": None},
        "PairFileDataModule": {"train": pairs, "val": pairs, "test": pairs, "cache_dir": None},
        "RecBoleDataModule": {"dir": str(write_ml100k(root / "ml-100k"))},
        "hf_model": lambda: tiny_model(root / "hf"),  # built when an option needs it
    }


def tiny_model(directory: Path) -> Path:
    """The tiny BERT of tests/hf_tiny.py in ``directory`` (written once); skips without hf."""
    if not HAS_HF:
        pytest.skip("needs the hf extra (transformers)")
    return directory if (directory / "config.json").is_file() else write_tiny_model(directory)


def compose_cfg(name: str, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def input_kind(target: str) -> str | None:
    """What a tower encodes or a data module gives (train.check_tower_input's rule); ``None``
    for a target that does not import (check_config reports it)."""
    try:
        return getattr(hydra.utils.get_class(target), "input_kind", "text")
    except Exception:  # noqa: BLE001 - any import failure
        return None


def option_of_kind(group: str, kind: str) -> str:
    """The first option of ``group`` whose target has ``input_kind`` ``kind``."""
    for option in options(group):
        target = OmegaConf.load(CONF_DIR / group / f"{option}.yaml").get("_target_")
        if target and input_kind(target) == kind:
            return option
    raise AssertionError(f"no option of conf/{group}/ has input_kind {kind!r}")


def fitting(cfg: DictConfig, group: str) -> list[str]:
    """Overrides that pair the tower or data option under test with parts of its input kind (a
    feature tower needs recommendation data); other options, experiments too, must fit as
    they are."""
    subject = {"tower": "tower", "tower@doc_tower": "doc_tower", "data": "data"}.get(group)
    kind = input_kind(cfg[subject]._target_) if subject else None
    if kind is None:
        return []
    return [
        f"{part}={option_of_kind(part, kind)}"
        for part in ("data", "tower")
        if part != subject and input_kind(cfg[part]._target_) != kind
    ]


def build_everything(cfg: DictConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Build every part of ``cfg`` as train() does, then check that no _target_ is left."""
    built = []

    def recorded(node: DictConfig, key: str, **kwargs):
        built.append(key)
        return instantiate(node, key, **kwargs)

    monkeypatch.setattr(twotower.build, "instantiate", recorded)  # what build_for_data builds, too
    check_config(cfg)  # every _target_ imports and takes every key it is given
    datamodule = recorded(cfg.data, "data", tokenizer=recorded(cfg.tokenizer, "tokenizer"))
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_for_data(cfg, datamodule)  # towers of the data's sizes, negatives, loss ...
    module.configure_optimizers()  # calls the _partial_ optimizer and scheduler
    callbacks = [recorded(c, f"callbacks.{k}") for k, c in (cfg.get("callbacks") or {}).items()]
    logger = recorded(cfg.logger, "logger") if cfg.get("logger") else False
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        cfg.trainer.accelerator = "cpu"  # the rest of trainer=gpu (bf16-mixed) builds on a CPU
    recorded(cfg.trainer, "trainer", callbacks=callbacks, logger=logger)
    left = [
        key
        for key, _ in target_nodes(cfg, "", ("hydra",))
        if not any(key == b or key.startswith((f"{b}.", f"{b}[")) for b in built)
    ]
    assert not left, f"{left}: a _target_ that train() never builds"


def check_option(
    group: str,
    option: str,
    tiny_data: dict[str, dict[str, Any]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *extra: str,
) -> None:
    """Compose ``group=option`` with tiny data (and ``extra`` overrides) and build it all."""
    if group == "index":  # an evaluate / export choice: built and searched there
        docs = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
        for name in INDEX_CONFIGS:
            cfg = compose_cfg(name, *extra, f"index={option}", "ckpt=x", "out=y")
            check_config(cfg)
            index = instantiate(cfg.index, "index").build(docs)
            assert index.kind == option and index.search(docs[:2], 3)[1].shape == (2, 3)
        return
    overrides = [*extra, f"{group}={option}", f"paths.output_dir={tmp_path}"]
    cfg = compose_cfg("train", *overrides)
    fixes = fitting(cfg, group)
    if uses_hf(cfg):  # a pretrained tower or its tokenizer: the tiny model of tests/hf_tiny.py
        fixes += pretrained_fixes(cfg, tiny_data["hf_model"]())
    if fixes:
        cfg = compose_cfg("train", *overrides, *fixes)
    check_node(cfg.data, "data")  # a data _target_ that does not import, before its tiny data
    data = cfg.data._target_.rsplit(".", 1)[-1]
    if data not in tiny_data:
        pytest.fail(f"{data} has no tiny data: add it to tiny_data in {__file__}")
    for key, value in tiny_data[data].items():
        cfg.data[key] = value
    if "memory_size" in cfg.negatives:  # a queue no longer than the tiny data's 96 documents
        cfg.negatives.memory_size = 32
    build_everything(cfg, monkeypatch)


@pytest.mark.parametrize("group, option", list(group_options()), ids=lambda x: str(x))
def test_every_option_composes_and_builds(group, option, tiny_data, tmp_path, monkeypatch):
    check_option(group, option, tiny_data, tmp_path, monkeypatch)


@pytest.mark.parametrize(
    "yaml, message",
    [
        (
            "_target_: twotower.towers.mlp.NoSuchTower\n",
            "tower._target_='twotower.towers.mlp.NoSuchTower': cannot be imported",
        ),
        (
            "_target_: twotower.towers.mlp.MLPTower\nhidden_size: [8]\n",
            "did you mean hidden_sizes?",
        ),
        (
            "_target_: twotower.towers.mlp.MLPTower\ndropout: high\n",
            "tower.dropout='high': must be a float",
        ),
    ],
)
def test_a_broken_yaml_fails_the_config_test(tiny_data, tmp_path, monkeypatch, yaml, message):
    (tmp_path / "conf" / "tower").mkdir(parents=True)
    (tmp_path / "conf" / "tower" / "broken.yaml").write_text(yaml)
    searchpath = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"  # conf/ plus this tower
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_option("tower", "broken", tiny_data, tmp_path, monkeypatch, searchpath)


def test_tower_choice_sets_both_sides_and_doc_side_can_differ(make_cfg):
    cfg = make_cfg("tower=cnn")
    assert cfg.tower._target_ == "twotower.towers.cnn.CNNTower" and cfg.doc_tower is None
    cfg = make_cfg("tower@doc_tower=lstm")
    assert cfg.tower._target_.endswith("MLPTower") and cfg.doc_tower._target_.endswith("LSTMTower")


def test_tower_values_reach_the_document_tower(make_cfg):
    from twotower.build import doc_tower_config

    cfg = make_cfg("tower=cnn", "tower.num_filters=7")
    assert doc_tower_config(cfg).num_filters == 7  # not the CNN default
    cfg = make_cfg("tower@doc_tower=cnn", "doc_tower.num_filters=9")
    assert doc_tower_config(cfg).num_filters == 9 and "hidden_sizes" not in cfg.doc_tower


def test_unknown_choice_lists_the_choices(make_cfg):
    with pytest.raises(MissingConfigException) as e:
        make_cfg("tower=gru")
    assert "tower/gru" in str(e.value)
    assert {"mlp", "lstm", "cnn"} <= set(e.value.options)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["loss=pairwise_hinge", "loss.margin=-1"], "loss.margin=-1"),
        (["loss=pairwise_logistic", "loss.sigma=0"], "loss.sigma=0"),
        (["similarity.scale=0"], "similarity.scale=0"),
        (
            ["negatives=sampled", "negatives.num_negatives=16"],
            "negatives.num_negatives=16: must be < data.batch_size (16)",
        ),
        (["tower.hidden_sizes=[32,0]"], "tower.hidden_sizes="),
        (["tower=lstm", "tower.pooling=first"], "tower.pooling='first'"),
        (["tower@doc_tower=cnn", "doc_tower.kernel_sizes=[0]"], "doc_tower.kernel_sizes="),
        (["ckpt_path=/no/such/file.ckpt"], "ckpt_path='/no/such/file.ckpt': no such checkpoint"),
        (["data.format=sideways"], "data.format='sideways'"),
        (["data.batch_size=0"], "data.batch_size=0"),
        (
            ["data.format=labelled"],
            "needs training rows of format pairs (query, doc) or presampled",
        ),
        (["data.format=labelled", "negatives=presampled"], "loss=pointwise"),
        (["data.format=pairs", "negatives=presampled"], "but the data are pairs (query, doc)"),
        (["model.share_towers=true", "tower@doc_tower=cnn"], "model.share_towers=True"),
        (["similarity.kind=l2"], "similarity.kind='l2': must be one of cosine, dot"),
    ],
    ids=lambda x: x if isinstance(x, str) else " ".join(x),
)
def test_config_mistakes_fail_before_training(make_cfg, tmp_path, overrides, message):
    with pytest.raises(ConfigError) as e:
        train(make_cfg(*overrides, "~logger"))
    assert message in str(e.value)
    assert not (tmp_path / "metrics.json").exists()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "twotower.train", *args, f"hydra.run.dir={cwd}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_cli_prints_one_line_for_a_config_mistake(tmp_path):
    out = run_cli("loss=pairwise_hinge", "loss.margin=-1", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "twotower: config error: loss.margin=-1: must be >= 0"
    )
    assert "Traceback" not in out.stderr


def test_cli_unknown_tower_lists_the_choices(tmp_path):
    out = run_cli("tower=gru", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "twotower: config error: tower='gru': no such option; "
        "valid: cnn, features, id, lstm, mlp, transformer"
    ]


def test_cli_prints_one_line_for_bad_data(tmp_path):
    bad = tmp_path / "train.tsv"
    bad.write_bytes(b"query\tdoc\ngood query\tgood doc\nbad \xff query\tdoc\n")
    out = run_cli("data=pairs", f"data.train={bad}", f"data.val={bad}", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"twotower: data error: {bad}:3: field 'query': not UTF-8 (byte 0xff")
    assert not (tmp_path / "metrics.json").exists()
