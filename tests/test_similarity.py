import math

import pytest
import torch

from twotower.errors import ConfigError
from twotower.similarity import Similarity


def test_cosine_times_gamma():
    q = torch.tensor([[3.0, 4.0]])
    d = torch.tensor([[3.0, 4.0], [4.0, -3.0], [-6.0, -8.0]])
    assert torch.allclose(Similarity(scale=20.0)(q, d), torch.tensor([[20.0, 0.0, -20.0]]))


def test_dot_and_per_query_candidates():
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    d = torch.tensor([[[1.0, 1.0], [2.0, 0.0]], [[5.0, 3.0], [0.0, -1.0]]])  # (B, C, D)
    s = Similarity(kind="dot", scale=2.0)(q, d)
    assert torch.allclose(s, torch.tensor([[6.0, 4.0], [6.0, -2.0]]))


def test_learnable_gamma_stays_positive_and_learns():
    sim = Similarity(scale=5.0, learnable=True)
    opt = torch.optim.SGD(sim.parameters(), lr=10.0)
    q, d = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for _ in range(20):
        loss = -torch.log_softmax(sim(q, d), 1)[0, 0]  # sharper is better: gamma grows
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert 5.0 < sim.scale.item() <= 100.0
    fixed = Similarity(scale=5.0)
    assert list(fixed.parameters()) == [] and math.isclose(fixed.scale.item(), 5.0, rel_tol=1e-6)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"scale": 0.0}, "scale"),
        ({"scale": -1.0}, "scale"),
        ({"kind": "l2"}, "kind"),
        ({"scale": 200.0}, "scale"),
    ],
)
def test_invalid_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"^{key}="):
        Similarity(**kwargs)


def test_clamp_keeps_a_learnable_gamma_at_the_bound_and_free_to_come_down():
    sim = Similarity(scale=9.0, learnable=True, max_scale=10.0)
    opt = torch.optim.SGD(sim.parameters(), lr=1.0)
    sim.log_scale.grad = torch.tensor(-1.0)  # pushes gamma up past the bound
    opt.step()
    assert sim.scale.item() > 10.0
    sim.clamp_()
    assert math.isclose(sim.scale.item(), 10.0, rel_tol=1e-6)
    q, d = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    opt.zero_grad()
    (-sim(q, d)[0, 0]).backward()  # at the bound the gradient still flows
    assert sim.log_scale.grad.item() != 0.0
    opt.zero_grad()
    sim(q, d)[0, 0].backward()  # the opposite gradient: gamma comes down
    opt.step()
    sim.clamp_()
    assert sim.scale.item() < 10.0
    fixed = Similarity(scale=5.0, max_scale=5.0)
    fixed.clamp_()  # a fixed gamma: nothing to do
    assert math.isclose(fixed.scale.item(), 5.0, rel_tol=1e-6)
