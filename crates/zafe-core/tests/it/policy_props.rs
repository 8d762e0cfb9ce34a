//! Property tests of the policy engine (R-ACL-1).

use proptest::prelude::*;
use proptest::sample::subsequence;
use serde_json::Map;
use zafe_core::policy::{Acl, Capabilities, Capability, Policy};

use crate::support::policy;

/// Capabilities that grant something (everything but deny).
fn granting() -> Vec<Capability> {
    Capability::ALL
        .into_iter()
        .filter(|c| *c != Capability::Deny)
        .collect()
}

fn caps_hcl(caps: &[Capability]) -> String {
    let names: Vec<String> = caps.iter().map(|c| format!("\"{c}\"")).collect();
    format!("[{}]", names.join(", "))
}

fn rule(pattern: &str, caps: &[Capability]) -> String {
    format!(
        "path \"{pattern}\" {{\n  capabilities = {}\n}}\n",
        caps_hcl(caps)
    )
}

/// A request path: 1 to 5 segments of lowercase letters.
fn request_path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-z]{1,4}", 1..=5)
}

/// A pattern that matches `segs` (joined by `/`): exact, a `*` prefix, or
/// `+` segments with or without a trailing `*`, chosen by `kind` and `seed`.
fn matching_pattern(segs: &[String], kind: u8, seed: u64) -> String {
    let path = segs.join("/");
    match kind % 3 {
        0 => path,
        1 => {
            let cut = (seed as usize) % (path.len() + 1);
            format!("{}*", &path[..cut])
        }
        _ => {
            // Keep segments 0..=last, replace some (not the last) with `+`,
            // and make the last one a prefix when `seed` says so.
            let last = (seed as usize) % segs.len();
            let mut out: Vec<String> = segs[..=last]
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    if i < last && (seed >> (8 + i)) & 1 == 1 {
                        "+".to_owned()
                    } else {
                        s.clone()
                    }
                })
                .collect();
            if last + 1 < segs.len() || (seed >> 20) & 1 == 1 {
                let tail = &segs[last];
                let keep = ((seed >> 24) as usize) % (tail.len() + 1);
                out[last] = format!("{}*", &tail[..keep]);
            } else if last > 0 && (seed >> 21) & 1 == 1 {
                out[last] = "+".to_owned();
            }
            out.join("/")
        }
    }
}

proptest! {
    // R-ACL-1: a trailing `*` matches every path with that prefix, whatever
    // follows it (including `/`, `+` and `*` characters in the request).
    #[test]
    fn trailing_glob_matches_every_extension(
        prefix in "[a-z0-9_-]{1,6}(/[a-z0-9_.-]{0,6}){0,3}/?",
        suffix in "[a-zA-Z0-9/_.+*-]{0,24}",
        caps in subsequence(granting(), 1..=5),
    ) {
        let acl = Acl::new([&policy("p", &rule(&format!("{prefix}*"), &caps))]);
        let path = format!("{prefix}{suffix}");
        let expected: Capabilities = caps.iter().copied().collect();
        prop_assert_eq!(acl.capabilities(&path), expected);
        for cap in Capability::ALL {
            prop_assert_eq!(acl.allows(&path, cap), caps.contains(&cap), "{} on {}", cap, path);
        }
        // And nothing outside the prefix.
        let outside = format!("~{prefix}");
        prop_assert!(acl.capabilities(&outside).is_denied());
    }

    // R-ACL-1: an exact deny on a path removes every capability there, whatever
    // other rules and policies grant, in whatever order.
    #[test]
    fn exact_deny_removes_everything(
        segs in request_path(),
        grants in prop::collection::vec((any::<u8>(), any::<u64>(), subsequence(granting(), 1..=4)), 1..6),
        deny_first in any::<bool>(),
    ) {
        let path = segs.join("/");
        let mut texts: Vec<String> = grants
            .iter()
            .map(|(kind, seed, caps)| rule(&matching_pattern(&segs, *kind, *seed), caps))
            .collect();
        let deny = rule(&path, &[Capability::Deny]);
        if deny_first { texts.insert(0, deny) } else { texts.push(deny) }
        let policies: Vec<Policy> = texts.iter().enumerate().map(|(i, t)| policy(&format!("p{i}"), t)).collect();
        let acl = Acl::new(&policies);

        // With a trailing slash too: a list falls back to the exact rule.
        for p in [path.clone(), format!("{path}/"), format!("/{path}")] {
            let c = acl.capabilities(&p);
            prop_assert!(c.is_explicit_deny(), "{} -> {:?}", p, c);
            prop_assert_eq!(c.names(), vec!["deny"]);
        }
        for cap in Capability::ALL {
            prop_assert!(!acl.allows(&path, cap));
            prop_assert!(acl.check(&path, cap, &Map::new()).is_err());
        }
    }

    // R-ACL-1: deny on the same pattern as a grant, in another policy or the
    // same one, in either order, denies every path the pattern matches.
    #[test]
    fn deny_on_a_pattern_wins_over_its_grants(
        segs in request_path(),
        kind in any::<u8>(),
        seed in any::<u64>(),
        caps in subsequence(granting(), 1..=5),
        same_policy in any::<bool>(),
        deny_first in any::<bool>(),
    ) {
        let pattern = matching_pattern(&segs, kind, seed);
        let (grant, deny) = (rule(&pattern, &caps), rule(&pattern, &[Capability::Deny]));
        let (a, b) = if deny_first { (deny, grant) } else { (grant, deny) };
        let policies = if same_policy {
            vec![policy("p", &format!("{a}{b}"))]
        } else {
            vec![policy("p1", &a), policy("p2", &b)]
        };
        let acl = Acl::new(&policies);
        let path = segs.join("/");
        prop_assert!(acl.capabilities(&path).is_explicit_deny(), "{} on {}", pattern, path);
        for cap in Capability::ALL {
            prop_assert!(!acl.allows(&path, cap));
        }
    }

    // capabilities() and allows() agree on paths without a trailing slash
    // (the only place list semantics differ), for any mix of rules.
    #[test]
    fn capabilities_and_allows_agree(
        segs in request_path(),
        rules in prop::collection::vec((any::<u8>(), any::<u64>(), subsequence(Capability::ALL.to_vec(), 0..=4)), 1..8),
    ) {
        let text: String = rules
            .iter()
            .map(|(kind, seed, caps)| rule(&matching_pattern(&segs, *kind, *seed), caps))
            .collect();
        let acl = Acl::new([&policy("p", &text)]);
        let path = segs.join("/");
        let caps = acl.capabilities(&path);
        for cap in Capability::ALL {
            let granted = cap != Capability::Deny && caps.contains(cap);
            prop_assert_eq!(acl.allows(&path, cap), granted, "{} on {}", cap, path);
        }
    }

    // Parsing arbitrary text never panics: it is a policy or a typed error.
    #[test]
    fn parse_never_panics(text in any::<String>()) {
        let _ = Policy::parse("p", &text);
    }

    #[test]
    fn parse_never_panics_on_policy_like_text(
        text in r#"(path "[a-z/+*{}]{0,8}" \{ ?(capabilities|policy|bogus) ?= ?\[?("[a-z]{0,6}",? ?){0,3}\]? ?\}\n?){0,3}"#,
    ) {
        let _ = Policy::parse("p", &text);
    }
}
