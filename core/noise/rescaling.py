"""Self-taught on-the-fly meta loss rescaling, after Heck et al., "Learning from Noisy Labels via
Self-Taught On-the-Fly Meta Loss Rescaling".

A head on the embeddings is trained with a per-sample loss weight given by a small rescaling network.
The rescaler sees only what the model itself provides: per-sample loss, probability of the given label,
entropy and margin, each as mean and spread over several stochastic (dropout) forward passes. Each step:

1. features of the training batch -> weights w = R(features); weighted loss, normalised by sum(w);
2. one-step lookahead of the head's parameters with that loss (torch.func.functional_call, graph kept);
3. a validation batch drawn from the same noisy training data, its per-sample losses under the
   lookahead parameters weighted by the rescaler's own (detached) weights, sharpened (cubed, see
   meta_step): no clean seed set. The
   gradient of this loss with respect to the rescaler's parameters updates the rescaler;
4. the head takes a real step with the updated rescaler's (detached) weights.

Samples whose gradients disagree with the (reweighted) majority lose weight: mislabelled samples.
After every epoch every sample's weight is computed and logged, so the page can draw trajectories.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from core.noise.dynamics import make_head

Progress = Callable[[float, str], None]
FEATURE_NAMES = ("loss", "p_given", "entropy", "margin")  # each as mean and std over the passes


class Rescaler(nn.Module):
    """Features (z-scored with running statistics) -> a loss weight in (0, 1)."""

    def __init__(self, n_features: int = 2 * len(FEATURE_NAMES), hidden: int = 32, momentum: float = 0.05) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.constant_(self.net[2].bias, 1.0)  # start by weighting everyone about equally (0.73)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("var", torch.ones(n_features))
        self.register_buffer("seen", torch.zeros(()))
        self.momentum = momentum

    def observe(self, feats: torch.Tensor) -> None:
        m = 1.0 if self.seen == 0 else self.momentum
        self.mean.mul_(1 - m).add_(m * feats.mean(0))
        self.var.mul_(1 - m).add_(m * feats.var(0, unbiased=False))
        self.seen += 1

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        z = (feats - self.mean) / (self.var.sqrt() + 1e-6)
        return torch.sigmoid(self.net(z)).squeeze(1)


def stochastic_features(head: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                        passes: int) -> torch.Tensor:
    """(batch, 8): mean and std over `passes` dropout forward passes of loss, p(given), entropy, margin."""
    head.train()  # dropout on: the spread over passes is the point
    rows = []
    with torch.no_grad():
        for _ in range(passes):
            logits = functional_call(head, params, (x,))
            logp = logits.log_softmax(dim=1)
            p_given = logp.gather(1, y[:, None]).squeeze(1).exp()
            entropy = -(logp.exp() * logp).sum(1)
            other = logits.scatter(1, y[:, None], float("-inf")).max(1).values
            margin = logits.gather(1, y[:, None]).squeeze(1) - other
            rows.append(torch.stack([-logp.gather(1, y[:, None]).squeeze(1), p_given, entropy, margin], 1))
    stacked = torch.stack(rows)  # passes x batch x 4
    return torch.cat([stacked.mean(0), stacked.std(0, unbiased=False)], dim=1)


@dataclass
class RescaleResult:
    weights: np.ndarray      # n x epochs: every sample's weight after each epoch
    final_probs: np.ndarray  # n x classes, eval mode at the end
    score: np.ndarray        # mean weight over the second half of training (low = down-weighted)


def _weighted_mean(losses: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (w * losses).sum() / (w.sum() + 1e-8)


def meta_step(head: nn.Module, rescaler: Rescaler, meta_opt: torch.optim.Optimizer, batch: tuple, val: tuple, *,
              passes: int, inner_lr: float, val_power: float = 3.0) -> torch.Tensor:
    """Steps 1-3 of the module docstring: update the rescaler through a one-step lookahead.
    Returns the training batch's features (reused for the real step)."""
    (x, y), (xv, yv) = batch, val
    params = dict(head.named_parameters())
    feats = stochastic_features(head, params, x, y, passes)
    feats_v = stochastic_features(head, params, xv, yv, passes)
    rescaler.observe(feats)
    losses = nn.functional.cross_entropy(functional_call(head, params, (x,)), y, reduction="none")
    grads = torch.autograd.grad(_weighted_mean(losses, rescaler(feats)), list(params.values()), create_graph=True)
    fast = {k: p - inner_lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
    val_losses = nn.functional.cross_entropy(functional_call(head, fast, (xv,)), yv, reduction="none")
    with torch.no_grad():
        # Self-taught: the rescaler's own weights discount noisy validation samples. Raised to a power:
        # with plain weights, once the clean samples were fit the (merely down-weighted) noisy validation
        # samples dominated the validation gradient and the weights of flipped samples climbed back after
        # ~4 epochs (measured on hate-offensive-crowd with 20% flips); cubed, they stayed down.
        v = rescaler(feats_v) ** val_power
    meta_opt.zero_grad()
    _weighted_mean(val_losses, v).backward(inputs=list(rescaler.parameters()))
    meta_opt.step()
    return feats


def all_weights(head: nn.Module, rescaler: Rescaler, X: torch.Tensor, y: torch.Tensor, *, passes: int,
                chunk: int = 8192) -> np.ndarray:
    params = {k: p.detach() for k, p in head.named_parameters()}
    out = []
    with torch.no_grad():
        for s in range(0, len(y), chunk):
            out.append(rescaler(stochastic_features(head, params, X[s:s + chunk], y[s:s + chunk], passes)))
    return torch.cat(out).numpy()


def rescale_train(X: np.ndarray, y: np.ndarray, n_classes: int, *, epochs: int = 10, hidden: int = 256,
                  dropout: float = 0.2, passes: int = 4, batch_size: int = 256, lr: float = 1e-3,
                  meta_lr: float = 3e-3, inner_lr: float = 0.5, val_power: float = 3.0, seed: int = 0,
                  progress: Progress | None = None) -> RescaleResult:
    """Train a head with meta-learned loss weights; log every sample's weight after every epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    Xt, yt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    head = make_head(X.shape[1], n_classes, hidden=hidden, dropout=dropout)
    rescaler = Rescaler()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    meta_opt = torch.optim.Adam(rescaler.parameters(), lr=meta_lr, weight_decay=1e-4)
    n = len(y)
    weights = np.zeros((n, epochs), dtype=np.float32)
    for epoch in range(epochs):
        order, val_order = rng.permutation(n), rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = torch.from_numpy(order[start:start + batch_size])
            vidx = torch.from_numpy(val_order[start:start + batch_size])
            feats = meta_step(head, rescaler, meta_opt, (Xt[idx], yt[idx]), (Xt[vidx], yt[vidx]),
                              passes=passes, inner_lr=inner_lr, val_power=val_power)
            with torch.no_grad():
                w = rescaler(feats)
            head.train()
            loss = _weighted_mean(nn.functional.cross_entropy(head(Xt[idx]), yt[idx], reduction="none"), w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        weights[:, epoch] = all_weights(head, rescaler, Xt, yt, passes=passes)
        if progress:
            progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}")
    head.eval()
    with torch.no_grad():
        final = head(Xt).softmax(dim=1).numpy()
    score = weights[:, epochs // 2:].mean(axis=1)
    return RescaleResult(weights, final, score)
