"""Self-taught on-the-fly meta loss rescaling: STORM (Heck et al., "Learning from Noisy Labels via
Self-Taught On-the-Fly Meta Loss Rescaling", AAAI 2025, arXiv 2412.12955), and a variant of this project.

A head on the embeddings (the model Theta) is trained with a per-sample loss weight given by a small
rescaling network (Omega). Omega sees only what the model itself provides (no clean seed set).

``variant="storm"`` (the default) follows the paper's Algorithm 1. Each step:

1. inner loop: a training batch B, its rescaler features F (G stochastic dropout passes), weights
   w = Omega(F), the rescaled loss L(theta) = sum_i w_i l_i / sum_i w_i, and the model's update
   theta' = theta - alpha * grad_theta L(theta), kept differentiable in omega (torch.func.functional_call);
2. outer loop: a validation batch V is *sampled from the noisy training data with the rescaling
   function being trained*: sample i is drawn with probability p_i = w_i / sum_j w_j, where w_i is the
   latest weight Omega gave sample i (``validation_probabilities``); its features F_val come from the
   updated model theta', its losses l'_v under theta';
3. the meta loss is the validation loss *rescaled by Omega itself, gradient kept*:
   M(omega) = sum_v Omega(F_val)_v l'_v / sum_v Omega(F_val)_v. Its gradient reaches omega along two
   paths, as the paper's "meta" and "outer" gradients: through theta'(omega) (how the weights of B
   changed the model) and directly through Omega(F_val) (which validation samples count);
4. the head takes its real step (AdamW) on L with the weights of step 1 (omega before its update, as
   in the paper's inner loop), and Omega takes an Adam step on M.

Choices where the paper leaves it open or this project's setting differs, each stated here:
- the meta-gradient is taken through one SGD step of size ``inner_lr`` (the usual one-step lookahead of
  meta reweighting); the real update of the head uses AdamW. One inner traversal per outer step.
- the validation draw is ``batch_size`` samples *with replacement* from p (i.i.d. draws from exactly the
  rescaler's distribution); a sample's "latest weight" is the one from its last appearance in a
  training or validation batch, or from the all-sample pass at the end of each epoch (recomputing every
  sample's weight each step would cost G forward passes over the whole data). Before the first pass all
  samples carry the rescaler's initial weight, so the first draws are uniform.
- features: per-sample loss, probability of the given label, entropy and margin, each as mean and
  standard deviation over G dropout passes, z-scored with running statistics; Omega is a one-hidden-layer
  MLP with a sigmoid output in (0, 1), starting near 0.73 for everyone.
- both weighted losses are normalised by the sum of the weights, so scaling all weights changes nothing.

``variant="detached-cubed"`` is this project's earlier tuning, kept under its own name and shown beside
the paper's in bench/noise.py: the validation batch is drawn *uniformly* from the training data, the
outer step is taken *before* the real step, and the validation losses are weighted by Omega's weights
*detached and cubed* (no gradient through them; only the lookahead path updates omega). Cubing was
found on this project's own data (hate-offensive-crowd, 20% flips): with plain detached weights the
flipped samples' weights climbed back after ~4 epochs.

After every epoch every sample's weight is computed and logged, so the page can draw trajectories; the
score is the mean weight over the second half of training (low = down-weighted = probably mislabelled).
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


VARIANTS = ("storm", "detached-cubed")


def validation_probabilities(weights: np.ndarray) -> np.ndarray:
    """STORM's validation sampling distribution: p_i = w_i / sum_j w_j over the training samples, from
    the rescaler's latest weight for each (uniform when all weights are equal or all are zero)."""
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    total = w.sum()
    return w / total if total > 0 else np.full(len(w), 1.0 / len(w))


def sample_validation(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    """Indices of a validation batch: `size` i.i.d. draws from validation_probabilities(weights)."""
    return rng.choice(len(weights), size=size, replace=True, p=validation_probabilities(weights))


def _lookahead(head: nn.Module, rescaler: Rescaler, params: dict[str, torch.Tensor], x: torch.Tensor,
               y: torch.Tensor, feats: torch.Tensor, inner_lr: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(w = Omega(F) with its graph, theta' = theta - inner_lr * grad of the rescaled loss, differentiable in omega)."""
    w = rescaler(feats)
    losses = nn.functional.cross_entropy(functional_call(head, params, (x,)), y, reduction="none")
    grads = torch.autograd.grad(_weighted_mean(losses, w), list(params.values()), create_graph=True)
    return w, {k: p - inner_lr * g for (k, p), g in zip(params.items(), grads, strict=True)}


def storm_meta_loss(head: nn.Module, rescaler: Rescaler, batch: tuple, val: tuple, *, passes: int,
                    inner_lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Steps 1-3 of STORM (module docstring): (meta loss M(omega), training weights w, validation weights),
    both weight vectors still attached to omega. M's gradient flows through theta' and through Omega(F_val)."""
    (x, y), (xv, yv) = batch, val
    params = dict(head.named_parameters())
    feats = stochastic_features(head, params, x, y, passes)
    rescaler.observe(feats)
    w, fast = _lookahead(head, rescaler, params, x, y, feats, inner_lr)
    feats_v = stochastic_features(head, {k: v.detach() for k, v in fast.items()}, xv, yv, passes)
    val_losses = nn.functional.cross_entropy(functional_call(head, fast, (xv,)), yv, reduction="none")
    v = rescaler(feats_v)  # not detached: the paper's "outer" gradient
    return _weighted_mean(val_losses, v), w, v


def detached_cubed_meta_loss(head: nn.Module, rescaler: Rescaler, batch: tuple, val: tuple, *, passes: int,
                             inner_lr: float, val_power: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The "detached-cubed" variant's meta loss (module docstring) and the training batch's features:
    validation losses under theta' weighted by Omega's weights detached and raised to `val_power`."""
    (x, y), (xv, yv) = batch, val
    params = dict(head.named_parameters())
    feats = stochastic_features(head, params, x, y, passes)
    feats_v = stochastic_features(head, params, xv, yv, passes)
    rescaler.observe(feats)
    _, fast = _lookahead(head, rescaler, params, x, y, feats, inner_lr)
    val_losses = nn.functional.cross_entropy(functional_call(head, fast, (xv,)), yv, reduction="none")
    with torch.no_grad():
        v = rescaler(feats_v) ** val_power
    return _weighted_mean(val_losses, v), feats


def all_weights(head: nn.Module, rescaler: Rescaler, X: torch.Tensor, y: torch.Tensor, *, passes: int,
                chunk: int = 8192) -> np.ndarray:
    params = {k: p.detach() for k, p in head.named_parameters()}
    out = []
    with torch.no_grad():
        for s in range(0, len(y), chunk):
            out.append(rescaler(stochastic_features(head, params, X[s:s + chunk], y[s:s + chunk], passes)))
    return torch.cat(out).numpy()


def _real_step(head: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> None:
    head.train()
    loss = _weighted_mean(nn.functional.cross_entropy(head(x), y, reduction="none"), w.detach())
    opt.zero_grad()
    loss.backward()
    opt.step()


def _meta_update(meta_opt: torch.optim.Optimizer, rescaler: Rescaler, loss: torch.Tensor) -> None:
    meta_opt.zero_grad()
    loss.backward(inputs=list(rescaler.parameters()))
    meta_opt.step()


def rescale_train(X: np.ndarray, y: np.ndarray, n_classes: int, *, variant: str = "storm", epochs: int = 10,
                  hidden: int = 256, dropout: float = 0.2, passes: int = 4, batch_size: int = 256, lr: float = 1e-3,
                  meta_lr: float = 3e-3, inner_lr: float = 0.5, val_power: float = 3.0, seed: int = 0,
                  progress: Progress | None = None) -> RescaleResult:
    """Train a head with meta-learned loss weights; log every sample's weight after every epoch."""
    if variant not in VARIANTS:
        raise ValueError(f"rescaler variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    Xt, yt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    head = make_head(X.shape[1], n_classes, hidden=hidden, dropout=dropout)
    rescaler = Rescaler()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    meta_opt = torch.optim.Adam(rescaler.parameters(), lr=meta_lr, weight_decay=1e-4)
    n = len(y)
    weights = np.zeros((n, epochs), dtype=np.float32)
    latest = np.ones(n, dtype=np.float64)  # STORM's sampling weights: all equal until the rescaler has spoken
    for epoch in range(epochs):
        order, val_order = rng.permutation(n), rng.permutation(n)
        for start in range(0, n, batch_size):
            idx = torch.from_numpy(order[start:start + batch_size])
            if variant == "storm":
                vidx = torch.from_numpy(sample_validation(rng, latest, len(idx)))
                meta, w, v = storm_meta_loss(head, rescaler, (Xt[idx], yt[idx]), (Xt[vidx], yt[vidx]),
                                             passes=passes, inner_lr=inner_lr)
                latest[idx.numpy()], latest[vidx.numpy()] = w.detach().numpy(), v.detach().numpy()
                _meta_update(meta_opt, rescaler, meta)
                _real_step(head, opt, Xt[idx], yt[idx], w)
            else:
                vidx = torch.from_numpy(val_order[start:start + batch_size])
                meta, feats = detached_cubed_meta_loss(head, rescaler, (Xt[idx], yt[idx]), (Xt[vidx], yt[vidx]),
                                                       passes=passes, inner_lr=inner_lr, val_power=val_power)
                _meta_update(meta_opt, rescaler, meta)
                with torch.no_grad():
                    w = rescaler(feats)
                _real_step(head, opt, Xt[idx], yt[idx], w)
        weights[:, epoch] = all_weights(head, rescaler, Xt, yt, passes=passes)
        latest[:] = weights[:, epoch]
        if progress:
            progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}")
    head.eval()
    with torch.no_grad():
        final = head(Xt).softmax(dim=1).numpy()
    score = weights[:, epochs // 2:].mean(axis=1)
    return RescaleResult(weights, final, score)
