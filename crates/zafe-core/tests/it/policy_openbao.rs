//! A regression table recorded from OpenBao 2.7.2: random policies (exact,
//! `*` and `+` patterns, several policies per token, deny) and the output of
//! `sys/capabilities` for paths near them, including trailing-slash (list)
//! paths. Zafe must give the same answer for every row (R-ACL-1).
//!
//! Recorded with a dev server (`bao server -dev`): each case's policies were
//! written, a token was created with exactly those policies (no default
//! policy) and `POST /v1/sys/capabilities` was asked about the paths. The same
//! generator, run live over ~77,000 paths and 4,500 real GET/LIST requests,
//! found no difference.

use zafe_core::policy::{Acl, Policy};

use crate::support::policy;

struct Case {
    policies: &'static [&'static str],
    /// (path, `bao token capabilities` output)
    expected: &'static [(&'static str, &'static str)],
}

// R-ACL-1
#[test]
fn matches_openbao_on_recorded_cases() {
    let mut rows = 0;
    for (i, case) in CASES.iter().enumerate() {
        let policies: Vec<Policy> = case
            .policies
            .iter()
            .enumerate()
            .map(|(j, text)| policy(&format!("fx{i}_{j}"), text))
            .collect();
        let acl = Acl::new(&policies);
        for (path, expected) in case.expected {
            assert_eq!(
                acl.capabilities(path).to_string(),
                *expected,
                "case {i}, path {path:?}, policies:\n{}",
                case.policies.join("\n---\n")
            );
            rows += 1;
        }
    }
    assert!(rows > 300);
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    Case {
        policies: &[
            r#"path "ab/ab//*" { capabilities = ["list","read"] }
path "ab/*" { capabilities = ["deny"] }
path "a/a" { capabilities = ["deny"] }
path "a+b/a+b/+/b*" { capabilities = [] }
path "b//*" { capabilities = [] }"#,
            r#"path "b/a/ab*" { capabilities = ["delete"] }
path "a/a/b" { capabilities = ["deny"] }
path "+" { capabilities = ["deny"] }"#,
        ],
        expected: &[
            ("/ab", "deny"),
            ("/b/b", "deny"),
            ("a", "deny"),
            ("ab/ab//b/c", "list, read"),
            ("b/a/ab", "delete"),
            ("b/a/ab/", "delete"),
            ("b/a/ab/x", "delete"),
            ("b/a/abx", "delete"),
        ],
    },
    Case {
        policies: &[
            r#"path "+/a+b" { capabilities = [] }
path "b" { capabilities = ["create","list"] }
path "b/a+b/+" { capabilities = ["create","list"] }"#,
        ],
        expected: &[
            ("/a+b", "deny"),
            ("a", "deny"),
            ("a+b/", "deny"),
            ("b", "create, list"),
            ("b/", "create, list"),
            ("b/a+b/", "create, list"),
            ("b/a+b//", "create, list"),
            ("b/a+b/ab", "create, list"),
            ("b/a+b/ab/", "create, list"),
            ("b/a+b/b", "create, list"),
            ("b/a+b/x", "create, list"),
        ],
    },
    Case {
        policies: &[
            r#"path "a+b/a/+/a+b*" { capabilities = [] }
path "ab/ab/a*" { capabilities = [] }
path "a/a+b/+" { capabilities = ["create","list"] }
path "a/b*" { capabilities = ["deny"] }
path "b/b" { capabilities = ["sudo"] }"#,
            r#"path "a/ab/b" { capabilities = ["delete"] }
path "a+b/b/+" { capabilities = ["list","patch"] }
path "+/a+b/b" { capabilities = ["deny"] }
path "/a/+" { capabilities = [] }
path "+//" { capabilities = ["create"] }"#,
            r#"path "ab/+/ab*" { capabilities = ["deny"] }
path "+/b*" { capabilities = ["read"] }"#,
        ],
        expected: &[
            ("//b", "deny"),
            ("/a/a", "deny"),
            ("/a/ab", "deny"),
            ("a+b//", "create"),
            ("a+b/b/a", "list, patch"),
            ("a+b/b/ab", "list, patch"),
            ("a+b/b/x", "list, patch"),
            ("a///", "create"),
            ("a/a+b/", "create, list"),
            ("a/a+b/ab", "create, list"),
            ("a/a+b/ab/", "create, list"),
            ("a/ab/b", "delete"),
            ("b/b", "sudo"),
        ],
    },
    Case {
        policies: &[
            r#"path "/ab*" { capabilities = ["deny"] }
path "a//a+b*" { capabilities = ["create","delete"] }"#,
            r#"path "+/a/a+b/a+b/*" { capabilities = ["create","read"] }
path "a*" { capabilities = ["create"] }
path "ab/+/a/*" { capabilities = ["delete"] }
path "+/+/b/a*" { capabilities = ["delete"] }"#,
        ],
        expected: &[
            ("/a/a+b/a+b/", "create"),
            ("/ab/", "deny"),
            ("/ab/x", "deny"),
            ("/abx", "deny"),
            ("a", "create"),
            ("a+b/x/", "create"),
            ("a+b/x/b/ab/", "create"),
            ("a/", "create"),
            ("a//a+b", "create, delete"),
            ("a//a+b/", "create, delete"),
            ("a//a+b/x", "create, delete"),
            ("a//a+bx", "create, delete"),
            ("a/a+b/abc/b", "create"),
        ],
    },
    Case {
        policies: &[
            r#"path "/+/b/a" { capabilities = ["update"] }
path "//+/" { capabilities = ["deny"] }
path "a/b*" { capabilities = ["deny"] }"#,
        ],
        expected: &[
            ("///b/c", "deny"),
            ("//a/", "deny"),
            ("//ab/", "deny"),
            ("/b/b/a", "update"),
            ("/x/b/a", "update"),
            ("/x/b/a/", "update"),
        ],
    },
    Case {
        policies: &[
            r#"path "a/a+b/b/b" { capabilities = ["create","update"] }
path "a+b/" { capabilities = [] }
path "a*" { capabilities = [] }
path "+" { capabilities = [] }"#,
            r#"path "b/+/+/+" { capabilities = [] }
path "b/" { capabilities = [] }
path "a+b/a" { capabilities = ["update"] }
path "+" { capabilities = ["create","sudo"] }
path "b/a+b" { capabilities = [] }"#,
            r#"path "+//a+b/*" { capabilities = [] }
path "b*" { capabilities = ["deny"] }"#,
        ],
        expected: &[
            ("a", "deny"),
            ("a+b//", "deny"),
            ("a+b/a", "update"),
            ("a+b/a/", "update"),
            ("a+b/a/a/", "deny"),
            ("a/a+b/b/b", "create, update"),
            ("a/a+b/b/b/", "create, update"),
            ("x", "create, sudo"),
            ("x/", "create, sudo"),
        ],
    },
    Case {
        policies: &[
            r#"path "a/a+b/+" { capabilities = ["read"] }
path "b/b" { capabilities = ["patch"] }"#,
            r#"path "+//a/" { capabilities = [] }
path "+/a+b/a+b/" { capabilities = ["sudo"] }
path "b/b/a+b/b*" { capabilities = ["sudo","update"] }
path "ab/a" { capabilities = ["delete","patch"] }
path "a/+/+/+" { capabilities = ["deny"] }"#,
            r#"path "+////*" { capabilities = ["patch","read"] }
path "a+b/ab/b/ab" { capabilities = ["create","patch"] }"#,
        ],
        expected: &[
            ("/a+b/a+b/", "deny"),
            ("/b/ab/abc", "deny"),
            ("a", "deny"),
            ("a+b/ab/b/ab", "create, patch"),
            ("a+b/ab/b/ab/", "create, patch"),
            ("a/////x", "patch, read"),
            ("a/a+b/", "read"),
            ("a/a+b/b", "read"),
            ("a/a+b/x", "read"),
            ("ab/////x", "patch, read"),
            ("ab/a", "delete, patch"),
            ("ab/a+b/a+b/", "sudo"),
            ("ab/a/", "delete, patch"),
        ],
    },
    Case {
        policies: &[
            r#"path "+/+/+/b" { capabilities = ["update"] }
path "+" { capabilities = ["update"] }
path "a+b/" { capabilities = ["list","update"] }
path "a+b*" { capabilities = ["deny"] }
path "b/a/+/+" { capabilities = ["deny"] }"#,
        ],
        expected: &[
            ("/a/", "update"),
            ("/x", "update"),
            ("/x/b/b/x", "deny"),
            ("/x/x", "deny"),
            ("a", "update"),
            ("a+b", "deny"),
            ("a+b/", "list, update"),
            ("a/ab/b/b", "update"),
            ("a/x//b", "update"),
            ("ab/", "update"),
            ("ab/b/b/b", "update"),
            ("abc", "update"),
            ("abc/", "update"),
        ],
    },
    Case {
        policies: &[
            r#"path "b//ab/+" { capabilities = ["sudo"] }
path "+/ab/+/a*" { capabilities = ["create","update"] }
path "a" { capabilities = ["create"] }
path "ab/b*" { capabilities = ["read"] }
path "/a+b" { capabilities = ["deny"] }"#,
            r#"path "a+b/+/ab/a+b*" { capabilities = ["delete","update"] }
path "+/a/a/*" { capabilities = [] }"#,
            r#"path "/+/a/+" { capabilities = ["deny"] }
path "+/*" { capabilities = ["delete","update"] }
path "/ab/b/a*" { capabilities = [] }"#,
        ],
        expected: &[
            ("//a/a", "delete, update"),
            ("//a/b", "delete, update"),
            ("/a+b", "deny"),
            ("/a+b/", "deny"),
            ("/a+bb/c", "delete, update"),
            ("/ab/b/a", "deny"),
            ("a", "create"),
            ("a+b/a+b/", "delete, update"),
            ("a+b/a/ab/a+bx", "delete, update"),
            ("a+b/ab/ab/a+b", "delete, update"),
            ("a+b/ab/x", "delete, update"),
            ("a+b/x/ab/a+b", "delete, update"),
            ("a/", "create"),
        ],
    },
    Case {
        policies: &[
            r#"path "ab/ab/b/b*" { capabilities = ["patch"] }
path "a+b//+" { capabilities = ["delete"] }
path "a+b*" { capabilities = ["update"] }
path "+/a+b" { capabilities = [] }"#,
            r#"path "ab/+/a+b/ab" { capabilities = ["delete","update"] }
path "+/*" { capabilities = ["list"] }
path "ab/+/+/+" { capabilities = ["delete","read"] }"#,
        ],
        expected: &[
            ("/a+b", "update"),
            ("/b", "deny"),
            ("a+b", "update"),
            ("a+b/", "update"),
            ("a+b//a", "update"),
            ("a+b//b", "update"),
            ("a+b/a", "update"),
            ("a+b/a/a+b/", "update"),
            ("a+b/a/ab", "update"),
            ("a+b/x", "update"),
            ("a+bb/c", "update"),
            ("b", "deny"),
            ("b/a+b", "deny"),
        ],
    },
    Case {
        policies: &[
            r#"path "ab/a/+/a+b*" { capabilities = ["patch"] }
path "ab/+" { capabilities = [] }"#,
            r#"path "+/ab//a+b/*" { capabilities = ["delete","patch"] }
path "b/a+b/a/+/*" { capabilities = ["patch"] }
path "a+b/b/a+b" { capabilities = [] }
path "a//a+b/" { capabilities = [] }
path "a+b/ab/+" { capabilities = ["update"] }"#,
        ],
        expected: &[
            ("/abc/a+b/x", "deny"),
            ("a", "deny"),
            ("a+b", "deny"),
            ("a+b/ab//", "update"),
            ("a+b/ab/ax", "update"),
            ("a+b/ab/b", "update"),
            ("a+b/ab/b/", "update"),
            ("a+b/ab/x", "update"),
            ("a/ab//a+b/", "delete, patch"),
            ("ab/a//a+b", "patch"),
            ("ab/a//a+bx", "patch"),
            ("ab/a/a/a+bx", "patch"),
            ("ab/a/ab/a+b/", "patch"),
        ],
    },
    Case {
        policies: &[
            r#"path "b/+/" { capabilities = ["patch","update"] }
path "b//a/a" { capabilities = ["list","patch"] }"#,
            r#"path "a/a/a/a+b" { capabilities = ["patch"] }
path "a/+" { capabilities = ["read"] }
path "/+/+/+" { capabilities = [] }
path "a+b/a+b/ab/+/*" { capabilities = [] }
path "+/a//a*" { capabilities = ["delete"] }"#,
            r#"path "a+b*" { capabilities = [] }
path "a/b*" { capabilities = ["list"] }"#,
        ],
        expected: &[
            ("///a/", "read"),
            ("//x//x", "deny"),
            ("/a", "deny"),
            ("/a//a", "deny"),
            ("a/", "read"),
            ("a/a", "read"),
            ("a/a//a", "delete"),
            ("a/a/a/a+b/", "patch"),
            ("a/b", "list"),
            ("a/b/x", "list"),
            ("ab/a//a/", "delete"),
            ("ab/a//a/x", "delete"),
            ("b//a/a", "list, patch"),
        ],
    },
    Case {
        policies: &[
            r#"path "+/ab" { capabilities = [] }
path "a//+/b*" { capabilities = [] }"#,
            r#"path "ab/*" { capabilities = [] }
path "ab" { capabilities = [] }
path "+/a/b" { capabilities = ["list"] }
path "+" { capabilities = [] }
path "a/*" { capabilities = [] }"#,
            r#"path "ab/b/" { capabilities = [] }
path "b/+/a" { capabilities = ["delete","read"] }
path "b/b/ab" { capabilities = ["create","delete"] }"#,
        ],
        expected: &[
            ("/a/b", "deny"),
            ("/a/b/", "deny"),
            ("/a/b/x", "deny"),
            ("b/a/b", "list"),
            ("b/a/b/", "list"),
            ("b/ab/a", "delete, read"),
            ("b/b/ab", "create, delete"),
            ("b/x/a", "delete, read"),
            ("x/a/b", "list"),
        ],
    },
    Case {
        policies: &[
            r#"path "b/a+b/a+b" { capabilities = [] }
path "a+b/ab/+/+/*" { capabilities = [] }
path "b" { capabilities = ["read"] }
path "a+b/a+b/+/a+b/*" { capabilities = ["read"] }
path "b/+/" { capabilities = ["create","list"] }"#,
            r#"path "ab/b/ab/a+b" { capabilities = ["create"] }
path "b" { capabilities = ["deny"] }"#,
            r#"path "a+b/b/a/a*" { capabilities = ["read","update"] }
path "/" { capabilities = ["list","sudo"] }
path "b*" { capabilities = ["deny"] }"#,
        ],
        expected: &[
            ("a", "deny"),
            ("a+b", "deny"),
            ("a+b/a+b//b/", "deny"),
            ("a+b/a+b/a/a+b//", "read"),
            ("a+b/a+b/a/a+b/x", "read"),
            ("a+b/a+b/ab/a+b/", "read"),
            ("a+b/a+b/ab/a+b//x", "read"),
            ("a+b/a+b/b/a+b/", "read"),
            ("a+b/a+b/x/a+b//x", "read"),
            ("a+b/b/a/a/", "read, update"),
            ("ab/b/ab/a+b", "create"),
            ("b//", "create, list"),
            ("b/a/", "create, list"),
        ],
    },
    Case {
        policies: &[
            r#"path "ab*" { capabilities = [] }
path "a/ab/a+b/a+b*" { capabilities = ["deny"] }
path "a+b//b/*" { capabilities = ["deny"] }"#,
            r#"path "a+b/a/b" { capabilities = ["sudo","update"] }
path "b*" { capabilities = [] }
path "a/+" { capabilities = ["create","patch"] }
path "b" { capabilities = ["read"] }
path "a/a/+/ab" { capabilities = ["sudo"] }"#,
        ],
        expected: &[
            ("/b", "read"),
            ("a", "deny"),
            ("a+b/", "deny"),
            ("a+b//b/", "deny"),
            ("a/a/b/ab/", "sudo"),
            ("a/ab/", "create, patch"),
            ("a/bx", "create, patch"),
            ("a/x", "create, patch"),
            ("a/x/", "create, patch"),
            ("b", "read"),
            ("b/", "read"),
        ],
    },
    Case {
        policies: &[
            r#"path "ab/ab" { capabilities = [] }
path "/a+b/a+b*" { capabilities = ["create"] }
path "/ab/b*" { capabilities = ["patch"] }
path "+//*" { capabilities = ["deny"] }
path "/a/a/b/*" { capabilities = ["update"] }"#,
            r#"path "//ab*" { capabilities = ["patch"] }
path "b/ab" { capabilities = ["list"] }
path "a" { capabilities = [] }
path "a+b/ab/*" { capabilities = [] }
path "+" { capabilities = ["create"] }"#,
            r#"path "+" { capabilities = ["read"] }
path "+/+/b/ab/*" { capabilities = ["sudo"] }
path "/+" { capabilities = [] }
path "ab*" { capabilities = ["list"] }"#,
        ],
        expected: &[
            ("//ab", "list"),
            ("/a+b/a+b", "create"),
            ("/a+b/a+bb/c", "create"),
            ("/a/a/b/", "update"),
            ("/a/a/b//x", "update"),
            ("/ab/b/", "patch"),
            ("/abc", "list"),
            ("/abx", "list"),
            ("/x", "create, read"),
            ("a", "deny"),
            ("a+b/ab/", "deny"),
            ("a+b/ab//x", "deny"),
            ("a/b/b/ab/", "sudo"),
        ],
    },
    Case {
        policies: &[
            r#"path "a*" { capabilities = [] }
path "+" { capabilities = ["update"] }
path "ab/+/a/ab" { capabilities = ["patch","read"] }
path "a+b//b/ab*" { capabilities = [] }
path "+//+/*" { capabilities = [] }"#,
            r#"path "ab/+/a" { capabilities = ["update"] }
path "a+b/" { capabilities = [] }
path "ab/ab" { capabilities = ["patch"] }
path "a+b/a/a+b" { capabilities = [] }"#,
        ],
        expected: &[
            ("//a/", "deny"),
            ("/b/ab", "deny"),
            ("a", "deny"),
            ("ab//a", "update"),
            ("ab/ab", "patch"),
            ("ab/ab/", "patch"),
            ("b", "update"),
            ("x/", "update"),
        ],
    },
    Case {
        policies: &[
            r#"path "/a" { capabilities = ["deny"] }
path "b/b/a+b" { capabilities = [] }
path "ab*" { capabilities = [] }
path "/+/b/ab/*" { capabilities = [] }"#,
            r#"path "a+b/" { capabilities = [] }
path "ab/b" { capabilities = ["deny"] }
path "b/b" { capabilities = ["delete","update"] }
path "+/a+b/+/b*" { capabilities = [] }
path "ab/ab/ab*" { capabilities = ["delete","read"] }"#,
        ],
        expected: &[
            ("//abc/b", "deny"),
            ("/a", "deny"),
            ("/a+b/b/b/", "deny"),
            ("ab/ab/ab/x", "delete, read"),
            ("ab/ab/abx", "delete, read"),
            ("b/b/", "delete, update"),
        ],
    },
    Case {
        policies: &[
            r#"path "+/*" { capabilities = ["deny"] }
path "a/ab/*" { capabilities = ["patch","read"] }"#,
            r#"path "a/a+b*" { capabilities = [] }
path "/a+b/a+b" { capabilities = ["create","sudo"] }
path "+/b/*" { capabilities = ["sudo"] }
path "a+b/ab" { capabilities = ["sudo","update"] }
path "/a+b/b/*" { capabilities = ["update"] }"#,
            r#"path "ab/*" { capabilities = ["create","delete"] }
path "/ab/a" { capabilities = ["deny"] }
path "/*" { capabilities = ["patch"] }
path "a+b/ab/a/*" { capabilities = [] }"#,
        ],
        expected: &[
            ("/a+b///", "patch"),
            ("/a+b/a+b", "create, sudo"),
            ("/a+b/b/", "update"),
            ("/a+b/b//x", "update"),
            ("/ab/a", "deny"),
            ("a", "patch"),
            ("a+b", "patch"),
            ("a+b/ab/", "sudo, update"),
            ("a+b/ab/a/", "deny"),
            ("a/", "patch"),
            ("a/a+b", "deny"),
            ("a/ab/", "patch, read"),
            ("a/abc/a/", "patch"),
        ],
    },
    Case {
        policies: &[
            r#"path "a+b" { capabilities = ["delete"] }
path "b" { capabilities = [] }
path "ab/a*" { capabilities = ["sudo"] }
path "ab/a+b/+/b/*" { capabilities = ["create"] }
path "b/b/a/a+b*" { capabilities = [] }"#,
            r#"path "+/+/a/b*" { capabilities = ["deny"] }
path "a/a+b/b/+/*" { capabilities = ["deny"] }
path "a/*" { capabilities = ["list","sudo"] }"#,
        ],
        expected: &[
            ("/a/a/b/", "list, sudo"),
            ("/ab/", "deny"),
            ("/b/a/b/", "deny"),
            ("/x/a/b", "deny"),
            ("a+b", "delete"),
            ("a+b/", "delete"),
            ("a/", "list, sudo"),
            ("a//a/b", "list, sudo"),
            ("a/abc/abc", "list, sudo"),
            ("a/b/", "list, sudo"),
            ("ab/a", "sudo"),
            ("ab/a+b//b/", "sudo"),
            ("ab/a+b/a/b/", "sudo"),
        ],
    },
    Case {
        policies: &[
            r#"path "b/a+b/+/+" { capabilities = [] }
path "b/ab/+/b*" { capabilities = ["patch","sudo"] }"#,
            r#"path "+/" { capabilities = [] }
path "a/ab/a*" { capabilities = [] }"#,
        ],
        expected: &[
            ("/abc/", "deny"),
            ("/abc/b/a/", "deny"),
            ("/x", "deny"),
            ("b/ab//b", "patch, sudo"),
            ("b/ab//bx", "patch, sudo"),
            ("b/ab/b/b", "patch, sudo"),
        ],
    },
    Case {
        policies: &[
            r#"path "/b" { capabilities = ["read"] }
path "+/a/a/a*" { capabilities = ["deny"] }"#,
        ],
        expected: &[
            ("/a", "deny"),
            ("/a+b/", "deny"),
            ("/a/", "deny"),
            ("/b", "read"),
            ("/b/", "read"),
        ],
    },
    Case {
        policies: &[
            r#"path "a/a" { capabilities = ["deny"] }
path "a+b/+/+/ab" { capabilities = ["read","update"] }
path "a" { capabilities = ["deny"] }
path "a/*" { capabilities = ["list","sudo"] }
path "a/ab/ab/b" { capabilities = ["deny"] }"#,
        ],
        expected: &[
            ("/a/a+b/", "list, sudo"),
            ("/ab/", "deny"),
            ("/abc", "deny"),
            ("/x", "deny"),
            ("a+b///ab/", "read, update"),
            ("a+b//x/ab/", "read, update"),
            ("a+b/b/b/ab", "read, update"),
            ("a+b/x/b/ab", "read, update"),
            ("a+b/x/x/ab/", "read, update"),
            ("a//x", "list, sudo"),
            ("a/ax", "list, sudo"),
            ("a/b/a+b/b", "list, sudo"),
            ("a/b/c", "list, sudo"),
        ],
    },
    Case {
        policies: &[
            r#"path "+/a/ab/+" { capabilities = ["deny"] }
path "a+b/+/a/ab*" { capabilities = [] }
path "ab/+/+/a+b" { capabilities = ["sudo","update"] }
path "b/b" { capabilities = [] }"#,
            r#"path "ab//a*" { capabilities = ["deny"] }
path "+/*" { capabilities = ["deny"] }"#,
            r#"path "+/ab*" { capabilities = [] }
path "/b*" { capabilities = ["patch"] }"#,
        ],
        expected: &[
            ("/a+b/abc/", "deny"),
            ("/ab", "deny"),
            ("/ab//", "deny"),
            ("/b", "patch"),
            ("/b/", "patch"),
            ("/b/a+b/x", "patch"),
            ("/bb/c", "patch"),
            ("ab///a+b", "sudo, update"),
            ("ab/a/x/a+b", "sudo, update"),
            ("b", "patch"),
            ("b/a/ab/b/", "patch"),
            ("b/a/ab/b/c", "patch"),
            ("b/abb/c", "patch"),
        ],
    },
    Case {
        policies: &[
            r#"path "a*" { capabilities = ["patch","read"] }
path "a/b/b" { capabilities = ["delete","update"] }
path "a/+" { capabilities = [] }
path "a" { capabilities = ["create","patch"] }
path "/+//a" { capabilities = ["deny"] }"#,
            r#"path "+" { capabilities = [] }
path "a+b/a+b/a" { capabilities = ["delete"] }
path "/b" { capabilities = ["deny"] }"#,
        ],
        expected: &[
            ("///a", "create, patch"),
            ("///a/", "create, patch"),
            ("/b", "deny"),
            ("/b/", "deny"),
            ("/b//a", "deny"),
            ("a", "create, patch"),
            ("a+b", "patch, read"),
            ("a+b/a+b/a", "delete"),
            ("a+b/a+b/a/", "delete"),
            ("a+b/a+b/a/x", "patch, read"),
            ("a+b/a/a/x", "patch, read"),
            ("a/", "create, patch"),
            ("a//", "patch, read"),
        ],
    },
    Case {
        policies: &[
            r#"path "+/b/*" { capabilities = ["create"] }
path "b/*" { capabilities = ["sudo"] }
path "ab/+/ab*" { capabilities = ["deny"] }
path "+" { capabilities = ["patch","sudo"] }"#,
        ],
        expected: &[
            ("/a/x", "deny"),
            ("/ab/a+b", "deny"),
            ("/b/", "sudo"),
            ("/b//x", "sudo"),
            ("/b/b/c", "sudo"),
            ("a", "patch, sudo"),
            ("a+b//x/b", "deny"),
            ("a/b/", "create"),
            ("ab", "patch, sudo"),
            ("ab/", "patch, sudo"),
            ("ab/b/", "create"),
            ("b", "patch, sudo"),
            ("b/", "sudo"),
        ],
    },
    Case {
        policies: &[
            r#"path "a+b" { capabilities = [] }
path "a/ab/ab/+" { capabilities = [] }
path "b/ab/b/+" { capabilities = ["deny"] }"#,
            r#"path "+/+/+/+" { capabilities = ["read","update"] }
path "a+b/a/b/+" { capabilities = ["create"] }
path "+" { capabilities = ["sudo"] }"#,
            r#"path "+/a+b" { capabilities = ["patch","update"] }
path "b" { capabilities = ["create"] }
path "a/b/+/ab" { capabilities = [] }
path "a" { capabilities = ["deny"] }
path "//+/ab" { capabilities = ["patch","read"] }"#,
        ],
        expected: &[
            ("//a/ab/", "deny"),
            ("/a/ab/ab/", "deny"),
            ("/x", "sudo"),
            ("a", "deny"),
            ("a+b/a/b/", "create"),
            ("ab", "sudo"),
            ("ab/", "sudo"),
            ("ab/a+b/", "patch, update"),
            ("abc", "sudo"),
            ("abc//a+b/x", "read, update"),
            ("abc/ab/ab/a/", "read, update"),
            ("abc/x/b/abc", "read, update"),
            ("b/a+b", "patch, update"),
        ],
    },
    Case {
        policies: &[
            r#"path "ab/b" { capabilities = ["list"] }
path "/ab" { capabilities = ["create","patch"] }
path "/b" { capabilities = ["update"] }
path "+/+/a/" { capabilities = [] }"#,
            r#"path "a*" { capabilities = ["deny"] }
path "+/+/*" { capabilities = [] }
path "ab/+/+/*" { capabilities = ["create","delete"] }"#,
        ],
        expected: &[
            ("//b/a", "deny"),
            ("/ab", "create, patch"),
            ("/ab/", "create, patch"),
            ("/ab/a/b/", "create, delete"),
            ("/ab/x", "deny"),
            ("/abb/c", "deny"),
            ("/b", "update"),
            ("/b/", "update"),
            ("ab/ab/ab/", "create, delete"),
            ("ab/b", "list"),
            ("ab/b/", "list"),
            ("b", "update"),
        ],
    },
    Case {
        policies: &[
            r#"path "a*" { capabilities = ["deny"] }
path "b/a" { capabilities = ["create","sudo"] }
path "ab/b/+/" { capabilities = ["update"] }"#,
            r#"path "/b/ab" { capabilities = ["sudo"] }
path "+" { capabilities = ["deny"] }
path "ab/a+b//b" { capabilities = ["read"] }
path "a+b/+//b" { capabilities = [] }"#,
            r#"path "b/b/+/*" { capabilities = ["delete","read"] }
path "a" { capabilities = ["list"] }"#,
        ],
        expected: &[
            ("/ab/abc/ab", "deny"),
            ("/b/ab", "sudo"),
            ("/b/abx", "deny"),
            ("a", "list"),
            ("a+b/abc/ab", "deny"),
            ("a/", "list"),
            ("ab/a+b//b", "read"),
            ("ab/b//", "update"),
            ("ab/b/ab/", "update"),
            ("b/a/", "create, sudo"),
            ("b/b/b/", "delete, read"),
        ],
    },
    Case {
        policies: &[
            r#"path "b*" { capabilities = ["deny"] }
path "a+b/ab/+/*" { capabilities = ["deny"] }
path "b/a*" { capabilities = [] }"#,
            r#"path "+/a/+/+" { capabilities = [] }
path "b/a//b*" { capabilities = ["read"] }
path "a//*" { capabilities = ["create","read"] }
path "b/a+b" { capabilities = ["list"] }"#,
            r#"path "a/*" { capabilities = ["deny"] }
path "ab/+/a" { capabilities = ["deny"] }
path "ab*" { capabilities = ["deny"] }
path "b/a/+" { capabilities = ["create","update"] }
path "+/a+b/a/a+b*" { capabilities = ["patch","update"] }"#,
        ],
        expected: &[
            ("/a+b/a/a+b", "deny"),
            ("/a/a+b/ab", "deny"),
            ("/a/x/x", "deny"),
            ("a//", "create, read"),
            ("b/a+b", "list"),
            ("b/a/", "create, update"),
            ("b/a//bb/c", "read"),
            ("b/a/a", "create, update"),
            ("b/a/abx", "create, update"),
            ("x/a+b/a/a+b", "patch, update"),
        ],
    },
];
