//! Parsing Vault ACL policies: HCL and JSON, names, errors, the default policy.
//! Expectations marked "OpenBao" were checked against OpenBao 2.7.2.

use zafe_core::policy::{
    Acl, Capabilities, Capability, DEFAULT_POLICY_HCL, PatternKind, Policy, PolicyError,
    check_policy_deletable, normalize_policy_name,
};

fn caps(names: &[&str]) -> Capabilities {
    names
        .iter()
        .map(|n| n.parse::<Capability>().unwrap())
        .collect()
}

// R-ACL-1: both syntaxes, comments, several path blocks.
#[test]
fn parses_hcl_with_comments_and_several_blocks() {
    let text = r#"
# hash comment
// slash comment
/* block
   comment */
path "secret/data/*" {
  capabilities = ["read", "list"]
}

path "/secret/metadata/+/app" { capabilities = ["list"] } # trailing comment

path "sys/mounts" {
  capabilities = ["read", "sudo"]
  comment = "operators only"
}
"#;
    let policy = Policy::parse("Team-A", text).unwrap();
    assert_eq!(policy.name(), "team-a");
    assert_eq!(policy.raw(), text);
    let rules = policy.rules();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0].path(), "secret/data/*");
    assert_eq!(rules[0].kind(), PatternKind::Prefix);
    assert_eq!(rules[0].capabilities(), caps(&["read", "list"]));
    // One leading slash is dropped, as in Vault.
    assert_eq!(rules[1].path(), "secret/metadata/+/app");
    assert_eq!(rules[1].kind(), PatternKind::Segment);
    assert_eq!(rules[2].kind(), PatternKind::Exact);
    assert_eq!(rules[2].capabilities(), caps(&["read", "sudo"]));
}

// R-ACL-1
#[test]
fn parses_json_in_both_shapes() {
    let object = Policy::parse(
        "j",
        r#"{"path": {"secret/*": {"capabilities": ["read"]}, "secret/x": {"capabilities": ["deny"]}}}"#,
    )
    .unwrap();
    assert_eq!(object.rules().len(), 2);
    assert_eq!(object.rules()[0].capabilities(), caps(&["read"]));
    assert!(object.rules()[1].capabilities().is_explicit_deny());

    // OpenBao: a list of single-path objects is accepted too.
    let list = Policy::parse(
        "j",
        r#"  {"name": "ignored", "path": [{"a": {"capabilities": ["read"]}}, {"b": {"capabilities": ["list"]}}]}"#,
    )
    .unwrap();
    assert_eq!(list.rules().len(), 2);
    assert_eq!(list.rules()[1].path(), "b");
}

#[test]
fn hcl_and_json_mean_the_same() {
    let hcl = Policy::parse(
        "p",
        r#"
path "secret/+/data/*" {
  capabilities = ["create", "update"]
  allowed_parameters = { "Foo" = ["bar", "baz*"], "n" = [] }
  denied_parameters = { secret = [] }
  required_parameters = ["Foo"]
}"#,
    )
    .unwrap();
    let json = Policy::parse(
        "p",
        r#"{"path": {"secret/+/data/*": {
            "capabilities": ["create", "update"],
            "allowed_parameters": {"Foo": ["bar", "baz*"], "n": []},
            "denied_parameters": {"secret": []},
            "required_parameters": ["Foo"]}}}"#,
    )
    .unwrap();
    assert_eq!(hcl.rules(), json.rules());
    let rule = &hcl.rules()[0];
    assert_eq!(rule.required_parameters(), ["foo"]);
    let mut allowed: Vec<_> = rule.allowed_parameters().map(|(k, _)| k).collect();
    allowed.sort_unstable();
    assert_eq!(allowed, ["foo", "n"]);
}

// R-ACL-1: every capability name, and the legacy `policy = "..."` spelling.
#[test]
fn every_capability_and_legacy_policies() {
    for cap in Capability::ALL {
        let text = format!(r#"path "x" {{ capabilities = ["{cap}"] }}"#);
        let policy = Policy::parse("p", &text).unwrap();
        assert!(policy.rules()[0].capabilities().contains(cap), "{cap}");
    }
    // OpenBao: the pre-capabilities spelling maps to these sets.
    for (old, expected) in [
        ("deny", &["deny"][..]),
        ("read", &["read", "list"][..]),
        ("write", &["create", "read", "update", "delete", "list"][..]),
        (
            "sudo",
            &["create", "read", "update", "delete", "list", "sudo"][..],
        ),
    ] {
        let text = format!(r#"path "x" {{ policy = "{old}" }}"#);
        let policy = Policy::parse("p", &text).unwrap();
        assert_eq!(policy.rules()[0].capabilities(), caps(expected), "{old}");
    }
    // OpenBao: `policy` and `capabilities` add up.
    let both = Policy::parse(
        "p",
        "path \"x\" {\n  policy = \"write\"\n  capabilities = [\"sudo\"]\n}",
    )
    .unwrap();
    assert_eq!(
        both.rules()[0].capabilities(),
        caps(&["create", "read", "update", "delete", "list", "sudo"])
    );
}

// R-ACL-1: deny in a list takes everything else away.
#[test]
fn deny_in_a_capability_list_is_deny_only() {
    let policy = Policy::parse(
        "p",
        r#"path "x" { capabilities = ["read", "deny", "update"] }"#,
    )
    .unwrap();
    let c = policy.rules()[0].capabilities();
    assert_eq!(c, Capabilities::DENY);
    assert!(c.is_explicit_deny() && c.is_denied());
    assert!(!c.contains(Capability::Read));
    assert_eq!(c.names(), ["deny"]);
}

#[test]
fn empty_capabilities_parse_and_grant_nothing() {
    // OpenBao accepts both and the path then reads as "deny".
    for text in [r#"path "x" { capabilities = [] }"#, r#"path "x" {}"#] {
        let policy = Policy::parse("p", text).unwrap();
        assert!(policy.rules()[0].capabilities().is_empty());
        assert!(Acl::new([&policy]).capabilities("x").is_denied());
    }
    // A comment-only policy is valid and has no rules (OpenBao too).
    assert!(
        Policy::parse("p", "# nothing yet\n")
            .unwrap()
            .rules()
            .is_empty()
    );
}

/// The error a policy text gives, for the table below.
fn parse_err(text: &str) -> PolicyError {
    Policy::parse("p", text).expect_err(text)
}

// R-ACL-1: parse errors are typed and say what and where.
#[test]
fn parse_errors_table() {
    let p = || "p".to_owned();
    let cases: Vec<(&str, PolicyError)> = vec![
        ("", PolicyError::Empty { policy: p() }),
        (" \n\t ", PolicyError::Empty { policy: p() }),
        (
            r#"path "secret/x" { capabilities = ["read", "bogus"] }"#,
            PolicyError::UnknownCapability {
                policy: p(),
                path: "secret/x".into(),
                capability: "bogus".into(),
            },
        ),
        // Capability names are case-sensitive (OpenBao refuses "READ").
        (
            r#"path "x" { capabilities = ["READ"] }"#,
            PolicyError::UnknownCapability {
                policy: p(),
                path: "x".into(),
                capability: "READ".into(),
            },
        ),
        // Stricter than Vault, which skips validation after "deny".
        (
            r#"path "x" { capabilities = ["deny", "bogus"] }"#,
            PolicyError::UnknownCapability {
                policy: p(),
                path: "x".into(),
                capability: "bogus".into(),
            },
        ),
        (
            r#"{"path": {"x": {"capabilities": ["read", "nope"]}}}"#,
            PolicyError::UnknownCapability {
                policy: p(),
                path: "x".into(),
                capability: "nope".into(),
            },
        ),
        (
            r#"path "x" { bogus = 1 }"#,
            PolicyError::UnknownKey {
                policy: p(),
                path: "x".into(),
                key: "bogus".into(),
            },
        ),
        (
            r#"{"bogus": {}}"#,
            PolicyError::UnknownTopLevelKey {
                policy: p(),
                key: "bogus".into(),
            },
        ),
        (
            "bogus = 1\n",
            PolicyError::UnknownTopLevelKey {
                policy: p(),
                key: "bogus".into(),
            },
        ),
        (
            r#"other "x" { capabilities = ["read"] }"#,
            PolicyError::UnknownTopLevelKey {
                policy: p(),
                key: "other".into(),
            },
        ),
        (
            r#"path { capabilities = ["read"] }"#,
            PolicyError::PathBlockLabels {
                policy: p(),
                labels: 0,
            },
        ),
        (
            r#"path "a" "b" { capabilities = ["read"] }"#,
            PolicyError::PathBlockLabels {
                policy: p(),
                labels: 2,
            },
        ),
        (
            r#"path "h+*" { capabilities = ["read"] }"#,
            PolicyError::InvalidWildcard {
                policy: p(),
                path: "h+*".into(),
            },
        ),
        (
            r#"path "h/+*" { capabilities = ["read"] }"#,
            PolicyError::InvalidWildcard {
                policy: p(),
                path: "h/+*".into(),
            },
        ),
        (
            r#"path "a/{{identity.entity.id" { capabilities = ["read"] }"#,
            PolicyError::UnbalancedTemplate {
                policy: p(),
                path: "a/{{identity.entity.id".into(),
            },
        ),
        (
            r#"{"path": {"x": {"capabilities": ["read"], "capabilities": ["list"]}}}"#,
            PolicyError::DuplicateKey {
                policy: p(),
                path: "x".into(),
                key: "capabilities".into(),
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_err(text), expected, "{text}");
    }
}

// R-ACL-1: keys Vault has and Zafe does not are refused by name, never ignored.
#[test]
fn unsupported_vault_keys_are_refused() {
    for (key, value) in [
        ("min_wrapping_ttl", "\"1h\""),
        ("max_wrapping_ttl", "\"1h\""),
        ("mfa_methods", "[\"totp\"]"),
        ("pagination_limit", "10"),
        ("expiration", "\"2030-01-01T00:00:00Z\""),
        ("list_scan_response_keys_filter_path", "\"{{ .key }}\""),
        ("subscribe_event_types", "[\"*\"]"),
    ] {
        let text = format!("path \"x\" {{\n  capabilities = [\"read\"]\n  {key} = {value}\n}}");
        match parse_err(&text) {
            PolicyError::UnsupportedKey { path, key: got, .. } => {
                assert_eq!(path, "x");
                assert_eq!(got, key);
            }
            other => panic!("{key}: {other:?}"),
        }
        let message = parse_err(&text).to_string();
        assert!(
            message.contains(key) && message.contains("not supported"),
            "{message}"
        );
    }
    // A nested block is named too.
    let text =
        "path \"x\" {\n  capabilities = [\"read\"]\n  control_group {\n    ttl = \"4h\"\n  }\n}";
    assert!(
        matches!(parse_err(text), PolicyError::UnsupportedKey { key, .. } if key == "control_group")
    );
}

#[test]
fn wrong_value_shapes_are_refused() {
    for text in [
        // OpenBao: "unknown slice type" for a bare string.
        r#"path "x" { capabilities = "read" }"#,
        r#"{"path": {"x": {"capabilities": "read"}}}"#,
        r#"{"path": {"x": {"capabilities": [1]}}}"#,
        r#"path "x" { capabilities = [read] }"#,
        r#"path "x" { policy = "admin" }"#,
        "path \"x\" {\n  allowed_parameters = { a = \"x\" }\n}",
        "path \"x\" {\n  required_parameters = \"a\"\n}",
        r#"{"path": {"x": {"required_parameters": ["a", 1]}}}"#,
        r#"{"path": "x"}"#,
        r#"{"path": {"x": ["read"]}}"#,
        r#"{"name": 1}"#,
        "path \"x\" {\n  capabilities = [\"${var.cap}\"]\n}",
        "path \"x\" {\n  capabilities = [upper(\"read\")]\n}",
        "path \"x\" {\n  allowed_parameters = { a = [], A = [] }\n}",
    ] {
        match parse_err(text) {
            PolicyError::InvalidValue { .. } => {}
            other => panic!("{text}: {other:?}"),
        }
    }
    // The message says which path and key.
    let message = parse_err(r#"path "secret/x" { capabilities = "read" }"#).to_string();
    assert!(
        message.contains("secret/x") && message.contains("capabilities"),
        "{message}"
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    // Bad HCL.
    let err = parse_err("path \"x\" {\n  capabilities = [\"read\"\n}\n");
    match &err {
        PolicyError::Syntax {
            format, location, ..
        } => {
            assert_eq!(*format, "HCL");
            assert!(location.contains("line 3"), "{location}");
        }
        other => panic!("{other:?}"),
    }
    // Bad JSON: OpenBao accepts this truncated document; Zafe does not.
    let err = parse_err("{\"path\": {\"j8\": {\"capabilities\": [\"read\"]");
    match &err {
        PolicyError::Syntax {
            format, location, ..
        } => {
            assert_eq!(*format, "JSON");
            assert!(location.starts_with("line 1"), "{location}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_err("{ not json"),
        PolicyError::Syntax { format: "JSON", .. }
    ));
    assert!(matches!(
        parse_err("[1, 2]"),
        PolicyError::Syntax { format: "HCL", .. }
    ));
    assert!(matches!(
        parse_err("path \"a\" = {\n capabilities = [\"read\"]\n}"),
        PolicyError::Syntax { .. }
    ));
    // An empty JSON object is a valid policy with no rules (OpenBao too).
    assert!(Policy::parse("p", "{}").unwrap().rules().is_empty());
}

// R-ACL-1: policy names follow Vault: case-insensitive, anything but empty and root.
#[test]
fn policy_names() {
    for (given, stored) in [
        ("Foo", "foo"),
        ("a.b", "a.b"),
        ("a_b-c", "a_b-c"),
        ("team/app", "team/app"),
        ("a b", "a b"),
        ("a+b", "a+b"),
        ("Ümlaut", "ümlaut"),
        ("default", "default"),
    ] {
        assert_eq!(normalize_policy_name(given).unwrap(), stored);
        let policy = Policy::parse(given, r#"path "x" { capabilities = ["read"] }"#).unwrap();
        assert_eq!(policy.name(), stored);
    }
    assert_eq!(normalize_policy_name(""), Err(PolicyError::EmptyName));
    for reserved in ["root", "ROOT", "Root", "response-wrapping"] {
        assert!(matches!(
            Policy::parse(reserved, r#"path "x" { capabilities = ["read"] }"#),
            Err(PolicyError::ReservedName { .. })
        ));
    }
    assert!(matches!(
        normalize_policy_name("a\nb"),
        Err(PolicyError::InvalidName { .. })
    ));
    assert!(check_policy_deletable("team").is_ok());
    for name in ["default", "Default", "root"] {
        assert!(matches!(
            check_policy_deletable(name),
            Err(PolicyError::Undeletable { .. })
        ));
    }
}

// R-ACL-1: the built-in default policy round-trips and grants what OpenBao's does.
#[test]
fn default_policy_round_trip() {
    let policy = Policy::default_policy();
    assert_eq!(policy.name(), "default");
    assert_eq!(policy.raw(), DEFAULT_POLICY_HCL);
    assert_eq!(policy.rules().len(), 16);
    assert!(policy.is_templated());
    // Parsing its own raw text again gives the same policy.
    assert_eq!(Policy::parse("default", policy.raw()).unwrap(), policy);

    let acl = Acl::new([&policy]);
    // Results from `bao token capabilities` with a default-only token.
    for (path, expected) in [
        ("auth/token/lookup-self", "read"),
        ("auth/token/renew-self", "update"),
        ("auth/token/revoke-self", "update"),
        ("sys/capabilities-self", "update"),
        ("sys/internal/ui/resultant-acl", "read"),
        ("sys/leases/renew", "update"),
        ("sys/leases/lookup", "update"),
        ("cubbyhole/x", "create, delete, list, read, update"),
        ("cubbyhole", "deny"),
        ("sys/wrapping/wrap", "update"),
        ("sys/wrapping/lookup", "update"),
        ("sys/wrapping/unwrap", "update"),
        ("sys/tools/hash", "update"),
        ("sys/tools/hash/sha2-256", "update"),
        ("identity/oidc/provider/foo/authorize", "read, update"),
        // Templated paths are dropped for a token without an entity.
        ("identity/entity/id/{{identity.entity.id}}", "deny"),
        ("secret/data/x", "deny"),
        ("auth/token/create", "deny"),
    ] {
        assert_eq!(acl.capabilities(path).to_string(), expected, "{path}");
    }
}

#[test]
fn capabilities_names_and_display() {
    assert_eq!(Capabilities::ROOT.names(), ["root"]);
    assert_eq!(Capabilities::EMPTY.names(), ["deny"]);
    assert_eq!(Capabilities::DENY.names(), ["deny"]);
    // Alphabetical, as sys/capabilities-self returns them.
    let all = caps(&[
        "update", "sudo", "read", "patch", "list", "delete", "create", "scan",
    ]);
    assert_eq!(
        all.names(),
        [
            "create", "delete", "list", "patch", "read", "scan", "sudo", "update"
        ]
    );
    assert_eq!(all.iter().count(), 8);
    assert!(Capabilities::ROOT.contains(Capability::Sudo));
    assert!(!Capabilities::ROOT.contains(Capability::Deny));
    assert!(!Capabilities::ROOT.is_denied());
    assert_eq!(
        caps(&["read"]).union(Capabilities::DENY),
        Capabilities::DENY
    );
    assert_eq!("sudo".parse::<Capability>().unwrap(), Capability::Sudo);
    assert!("root".parse::<Capability>().is_err());
}
