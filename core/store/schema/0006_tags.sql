-- Magpie-style tags (core/tags.py). Long form: one row per (run, sample, tag), so every value traces to
-- the run that made it (backend, model and revision, prompt version and parameters are in runs.params).
-- status: ok | parse_error | out_of_vocabulary | not_computed | request_error. Only 'ok' rows carry a
-- value; the others keep what was received (or why nothing was) in `detail`, never as a value.
CREATE TABLE tags (
    run_id     INTEGER NOT NULL,
    sample_id  BIGINT NOT NULL,
    tag        VARCHAR NOT NULL,   -- category, other_categories, intent, knowledge, difficulty, ...
    value      VARCHAR,            -- the vocabulary value (NULL unless status = 'ok' or for pure scores)
    score      DOUBLE,             -- reward, confidence or count, where the tag has one
    status     VARCHAR NOT NULL,
    detail     VARCHAR,            -- explanation, raw answer on failure, or why not computed
    method     VARCHAR             -- which method made it (zero-shot, classifier, lingua, llm-judge, ...)
);

-- Per tagging run: what was asked for, how each tag was made and how good that method measured.
CREATE TABLE tag_runs (
    run_id      INTEGER PRIMARY KEY,
    backend     VARCHAR NOT NULL,  -- offline, openai, transformers
    tags        VARCHAR[] NOT NULL,
    target      VARCHAR,           -- 'dataset:NAME' or 'selection:ID'
    n_target    BIGINT,
    methods     JSON,              -- {tag: method description}
    metrics     JSON               -- {tag: {accuracy, measured_on, ...}}; filled as they are measured
);

-- Small trained models the offline backend applies: logistic-regression classifiers on embeddings
-- (from hand labels or a labelled column) and Bradley-Terry reward proxies (from preference pairs).
CREATE TABLE tag_models (
    run_id      INTEGER PRIMARY KEY,
    kind        VARCHAR NOT NULL,  -- classifier, reward_proxy
    tag         VARCHAR NOT NULL,  -- the tag it predicts (response_quality for reward proxies)
    embed_model VARCHAR NOT NULL,
    text_field  VARCHAR NOT NULL,
    classes     VARCHAR[],         -- classifier classes, in coefficient row order
    coef        DOUBLE[] NOT NULL, -- row-major, n_rows x n_features
    intercept   DOUBLE[],
    n_features  INTEGER NOT NULL,
    metrics     JSON               -- cross-validated / held-out accuracy and how it was measured
);
