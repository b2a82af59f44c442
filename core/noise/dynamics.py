"""Training dynamics of a small head on the embeddings: dataset cartography and area under the margin.

One training pass of a linear or one-hidden-layer head records, for every sample and epoch, the
probability of its given label and its margin (given-label logit minus the largest other logit), read
off the training forward pass as each minibatch goes by, as both papers do.

- Dataset cartography (Swayamdipta et al. 2020): confidence = mean probability of the given label over
  epochs, variability = its standard deviation, correctness = share of epochs where the given label
  was the argmax. Regions: ambiguous (high variability), easy-to-learn (confident), hard-to-learn
  (neither, where mislabelled samples gather).
- Area under the margin (Pleiss et al. 2020): AUM = mean margin over epochs. Threshold samples: a
  random N/(c+1) samples are given a fake extra class, so they are mislabelled by construction; the
  99th percentile of their AUM is the threshold below which a real sample is flagged. Two passes with
  disjoint threshold sets give every sample an AUM from a pass where it kept its own label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

Progress = Callable[[float, str], None]
AMBIGUOUS_VARIABILITY = 0.2  # cartography: above this spread a sample is "ambiguous"
EASY_CONFIDENCE = 0.5        # below it (and not ambiguous) a sample is "hard to learn"


@contextmanager
def limit_threads(n: int = 1) -> Iterator[None]:
    """Cap torch and every BLAS/OpenMP pool at `n` threads for a block. The heads train on small batches,
    where extra threads cost more at each op's barrier than they save (core/noise/parallel.py: measured
    6x slower with 2 torch threads on a busy 2-core machine); parallel.run_jobs uses the cores instead."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        with threadpool_limits(max(1, n)):
            yield
    finally:
        torch.set_num_threads(before)


def make_head(dims: int, n_classes: int, *, hidden: int = 256, dropout: float = 0.1) -> nn.Module:
    """A linear head (hidden=0) or a one-hidden-layer MLP with dropout."""
    if hidden <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(dims, n_classes))
    return nn.Sequential(nn.Linear(dims, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes))


@dataclass
class Trajectories:
    """Per sample (rows) and epoch (columns), read during training."""

    p_given: np.ndarray   # probability of the given label
    margin: np.ndarray    # given-label logit minus the largest other logit
    correct: np.ndarray   # given label was the argmax
    final_probs: np.ndarray  # n x classes, eval mode after the last epoch


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    given = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).max(dim=1).values
    return given - other


def train_dynamics(X: np.ndarray, y: np.ndarray, n_classes: int, *, epochs: int = 20, hidden: int = 256,
                   dropout: float = 0.1, lr: float = 1e-3, batch_size: int = 256, weight_decay: float = 1e-4,
                   seed: int = 0, progress: Progress | None = None) -> Trajectories:
    """Train a head with plain cross-entropy and record every sample's trajectory."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    Xt, yt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    head = make_head(X.shape[1], n_classes, hidden=hidden, dropout=dropout)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(y)
    p_given = np.zeros((n, epochs), dtype=np.float32)
    margin = np.zeros((n, epochs), dtype=np.float32)
    correct = np.zeros((n, epochs), dtype=bool)
    for epoch in range(epochs):
        head.train()
        order = torch.from_numpy(rng.permutation(n))
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            logits = head(Xt[idx])
            loss = nn.functional.cross_entropy(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                probs = logits.softmax(dim=1)
                rows = idx.numpy()
                p_given[rows, epoch] = probs.gather(1, yt[idx][:, None]).squeeze(1).numpy()
                margin[rows, epoch] = _margin(logits, yt[idx]).numpy()
                correct[rows, epoch] = (logits.argmax(dim=1) == yt[idx]).numpy()
        if progress:
            progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}")
    head.eval()
    with torch.no_grad():
        final = head(Xt).softmax(dim=1).numpy()
    return Trajectories(p_given, margin, correct, final)


def cartography(traj: Trajectories, *, ambiguous: float = AMBIGUOUS_VARIABILITY,
                easy: float = EASY_CONFIDENCE) -> pd.DataFrame:
    """Confidence, variability, correctness, region and a flag (hard-to-learn) per sample."""
    confidence = traj.p_given.mean(axis=1)
    variability = traj.p_given.std(axis=1)
    correctness = traj.correct.mean(axis=1)
    region = np.where(variability >= ambiguous, "ambiguous", np.where(confidence >= easy, "easy", "hard"))
    return pd.DataFrame({
        "cartography_confidence": confidence, "cartography_variability": variability,
        "cartography_correctness": correctness, "cartography_region": region,
        "cartography_flag": region == "hard",
    })


@dataclass
class AumResult:
    table: pd.DataFrame        # aum, aum_flag per sample
    margins: np.ndarray        # n x epochs, from the pass where the sample kept its label
    thresholds: list[float]    # per pass
    final_probs: np.ndarray    # n x classes (real classes only), from the pass the sample kept its label


def aum_subsets(n: int, n_classes: int, seed: int = 0) -> list[np.ndarray]:
    """The two disjoint sets of threshold samples, N/(c+1) each."""
    perm = np.random.default_rng(seed + 1).permutation(n)
    n_thr = max(1, n // (n_classes + 1))
    return [perm[:n_thr], perm[n_thr:2 * n_thr]]


def aum_pass(X: np.ndarray, y: np.ndarray, n_classes: int, subset: np.ndarray, k: int, *, epochs: int = 20,
             seed: int = 0, progress: Progress | None = None, **train_kwargs: float) -> Trajectories:
    """Pass k: train with `subset` moved to a fake extra class (independent of the other pass)."""
    fake = y.copy()
    fake[subset] = n_classes
    return train_dynamics(X, fake, n_classes + 1, epochs=epochs, seed=seed + 10 + k, progress=progress,
                          **train_kwargs)


def aum_combine(subsets: list[np.ndarray], trajs: list[Trajectories], n_classes: int,
                percentile: float = 99.0) -> AumResult:
    """Each sample's AUM from the first pass where it kept its own label; thresholds per pass."""
    n, epochs = trajs[0].margin.shape
    values = np.zeros(n, dtype=np.float32)
    flags = np.zeros(n, dtype=bool)
    margins = np.zeros((n, epochs), dtype=np.float32)
    final = np.zeros((n, n_classes), dtype=np.float32)
    done = np.zeros(n, dtype=bool)
    thresholds = []
    for subset, traj in zip(subsets, trajs, strict=True):
        area = traj.margin.mean(axis=1)
        threshold = float(np.percentile(area[subset], percentile))
        thresholds.append(threshold)
        mine = ~done
        mine[subset] = False
        values[mine], flags[mine] = area[mine], area[mine] < threshold
        margins[mine], done[mine] = traj.margin[mine], True
        probs = traj.final_probs[:, :n_classes]
        final[mine] = probs[mine] / probs[mine].sum(axis=1, keepdims=True)
    return AumResult(pd.DataFrame({"aum": values, "aum_flag": flags}), margins, thresholds, final)


def aum(X: np.ndarray, y: np.ndarray, n_classes: int, *, epochs: int = 20, percentile: float = 99.0,
        seed: int = 0, progress: Progress | None = None, **train_kwargs: float) -> AumResult:
    """Area under the margin with threshold samples, two passes (see the module docstring)."""
    subsets = aum_subsets(len(y), n_classes, seed)
    trajs = []
    for k, subset in enumerate(subsets):
        report = (lambda f, m, k=k: progress((k + f) / 2, f"AUM pass {k + 1}/2, {m}")) if progress else None
        trajs.append(aum_pass(X, y, n_classes, subset, k, epochs=epochs, seed=seed, progress=report, **train_kwargs))
    return aum_combine(subsets, trajs, n_classes, percentile)
