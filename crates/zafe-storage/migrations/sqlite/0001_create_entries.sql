-- The whole physical store: a sorted map from key to ciphertext.
--
-- Keys are BLOBs (the UTF-8 bytes of the key), never TEXT: BLOBs compare with
-- memcmp, exactly like PostgreSQL's bytea, so listings and pagination agree
-- on both backends. STRICT makes SQLite reject a value of any other type
-- instead of silently storing it with a different sort order.
--
-- WITHOUT ROWID stores rows in the primary key's B-tree, so a prefix scan
-- reads keys in order with no second lookup.
CREATE TABLE zafe_entries (
    key        BLOB    NOT NULL PRIMARY KEY,
    value      BLOB    NOT NULL,
    generation INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
