-- The whole physical store: a sorted map from key to ciphertext.
--
-- Keys are bytea (the UTF-8 bytes of the key), never text: bytea compares
-- with memcmp whatever the database's collation, exactly like SQLite's BLOB,
-- so listings and pagination agree on both backends. The primary key's
-- B-tree serves both point reads and prefix range scans.
CREATE TABLE zafe_entries (
    key        BYTEA  NOT NULL PRIMARY KEY,
    value      BYTEA  NOT NULL,
    generation BIGINT NOT NULL
);
