-- Audit chain checkpoints written by gth-maintd's audit_verify job.
--
-- A checkpoint says: the chain was verified from position 1 (full = true) or from the
-- previous checkpoint (full = false) through `verified_through_position`, whose row_hash
-- was `row_hash` at `verified_at`. The next incremental run first re-checks that the row at
-- that position still carries that hash ('replaced tail' otherwise) and that the chain still
-- reaches it ('truncated tail' otherwise), then verifies only the rows after it.
-- Failed passes are recorded too (valid = false), so a broken chain stays visibly broken:
-- while the newest entry is a failure every run is a full pass.
-- The daemon also keeps the newest checkpoint outside the database (its state directory),
-- because whoever can rewrite audit_log can rewrite this table as well.

CREATE TABLE maintenance.audit_checkpoints (
    id                        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    verified_through_position bigint      NOT NULL,
    row_hash                  bytea,
    audit_id                  bigint,
    verified_at               timestamptz NOT NULL DEFAULT clock_timestamp(),
    full_pass                 boolean     NOT NULL,
    valid                     boolean     NOT NULL,
    from_position             bigint      NOT NULL,
    rows_checked              bigint      NOT NULL DEFAULT 0,
    redacted_rows             bigint      NOT NULL DEFAULT 0,
    duration_ms               integer     NOT NULL DEFAULT 0,
    first_bad_position        bigint,
    first_bad_id              bigint,
    reason                    text,
    CONSTRAINT audit_checkpoints_position_check CHECK (verified_through_position >= 0),
    CONSTRAINT audit_checkpoints_rows_check CHECK (rows_checked >= 0 AND redacted_rows >= 0),
    CONSTRAINT audit_checkpoints_valid_hash_check
        CHECK (NOT valid OR verified_through_position = 0 OR row_hash IS NOT NULL),
    CONSTRAINT audit_checkpoints_failure_reason_check CHECK (valid OR reason IS NOT NULL)
);

COMMENT ON TABLE maintenance.audit_checkpoints IS
    'Audit chain verification passes of gth-maintd audit_verify: the newest valid row is the '
    'checkpoint incremental runs start from; invalid rows record broken-chain evidence.';

-- Newest valid checkpoint, newest valid full pass, newest entry overall.
CREATE INDEX audit_checkpoints_valid_idx ON maintenance.audit_checkpoints (id DESC) WHERE valid;
CREATE INDEX audit_checkpoints_full_idx
    ON maintenance.audit_checkpoints (verified_at DESC) WHERE valid AND full_pass;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gth_maint') THEN
        GRANT USAGE ON SCHEMA maintenance TO gth_maint;
        GRANT SELECT, INSERT ON maintenance.audit_checkpoints TO gth_maint;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gth_admin') THEN
        GRANT USAGE ON SCHEMA maintenance TO gth_admin;
        GRANT SELECT ON maintenance.audit_checkpoints TO gth_admin;
    END IF;
END
$$;
