-- Embedding maps: vectors (cached by model and content hash), which samples each embedding run covers,
-- nearest-neighbour graphs, 2-D projections, clusters with their labels, and named maps.

-- One vector per (model, hash of the embedded text): identical text is embedded once per model, and a
-- new run over unchanged samples finds every vector here. FLOAT[] (not FLOAT[384]) so any model fits.
CREATE TABLE embedding_vectors (
    model_key     VARCHAR NOT NULL,   -- model + backend + precision: different numbers, different key
    content_hash  VARCHAR NOT NULL,   -- md5 of the embedded text
    vector        FLOAT[] NOT NULL,   -- L2-normalised
    run_id        INTEGER,            -- the run that computed it
    PRIMARY KEY (model_key, content_hash)
);

-- Which samples an embed run covers and the hash of the text it embedded for each (written at start).
CREATE TABLE embedding_items (
    run_id        INTEGER NOT NULL,
    sample_id     BIGINT NOT NULL,
    content_hash  VARCHAR NOT NULL
);

-- Per embed run: what was embedded and how much came from the cache.
CREATE TABLE embedding_runs (
    run_id        INTEGER PRIMARY KEY,
    model_key     VARCHAR NOT NULL,
    text_field    VARCHAR NOT NULL,   -- instruction, user, conversation, response
    dims          INTEGER,
    n_items       BIGINT,
    n_cached      BIGINT,             -- vectors found in the cache when the run (or its resume) began
    n_computed    BIGINT,             -- vectors this run computed
    backend       VARCHAR,
    device        VARCHAR,
    precision     VARCHAR,
    seconds       DOUBLE
);

-- k-nearest-neighbour graph of an embedding run (a 'knn' run), reused by every UMAP of that run.
CREATE TABLE knn_graphs (
    run_id        INTEGER NOT NULL,
    sample_id     BIGINT NOT NULL,
    neighbours    BIGINT[] NOT NULL,  -- sample ids, nearest first (the sample itself first)
    distances     FLOAT[] NOT NULL    -- cosine distances
);

CREATE TABLE projections (
    run_id        INTEGER NOT NULL,
    sample_id     BIGINT NOT NULL,
    x             FLOAT NOT NULL,
    y             FLOAT NOT NULL
);

CREATE TABLE clusters (
    run_id        INTEGER NOT NULL,
    sample_id     BIGINT NOT NULL,
    cluster       INTEGER NOT NULL    -- -1: noise (HDBSCAN)
);

CREATE TABLE cluster_labels (
    run_id        INTEGER NOT NULL,
    cluster       INTEGER NOT NULL,
    size          BIGINT NOT NULL,
    label         VARCHAR NOT NULL,   -- c-TF-IDF keywords, readable without an LLM
    keywords      VARCHAR[],
    llm_label     VARCHAR,            -- from an OpenAI-compatible endpoint, when one is configured
    x             FLOAT,              -- where to draw the label (centroid on the projection)
    y             FLOAT
);

CREATE SEQUENCE map_id_seq START 1;

-- A map = an embedding run + a projection run (+ a cluster run): what the map page shows.
CREATE TABLE maps (
    map_id            INTEGER PRIMARY KEY,
    name              VARCHAR NOT NULL,
    dataset_id        INTEGER,          -- NULL when the map spans several datasets
    datasets          VARCHAR[],
    embedding_run_id  INTEGER NOT NULL,
    projection_run_id INTEGER NOT NULL,
    cluster_run_id    INTEGER,
    created_at        TIMESTAMP NOT NULL
);
