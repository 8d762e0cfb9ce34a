//! zafe-server's integration tests: one test binary (`it`), one harness.
//!
//! Every module drives a real core over real SQLite (or PostgreSQL) through
//! the real axum router. [`common`] is the harness they all share: servers
//! (sealed, unsealed, auto-unsealed), requests (as a token, from a client
//! address), policies, tokens and people. One binary instead of one per file
//! keeps the build and the target directory small (see the root Cargo.toml).
//!
//! The tests share one process and run in parallel: nothing here may rely on
//! process-wide state (environment variables set by a test, fixed ports,
//! global subscribers or providers); every server, database and file is the
//! test's own.

// A test binary has no API: its harness items are `pub` for the modules
// beside it, which the workspace's `unreachable_pub` lint would flag.
#![allow(unreachable_pub)]

mod common;
/// The real OpenID provider under node; shared with the CLI's tests
/// (`crates/zafe/tests`), so it stays outside this binary's directory.
#[path = "../support/oidc_provider.rs"]
mod oidc_provider;

mod acl_routes;
mod agent_events;
mod agents_api;
mod approle_api;
// Asks the kernel whether it runs as root (libc::geteuid).
#[allow(unsafe_code)]
mod audit_api;
mod backup_api;
mod keys_api;
mod kv_api;
mod mounts_api;
mod nodes_api;
mod oidc_api;
mod people_api;
mod resolve_api;
mod roles_api;
mod service_accounts_api;
mod sys_api;
mod tamper;
mod tokens_api;
mod totp_api;
mod transit_api;
mod wrapping_api;
