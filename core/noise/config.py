"""Method names and run parameters, importable without torch (the CLI builds its parser from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Per method, the noise_scores column of its flag (core/noise/run.py writes them; the map reads them).
FLAG_COLUMNS = {"cleanlab": "cleanlab_flag", "cartography": "cartography_flag", "aum": "aum_flag",
                "rescaler": "rescaler_flag", "multiannotator": "multiannotator_flag"}
# Per method, the score whose low values mean "probably mislabelled".
SCORE_COLUMNS = {"cleanlab": "cleanlab_score", "cartography": "cartography_confidence", "aum": "aum",
                 "rescaler": "rescaler_weight", "multiannotator": "multiannotator_score"}

# The rescaler's variants (core/noise/rescaling.py explains both); "storm" follows Heck et al. 2025.
RESCALER_VARIANTS = ("storm", "detached-cubed")
METHODS = ("cleanlab", "cartography", "aum", "rescaler", "multiannotator")
DEFAULT_METHODS = ("cleanlab", "cartography", "aum", "rescaler")


@dataclass
class NoiseConfig:
    """Parameters of a noise run (all recorded with the run)."""

    epochs: int = 20            # cartography and AUM training epochs
    hidden: int = 256           # hidden units of the head (0: linear)
    folds: int = 5              # cross-validation folds for out-of-fold probabilities
    rescaler_epochs: int = 10
    passes: int = 4             # stochastic forward passes for the rescaler's features
    rescaler_variant: str = "storm"  # "storm" (the paper) or "detached-cubed" (see core/noise/rescaling.py)
    knn_k: int = 10             # neighbours for Datalab's outlier / near-duplicate checks
    seed: int = 0
    threads: int = 0            # methods run at once, each in its own single-threaded process; 0: one per core
                                # (core/noise/parallel.py says why not more threads per method)
    extra: dict[str, Any] = field(default_factory=dict)
