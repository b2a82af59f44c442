"""The noise methods' worker processes: cleanlab's confident learning (which starts its own process
pool unless told not to) gives in a spawned, single-threaded worker what it gives here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import HashingVectorizer

from core.noise.parallel import run_jobs
from core.noise.run import NoiseConfig, method_jobs


def test_cleanlab_job_in_a_worker_matches_here(shared: Path) -> None:
    df = pd.read_csv(shared / "hate-offensive-crowd" / "labeled_data.csv", usecols=["class", "tweet"],
                     nrows=600, dtype={"class": int})
    X = HashingVectorizer(n_features=64, alternate_sign=False, norm="l2").transform(df.tweet).toarray()
    X, y = X.astype(np.float32), df["class"].to_numpy(np.int64)
    jobs, _ = method_jobs(X, y, 3, ["cleanlab"], NoiseConfig(folds=3))
    jobs["again"] = jobs["cleanlab"]  # two jobs, so two workers are used
    here, there = run_jobs(jobs, 1), run_jobs(jobs, 2)
    for name in jobs:
        probs, cl, dl = there[name][0]
        assert np.array_equal(probs, here[name][0][0])
        pd.testing.assert_frame_equal(cl, here[name][0][1])
        pd.testing.assert_frame_equal(dl, here[name][0][2])
    assert here["cleanlab"][0][1].cleanlab_flag.any()
