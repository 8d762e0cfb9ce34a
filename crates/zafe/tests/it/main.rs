//! The `zafe` crate's integration tests: one binary, one harness (`support`).
//! Each module was once its own test binary; they now share one process,
//! so none of them may change process-wide state (environment, current
//! directory) or rely on fixed ports.

// A test binary has no API: its harness items are `pub` for the modules
// beside it, which the workspace's `unreachable_pub` lint would flag.
#![allow(unreachable_pub)]

// Sends signals to child processes and asks for the user id (libc).
#[allow(unsafe_code)]
mod support;

mod admin_cli;
#[allow(unsafe_code)]
mod agent_cli;
mod agent_events_cli;
mod agent_tls;
#[allow(unsafe_code)]
mod audit_cli;
mod auth_cli;
mod backup_cli;
#[allow(unsafe_code)]
mod cluster;
mod identity;
mod kv_cli;
mod oidc_cli;
mod people_cli;
mod project_cli;
#[allow(unsafe_code)]
mod run_cli;
mod server_lifecycle;
mod transit_cli;
mod vaultrs_compat;
mod workflow_cli;
