-- Restore with --force (R-OPS-8) replaces everything in one transaction: the
-- append-only triggers let deletes through in a transaction that set the
-- local setting zafe.restore = 'on' (zafe-storage's snapshot module), as the
-- retention sweep does with zafe.audit_sweep. Updates and TRUNCATE are still
-- refused.
CREATE OR REPLACE FUNCTION zafe_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('zafe.restore', true) = 'on' THEN
        RETURN OLD;
    END IF;
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'zafe_audit'
       AND current_setting('zafe.audit_sweep', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
