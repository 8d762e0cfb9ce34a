//! Helpers shared by the storage tests: PostgreSQL databases made and
//! dropped per test, and the operations the tests write.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use zafe_storage::{Condition, Entry, Op};

/// The admin URL from `ZAFE_TEST_POSTGRES_URL`, or `None` to skip the test.
/// Panics instead of skipping when `ZAFE_REQUIRE_POSTGRES=1`, so CI cannot
/// pass without having run the PostgreSQL tests.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("ZAFE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("ZAFE_REQUIRE_POSTGRES").as_deref() == Ok("1") => panic!(
            "ZAFE_REQUIRE_POSTGRES=1 but ZAFE_TEST_POSTGRES_URL is not set; \
             run `eval \"$(scripts/start-postgres.sh)\"` first"
        ),
        _ => {
            eprintln!("skipping: ZAFE_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

/// Runs `test` with the URL of a fresh database named `<prefix>_<pid>_<n>_<nanos>`,
/// then drops the database, even if `test` panicked. Skips (returns at once)
/// when no PostgreSQL is configured, see [`postgres_admin_url`].
///
/// The per-process counter keeps names apart when two tests of this one
/// binary start in the same nanosecond.
pub async fn with_postgres_database<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    static DATABASES: AtomicU64 = AtomicU64::new(0);
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = DATABASES.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}_{}_{n}_{nanos}", std::process::id());

    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to ZAFE_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap();

    // In its own task, so that a panic comes back here as an error and the
    // database is still dropped.
    let outcome = tokio::spawn(test(with_database(&admin_url, &name))).await;

    // FORCE (PostgreSQL 13+) ends connections a failed test left open.
    sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();

    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

pub use zafe_storage::postgres::with_database;

/// A put of `key` = `value` at `generation`, under `condition`.
pub fn put_entry(key: &str, value: &[u8], generation: i64, condition: Condition) -> Op {
    Op::Put {
        entry: Entry {
            key: key.to_string(),
            value: value.to_vec(),
            generation,
        },
        condition,
    }
}
