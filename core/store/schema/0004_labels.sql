-- Hand labelling: label schemas (versioned) and an append-only log of labelling events.
-- Nothing here is ever updated or deleted: an undo is a new event, a new schema version is a new row.
CREATE SEQUENCE label_event_id_seq START 1;

CREATE TABLE label_schemas (
    name        VARCHAR NOT NULL,
    version     INTEGER NOT NULL,
    spec        JSON NOT NULL,        -- fields, options/vocabulary, guidelines (core/labels.py: LabelSchema)
    created_at  TIMESTAMP NOT NULL,
    created_by  VARCHAR,
    PRIMARY KEY (name, version)
);

CREATE TABLE label_events (
    event_id         BIGINT PRIMARY KEY DEFAULT nextval('label_event_id_seq'),
    client_key       VARCHAR NOT NULL UNIQUE,  -- made by the writer: a retried write never lands twice
    sample_id        BIGINT NOT NULL,
    schema           VARCHAR NOT NULL,
    field            VARCHAR NOT NULL,         -- '*' for skips
    value            JSON,                     -- canonical JSON of the value; NULL for skip/undo
    annotator        VARCHAR NOT NULL,
    created_at       TIMESTAMP NOT NULL,
    origin           VARCHAR NOT NULL,         -- focus, bulk, cli, noise, adjudication, import, ...
    kind             VARCHAR NOT NULL,         -- label, skip, undo
    undoes_event_id  BIGINT,                   -- for kind = 'undo': the event it takes back
    session          VARCHAR                   -- browser session / process that wrote it
);

-- Events still in force: labels and skips that no undo event points at.
CREATE VIEW label_events_effective AS
SELECT e.* FROM label_events e
WHERE e.kind IN ('label', 'skip')
  AND NOT EXISTS (SELECT 1 FROM label_events u WHERE u.kind = 'undo' AND u.undoes_event_id = e.event_id);

-- The current label of each annotator: their latest effective label per sample, schema and field.
-- Adjudications are kept out: they feed the consensus, not an annotator's own answers.
CREATE VIEW label_current AS
SELECT sample_id, schema, field, annotator, value, created_at, origin, event_id FROM (
    SELECT *, row_number() OVER (PARTITION BY sample_id, schema, field, annotator ORDER BY event_id DESC) AS rn
    FROM label_events_effective WHERE kind = 'label' AND origin <> 'adjudication'
) WHERE rn = 1;

-- The latest effective adjudication per sample, schema and field.
CREATE VIEW label_adjudicated AS
SELECT sample_id, schema, field, value, annotator, created_at, event_id FROM (
    SELECT *, row_number() OVER (PARTITION BY sample_id, schema, field ORDER BY event_id DESC) AS rn
    FROM label_events_effective WHERE kind = 'label' AND origin = 'adjudication'
) WHERE rn = 1;

-- Consensus: an adjudication where there is one, else the strict majority of annotators' current labels
-- (a tie gives NULL with status 'tie', to be adjudicated).
CREATE VIEW label_consensus AS
WITH votes AS (
    SELECT sample_id, schema, field, value, count(*) AS n_votes
    FROM label_current GROUP BY sample_id, schema, field, value
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY sample_id, schema, field ORDER BY n_votes DESC, value) AS rk,
           sum(n_votes) OVER (PARTITION BY sample_id, schema, field) AS n_annotators,
           count(*) OVER (PARTITION BY sample_id, schema, field) AS n_values,
           lead(n_votes) OVER (PARTITION BY sample_id, schema, field ORDER BY n_votes DESC, value) AS runner_up
    FROM votes
), majority AS (
    SELECT sample_id, schema, field, n_annotators, n_values, n_votes,
           CASE WHEN runner_up IS NULL OR n_votes > runner_up THEN value END AS value
    FROM ranked WHERE rk = 1
)
SELECT m.sample_id, m.schema, m.field,
       coalesce(a.value, m.value) AS value,
       CAST(m.n_annotators AS INTEGER) AS n_annotators,
       CAST(m.n_votes AS DOUBLE) / m.n_annotators AS agreement,
       CASE WHEN a.value IS NOT NULL THEN 'adjudicated'
            WHEN m.value IS NULL THEN 'tie'
            WHEN m.n_values = 1 THEN 'unanimous'
            ELSE 'majority' END AS status
FROM majority m
LEFT JOIN label_adjudicated a USING (sample_id, schema, field);
