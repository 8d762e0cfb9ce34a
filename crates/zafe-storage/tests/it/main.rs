//! `zafe-storage`'s integration tests: one binary, one harness (`support`).
//! Each module was once its own test binary; they now share one process.

// A test binary has no API: its harness items are `pub` for the modules
// beside it, which the workspace's `unreachable_pub` lint would flag.
#![allow(unreachable_pub)]

mod support;

mod audit;
mod backends;
mod group_commit;
mod snapshot;
