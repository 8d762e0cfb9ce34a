-- The audit log (R-AUD-1..6): a hash chain whose links are made inside the
-- transaction that holds the chain head (`SELECT .. FOR UPDATE` on the one
-- row of zafe_audit_head), so sequence numbers come from the database and
-- several nodes appending at once can never fork the chain.
--
-- `prev_hash` is UNIQUE: two rows claiming the same predecessor (a fork) are
-- impossible by construction.
--
-- Append-only: the triggers below refuse UPDATE, DELETE and TRUNCATE. The
-- retention sweep alone deletes, in a transaction that sets the local
-- setting zafe.audit_sweep = 'on'. (Someone who owns the database can drop
-- triggers: the hash chain, MACs and signed checkpoints are the defence
-- against that; the triggers stop bugs and careless hands.)
CREATE TABLE zafe_audit (
    seq       BIGINT NOT NULL PRIMARY KEY,
    time_us   BIGINT NOT NULL,
    prev_hash BYTEA  NOT NULL UNIQUE,
    hash      BYTEA  NOT NULL,
    mac       BYTEA  NOT NULL,
    body      BYTEA  NOT NULL
);

-- Only for finding where a time range starts; order is always by sequence.
CREATE INDEX zafe_audit_time ON zafe_audit (time_us);

-- The chain head: one row, locked by every append. It survives a retention
-- sweep that removes every row, so the chain never restarts at genesis.
CREATE TABLE zafe_audit_head (
    id   SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  BIGINT   NOT NULL,
    hash BYTEA    NOT NULL
);
INSERT INTO zafe_audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

-- Signed statements "the chain had this hash at this sequence number".
CREATE TABLE zafe_audit_checkpoints (
    id         BIGSERIAL NOT NULL PRIMARY KEY,
    seq        BIGINT    NOT NULL,
    hash       BYTEA     NOT NULL,
    time_us    BIGINT    NOT NULL,
    kind       TEXT      NOT NULL,
    public_key BYTEA     NOT NULL,
    signature  BYTEA     NOT NULL
);
CREATE INDEX zafe_audit_checkpoints_seq ON zafe_audit_checkpoints (seq, id);

CREATE FUNCTION zafe_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'zafe_audit'
       AND current_setting('zafe.audit_sweep', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER zafe_audit_append_only
    BEFORE UPDATE OR DELETE ON zafe_audit
    FOR EACH ROW EXECUTE FUNCTION zafe_audit_append_only();
CREATE TRIGGER zafe_audit_no_truncate
    BEFORE TRUNCATE ON zafe_audit
    FOR EACH STATEMENT EXECUTE FUNCTION zafe_audit_append_only();
CREATE TRIGGER zafe_audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE ON zafe_audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION zafe_audit_append_only();
CREATE TRIGGER zafe_audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON zafe_audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION zafe_audit_append_only();
