//! Pieces shared by the two SQL backends: key ranges and error mapping.
//!
//! Both backends store keys as raw bytes (SQLite `BLOB`, PostgreSQL `BYTEA`)
//! because both compare those with memcmp, whatever the database's collation
//! or the column's affinity. That is what makes listings and pagination
//! identical on every backend.

use crate::StorageError;

/// The exclusive upper end of the range of byte strings that start with
/// `prefix`: `prefix` with its last non-0xFF byte incremented and everything
/// after it dropped. `None` when there is no such bound (an empty prefix, or
/// one made only of 0xFF bytes), meaning "to the end of the table".
///
/// Prefix scans use `key >= start AND key < upper` rather than `LIKE`: `LIKE`
/// treats `%` and `_` in keys as wildcards, is case-insensitive for ASCII on
/// SQLite, and cannot use the primary key index on either backend.
pub(crate) fn prefix_upper_bound(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last != 0xFF {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

/// Where a `keys(prefix, start_at, ..)` scan begins: the later of the two,
/// because a `start_at` before `prefix` must not widen the scan.
pub(crate) fn scan_start<'a>(prefix: &'a [u8], start_at: &'a [u8]) -> &'a [u8] {
    prefix.max(start_at)
}

/// `LIMIT` takes a signed 64-bit integer on both databases.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Turns a stored key back into a `String`. Only ever fails if something
/// other than Zafe wrote the table; the key itself is not echoed.
pub(crate) fn key_from_bytes(bytes: Vec<u8>) -> Result<String, StorageError> {
    String::from_utf8(bytes)
        .map_err(|_| StorageError::Backend("a stored key is not valid UTF-8".into()))
}

/// Describes a sqlx error for [`StorageError::Backend`] without ever
/// including bound parameter values.
///
/// sqlx's own `Display` is mostly safe, but some variants carry arbitrary
/// source errors (decoding, encoding) that may quote the offending data, and
/// future variants are unknown, so every variant is spelled out here. For
/// database errors only the code and primary message are used: PostgreSQL puts
/// row contents ("Key (key)=(...)", "Failing row contains ...") in the
/// *detail* field, which is deliberately left out.
pub(crate) fn describe(err: &sqlx::Error) -> String {
    use sqlx::Error as E;
    match err {
        E::Database(db) => match db.code() {
            Some(code) => format!("database error {code}: {}", db.message()),
            None => format!("database error: {}", db.message()),
        },
        E::Io(e) => format!("I/O error talking to the database: {e}"),
        E::Tls(e) => format!("TLS error connecting to the database: {e}"),
        E::Configuration(e) => format!("invalid connection settings: {e}"),
        E::Protocol(m) => format!("database protocol error: {m}"),
        E::PoolTimedOut => "timed out waiting for a database connection".into(),
        E::PoolClosed => "the storage backend has been closed".into(),
        E::WorkerCrashed => "the database worker thread crashed".into(),
        E::ColumnDecode { index, .. } => format!("could not decode result column {index}"),
        E::Decode(_) => "could not decode a value returned by the database".into(),
        E::Encode(_) => "could not encode a query parameter".into(),
        E::Migrate(e) => describe_migrate(e),
        E::RowNotFound
        | E::TypeNotFound { .. }
        | E::ColumnIndexOutOfBounds { .. }
        | E::ColumnNotFound(_)
        | E::InvalidArgument(_)
        | E::InvalidSavePointStatement
        | E::BeginFailed => err.to_string(),
        _ => "unexpected database error".into(),
    }
}

/// Maps a sqlx error from an ordinary statement; `what` names the operation.
pub(crate) fn backend_error(what: &str, err: sqlx::Error) -> StorageError {
    StorageError::Backend(format!("{what}: {}", describe(&err)))
}

/// Describes a migration failure, singling out the case an operator must act
/// on: a database already migrated by a newer Zafe.
fn describe_migrate(err: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError as M;
    match err {
        M::VersionMissing(v) => format!(
            "the database schema is newer than this binary \
             (migration {v} is unknown to it); run a newer Zafe"
        ),
        M::VersionMismatch(v) => {
            format!("migration {v} was applied with different contents than this binary's")
        }
        M::Execute(e) => format!("while executing migrations: {}", describe(e)),
        M::ExecuteMigration(e, v) => format!("while executing migration {v}: {}", describe(e)),
        other => other.to_string(),
    }
}

/// Maps a failure of `Migrator::run`.
pub(crate) fn migration_error(err: sqlx::migrate::MigrateError) -> StorageError {
    StorageError::Migration(describe_migrate(&err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_bound_increments_last_byte() {
        assert_eq!(prefix_upper_bound(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_upper_bound(b"a/"), Some(b"a0".to_vec()));
    }

    #[test]
    fn upper_bound_drops_trailing_ff() {
        assert_eq!(prefix_upper_bound(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_upper_bound(b"\x00\xff"), Some(b"\x01".to_vec()));
        // The last byte of U+10FFFF in UTF-8 (F4 8F BF BF) is not 0xFF.
        assert_eq!(
            prefix_upper_bound("\u{10FFFF}".as_bytes()),
            Some(b"\xf4\x8f\xbf\xc0".to_vec())
        );
    }

    #[test]
    fn upper_bound_none_when_unbounded() {
        assert_eq!(prefix_upper_bound(b""), None);
        assert_eq!(prefix_upper_bound(b"\xff"), None);
        assert_eq!(prefix_upper_bound(b"\xff\xff\xff"), None);
    }

    #[test]
    fn scan_start_is_the_later_bound() {
        assert_eq!(scan_start(b"k/", b""), b"k/");
        assert_eq!(scan_start(b"k/", b"a"), b"k/");
        assert_eq!(scan_start(b"k/", b"k/b"), b"k/b");
    }
}
