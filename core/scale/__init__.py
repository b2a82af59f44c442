"""Beyond one machine: the heavy steps (embedding, offline tagging, MinHash signatures, reward scoring) run
over Parquet shards, in this process or on Ray, resumable by shard. See docs/SCALE.md.

    from core.scale import EmbedStep, run_step
    report = run_step(EmbedStep(text="instruction"), store, "gsm8k-train", engine="ray", num_workers=2)
"""

from core.scale.engine import ENGINES, ScaleReport, compute_shard, init_ray, run_step
from core.scale.shards import Job
from core.scale.steps import STEPS, EmbedStep, MinHashStep, RewardStep, Step, TagStep

__all__ = ["ENGINES", "STEPS", "EmbedStep", "Job", "MinHashStep", "RewardStep", "ScaleReport", "Step", "TagStep",
           "compute_shard", "init_ray", "run_step"]
