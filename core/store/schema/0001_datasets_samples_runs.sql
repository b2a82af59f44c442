-- datasets, samples, runs: the foundation every later table refers to.
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);

CREATE SEQUENCE dataset_id_seq START 1;
CREATE SEQUENCE run_id_seq START 1;
CREATE SEQUENCE sample_id_seq START 1;

CREATE TABLE datasets (
    dataset_id     INTEGER PRIMARY KEY,
    name           VARCHAR NOT NULL UNIQUE,
    source         VARCHAR,          -- path or hub id it was loaded from
    format         VARCHAR,          -- jsonl, json, parquet, csv, arrow-dir, hub, ...
    shape          VARCHAR,          -- alpaca, sharegpt, openai, preference, ...
    license        VARCHAR,
    synthetic      BOOLEAN NOT NULL DEFAULT false,
    is_eval        BOOLEAN NOT NULL DEFAULT false,  -- an evaluation benchmark, not training data
    description    VARCHAR,
    n_samples      BIGINT NOT NULL,
    n_records      BIGINT NOT NULL,  -- source records read (OASST trees give many samples each)
    n_skipped      BIGINT NOT NULL DEFAULT 0,
    fields         JSON,             -- [{name, type}] of per-sample metadata fields, for filters
    load_options   JSON,             -- how it was loaded: format, shape, mapping, tokenizer, ...
    loaded_at      TIMESTAMP NOT NULL,
    ingest_run_id  INTEGER
);

-- One row per sample. `id` is unique across the store and is the key every other table uses.
CREATE TABLE samples (
    id          BIGINT NOT NULL,
    dataset_id  INTEGER NOT NULL,
    source_id   VARCHAR NOT NULL,   -- id in the source (or its record number)
    row_idx     BIGINT NOT NULL,    -- order within the dataset
    messages    STRUCT(role VARCHAR, content VARCHAR)[] NOT NULL,
    rejected    STRUCT(role VARCHAR, content VARCHAR)[],  -- preference pairs only
    text        VARCHAR NOT NULL,   -- flat text for search and embedding
    n_turns     INTEGER NOT NULL,
    n_chars     INTEGER NOT NULL,
    n_tokens    INTEGER NOT NULL,
    meta        JSON,               -- shape-specific fields (category, ranks, votes, ...)
    raw         JSON                -- the source record, whole
);

CREATE TABLE runs (
    run_id         INTEGER PRIMARY KEY,
    kind           VARCHAR NOT NULL,  -- ingest, embed, project, cluster, tag, ...
    dataset_id     INTEGER,
    status         VARCHAR NOT NULL,  -- running, finished, failed
    params         JSON,
    model          VARCHAR,
    model_revision VARCHAR,
    started_at     TIMESTAMP NOT NULL,
    finished_at    TIMESTAMP,
    n_samples      BIGINT,
    sample_filter  VARCHAR,           -- which samples, as a description or predicate
    error          VARCHAR,
    code_version   VARCHAR,
    pid            INTEGER,
    host           VARCHAR
);
