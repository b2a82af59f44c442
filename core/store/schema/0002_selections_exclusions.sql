-- Saved selections (from the map, a search, a filter, a noise report) and hand exclusions from mixtures.
CREATE SEQUENCE selection_id_seq START 1;
CREATE SEQUENCE exclusion_event_seq START 1;

CREATE TABLE selections (
    selection_id  INTEGER PRIMARY KEY,
    name          VARCHAR NOT NULL,
    origin        VARCHAR NOT NULL,   -- map, search, filter, noise, neighbours, manual, ...
    description   VARCHAR,
    predicate     JSON,               -- how it was made (filters, search, map run), where known
    n_samples     BIGINT NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    created_by    VARCHAR
);

CREATE TABLE selection_samples (
    selection_id  INTEGER NOT NULL,
    sample_id     BIGINT NOT NULL
);

-- Append-only: the current state of a sample is its latest event.
CREATE TABLE exclusion_events (
    event_id      BIGINT PRIMARY KEY,
    sample_id     BIGINT NOT NULL,
    excluded      BOOLEAN NOT NULL,
    reason        VARCHAR,
    origin        VARCHAR,
    who           VARCHAR,
    created_at    TIMESTAMP NOT NULL
);

CREATE VIEW excluded_samples AS
SELECT sample_id, reason, origin, who, created_at FROM (
    SELECT *, row_number() OVER (PARTITION BY sample_id ORDER BY event_id DESC) AS rn FROM exclusion_events
) WHERE rn = 1 AND excluded;
