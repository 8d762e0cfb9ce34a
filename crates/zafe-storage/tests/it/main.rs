//! `zafe-storage`'s integration tests: one binary, one harness (`support`).
//! Each module was once its own test binary; they now share one process.

mod support;

mod audit;
mod backends;
mod group_commit;
