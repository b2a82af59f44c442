-- Duplicate groups and benchmark-contamination results, each keyed by the run that produced them.

-- One row per member of a duplicate group (groups of one are not stored).
CREATE TABLE dup_groups (
    run_id            INTEGER NOT NULL,
    group_id          INTEGER NOT NULL,
    sample_id         BIGINT NOT NULL,
    is_representative BOOLEAN NOT NULL,  -- the one kept when the group is collapsed
    similarity        DOUBLE             -- to the representative: 1 exact, Jaccard estimate, or cosine
);

-- Per training sample and evaluation set: the strongest evidence by each method.
-- Offsets are character offsets into `contamination_text(messages)`: the turns' contents joined by "\n".
CREATE TABLE contamination_results (
    run_id             INTEGER NOT NULL,
    sample_id          BIGINT NOT NULL,
    eval_dataset_id    INTEGER NOT NULL,
    ngram13_eval_id    BIGINT,    -- eval item sharing the most 13-grams
    ngram13_hits       INTEGER,   -- distinct 13-grams shared with it (frequent ones ignored)
    ngram13_spans      JSON,      -- [[start, end], ...] in the training text
    ngram8_eval_id     BIGINT,    -- eval item with the highest 8-gram coverage
    ngram8_train_frac  DOUBLE,    -- share of the sample's 8-grams found in the eval set
    ngram8_eval_frac   DOUBLE,    -- share of that eval item's 8-grams found in the sample
    ngram8_spans       JSON,
    embed_eval_id      BIGINT,    -- nearest eval item by embedding
    embed_cosine       DOUBLE,
    mink_score         DOUBLE,    -- Min-K% Prob of the training sample under the chosen model
    flag_ngram13       BOOLEAN,
    flag_ngram8        BOOLEAN,
    flag_embedding     BOOLEAN,
    flag_mink          BOOLEAN,
    contaminated       BOOLEAN    -- any flag
);

-- Per evaluation item: how often it is hit, its PaLM-style coverage by the whole training set, and its
-- Min-K% Prob (the question "has this model seen this benchmark?").
CREATE TABLE contamination_eval_items (
    run_id             INTEGER NOT NULL,
    eval_dataset_id    INTEGER NOT NULL,
    eval_sample_id     BIGINT NOT NULL,
    n_train_hits       INTEGER,   -- training samples flagged against this item, any method
    ngram8_coverage    DOUBLE,    -- share of its 8-grams present anywhere in the training set
    mink_score         DOUBLE
);
