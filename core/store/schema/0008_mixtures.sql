-- Mixture recipes (saved versions, never overwritten) and the exports made from them.
CREATE SEQUENCE mixture_recipe_id_seq START 1;

CREATE TABLE mixture_recipes (
    recipe_id    INTEGER PRIMARY KEY,
    name         VARCHAR NOT NULL,     -- several versions may share a name; the newest is current
    yaml         VARCHAR NOT NULL,     -- the recipe as written by core.mixture.recipe.dump_recipe
    fingerprint  VARCHAR NOT NULL,     -- SHA-256 of its canonical JSON form
    created_at   TIMESTAMP NOT NULL,
    created_by   VARCHAR
);

-- One row per finished export (its run in `runs` has kind 'mix-export').
CREATE TABLE mixture_exports (
    run_id           INTEGER PRIMARY KEY,
    recipe_name      VARCHAR NOT NULL,
    fingerprint      VARCHAR NOT NULL,
    out_dir          VARCHAR NOT NULL,
    formats          VARCHAR[] NOT NULL,
    n_samples        BIGINT NOT NULL,
    n_tokens         BIGINT NOT NULL,
    manifest_sha256  VARCHAR NOT NULL,
    manifest         JSON NOT NULL,
    created_at       TIMESTAMP NOT NULL
);
