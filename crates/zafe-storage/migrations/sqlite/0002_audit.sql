-- The audit log (R-AUD-1..6): a hash chain whose links are made inside the
-- transaction that holds the chain head, so sequence numbers come from the
-- database and concurrent writers can never fork the chain.
--
-- Rows are never updated; the only deletes are the retention sweep's. The
-- triggers below refuse updates, so a bug can never rewrite history. (They
-- are no defence against someone who can write the file: that is what the
-- hash chain, the MACs and the signed checkpoints are for.)
--
-- `prev_hash` is UNIQUE: two rows claiming the same predecessor (a fork) are
-- impossible by construction, not just by the writers' good behaviour.
CREATE TABLE zafe_audit (
    seq       INTEGER NOT NULL PRIMARY KEY,
    time_us   INTEGER NOT NULL,
    prev_hash BLOB    NOT NULL UNIQUE,
    hash      BLOB    NOT NULL,
    mac       BLOB    NOT NULL,
    body      BLOB    NOT NULL
) STRICT;

-- Only for finding where a time range starts (exports, retention); order is
-- always by sequence.
CREATE INDEX zafe_audit_time ON zafe_audit (time_us);

-- The chain head: one row, locked by every append. It survives a retention
-- sweep that removes every row, so the chain never restarts at genesis.
CREATE TABLE zafe_audit_head (
    id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB    NOT NULL
) STRICT;
INSERT INTO zafe_audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

-- Signed statements "the chain had this hash at this sequence number".
CREATE TABLE zafe_audit_checkpoints (
    id         INTEGER NOT NULL PRIMARY KEY,
    seq        INTEGER NOT NULL,
    hash       BLOB    NOT NULL,
    time_us    INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    public_key BLOB    NOT NULL,
    signature  BLOB    NOT NULL
) STRICT;
CREATE INDEX zafe_audit_checkpoints_seq ON zafe_audit_checkpoints (seq, id);

CREATE TRIGGER zafe_audit_no_update BEFORE UPDATE ON zafe_audit
BEGIN
    SELECT RAISE(ABORT, 'zafe_audit is append-only');
END;

CREATE TRIGGER zafe_audit_checkpoints_no_update BEFORE UPDATE ON zafe_audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'zafe_audit_checkpoints is append-only');
END;

CREATE TRIGGER zafe_audit_checkpoints_no_delete BEFORE DELETE ON zafe_audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'zafe_audit_checkpoints is append-only');
END;
