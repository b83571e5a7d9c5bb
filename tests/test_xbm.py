"""Cross-batch memory: the queue, its masking, its logQ correction and its checkpoint."""

import math

import pytest
import torch

from tests.test_hard_negatives import OneHot
from tests.test_negatives import DOT, bound, identity_batch
from twotower.data.base import Catalogue
from twotower.errors import ConfigError
from twotower.negatives import CrossBatchMemory
from twotower.train import train


def test_the_queue_is_fifo_and_its_entries_are_extra_candidates():
    xbm = CrossBatchMemory(memory_size=3).train()
    q, d, batch = identity_batch([0, 1], [0, 1])
    first = xbm(q, d, batch, DOT, None)
    assert first.scores.shape == (2, 2)  # empty queue: in-batch only
    assert xbm.queue_ids.tolist() == [0, 1] and xbm.queue_owners.tolist() == [0, 1]
    q, d, batch = identity_batch([2, 3], [2, 3])
    second = xbm(q, d, batch, DOT, None)
    assert second.scores.shape == (2, 4)  # 2 in-batch + 2 remembered
    assert torch.equal(second.labels[:, :2], torch.eye(2)) and not second.labels[:, 2:].any()
    assert xbm.queue_ids.tolist() == [1, 2, 3]  # the newest 3, oldest first
    assert not xbm.queue.requires_grad


def test_the_queue_masks_same_document_and_relevant_entries():
    xbm = CrossBatchMemory(memory_size=8).train()
    xbm(*identity_batch([5, 6, 7], [0, 1, 2]), DOT, None)  # doc 5 of query 0, 6 of 1, 7 of 2
    # Row 0's positive is document 5 again (same id); row 1 is query 1, whose positive in the
    # queue (document 6) is relevant to it; row 2 is unrelated to every entry.
    q, d, batch = identity_batch([5, 9, 10], [3, 1, 4])
    c = xbm(q, d, batch, DOT, None)
    queue = c.mask[:, 3:]  # columns 3-5: documents 5, 6, 7
    assert queue.tolist() == [[False, True, True], [True, False, True], [True, True, True]]
    # The masked ones are exactly the entries that score as positives (same one-hot).
    assert torch.all(c.scores[:, 3:][queue] == 0)


def test_the_queue_masks_the_querys_training_positives_with_mask_history():
    xbm = bound(CrossBatchMemory(memory_size=2, mask_history=True), [(0, 1), (0, 4)]).train()
    xbm(*identity_batch([4], [2]), DOT, None)  # document 4 enters the queue as query 2's
    c = xbm(*identity_batch([1, 3], [0, 1]), DOT, None)
    assert c.mask[:, 2].tolist() == [False, True]  # document 4 is a training positive of query 0


def test_validation_uses_no_memory_and_enqueues_nothing():
    xbm = CrossBatchMemory(memory_size=8).train()
    xbm(*identity_batch([0, 1], [0, 1]), DOT, None)
    xbm.eval()
    c = xbm(*identity_batch([2, 3], [2, 3]), DOT, None)
    assert c.scores.shape == (2, 2) and xbm.queue_ids.tolist() == [0, 1]


def test_start_step_delays_the_first_entry():
    xbm = CrossBatchMemory(memory_size=8, start_step=2).train()
    for doc in range(3):
        xbm(*identity_batch([doc], [doc]), DOT, None)
    assert xbm.queue_ids.tolist() == [2]


def test_logq_counts_the_queue_among_the_draws_with_p():
    # Counted p over 4 documents: 0 is half the positives. Batch G = 1, queue M = 1, K = 2
    # uniform draws from N = 4: each candidate j gets log((G + M) p_j + K / N).
    xbm = CrossBatchMemory(memory_size=3, num_uniform=2, logq="counted")
    xbm.bind(Catalogue(OneHot(), torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 2])))
    xbm.train()
    zeros = lambda docs: torch.zeros(len(docs), 16)  # noqa: E731 (drawn documents score 0)
    q, d, batch = identity_batch([1], [2])
    xbm(q, d, batch, DOT, zeros)  # enqueues document 1
    torch.manual_seed(0)
    q, d, batch = identity_batch([0], [0])
    c = xbm(q, d, batch, DOT, zeros)
    torch.manual_seed(0)
    drawn = torch.randint(16, (2,)).tolist()  # the catalogue has 16 documents
    p = {0: 0.5, 1: 0.25, 2: 0.25}  # an unseen document counts as seen once: 1/4
    for col, doc in enumerate([0, 1, *drawn]):
        raw = 1.0 if col == 0 else 0.0  # its own document; the drawn ones are encoded as 0
        log_q = math.log(2 * p.get(doc, 0.25) + 2 / 16)
        assert c.scores[0, col].item() == pytest.approx(raw - log_q, abs=1e-5)


def test_queue_survives_a_state_dict_round_trip_and_a_shorter_memory():
    xbm = CrossBatchMemory(memory_size=4).train()
    for doc in range(3):
        xbm(*identity_batch([doc], [doc + 10]), DOT, None)
    fresh = CrossBatchMemory(memory_size=4)
    fresh.load_state_dict(xbm.state_dict())
    assert torch.equal(fresh.queue, xbm.queue) and fresh.queue_owners.tolist() == [10, 11, 12]
    shorter = CrossBatchMemory(memory_size=2)
    shorter.load_state_dict(xbm.state_dict())
    assert shorter.queue_ids.tolist() == [1, 2]


QUEUE = ("queue", "queue_ids", "queue_owners", "steps")  # steps: where start_step stands


def test_a_resumed_run_goes_on_with_the_queue(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("negatives=xbm", "negatives.memory_size=20", "~logger")
    first = train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"  # outside a Hydra run: its training state
    state = torch.load(last, weights_only=True)["state_dict"]
    saved = {name: state[f"negatives.{name}"] for name in QUEUE}
    assert len(saved["queue_ids"]) == 20 and first["global_step"] == 3
    restored = {}
    memory = CrossBatchMemory.memory

    def first_training_memory(self):  # the queue the resumed run's first step scores
        if self.training and not restored:
            restored.update({name: getattr(self, name).clone() for name in QUEUE})
        return memory(self)

    monkeypatch.setattr(CrossBatchMemory, "memory", first_training_memory)
    resumed = train(
        make_cfg(
            "negatives=xbm",
            "negatives.memory_size=20",
            "~logger",
            "trainer.max_epochs=2",
            f"ckpt_path={last}",
        )
    )
    assert resumed["global_step"] == 6
    assert restored.keys() == saved.keys()
    for name in QUEUE:
        torch.testing.assert_close(restored[name], saved[name], msg=name)


def test_a_memory_longer_than_the_training_documents_is_a_config_error(make_cfg):
    pairs = [(0, 1), (1, 2), (2, 3), (3, 3)]  # 3 training documents
    bound(CrossBatchMemory(memory_size=3), pairs)  # as many: fine
    with pytest.raises(ConfigError, match="memory_size=4: exceeds the 3 training documents") as e:
        bound(CrossBatchMemory(memory_size=4), pairs)
    assert e.value.key == "memory_size"  # relative to the strategy, as its other checks
    # The defaults on the tiny data: 16,384 vectors for 96 documents fail before training.
    with pytest.raises(ConfigError, match="memory_size=16384: exceeds the 96 training"):
        train(make_cfg("negatives=xbm", "~logger"))


@pytest.mark.parametrize("bad", [{"memory_size": 0}, {"memory_size": 2.5}, {"start_step": -1}])
def test_bad_options_name_the_key(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        CrossBatchMemory(**bad)
