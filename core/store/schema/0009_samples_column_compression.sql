-- Per-column storage for samples, chosen by measurement (bench/ingest_bench.py, 1M rows on 2 cores):
-- DuckDB's automatic string compression (DICT_FSST) cost ~2.5 s per copy of the content per million
-- samples at import, two thirds of the whole load. The hot columns (messages, text: read by every page,
-- search and embedding) are stored uncompressed, which reads as fast or faster; the cold raw record is
-- zstd-compressed (the smallest and cheapest of the compressions tried). Store files grow ~35%.
CREATE TABLE samples_v9 (
    id          BIGINT NOT NULL,
    dataset_id  INTEGER NOT NULL,
    source_id   VARCHAR NOT NULL,
    row_idx     BIGINT NOT NULL,
    messages    STRUCT(role VARCHAR, content VARCHAR)[] NOT NULL USING COMPRESSION uncompressed,
    rejected    STRUCT(role VARCHAR, content VARCHAR)[],
    text        VARCHAR NOT NULL USING COMPRESSION uncompressed,
    n_turns     INTEGER NOT NULL,
    n_chars     INTEGER NOT NULL,
    n_tokens    INTEGER NOT NULL,
    meta        JSON,
    raw         JSON USING COMPRESSION zstd
);
INSERT INTO samples_v9 SELECT * FROM samples ORDER BY id;
DROP TABLE samples;
ALTER TABLE samples_v9 RENAME TO samples;
