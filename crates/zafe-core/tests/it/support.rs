//! Helpers shared by the policy tests.

use zafe_core::policy::{Acl, Policy};

/// Parses policy `name` from `text` (HCL or JSON), panicking with the error
/// and the text when it does not parse.
pub fn policy(name: &str, text: &str) -> Policy {
    Policy::parse(name, text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Checks `acl.capabilities(path)` against a table of `(path, capabilities)`
/// rows, as printed by `bao token capabilities`.
pub fn assert_table(acl: &Acl, table: &[(&str, &str)]) {
    for (path, expected) in table {
        assert_eq!(
            acl.capabilities(path).to_string(),
            *expected,
            "capabilities on {path:?}"
        );
    }
}
