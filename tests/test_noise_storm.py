"""STORM (Heck et al., "Learning from Noisy Labels via Self-Taught On-the-Fly Meta Loss Rescaling",
arXiv 2412.12955) checked against small cases worked by hand from the paper's formulas:

- the rescaling function Omega: a sigmoid of a one-hidden-layer MLP of z-scored features;
- the validation draw: sample i with probability p_i = w_i / sum_j w_j, w the rescaler's weights;
- the meta loss M = sum_v Omega(F_v) l_v / sum_v Omega(F_v) keeps its gradient through the weights
  Omega(F_v) (the paper's "outer" gradient). With a zero inner step (theta' = theta) only that path is
  left, and dM/db = sum_v w_v (1 - w_v) (l_v - M) / sum_v w_v for the output bias b; the earlier
  detached-cubed variant's meta-gradient is exactly zero there.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from core.noise import rescaling
from core.noise.rescaling import Rescaler, detached_cubed_meta_loss, storm_meta_loss


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _rescaler(w1: list[list[float]], b1: list[float], w2: list[float], b2: float) -> Rescaler:
    r = Rescaler(hidden=len(b1))
    with torch.no_grad():
        r.net[0].weight.copy_(torch.tensor(w1))
        r.net[0].bias.copy_(torch.tensor(b1))
        r.net[2].weight.copy_(torch.tensor([w2]))
        r.net[2].bias.fill_(b2)
    return r


def test_rescaling_function_by_hand() -> None:
    # Features z-scored against mean 0, variance 1 (fresh statistics); hidden h = relu(W1 z + b1);
    # weight = sigmoid(w2 . h + b2). Sample 1: z0 = 1 -> h = (1, 0) -> sigmoid(2 - 1) = sigmoid(1);
    # sample 2: z0 = -1 -> h = (0, 1) -> sigmoid(0 - 1) = sigmoid(-1).
    e0 = [1.0] + [0.0] * 7
    r = _rescaler([e0, [-v for v in e0]], [0.0, 0.0], [2.0, 0.0], -1.0)
    feats = torch.tensor([e0, [-v for v in e0]])
    got = r(feats).detach().numpy()
    assert got == pytest.approx([_sigmoid(1.0), _sigmoid(-1.0)], abs=1e-5)


def test_validation_sampling_distribution_by_hand() -> None:
    # weights sigmoid(1), sigmoid(-1), 0.5, 0.5, 0: they sum to 2, so p = w / 2; a zero weight is never drawn.
    w = np.array([_sigmoid(1.0), _sigmoid(-1.0), 0.5, 0.5, 0.0])
    expected = [_sigmoid(1.0) / 2, _sigmoid(-1.0) / 2, 0.25, 0.25, 0.0]
    assert rescaling.validation_probabilities(w) == pytest.approx(expected, abs=1e-12)
    draws = rescaling.sample_validation(np.random.default_rng(0), w, 200_000)
    freq = np.bincount(draws, minlength=5) / len(draws)
    assert freq == pytest.approx(expected, abs=0.005) and freq[4] == 0
    assert rescaling.validation_probabilities(np.zeros(4)) == pytest.approx([0.25] * 4)  # nothing known: uniform


def _two_sample_case() -> tuple[nn.Module, Rescaler, tuple, np.ndarray, np.ndarray]:
    """A linear head with identity weights (no dropout) and two samples x = (2, 0) labelled 0 and 1:
    logits (2, 0), losses l = log(1 + e^-2) and 2 + log(1 + e^-2). The rescaler reads only the mean loss
    (feature 0), z-scored with the batch's own statistics (mean of l, variance 1) -> z = (-1, +1); with
    W1 = e0, b1 = 10, w2 = 1, b2 = -10 the weights are sigmoid(z) and the hidden unit is z + 10."""
    head = nn.Sequential(nn.Dropout(0.0), nn.Linear(2, 2))
    with torch.no_grad():
        head[1].weight.copy_(torch.eye(2))
        head[1].bias.zero_()
    r = _rescaler([[1.0] + [0.0] * 7], [10.0], [1.0], -10.0)
    x = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    y = torch.tensor([0, 1])
    losses = np.array([math.log1p(math.exp(-2.0)), 2.0 + math.log1p(math.exp(-2.0))])
    z = np.array([-1.0, 1.0])
    return head, r, (x, y), losses, z


def test_storm_meta_gradient_flows_through_the_weights() -> None:
    head, r, batch, losses, z = _two_sample_case()
    meta, _, v = storm_meta_loss(head, r, batch, batch, passes=2, inner_lr=0.0)
    w = np.array([_sigmoid(t) for t in z])
    M = float((w * losses).sum() / w.sum())
    assert v.detach().numpy() == pytest.approx(w, abs=1e-5)
    assert float(meta.detach()) == pytest.approx(M, abs=1e-5)
    meta.backward(inputs=list(r.parameters()))
    # dM/db2 = sum w(1-w)(l-M) / sum w; dM/dw2 = sum w(1-w) h (l-M) / sum w with h = z + 10.
    d_b2 = float((w * (1 - w) * (losses - M)).sum() / w.sum())
    d_w2 = float((w * (1 - w) * (z + 10.0) * (losses - M)).sum() / w.sum())
    assert d_b2 < -0.1  # not a vanishing case: the outer gradient lowers the high-loss sample's weight
    assert float(r.net[2].bias.grad) == pytest.approx(d_b2, abs=1e-4)
    assert float(r.net[2].weight.grad[0, 0]) == pytest.approx(d_w2, abs=1e-4)


def test_the_detached_cubed_variant_has_no_gradient_there() -> None:
    head, r, batch, _, _ = _two_sample_case()
    meta, _ = detached_cubed_meta_loss(head, r, batch, batch, passes=2, inner_lr=0.0)
    grads = torch.autograd.grad(meta, list(r.parameters()), allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0.0 for g in grads)
    # With a real inner step the lookahead path carries a gradient in both variants.
    head, r, batch, _, _ = _two_sample_case()
    meta, _ = detached_cubed_meta_loss(head, r, batch, batch, passes=2, inner_lr=0.5)
    grads = torch.autograd.grad(meta, list(r.parameters()), allow_unused=True)
    assert any(g is not None and float(g.abs().max()) > 0 for g in grads)


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="storm"):
        rescaling.rescale_train(np.zeros((10, 2), np.float32), np.zeros(10, np.int64), 2, variant="nope")
