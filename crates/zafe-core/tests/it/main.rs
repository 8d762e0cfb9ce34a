//! `zafe-core`'s integration tests: one binary, one harness (`support`).
//! Each module was once its own test binary; they now share one process.

mod support;

mod policy_acl;
mod policy_openbao;
mod policy_parse;
mod policy_props;
