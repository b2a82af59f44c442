-- Noisy-label inspection: one noise run per (dataset, label source, methods), its per-sample scores and
-- flags, per-epoch trajectories (for the page's charts) and, with several labels per sample, annotator quality.

CREATE TABLE noise_runs (
    run_id            INTEGER PRIMARY KEY,   -- the runs row (kind 'noise')
    dataset_id        INTEGER NOT NULL,
    label_source      VARCHAR NOT NULL,      -- meta:class, votes:a,b,c, annotators:x, labels:schema/field
    embedding_run_id  INTEGER NOT NULL,
    classes           VARCHAR[] NOT NULL,    -- class names; labels below are these names
    methods           VARCHAR[] NOT NULL,
    n_samples         BIGINT NOT NULL,
    n_dropped         BIGINT NOT NULL,       -- samples without a label or in a class too small to learn
    n_relabelled      BIGINT NOT NULL,       -- hand relabels applied before the run
    summary           JSON                   -- flags per method, thresholds, seconds per method
);

-- One row per sample and noise run: a score and a flag per method (NULL where the method did not run).
-- label_score (0..1, low = suspicious) and is_label_issue combine the methods; core/labels.py reads them
-- to put suspicious samples first in the labelling queue.
CREATE TABLE noise_scores (
    run_id                   INTEGER NOT NULL,
    sample_id                BIGINT NOT NULL,
    given_label              VARCHAR NOT NULL,
    predicted_label          VARCHAR,
    predicted_prob           DOUBLE,
    label_score              DOUBLE,
    is_label_issue           BOOLEAN,
    n_flags                  INTEGER,
    cleanlab_score           DOUBLE,
    cleanlab_flag            BOOLEAN,
    outlier_score            DOUBLE,
    outlier_flag             BOOLEAN,
    near_duplicate_score     DOUBLE,
    near_duplicate_flag      BOOLEAN,
    cartography_confidence   DOUBLE,
    cartography_variability  DOUBLE,
    cartography_correctness  DOUBLE,
    cartography_region       VARCHAR,        -- easy, ambiguous, hard
    cartography_flag         BOOLEAN,
    aum                      DOUBLE,
    aum_flag                 BOOLEAN,
    rescaler_weight          DOUBLE,         -- mean weight over the second half of training, in (0, 1)
    rescaler_flag            BOOLEAN,
    multiannotator_score     DOUBLE,         -- CROWDLAB consensus quality
    multiannotator_flag      BOOLEAN,
    consensus_label          VARCHAR,
    annotator_agreement      DOUBLE
);

-- Per sample and series, one value per epoch: rescaler_weight, p_given (cartography), margin (AUM).
CREATE TABLE noise_trajectories (
    run_id     INTEGER NOT NULL,
    sample_id  BIGINT NOT NULL,
    series     VARCHAR NOT NULL,
    "values"   FLOAT[] NOT NULL
);

CREATE TABLE noise_annotators (
    run_id                    INTEGER NOT NULL,
    annotator                 VARCHAR NOT NULL,
    annotator_quality         DOUBLE,
    agreement_with_consensus  DOUBLE,
    n_labels                  BIGINT,
    worst_class               VARCHAR
);
