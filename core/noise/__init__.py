"""Noisy-label and reweighting inspection: which labels of a dataset are probably wrong, and how a
reweighting method would down-weight them.

Modules: features (embeddings + the label column), cleanlab_methods (confident learning, outliers,
near duplicates), dynamics (dataset cartography, area under the margin), rescaling (self-taught
on-the-fly meta loss rescaling), multi_annotator (consensus from several labels per sample) and run
(one entry point, `run_noise`, that records a run and stores per-sample results).
"""

from typing import Any

from core.noise.config import DEFAULT_METHODS, METHODS, NoiseConfig

__all__ = ["DEFAULT_METHODS", "METHODS", "NoiseConfig", "noise_weights", "run_noise"]


def __getattr__(name: str) -> Any:
    # run_noise and noise_weights pull in torch and cleanlab: import them on first use only.
    if name in ("run_noise", "noise_weights"):
        from core.noise import run

        return getattr(run, name)
    raise AttributeError(name)
