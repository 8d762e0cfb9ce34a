-- Restore with --force (R-OPS-8) replaces everything in one transaction. The
-- checkpoints' no-delete trigger lets deletes through while this table holds
-- its one row, which only a restore's own transaction inserts and deletes
-- again before it commits (zafe-storage's snapshot module): no other
-- connection ever sees it.
CREATE TABLE zafe_restore (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1)
) STRICT;

DROP TRIGGER zafe_audit_checkpoints_no_delete;
CREATE TRIGGER zafe_audit_checkpoints_no_delete BEFORE DELETE ON zafe_audit_checkpoints
WHEN NOT EXISTS (SELECT 1 FROM zafe_restore)
BEGIN
    SELECT RAISE(ABORT, 'zafe_audit_checkpoints is append-only');
END;
