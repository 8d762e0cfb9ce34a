//! Evaluating ACLs: matching, Vault's priority rules, merging, deny wins,
//! root, parameters. Every table marked "OpenBao" is the output of
//! `bao token capabilities` (or a real request) on OpenBao 2.7.2 with the same
//! policies.

use serde_json::{Map, Value, json};
use zafe_core::policy::{Acl, AclDenied, Capabilities, Capability, Policy};

use crate::support::{assert_table, policy};

fn compile(text: &str) -> Acl {
    Acl::new([&policy("p", text)])
}

fn params(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("params must be an object"),
    }
}

// R-ACL-1: each capability is granted alone and nothing else comes with it.
#[test]
fn every_capability_allow_and_deny() {
    for cap in Capability::ALL {
        let acl = compile(&format!(
            r#"path "secret/x" {{ capabilities = ["{cap}"] }}"#
        ));
        for other in Capability::ALL {
            let expected = other == cap && cap != Capability::Deny;
            assert_eq!(
                acl.allows("secret/x", other),
                expected,
                "{cap} grants {other}?"
            );
            assert!(
                !acl.allows("secret/y", other),
                "{cap} leaks to another path"
            );
        }
        assert_eq!(
            acl.capabilities("secret/x").is_denied(),
            cap == Capability::Deny
        );
    }
}

// R-ACL-1: exact, `*` prefix and `+` segment matching (OpenBao).
#[test]
fn exact_glob_and_segment_matching() {
    let acl = compile(
        r#"
path "secret/foo" { capabilities = ["sudo","read","list","update","delete","create","patch"] }
path "secret/+" { capabilities = ["read"] }
path "secret/+/x" { capabilities = ["list"] }
path "a/*" { capabilities = ["read"] }
path "a/b*" { capabilities = ["list"] }
path "a/+/c" { capabilities = ["update"] }
path "a/b/+" { capabilities = ["delete"] }
"#,
    );
    assert_table(
        &acl,
        &[
            (
                "secret/foo",
                "create, delete, list, patch, read, sudo, update",
            ),
            (
                "secret/foo/",
                "create, delete, list, patch, read, sudo, update",
            ),
            (
                "/secret/foo",
                "create, delete, list, patch, read, sudo, update",
            ),
            (
                "//secret/foo",
                "create, delete, list, patch, read, sudo, update",
            ),
            ("secret/bar", "read"),
            // `+` matches an empty segment.
            ("secret/", "read"),
            ("secret", "deny"),
            ("secret//x", "list"),
            ("secret/a/x", "list"),
            ("secret/a/b", "deny"),
            ("a/b/c", "delete"),
            ("a/bc", "list"),
            ("a/x/c", "update"),
            ("a/b/d", "delete"),
            ("a/b/c/d", "list"),
            ("a/", "read"),
            ("a", "deny"),
        ],
    );
}

// R-ACL-1: odd spellings behave as in OpenBao.
#[test]
fn wildcard_edge_cases() {
    let acl = compile(
        r#"
path "q/foo+bar" { capabilities = ["read"] }
path "q/+bar/x" { capabilities = ["list"] }
path "q/a/+" { capabilities = ["update"] }
path "lit/*/x" { capabilities = ["read"] }
path "s/+/" { capabilities = ["create"] }
path "/lead" { capabilities = ["read"] }
path "t/+/u*" { capabilities = ["read"] }
"#,
    );
    assert_table(
        &acl,
        &[
            // `+` inside a segment is a literal character.
            ("q/foo+bar", "read"),
            ("q/+bar/x", "list"),
            ("q/zbar/x", "deny"),
            ("q/a/+", "update"),
            ("q/a/z", "update"),
            // `*` not at the end is a literal character.
            ("lit/*/x", "read"),
            ("lit/a/x", "deny"),
            ("s/a/", "create"),
            ("s/a", "deny"),
            ("s/a/b", "deny"),
            ("lead", "read"),
            ("/lead", "read"),
            // A trailing `*` after `+`: the last segment is a prefix and more
            // segments may follow.
            ("t/a/u", "read"),
            ("t/a/uvw", "read"),
            ("t/a/u/v", "read"),
            ("t/a", "deny"),
            ("t/a/", "deny"),
            ("t/a/x", "deny"),
        ],
    );
    // A lone `+` matches any single-segment path; a lone `*` everything.
    let plus = compile(r#"path "+" { capabilities = ["sudo"] }"#);
    assert_table(&plus, &[("anything", "sudo"), ("a/b", "deny")]);
    let star = compile(r#"path "*" { capabilities = ["read"] }"#);
    assert_table(
        &star,
        &[("anything", "read"), ("a/b/c", "read"), ("", "read")],
    );
}

// R-ACL-1: Vault's priority rules, one table per rule (OpenBao).
#[test]
fn priority_rules() {
    let acl = compile(
        r#"
# rule 1: the later the first wildcard, the more specific
path "r1/foo/a*" { capabilities = ["read"] }
path "r1/foo/+" { capabilities = ["list"] }
path "r1/+/bar/baz" { capabilities = ["update"] }
path "r1/foo/bar/+" { capabilities = ["delete"] }
# rule 2: not ending in * beats ending in *
path "r2/+/bar" { capabilities = ["read"] }
path "r2/+/ba*" { capabilities = ["list"] }
path "r2/x/+" { capabilities = ["update"] }
path "r2/x/*" { capabilities = ["delete"] }
# rule 3: fewer + segments
path "r3/a/+/c" { capabilities = ["read"] }
path "r3/a/+/+" { capabilities = ["list"] }
# rule 4: longer pattern
path "r4/+/bar/ba*" { capabilities = ["read"] }
path "r4/+/bar/b*" { capabilities = ["list"] }
# rule 5: lexicographically greater
path "r5/+/a/+" { capabilities = ["read"] }
path "r5/+/+/b" { capabilities = ["list"] }
"#,
    );
    assert_table(
        &acl,
        &[
            // 1. `a*` (first wildcard at 8) beats `+` (at 7).
            ("r1/foo/abc", "read"),
            ("r1/foo/xyz", "list"),
            // 1. `r1/foo/bar/+` (at 11) beats `r1/+/bar/baz` (at 3).
            ("r1/foo/bar/baz", "delete"),
            // 2. same first wildcard, `r2/+/bar` is not a prefix.
            ("r2/q/bar", "read"),
            ("r2/q/bax", "list"),
            // 2. `r2/x/+` beats `r2/x/*`; only the prefix reaches deeper.
            ("r2/x/y", "update"),
            ("r2/x/y/z", "delete"),
            // 3. one `+` beats two.
            ("r3/a/b/c", "read"),
            ("r3/a/b/d", "list"),
            // 4. longer beats shorter.
            ("r4/q/bar/baz", "read"),
            ("r4/q/bar/bz", "list"),
            // 5. "r5/+/a/+" > "r5/+/+/b" byte-wise.
            ("r5/q/a/b", "read"),
        ],
    );
}

// R-ACL-1: an exact rule beats every glob, even a deny glob (OpenBao).
#[test]
fn exact_beats_globs_even_deny() {
    let acl = compile(
        r#"
path "ex/foo" { capabilities = ["read"] }
path "ex/*" { capabilities = ["deny"] }
path "ex/+" { capabilities = ["deny"] }
"#,
    );
    assert_table(
        &acl,
        &[("ex/foo", "read"), ("ex/bar", "deny"), ("ex/foo/", "read")],
    );
    // Only the longest prefix counts: a deny on a shorter prefix does not
    // reach a path a longer prefix grants, and vice versa.
    let acl = acl_of(&[r#"
path "secret/*" { capabilities = ["deny"] }
path "secret/team/*" { capabilities = ["read"] }
path "secret/team/private/*" { capabilities = ["deny"] }
"#]);
    assert_table(
        &acl,
        &[
            ("secret/other", "deny"),
            ("secret/team/x", "read"),
            ("secret/team/private/x", "deny"),
        ],
    );
}

fn acl_of(texts: &[&str]) -> Acl {
    let policies: Vec<Policy> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| policy(&format!("p{i}"), t))
        .collect();
    Acl::new(&policies)
}

// R-ACL-1: the same pattern in several policies merges; deny wins (OpenBao).
#[test]
fn merging_across_policies_and_deny_wins() {
    let a = r#"
path "m/x" { capabilities = ["read"] }
path "m/g/*" { capabilities = ["read"] }
path "m/+/s" { capabilities = ["read"] }
path "m/d" { capabilities = ["read", "list"] }
path "m/e" { capabilities = ["read"] }
path "m/e" { capabilities = ["list"] }
"#;
    let b = r#"
path "m/x" { capabilities = ["update"] }
path "m/g/*" { capabilities = ["list"] }
path "m/+/s" { capabilities = ["create"] }
path "m/d" { capabilities = ["deny"] }
path "m/g/" { capabilities = ["delete"] }
"#;
    let table = [
        ("m/x", "read, update"),
        ("m/g/a", "list, read"),
        // `m/g/` (exact) and `m/g/*` (prefix) are different patterns.
        ("m/g/", "delete"),
        ("m/q/s", "create, read"),
        ("m/d", "deny"),
        ("m/e", "list, read"),
    ];
    // The order of policies does not matter.
    assert_table(&acl_of(&[a, b]), &table);
    assert_table(&acl_of(&[b, a]), &table);

    // Deny merged into a glob pattern wins for every path under it, in
    // whichever policy and order it comes.
    for texts in [
        [
            r#"path "g/*" { capabilities = ["read", "sudo"] }"#,
            r#"path "g/*" { capabilities = ["deny"] }"#,
        ],
        [
            r#"path "g/*" { capabilities = ["deny"] }"#,
            r#"path "g/*" { capabilities = ["read", "sudo"] }"#,
        ],
    ] {
        let acl = acl_of(&texts);
        assert!(acl.capabilities("g/a/b").is_explicit_deny());
        assert!(!acl.allows("g/a", Capability::Read));
    }
}

// R-ACL-1
#[test]
fn root_allows_everything() {
    let root = Acl::root();
    assert!(root.is_root());
    for path in ["", "sys/seal", "secret/data/x", "auth/token/create"] {
        assert_eq!(root.capabilities(path), Capabilities::ROOT);
        assert_eq!(root.capabilities(path).names(), ["root"]);
        for cap in Capability::ALL {
            assert_eq!(root.allows(path, cap), cap != Capability::Deny);
        }
        assert!(
            root.check(path, Capability::Update, &params(json!({"x": 1})))
                .is_ok()
        );
    }
    assert_eq!(root.granting_policies("x", Capability::Read), ["root"]);
    // Nothing else is root, and an empty ACL allows nothing.
    let none = Acl::new(&[]);
    assert!(!none.is_root());
    assert!(none.capabilities("secret/x").is_denied());
    assert!(!none.allows("secret/x", Capability::Read));
}

// R-ACL-1: list requests also try the path without its trailing slash; other
// requests do not (OpenBao: GET kv/listme/ 403, LIST kv/listme/ 200).
#[test]
fn trailing_slash_only_for_list() {
    let acl = compile(
        r#"
path "kv/listme" { capabilities = ["read", "list"] }
path "kv/lst/+" { capabilities = ["list"] }
path "kv/lst/a/" { capabilities = ["read"] }
"#,
    );
    assert!(acl.allows("kv/listme/", Capability::List));
    assert!(!acl.allows("kv/listme/", Capability::Read));
    assert!(acl.allows("kv/listme", Capability::Read));
    // An exact rule on the slashed path is found first.
    assert!(!acl.allows("kv/lst/a/", Capability::List));
    assert_eq!(acl.capabilities("kv/lst/a/").to_string(), "read");
    // Non-exact rules too: `kv/lst/+` answers LIST kv/lst/b/.
    assert!(acl.allows("kv/lst/b/", Capability::List));
    assert!(!acl.allows("kv/lst/b/", Capability::Read));
}

#[test]
fn templated_paths_are_left_out() {
    let acl = compile(
        r#"
path "identity/entity/id/{{identity.entity.id}}" { capabilities = ["read"] }
path "identity/entity/*" { capabilities = ["list"] }
"#,
    );
    assert_eq!(
        acl.capabilities("identity/entity/id/{{identity.entity.id}}")
            .to_string(),
        "list"
    );
}

#[test]
fn granting_policies_for_audit() {
    let acl = Acl::new(&[
        policy(
            "readers",
            r#"path "s/*" { capabilities = ["read", "list"] }"#,
        ),
        policy("writers", r#"path "s/*" { capabilities = ["update"] }"#),
        policy("other", r#"path "t/*" { capabilities = ["read"] }"#),
    ]);
    assert_eq!(acl.granting_policies("s/x", Capability::Read), ["readers"]);
    assert_eq!(
        acl.granting_policies("s/x", Capability::Update),
        ["writers"]
    );
    assert!(acl.granting_policies("s/x", Capability::Delete).is_empty());
    assert!(acl.granting_policies("u/x", Capability::Read).is_empty());
}

// R-ACL-1: allowed/denied/required_parameters as OpenBao enforces them (each
// row was a real write to a KV v1 mount: 204 = Ok, 403 = Err).
#[test]
fn parameter_rules() {
    let acl = compile(
        r#"
path "kv/allow" {
  capabilities = ["create", "update"]
  allowed_parameters = {
    "Foo" = ["bar", "baz*", "*mid*", "*suf"]
    "n" = []
    "b" = [true]
    "star" = ["*"]
  }
}
path "kv/deny" {
  capabilities = ["create", "update"]
  denied_parameters = {
    "secret" = []
    "color" = ["red"]
  }
}
path "kv/denyall" {
  capabilities = ["create", "update"]
  denied_parameters = { "*" = [] }
}
path "kv/allowstar" {
  capabilities = ["create", "update"]
  allowed_parameters = { "*" = [], "x" = ["1"] }
}
path "kv/req" {
  capabilities = ["create", "update", "read", "list"]
  required_parameters = ["foo", "Bar"]
}
path "kv/both" {
  capabilities = ["create", "update"]
  allowed_parameters = { "a" = [] }
  denied_parameters = { "a" = ["x"] }
}
"#,
    );
    let cases: &[(&str, Value, bool)] = &[
        ("kv/allow", json!({"foo": "bar"}), true),
        ("kv/allow", json!({"FOO": "bar"}), true),
        ("kv/allow", json!({"foo": "bazooka"}), true),
        ("kv/allow", json!({"foo": "xmidx"}), true),
        ("kv/allow", json!({"foo": "asuf"}), true),
        ("kv/allow", json!({"foo": "nope"}), false),
        ("kv/allow", json!({"n": "anything"}), true),
        ("kv/allow", json!({"other": "x"}), false),
        ("kv/allow", json!({"b": true}), true),
        ("kv/allow", json!({"b": "true"}), false),
        ("kv/allow", json!({"star": "*"}), true),
        ("kv/allow", json!({"star": "abc"}), false),
        ("kv/allow", json!({}), true),
        ("kv/allow", json!({"foo": ["bar"]}), false),
        ("kv/deny", json!({"ok": "1"}), true),
        ("kv/deny", json!({"secret": "1"}), false),
        ("kv/deny", json!({"color": "red"}), false),
        ("kv/deny", json!({"color": "blue"}), true),
        ("kv/deny", json!({"Color": "red"}), false),
        ("kv/denyall", json!({"x": "1"}), false),
        ("kv/denyall", json!({}), true),
        ("kv/allowstar", json!({"y": "z"}), true),
        ("kv/allowstar", json!({"x": "2"}), false),
        ("kv/allowstar", json!({"x": "1"}), true),
        ("kv/req", json!({"foo": "1", "bar": "2"}), true),
        ("kv/req", json!({"foo": "1"}), false),
        // Vault matches required names lowercased against the request as sent.
        ("kv/req", json!({"foo": "1", "Bar": "2"}), false),
        ("kv/req", json!({"FOO": "1", "bar": "2"}), false),
        ("kv/both", json!({"a": "y"}), true),
        ("kv/both", json!({"a": "x"}), false),
    ];
    for (path, body, allowed) in cases {
        let result = acl.check(path, Capability::Update, &params(body.clone()));
        assert_eq!(result.is_ok(), *allowed, "{path} {body}: {result:?}");
    }
    // Parameters are not checked for list and delete, as in Vault.
    assert!(acl.check("kv/req", Capability::List, &Map::new()).is_ok());
    assert!(acl.check("kv/req", Capability::Read, &Map::new()).is_err());
    // The reasons.
    assert_eq!(
        acl.check("kv/req", Capability::Update, &params(json!({"foo": 1}))),
        Err(AclDenied::MissingRequiredParameter { name: "bar".into() })
    );
    assert_eq!(
        acl.check("kv/deny", Capability::Update, &params(json!({"secret": 1}))),
        Err(AclDenied::DeniedParameter {
            name: "secret".into()
        })
    );
    assert_eq!(
        acl.check("kv/allow", Capability::Update, &params(json!({"other": 1}))),
        Err(AclDenied::ParameterNotAllowed {
            name: "other".into()
        })
    );
    assert_eq!(
        acl.check(
            "kv/allow",
            Capability::Update,
            &params(json!({"foo": "no"}))
        ),
        Err(AclDenied::ValueNotAllowed { name: "foo".into() })
    );
    assert_eq!(
        acl.check("kv/allow", Capability::Delete, &Map::new()),
        Err(AclDenied::MissingCapability {
            capability: Capability::Delete
        })
    );
}

// Numbers compare by value (Vault compares Go types and never matches an HCL
// integer with a JSON request number; Zafe deliberately does).
#[test]
fn parameter_numbers_compare_by_value() {
    let acl = compile(
        r#"
path "kv/n" {
  capabilities = ["update"]
  allowed_parameters = { "num" = [1, 2.5] }
  denied_parameters = { "ttl" = [0] }
}
"#,
    );
    for (body, allowed) in [
        (json!({"num": 1}), true),
        (json!({"num": 1.0}), true),
        (json!({"num": 2.5}), true),
        (json!({"num": 3}), false),
        (json!({"num": "1"}), false),
    ] {
        assert_eq!(
            acl.check("kv/n", Capability::Update, &params(body.clone()))
                .is_ok(),
            allowed,
            "{body}"
        );
    }
    // `ttl` is not in allowed_parameters, so denied either way; the reason
    // shows which rule fired first.
    assert_eq!(
        acl.check("kv/n", Capability::Update, &params(json!({"ttl": 0}))),
        Err(AclDenied::DeniedParameter { name: "ttl".into() })
    );
}

// Merging parameter rules of one pattern across policies, as Vault does.
#[test]
fn parameter_rules_merge() {
    let acl = acl_of(&[
        r#"
path "kv/m" {
  capabilities = ["update"]
  allowed_parameters = { "a" = ["1"], "b" = [] }
  required_parameters = ["a"]
}"#,
        r#"
path "kv/m" {
  capabilities = ["create"]
  allowed_parameters = { "a" = ["2"], "b" = ["x"], "c" = [] }
  required_parameters = ["c"]
}"#,
    ]);
    for (body, allowed) in [
        (json!({"a": "1", "c": "z"}), true),
        (json!({"a": "2", "c": "z"}), true),
        (json!({"a": "3", "c": "z"}), false),
        // An empty list on either side means any value.
        (json!({"a": "1", "b": "anything", "c": "z"}), true),
        (json!({"a": "1"}), false),
        (json!({"c": "z"}), false),
    ] {
        assert_eq!(
            acl.check("kv/m", Capability::Create, &params(body.clone()))
                .is_ok(),
            allowed,
            "{body}"
        );
    }
    // A deny merged in drops the parameter rules with everything else.
    let acl = acl_of(&[
        r#"
path "kv/d" {
  capabilities = ["update"]
  allowed_parameters = { "a" = [] }
}"#,
        r#"path "kv/d" { capabilities = ["deny"] }"#,
    ]);
    assert!(acl.capabilities("kv/d").is_explicit_deny());
}

// R-ACL-1: a parent's `list` must not beat a child's `deny` through the list
// trailing-slash fallback (OpenBao GHSA-xp3c-3jw3-4vcr; OpenBao 2.7.2 output).
#[test]
fn list_fallback_cannot_bypass_a_deny() {
    let acl = compile(
        r#"
path "foo/metadata/*" { capabilities = ["list"] }
path "foo/metadata/private/*" { capabilities = ["deny"] }
path "foo/metadata/+/secret" { capabilities = ["deny"] }
"#,
    );
    assert_table(
        &acl,
        &[
            ("foo/metadata/private/", "deny"),
            ("foo/metadata/private", "list"),
            ("foo/metadata/private/x", "deny"),
            ("foo/metadata/app/", "list"),
            ("foo/metadata/app/secret", "deny"),
            // `+/secret` has exactly four segments; the slashed path has five.
            ("foo/metadata/app/secret/", "list"),
        ],
    );
    assert!(!acl.allows("foo/metadata/private/", Capability::List));
    assert!(acl.allows("foo/metadata/app/", Capability::List));

    // The trimmed path is tried only when nothing matches the path as sent
    // (OpenBao: LIST kv/l1/a/ 403, LIST kv/l2/a/ 200).
    let acl = compile(
        r#"
path "kv/l1/+" { capabilities = ["list"] }
path "kv/l1/*" { capabilities = ["read"] }
path "kv/l2/+" { capabilities = ["read"] }
path "kv/l2/*" { capabilities = ["list"] }
path "kv/l3/+" { capabilities = ["list"] }
"#,
    );
    assert!(!acl.allows("kv/l1/a/", Capability::List));
    assert!(acl.allows("kv/l2/a/", Capability::List));
    assert!(acl.allows("kv/l3/a/", Capability::List));
}
