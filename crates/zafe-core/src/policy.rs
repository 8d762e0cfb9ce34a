//! Zafe's one policy engine (R-ACL-1): Vault's ACL policy language and its
//! evaluation, with the same matching and priority rules as Vault/OpenBao, so
//! that a policy written for Vault means the same thing here.
//!
//! - [`Policy::parse`] reads a policy document, HCL or JSON (auto-detected the
//!   way Vault does it: a document whose first non-blank character is `{` is
//!   JSON).
//! - [`Acl::new`] compiles the union of a token's policies once; afterwards
//!   [`Acl::capabilities`] and [`Acl::allows`] answer every request without
//!   allocating, and [`Acl::check`] adds Vault's `allowed_parameters`,
//!   `denied_parameters` and `required_parameters`.
//!
//! Capabilities are Vault's (`create`, `read`, `update`, `patch`, `delete`,
//! `list`, `sudo`, `deny`), plus `subscribe` and `recover` (HashiCorp Vault
//! 1.16+/1.20+) and `scan` (OpenBao), so that policies written for either
//! load unchanged.
//!
//! # Matching (Vault's algorithm, `vault/acl.go`)
//!
//! A policy path is one of three kinds ([`PatternKind`]):
//!
//! - **exact** (`secret/data/app`): matches that path only;
//! - **prefix** (`secret/data/*`): a trailing `*` matches every path that
//!   starts with what comes before it (`*` is a string prefix, not a segment
//!   glob: `secret/data/a*` matches `secret/data/abc/def`);
//! - **segment** (`secret/+/teamb`, `secret/+/data/*`): `+` matches exactly
//!   one path segment (any content, even empty); a trailing `*` makes the last
//!   segment a prefix and lets the path have more segments.
//!
//! For a request path, an exact rule wins outright. Otherwise the candidates
//! are the *longest* matching prefix rule and every matching segment rule, and
//! the single most specific one is chosen:
//!
//! 1. the later the first `+` or `*` (for a prefix rule, the prefix length),
//!    the more specific;
//! 2. a rule not ending in `*` beats one that does;
//! 3. fewer `+` segments beat more;
//! 4. a longer pattern beats a shorter one;
//! 5. otherwise the lexicographically greater pattern wins.
//!
//! Capabilities are never combined across *different* patterns: only the
//! chosen rule counts. The same pattern string written in several policies (or
//! several times in one) is merged into one rule: capabilities are unioned,
//! and `deny` in any of them makes the merged rule deny everything.
//!
//! List requests (and [`Acl::capabilities`], which Vault evaluates as a list)
//! also try the path without its trailing `/`, so `path "secret/metadata/app"`
//! answers `LIST secret/metadata/app/`. The order is: exact rule on the path,
//! exact rule on the trimmed path, wildcard rules on the path, and only if
//! none matched, wildcard rules on the trimmed path (OpenBao's order since its
//! fix for GHSA-xp3c-3jw3-4vcr; HashiCorp Vault tries the trimmed path's
//! wildcard rules first, which lets a parent's `list` beat a child's `deny`).
//!
//! # Deliberate differences from Vault
//!
//! - Unknown capabilities are refused wherever they appear (Vault accepts
//!   anything after `deny`, e.g. `["deny", "bogus"]`).
//! - A key given twice in one path block is refused (Vault's JSON reader
//!   unions them). Path blocks need exactly one label.
//! - Path-block keys Vault knows but Zafe does not implement (wrapping TTLs,
//!   MFA, control groups, pagination limits, expiration, event types) are
//!   refused with an error naming the key, never silently ignored.
//! - Parameter values that are numbers compare by numeric value (Vault
//!   compares an HCL integer with a JSON request number by Go type and never
//!   finds them equal, so `denied_parameters = { ttl = [0] }` never denies).
//! - HCL is read with `hcl-rs` (HCL2): HCL1-only spellings such as two
//!   attributes on one line inside `{ }` or `path "x" = { ... }` are syntax
//!   errors with a line and column.
//! - Identity templates (`{{identity.entity.id}}`) are checked for balance and
//!   kept in the policy, but Zafe has no identity entities yet, so
//!   [`Acl::new`] leaves templated paths out, exactly as Vault does for a
//!   token without an entity.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The built-in policy that allows everything. It cannot be written, deleted
/// or combined with others; see [`Acl::root`].
pub(crate) const ROOT_POLICY_NAME: &str = "root";

/// The built-in policy attached to every token unless asked otherwise. It can
/// be rewritten but not deleted.
pub(crate) const DEFAULT_POLICY_NAME: &str = "default";

/// Policy names Vault reserves for itself; writing one is refused.
const RESERVED_POLICY_NAMES: &[&str] = &[ROOT_POLICY_NAME, "response-wrapping"];

/// The text of the `default` policy, as OpenBao 2.7 ships it
/// (`bao policy read default`): a token may look itself up, renew and revoke
/// itself, ask for its own capabilities, use its cubbyhole, and so on.
pub const DEFAULT_POLICY_HCL: &str = r#"# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own entity by id or name
path "identity/entity/id/{{identity.entity.id}}" {
  capabilities = ["read"]
}
path "identity/entity/name/{{identity.entity.name}}" {
  capabilities = ["read"]
}


# Allow a token to look up its resultant ACL from all policies. This is useful
# for UIs. It is an internal path because the format may change at any time
# based on how the internal ACL features and capabilities change.
path "sys/internal/ui/resultant-acl" {
    capabilities = ["read"]
}

# Allow a token to renew a lease via lease_id in the request body; old path for
# old clients, new path for newer
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up lease properties. This requires knowing the lease ID ahead
# of time and does not divulge any sensitive information.
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given
# response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token. This is a convenience to
# avoid client token swapping since this is also part of the response wrapping
# policy.
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow general purpose tools
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}

# Allow a token to make requests to the Authorization Endpoint for OIDC providers.
path "identity/oidc/provider/+/authorize" {
    capabilities = ["read", "update"]
}
"#;

// ---------------------------------------------------------------------------
// Capabilities
// ---------------------------------------------------------------------------

/// One capability a policy can grant on a path.
///
/// `Scan` is OpenBao's recursive list; `Subscribe` (events) and `Recover`
/// (snapshot recovery) are HashiCorp Vault's. Zafe accepts all three so that
/// policies written for either server load unchanged; they grant only what a
/// Zafe route checks them for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Capability {
    /// Explicitly refuses everything on the path; wins over every grant.
    Deny,
    /// Writing a path that does not exist yet (`POST`/`PUT` that creates).
    Create,
    /// `GET` of a path.
    Read,
    /// Writing a path that exists (`POST`/`PUT` that changes).
    Update,
    /// `PATCH` of a path (KV v2 patch).
    Patch,
    /// `DELETE` of a path.
    Delete,
    /// `LIST` of a path (its keys, without their values).
    List,
    /// Access to root-protected paths (in addition to the operation's own
    /// capability).
    Sudo,
    /// OpenBao's recursive list. Accepted so that OpenBao policies load; it
    /// grants only what a Zafe route checks it for.
    Scan,
    /// HashiCorp Vault's event subscription; accepted like `Scan`.
    Subscribe,
    /// HashiCorp Vault's snapshot recovery; accepted like `Scan`.
    Recover,
}

impl Capability {
    /// Every capability, in alphabetical order of name: the order Vault's
    /// `sys/capabilities-self` lists them in.
    pub const ALL: [Capability; 11] = [
        Capability::Create,
        Capability::Delete,
        Capability::Deny,
        Capability::List,
        Capability::Patch,
        Capability::Read,
        Capability::Recover,
        Capability::Scan,
        Capability::Subscribe,
        Capability::Sudo,
        Capability::Update,
    ];

    /// The name used in policies and in Vault's API output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Capability::Deny => "deny",
            Capability::Create => "create",
            Capability::Read => "read",
            Capability::Update => "update",
            Capability::Patch => "patch",
            Capability::Delete => "delete",
            Capability::List => "list",
            Capability::Sudo => "sudo",
            Capability::Scan => "scan",
            Capability::Subscribe => "subscribe",
            Capability::Recover => "recover",
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a capability name that is not one of [`Capability::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {0:?}")]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;

    /// Names are case-sensitive, as in Vault (`"READ"` is refused).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Capability::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCapability(s.to_owned()))
    }
}

/// A set of capabilities: what one rule grants, or what a token may do on a
/// path. A small bitset, `Copy`.
///
/// An explicit deny holds only [`Capability::Deny`]. The root set (see
/// [`Acl::root`]) contains every capability except `Deny` and lists itself as
/// `["root"]`, as Vault does.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u16);

const ROOT_BIT: u16 = 1 << 15;
const GRANT_BITS: u16 = {
    let mut bits = 0;
    let mut i = 0;
    while i < Capability::ALL.len() {
        bits |= Capability::ALL[i].bit();
        i += 1;
    }
    bits & !Capability::Deny.bit()
};

impl Capabilities {
    /// Grants nothing (what a path no rule matches gets).
    pub const EMPTY: Capabilities = Capabilities(0);
    /// An explicit deny.
    pub const DENY: Capabilities = Capabilities(Capability::Deny.bit());
    /// Everything, as the root token has it.
    pub const ROOT: Capabilities = Capabilities(ROOT_BIT | GRANT_BITS);

    /// Whether `cap` is in the set. For an explicit deny only `Deny` is; for
    /// root everything but `Deny` is.
    pub const fn contains(self, cap: Capability) -> bool {
        self.0 & cap.bit() != 0
    }

    /// Whether the set grants nothing at all: an explicit deny, or no
    /// capability. Vault prints both as `["deny"]`.
    pub const fn is_denied(self) -> bool {
        self.0 & GRANT_BITS == 0
    }

    /// Whether the set is an explicit `deny` (rather than merely empty).
    pub const fn is_explicit_deny(self) -> bool {
        self.contains(Capability::Deny)
    }

    /// Whether this is the root token's set.
    pub const fn is_root(self) -> bool {
        self.0 & ROOT_BIT != 0
    }

    /// Whether no bit at all is set (not even `deny`).
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The set with `cap` added. Adding `Deny` gives an explicit deny, as in
    /// a policy (`deny` anywhere in a list makes the rule deny everything).
    #[must_use]
    pub const fn with(self, cap: Capability) -> Capabilities {
        if matches!(cap, Capability::Deny) || self.is_explicit_deny() {
            Capabilities::DENY
        } else {
            Capabilities(self.0 | cap.bit())
        }
    }

    /// The union of two sets, where a deny on either side wins.
    #[must_use]
    pub const fn union(self, other: Capabilities) -> Capabilities {
        if self.is_explicit_deny() || other.is_explicit_deny() {
            Capabilities::DENY
        } else {
            Capabilities(self.0 | other.0)
        }
    }

    /// The capabilities in the set, alphabetically, without allocating.
    /// Root iterates as every granting capability; the root marker itself is
    /// only visible through [`Capabilities::is_root`] and [`Capabilities::names`].
    pub fn iter(self) -> impl Iterator<Item = Capability> + Clone {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }

    /// The list Vault's `sys/capabilities-self` returns for a path:
    /// `["root"]` for root, `["deny"]` when nothing is granted, otherwise the
    /// granted capabilities in alphabetical order.
    pub fn names(self) -> Vec<&'static str> {
        if self.is_root() {
            vec![ROOT_POLICY_NAME]
        } else if self.is_denied() {
            vec![Capability::Deny.as_str()]
        } else {
            self.iter().map(Capability::as_str).collect()
        }
    }
}

impl FromIterator<Capability> for Capabilities {
    fn from_iter<I: IntoIterator<Item = Capability>>(iter: I) -> Self {
        iter.into_iter()
            .fold(Capabilities::EMPTY, Capabilities::with)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities({self})")
    }
}

/// `create, read` (the `bao token capabilities` format), `root` or `deny`.
impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a policy name or document was refused. Every variant names the policy
/// and, where there is one, the path and key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The name is empty.
    #[error("policy name must not be empty")]
    EmptyName,

    /// The name contains a control character.
    #[error("policy name {name:?} must not contain control characters")]
    InvalidName {
        /// The name, lowercased.
        name: String,
    },

    /// `root` or `response-wrapping`, which are Vault's own.
    #[error("the {name:?} policy is built in and cannot be written")]
    ReservedName {
        /// The name, lowercased.
        name: String,
    },

    /// A delete of `root` or `default`.
    #[error("the {name:?} policy is built in and cannot be deleted")]
    Undeletable {
        /// The name, lowercased.
        name: String,
    },

    /// The document is empty or blank.
    #[error("policy {policy:?} is empty")]
    Empty {
        /// The policy's (normalised) name; so in every variant below.
        policy: String,
    },

    /// The text is not valid HCL or JSON.
    #[error("policy {policy:?}: invalid {format} at {location}: {message}")]
    Syntax {
        /// The policy's name.
        policy: String,
        /// `"HCL"` or `"JSON"`, whichever the text was read as.
        format: &'static str,
        /// Where, as the parser reports it (`line 3, column 7`).
        location: String,
        /// The parser's message.
        message: String,
    },

    /// A top-level key other than `path` and `name`.
    #[error(
        "policy {policy:?}: unknown top-level key {key:?} (a policy holds `path` blocks and an optional `name`)"
    )]
    UnknownTopLevelKey {
        /// The policy's name.
        policy: String,
        /// The key found.
        key: String,
    },

    /// A `path` block with no label or several.
    #[error(
        "policy {policy:?}: a `path` block takes exactly one label, the path, but this one has {labels}"
    )]
    PathBlockLabels {
        /// The policy's name.
        policy: String,
        /// How many labels the block has.
        labels: usize,
    },

    /// A key inside a path block that neither Vault nor OpenBao knows.
    #[error("policy {policy:?}, path {path:?}: unknown key {key:?}")]
    UnknownKey {
        /// The policy's name.
        policy: String,
        /// The path block's pattern.
        path: String,
        /// The key found.
        key: String,
    },

    /// A key Vault or OpenBao understands that Zafe does not implement.
    #[error(
        "policy {policy:?}, path {path:?}: {key:?} is not supported by Zafe ({reason}); remove it"
    )]
    UnsupportedKey {
        /// The policy's name.
        policy: String,
        /// The path block's pattern.
        path: String,
        /// The key found (`min_wrapping_ttl`, `mfa_methods`, ...).
        key: String,
        /// What the key does in Vault, and that Zafe lacks it.
        reason: &'static str,
    },

    /// The same key twice in one path block.
    #[error("policy {policy:?}, path {path:?}: key {key:?} is given more than once")]
    DuplicateKey {
        /// The policy's name.
        policy: String,
        /// The path block's pattern.
        path: String,
        /// The repeated key.
        key: String,
    },

    /// A capability name that is not one of [`Capability::ALL`].
    #[error(
        "policy {policy:?}, path {path:?}: invalid capability {capability:?} (valid: create, read, update, patch, delete, list, sudo, deny, scan, subscribe, recover)"
    )]
    UnknownCapability {
        /// The policy's name.
        policy: String,
        /// The path block's pattern.
        path: String,
        /// The name found.
        capability: String,
    },

    /// A key holds a value of the wrong shape (a string where a list is
    /// needed, an expression, an unknown legacy `policy` value, ...).
    #[error("policy {policy:?}, {location}: {message}")]
    InvalidValue {
        /// The policy's name.
        policy: String,
        /// Which key (`path "x", key "capabilities"`, `top level`, ...).
        location: String,
        /// What is wrong with it.
        message: String,
    },

    /// A pattern containing `+*`, which Vault refuses too.
    #[error("policy {policy:?}, path {path:?}: invalid use of wildcards ('+*' is forbidden)")]
    InvalidWildcard {
        /// The policy's name.
        policy: String,
        /// The path block's pattern.
        path: String,
    },

    /// A pattern with `{{` and `}}` that do not pair up.
    #[error(
        "policy {policy:?}, path {path:?}: unbalanced templating characters (every `{{{{` needs a `}}}}`)"
    )]
    UnbalancedTemplate {
        /// The policy's name.
        policy: String,
        /// The path block's pattern.
        path: String,
    },
}

/// Why [`Acl::check`] refused a request. Names parameters, never their
/// values (which may be secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AclDenied {
    /// The chosen rule does not grant the operation's capability (or denies).
    #[error("permission denied: no {capability} capability on this path")]
    MissingCapability {
        /// The capability the operation needs.
        capability: Capability,
    },

    /// A name of `required_parameters` is absent from the request.
    #[error("permission denied: required parameter {name:?} is missing")]
    MissingRequiredParameter {
        /// The parameter's name, lowercased.
        name: String,
    },

    /// A parameter `denied_parameters` names (for any value, or this value).
    #[error("permission denied: parameter {name:?} is denied")]
    DeniedParameter {
        /// The parameter's name, lowercased.
        name: String,
    },

    /// `allowed_parameters` is set and does not name this parameter (nor `*`).
    #[error("permission denied: parameter {name:?} is not allowed")]
    ParameterNotAllowed {
        /// The parameter's name, lowercased.
        name: String,
    },

    /// The parameter is allowed, but only with other values.
    #[error("permission denied: this value of parameter {name:?} is not allowed")]
    ValueNotAllowed {
        /// The parameter's name, lowercased.
        name: String,
    },
}

// ---------------------------------------------------------------------------
// Policy names
// ---------------------------------------------------------------------------

/// Validates and normalises a policy name for writing, as Vault does:
/// names are case-insensitive (stored lowercase), must not be empty, and
/// `root` (and Vault's `response-wrapping`) cannot be written. Otherwise
/// Vault allows any text, `/` included; Zafe also refuses control
/// characters, which have no business in a name that ends up in logs.
pub fn normalize_policy_name(name: &str) -> Result<String, PolicyError> {
    let lower = name.to_lowercase();
    if lower.is_empty() {
        return Err(PolicyError::EmptyName);
    }
    if lower.chars().any(char::is_control) {
        return Err(PolicyError::InvalidName { name: lower });
    }
    if RESERVED_POLICY_NAMES.contains(&lower.as_str()) {
        return Err(PolicyError::ReservedName { name: lower });
    }
    Ok(lower)
}

/// Whether a policy may be deleted: `root` and `default` may not.
pub fn check_policy_deletable(name: &str) -> Result<(), PolicyError> {
    let lower = name.to_lowercase();
    if lower == DEFAULT_POLICY_NAME || RESERVED_POLICY_NAMES.contains(&lower.as_str()) {
        return Err(PolicyError::Undeletable { name: lower });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Parsed policies
// ---------------------------------------------------------------------------

/// How a policy path matches request paths (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternKind {
    /// No wildcard: matches exactly this path and wins over every wildcard.
    Exact,
    /// A trailing `*` and no `+` segment.
    Prefix,
    /// At least one `+` segment, with or without a trailing `*`.
    Segment,
}

/// `allowed_parameters`, `denied_parameters` and `required_parameters` of one
/// rule. Parameter names are stored lowercase, as Vault stores them.
#[derive(Clone, Debug, Default, PartialEq)]
struct ParamRules {
    /// name -> values; an empty list allows any value; `*` names any parameter.
    allowed: HashMap<String, Vec<Value>>,
    denied: HashMap<String, Vec<Value>>,
    required: Vec<String>,
}

impl ParamRules {
    fn is_empty(&self) -> bool {
        self.allowed.is_empty() && self.denied.is_empty() && self.required.is_empty()
    }
}

/// One `path "..." { ... }` block of a policy.
#[derive(Clone, Debug, PartialEq)]
pub struct PathRule {
    /// The pattern as written, less one leading `/`, trailing `*` included.
    path: String,
    kind: PatternKind,
    capabilities: Capabilities,
    params: Option<Box<ParamRules>>,
    templated: bool,
}

impl PathRule {
    /// The pattern as written (less one leading `/`), trailing `*` included.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// How the pattern matches.
    pub fn kind(&self) -> PatternKind {
        self.kind
    }

    /// What the rule grants (after merging every block with this pattern).
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// Whether the path holds an identity template (`{{identity...}}`).
    pub fn is_templated(&self) -> bool {
        self.templated
    }

    /// `allowed_parameters`, names lowercased; empty when there are none.
    pub fn allowed_parameters(&self) -> impl Iterator<Item = (&str, &[Value])> {
        self.params
            .iter()
            .flat_map(|p| p.allowed.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    /// `denied_parameters`, names lowercased; empty when there are none.
    pub fn denied_parameters(&self) -> impl Iterator<Item = (&str, &[Value])> {
        self.params
            .iter()
            .flat_map(|p| p.denied.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
    }

    /// `required_parameters`, lowercased.
    pub fn required_parameters(&self) -> &[String] {
        self.params
            .as_deref()
            .map_or(&[], |p| p.required.as_slice())
    }
}

/// A parsed, validated policy document.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    name: String,
    raw: String,
    rules: Vec<PathRule>,
}

impl Policy {
    /// Parses a policy named `name` (normalised by [`normalize_policy_name`],
    /// so `root` is refused) from HCL or JSON text. JSON is recognised the
    /// way Vault recognises it: the first non-blank character is `{`.
    pub fn parse(name: &str, text: &str) -> Result<Policy, PolicyError> {
        let name = normalize_policy_name(name)?;
        let trimmed = text.trim_start();
        if trimmed.is_empty() {
            return Err(PolicyError::Empty { policy: name });
        }
        let entries = if trimmed.starts_with('{') {
            parse_json(&name, text)?
        } else {
            parse_hcl(&name, text)?
        };
        let rules = compile_document(&name, entries)?;
        Ok(Policy {
            name,
            raw: text.to_owned(),
            rules,
        })
    }

    /// The built-in `default` policy ([`DEFAULT_POLICY_HCL`]).
    pub fn default_policy() -> Policy {
        Policy::parse(DEFAULT_POLICY_NAME, DEFAULT_POLICY_HCL)
            .expect("the built-in default policy parses")
    }

    /// The normalised (lowercase) name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text exactly as given to [`Policy::parse`], for `policy read`.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The path blocks, in document order.
    pub fn rules(&self) -> &[PathRule] {
        &self.rules
    }

    /// Whether any path holds an identity template.
    pub fn is_templated(&self) -> bool {
        self.rules.iter().any(|r| r.templated)
    }
}

// ---------------------------------------------------------------------------
// Front ends: HCL and JSON into one tree
// ---------------------------------------------------------------------------

/// The common shape of an HCL or JSON policy document. Objects keep their
/// keys in order *with duplicates*, because Vault merges two `path "x"`
/// blocks (or two `"x"` keys in JSON) into one rule rather than dropping one.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    List(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "a string",
            Node::List(_) => "a list",
            Node::Object(_) => "an object",
        }
    }

    fn into_json(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(b),
            Node::Number(n) => Value::Number(n),
            Node::String(s) => Value::String(s),
            Node::List(items) => Value::Array(items.into_iter().map(Node::into_json).collect()),
            Node::Object(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, v.into_json()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;

        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                serde_json::Number::from_f64(v)
                    .map(Node::Number)
                    .ok_or_else(|| E::custom("number out of range"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                Ok(Node::String(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
                Ok(Node::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Node>()? {
                    entries.push((k, v));
                }
                Ok(Node::Object(entries))
            }
        }

        deserializer.deserialize_any(NodeVisitor)
    }
}

fn parse_json(policy: &str, text: &str) -> Result<Vec<(String, Node)>, PolicyError> {
    let node: Node = serde_json::from_str(text).map_err(|e| {
        // serde_json appends " at line L column C" to its message; the
        // location goes in its own field instead.
        let message = e.to_string();
        let message = match message.rfind(" at line ") {
            Some(i) => message[..i].to_owned(),
            None => message,
        };
        PolicyError::Syntax {
            policy: policy.to_owned(),
            format: "JSON",
            location: format!("line {}, column {}", e.line(), e.column()),
            message,
        }
    })?;
    match node {
        Node::Object(entries) => Ok(entries),
        other => Err(PolicyError::InvalidValue {
            policy: policy.to_owned(),
            location: "top level".to_owned(),
            message: format!("a JSON policy must be an object, not {}", other.kind()),
        }),
    }
}

fn parse_hcl(policy: &str, text: &str) -> Result<Vec<(String, Node)>, PolicyError> {
    let body = hcl::parse(text).map_err(|e| match e {
        hcl::Error::Parse(pe) => PolicyError::Syntax {
            policy: policy.to_owned(),
            format: "HCL",
            location: format!(
                "line {}, column {}",
                pe.location().line(),
                pe.location().column()
            ),
            message: {
                let mut message = pe.message().to_owned();
                // The one HCL1 habit HCL2 refuses: Vault policies sometimes
                // put two attributes on one line inside `{ }`.
                if message.contains("newline") {
                    message.push_str(" (each attribute of a block goes on its own line)");
                }
                message
            },
        },
        other => PolicyError::Syntax {
            policy: policy.to_owned(),
            format: "HCL",
            location: "unknown position".to_owned(),
            message: other.to_string(),
        },
    })?;

    let mut entries = Vec::new();
    for structure in body.into_inner() {
        match structure {
            hcl::Structure::Attribute(attr) => {
                let key = attr.key.into_inner();
                let node =
                    hcl_expr_to_node(attr.expr).map_err(|message| PolicyError::InvalidValue {
                        policy: policy.to_owned(),
                        location: format!("key {key:?}"),
                        message,
                    })?;
                entries.push((key, node));
            }
            hcl::Structure::Block(block) => {
                let ident = block.identifier.into_inner();
                if ident != "path" {
                    return Err(PolicyError::UnknownTopLevelKey {
                        policy: policy.to_owned(),
                        key: ident,
                    });
                }
                if block.labels.len() != 1 {
                    return Err(PolicyError::PathBlockLabels {
                        policy: policy.to_owned(),
                        labels: block.labels.len(),
                    });
                }
                let path = block
                    .labels
                    .into_iter()
                    .next()
                    .expect("one label")
                    .into_inner();
                let body = hcl_body_to_node(block.body).map_err(|(key, message)| {
                    PolicyError::InvalidValue {
                        policy: policy.to_owned(),
                        location: format!("path {path:?}, key {key:?}"),
                        message,
                    }
                })?;
                entries.push((ident, Node::Object(vec![(path, body)])));
            }
        }
    }
    Ok(entries)
}

/// A path block's body. Nested blocks (`control_group { ... }`) become
/// objects so that the key check can name them.
fn hcl_body_to_node(body: hcl::Body) -> Result<Node, (String, String)> {
    let mut entries = Vec::new();
    for structure in body.into_inner() {
        match structure {
            hcl::Structure::Attribute(attr) => {
                let key = attr.key.into_inner();
                match hcl_expr_to_node(attr.expr) {
                    Ok(node) => entries.push((key, node)),
                    Err(message) => return Err((key, message)),
                }
            }
            hcl::Structure::Block(block) => {
                let key = block.identifier.into_inner();
                let inner = hcl_body_to_node(block.body)?;
                entries.push((key, inner));
            }
        }
    }
    Ok(Node::Object(entries))
}

/// Literal values only: a policy is data, so variables, function calls,
/// operators and `${...}` interpolation are refused.
fn hcl_expr_to_node(expr: hcl::Expression) -> Result<Node, String> {
    use hcl::Expression as E;
    Ok(match expr {
        E::Null => Node::Null,
        E::Bool(b) => Node::Bool(b),
        E::Number(n) => Node::Number(hcl_number(&n)?),
        E::String(s) => Node::String(s),
        E::Array(items) => Node::List(
            items
                .into_iter()
                .map(hcl_expr_to_node)
                .collect::<Result<_, _>>()?,
        ),
        E::Object(object) => {
            let mut entries = Vec::with_capacity(object.len());
            for (key, value) in object {
                let key = match key {
                    hcl::ObjectKey::Identifier(ident) => ident.into_inner(),
                    hcl::ObjectKey::Expression(E::String(s)) => s,
                    other => {
                        return Err(format!(
                            "object keys must be literal strings, not `{other}`"
                        ));
                    }
                };
                entries.push((key, hcl_expr_to_node(value)?));
            }
            Node::Object(entries)
        }
        E::Parenthesis(inner) => hcl_expr_to_node(*inner)?,
        E::TemplateExpr(t) => {
            return Err(format!(
                "string interpolation is not allowed in a policy (`{t}`; write `$${{` for a literal `${{`)"
            ));
        }
        E::Variable(v) => {
            return Err(format!(
                "expected a quoted string, found the bare word `{}`",
                v.as_str()
            ));
        }
        other => {
            return Err(format!(
                "expressions are not allowed in a policy, only literal values (found `{other}`)"
            ));
        }
    })
}

fn hcl_number(n: &hcl::Number) -> Result<serde_json::Number, String> {
    if let Some(u) = n.as_u64() {
        Ok(u.into())
    } else if let Some(i) = n.as_i64() {
        Ok(i.into())
    } else {
        n.as_f64()
            .and_then(serde_json::Number::from_f64)
            .ok_or_else(|| format!("number {n} is out of range"))
    }
}

// ---------------------------------------------------------------------------
// Document -> rules
// ---------------------------------------------------------------------------

/// Keys Vault or OpenBao accept in a path block that Zafe does not implement,
/// with the reason given in the error.
const UNSUPPORTED_PATH_KEYS: &[(&str, &str)] = &[
    ("min_wrapping_ttl", "Zafe has no response wrapping"),
    ("max_wrapping_ttl", "Zafe has no response wrapping"),
    ("mfa_methods", "Zafe has no login MFA enforcement by policy"),
    (
        "control_group",
        "control groups are a Vault Enterprise feature",
    ),
    (
        "pagination_limit",
        "Zafe clamps pagination on every list endpoint instead (R-ACL-3)",
    ),
    (
        "list_scan_response_keys_filter_path",
        "Zafe does not filter list responses by policy",
    ),
    (
        "expiration",
        "Zafe does not expire policy paths; expire the token instead",
    ),
    ("subscribe_event_types", "Zafe has no event subscriptions"),
];

fn compile_document(
    policy: &str,
    entries: Vec<(String, Node)>,
) -> Result<Vec<PathRule>, PolicyError> {
    let mut rules = Vec::new();
    for (key, node) in entries {
        match key.as_str() {
            // Vault accepts and ignores a top-level name (the URL names the
            // policy); so does Zafe, as long as it is a string.
            "name" => {
                if !matches!(node, Node::String(_)) {
                    return Err(PolicyError::InvalidValue {
                        policy: policy.to_owned(),
                        location: "key \"name\"".to_owned(),
                        message: format!("expected a string, found {}", node.kind()),
                    });
                }
            }
            "path" => compile_paths(policy, node, &mut rules)?,
            _ => {
                return Err(PolicyError::UnknownTopLevelKey {
                    policy: policy.to_owned(),
                    key,
                });
            }
        }
    }
    Ok(rules)
}

/// `"path": {"a": {...}, "b": {...}}` or, as Vault's JSON reader also takes
/// it, `"path": [{"a": {...}}, {"b": {...}}]`.
fn compile_paths(policy: &str, node: Node, rules: &mut Vec<PathRule>) -> Result<(), PolicyError> {
    match node {
        Node::Object(paths) => {
            for (path, body) in paths {
                rules.push(compile_rule(policy, path, body)?);
            }
            Ok(())
        }
        Node::List(items) => {
            for item in items {
                match item {
                    Node::Object(_) => compile_paths(policy, item, rules)?,
                    other => return Err(path_shape_error(policy, &other)),
                }
            }
            Ok(())
        }
        other => Err(path_shape_error(policy, &other)),
    }
}

fn path_shape_error(policy: &str, found: &Node) -> PolicyError {
    PolicyError::InvalidValue {
        policy: policy.to_owned(),
        location: "key \"path\"".to_owned(),
        message: format!(
            "expected an object of path blocks (`{{\"secret/*\": {{\"capabilities\": [...]}}}}`), found {}",
            found.kind()
        ),
    }
}

fn compile_rule(policy: &str, raw_path: String, body: Node) -> Result<PathRule, PolicyError> {
    let invalid = |key: &str, message: String| PolicyError::InvalidValue {
        policy: policy.to_owned(),
        location: format!("path {raw_path:?}, key {key:?}"),
        message,
    };

    let Node::Object(entries) = body else {
        return Err(PolicyError::InvalidValue {
            policy: policy.to_owned(),
            location: format!("path {raw_path:?}"),
            message: format!("a path block must be an object, found {}", body.kind()),
        });
    };

    let mut seen: Vec<&str> = Vec::with_capacity(entries.len());
    for (key, _) in &entries {
        if seen.contains(&key.as_str()) {
            return Err(PolicyError::DuplicateKey {
                policy: policy.to_owned(),
                path: raw_path.clone(),
                key: key.clone(),
            });
        }
        seen.push(key);
    }

    let mut capabilities = Capabilities::EMPTY;
    let mut params = ParamRules::default();
    for (key, value) in entries {
        match key.as_str() {
            "capabilities" => {
                for name in string_list(value).map_err(|m| invalid(&key, m))? {
                    let cap: Capability =
                        name.parse().map_err(|_| PolicyError::UnknownCapability {
                            policy: policy.to_owned(),
                            path: raw_path.clone(),
                            capability: name,
                        })?;
                    capabilities = capabilities.with(cap);
                }
            }
            // Vault's pre-0.5 spelling, still accepted by Vault and OpenBao.
            "policy" => {
                let Node::String(old) = value else {
                    return Err(invalid(
                        &key,
                        format!("expected a string, found {}", value.kind()),
                    ));
                };
                use Capability::*;
                let granted: &[Capability] = match old.as_str() {
                    "deny" => &[Deny],
                    "read" => &[Read, List],
                    "write" => &[Create, Read, Update, Delete, List],
                    "sudo" => &[Create, Read, Update, Delete, List, Sudo],
                    _ => {
                        return Err(invalid(
                            &key,
                            format!("invalid policy {old:?} (expected deny, read, write or sudo)"),
                        ));
                    }
                };
                capabilities = capabilities.union(granted.iter().copied().collect());
            }
            "comment" => {
                if !matches!(value, Node::String(_)) {
                    return Err(invalid(
                        &key,
                        format!("expected a string, found {}", value.kind()),
                    ));
                }
            }
            "allowed_parameters" => {
                params.allowed = parameter_map(value).map_err(|m| invalid(&key, m))?;
            }
            "denied_parameters" => {
                params.denied = parameter_map(value).map_err(|m| invalid(&key, m))?;
            }
            "required_parameters" => {
                params.required = string_list(value)
                    .map_err(|m| invalid(&key, m))?
                    .into_iter()
                    .map(|p| p.to_lowercase())
                    .collect();
            }
            _ => {
                if let Some((_, reason)) = UNSUPPORTED_PATH_KEYS.iter().find(|(k, _)| *k == key) {
                    return Err(PolicyError::UnsupportedKey {
                        policy: policy.to_owned(),
                        path: raw_path,
                        key,
                        reason,
                    });
                }
                return Err(PolicyError::UnknownKey {
                    policy: policy.to_owned(),
                    path: raw_path,
                    key,
                });
            }
        }
    }

    let templated = check_template(&raw_path).map_err(|()| PolicyError::UnbalancedTemplate {
        policy: policy.to_owned(),
        path: raw_path.clone(),
    })?;

    // Paths in Vault start after the `/` of the API path; one leading slash
    // is forgiven.
    let path = raw_path.strip_prefix('/').unwrap_or(&raw_path).to_owned();
    if path.contains("+*") {
        return Err(PolicyError::InvalidWildcard {
            policy: policy.to_owned(),
            path,
        });
    }
    // Vault's exact test: a `+` counts as a segment wildcard only when it
    // starts a segment. (`a/+b` is still a segment rule, in which `+b` is a
    // literal segment; `a+b` is a literal path.)
    let kind = if path == "+" || path.contains("/+") || path.starts_with("+/") {
        PatternKind::Segment
    } else if path.ends_with('*') {
        PatternKind::Prefix
    } else {
        PatternKind::Exact
    };

    // `deny` takes everything else away, parameter rules included.
    if capabilities.is_explicit_deny() {
        params = ParamRules::default();
    }
    Ok(PathRule {
        path,
        kind,
        capabilities,
        params: (!params.is_empty()).then(|| Box::new(params)),
        templated,
    })
}

fn string_list(node: Node) -> Result<Vec<String>, String> {
    let Node::List(items) = node else {
        return Err(format!("expected a list of strings, found {}", node.kind()));
    };
    items
        .into_iter()
        .map(|item| match item {
            Node::String(s) => Ok(s),
            other => Err(format!(
                "expected a list of strings, found {} in it",
                other.kind()
            )),
        })
        .collect()
}

/// `{ "name" = [values...] }`; names are lowercased as in Vault.
fn parameter_map(node: Node) -> Result<HashMap<String, Vec<Value>>, String> {
    let Node::Object(entries) = node else {
        return Err(format!(
            "expected an object of parameter names to lists of values, found {}",
            node.kind()
        ));
    };
    let mut map = HashMap::with_capacity(entries.len());
    for (name, values) in entries {
        let Node::List(values) = values else {
            return Err(format!(
                "parameter {name:?}: expected a list of values (`[]` for any value), found {}",
                values.kind()
            ));
        };
        let lower = name.to_lowercase();
        let values = values.into_iter().map(Node::into_json).collect();
        if map.insert(lower, values).is_some() {
            return Err(format!("parameter {name:?} is given more than once"));
        }
    }
    Ok(map)
}

/// Vault's validity check for ACL templates (`identitytpl`, validity mode):
/// every `{{` is closed by exactly one `}}` before the next `{{`, and no `}}`
/// comes first. Returns whether the string holds a template.
fn check_template(path: &str) -> Result<bool, ()> {
    if !path.contains("{{") && !path.contains("}}") {
        return Ok(false);
    }
    let mut pieces = path.split("{{");
    let head = pieces.next().unwrap_or("");
    if head.contains("}}") {
        return Err(());
    }
    let mut any = false;
    for piece in pieces {
        if piece.matches("}}").count() != 1 {
            return Err(());
        }
        any = true;
    }
    if any { Ok(true) } else { Err(()) }
}

// ---------------------------------------------------------------------------
// The compiled ACL
// ---------------------------------------------------------------------------

/// What one (merged) pattern grants.
#[derive(Clone, Debug)]
struct Perms {
    caps: Capabilities,
    params: Option<Box<ParamRules>>,
    /// Which policy granted which capabilities, for audit entries.
    granting: Vec<(Arc<str>, Capabilities)>,
}

impl Perms {
    fn new(rule: &PathRule, policy: &Arc<str>) -> Perms {
        Perms {
            caps: rule.capabilities,
            params: rule.params.clone(),
            granting: vec![(policy.clone(), rule.capabilities)],
        }
    }

    /// Vault's merge of a second rule with the same pattern (`NewACL`).
    fn merge(&mut self, rule: &PathRule, policy: &Arc<str>) {
        if self.caps.is_explicit_deny() {
            return;
        }
        if rule.capabilities.is_explicit_deny() {
            self.caps = Capabilities::DENY;
            self.params = None;
            return;
        }
        self.caps = self.caps.union(rule.capabilities);
        self.granting.push((policy.clone(), rule.capabilities));

        let Some(new) = rule.params.as_deref() else {
            return;
        };
        let existing = self.params.get_or_insert_with(Default::default);
        merge_param_map(&mut existing.allowed, &new.allowed);
        merge_param_map(&mut existing.denied, &new.denied);
        for name in &new.required {
            if !existing.required.contains(name) {
                existing.required.push(name.clone());
            }
        }
    }
}

/// An empty value list (any value) on either side wins; otherwise the value
/// lists are concatenated.
fn merge_param_map(existing: &mut HashMap<String, Vec<Value>>, new: &HashMap<String, Vec<Value>>) {
    for (name, values) in new {
        match existing.get_mut(name) {
            Some(current) if current.is_empty() => {}
            Some(_) if values.is_empty() => {
                existing.insert(name.clone(), Vec::new());
            }
            Some(current) => {
                let mut merged = values.clone();
                merged.append(current);
                *current = merged;
            }
            None => {
                existing.insert(name.clone(), values.clone());
            }
        }
    }
}

/// FNV-1a, for the ACL's maps. A request path only ever *probes* these maps;
/// their keys come from policies, so a request cannot pile colliding keys
/// into them, and a fast hash is safe here (SipHash was most of a lookup).
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// A compiled `+` pattern with the figures Vault ranks candidates by.
#[derive(Clone, Debug)]
struct SegmentRule {
    is_prefix: bool,
    /// Byte index of the first `+` in the pattern.
    first_wildcard: usize,
    wildcards: usize,
    /// The pattern without its trailing `*`.
    pattern: Box<str>,
    perms: Perms,
}

/// A trie of `+` patterns, one level per path segment, so that matching a
/// path costs one hash lookup per segment (plus a walk into `+` branches)
/// however many patterns there are.
#[derive(Clone, Debug, Default)]
struct SegmentNode {
    literal: FastMap<Box<str>, SegmentNode>,
    any: Option<Box<SegmentNode>>,
    /// Patterns (indexes into `Acl::segment_rules`) without a trailing `*`
    /// that end here: they match a path with exactly this many segments.
    ends: Vec<usize>,
    /// Patterns ending in `*`, whose last segment (a literal prefix, possibly
    /// empty) is the next one: they match when the next path segment starts
    /// with it, whatever follows.
    prefix_ends: Vec<(Box<str>, usize)>,
}

impl SegmentNode {
    fn insert(&mut self, pattern: &str, is_prefix: bool, index: usize) {
        let mut segs: Vec<&str> = pattern.split('/').collect();
        let last = if is_prefix { segs.pop() } else { None };
        let mut node = self;
        for seg in segs {
            node = if seg == "+" {
                node.any.get_or_insert_with(Default::default)
            } else {
                node.literal.entry(seg.into()).or_default()
            };
        }
        match last {
            Some(prefix) => node.prefix_ends.push((prefix.into(), index)),
            None => node.ends.push(index),
        }
    }

    /// Calls `found` with every pattern matching the rest of the path.
    /// Recursion depth is bounded by the deepest pattern, not by the path.
    fn walk(&self, mut rest: std::str::Split<'_, char>, found: &mut impl FnMut(usize)) {
        let Some(part) = rest.next() else {
            self.ends.iter().for_each(|&i| found(i));
            return;
        };
        for (prefix, i) in &self.prefix_ends {
            if part.starts_with(&**prefix) {
                found(*i);
            }
        }
        if let Some(child) = self.literal.get(part) {
            child.walk(rest.clone(), found);
        }
        if let Some(child) = &self.any {
            child.walk(rest, found);
        }
    }
}

/// A non-exact candidate for a path, with Vault's ranking figures.
#[derive(Clone, Copy)]
struct Candidate<'a> {
    first_wildcard: usize,
    is_prefix: bool,
    wildcards: usize,
    pattern: &'a str,
    perms: &'a Perms,
}

impl Candidate<'_> {
    /// Vault's priority order (`CheckAllowedFromNonExactPaths`): whether
    /// `self` is more specific than `other`.
    fn outranks(&self, other: &Candidate<'_>) -> bool {
        use std::cmp::Ordering::*;
        let order = self
            .first_wildcard
            .cmp(&other.first_wildcard) // 1. later first wildcard
            .then((!self.is_prefix).cmp(&!other.is_prefix)) // 2. not ending in *
            .then(other.wildcards.cmp(&self.wildcards)) // 3. fewer + segments
            .then(self.pattern.len().cmp(&other.pattern.len())) // 4. longer
            .then(self.pattern.cmp(other.pattern)); // 5. lexicographically greater
        order == Greater
    }
}

/// Which request the lookup is for: lists (and scans) also try the path
/// without its trailing `/`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    Other,
    List,
    Scan,
}

impl Lookup {
    fn for_capability(cap: Capability) -> Lookup {
        match cap {
            Capability::List => Lookup::List,
            Capability::Scan => Lookup::Scan,
            _ => Lookup::Other,
        }
    }
}

/// The compiled union of a token's policies. Build it once per token (or per
/// policy change) with [`Acl::new`]; checks take `&self`, allocate nothing and
/// the ACL can be shared across threads.
#[derive(Clone, Debug, Default)]
pub struct Acl {
    root: bool,
    exact: FastMap<Box<str>, Perms>,
    /// Keyed by the prefix (pattern less its `*`).
    prefix: FastMap<Box<str>, Perms>,
    /// The distinct prefix lengths, longest first, so the longest matching
    /// prefix is found with one hash lookup per length.
    prefix_lens: Vec<usize>,
    segment_rules: Vec<SegmentRule>,
    segment_trie: SegmentNode,
}

impl Acl {
    /// Compiles the union of `policies`. Rules with the same pattern are
    /// merged (capabilities unioned, `deny` wins, parameter rules merged as
    /// Vault merges them); templated paths are left out (see module docs).
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Policy>) -> Acl {
        let mut exact: FastMap<Box<str>, Perms> = FastMap::default();
        let mut prefix: FastMap<Box<str>, Perms> = FastMap::default();
        // `+` patterns, merged by pattern string, in order of first appearance.
        let mut segment: Vec<(Box<str>, Perms)> = Vec::new();
        let mut segment_index: FastMap<Box<str>, usize> = FastMap::default();

        for policy in policies {
            let name: Arc<str> = Arc::from(policy.name.as_str());
            for rule in &policy.rules {
                if rule.templated {
                    continue;
                }
                let existing = match rule.kind {
                    PatternKind::Exact => exact.get_mut(rule.path.as_str()),
                    PatternKind::Prefix => prefix.get_mut(&rule.path[..rule.path.len() - 1]),
                    PatternKind::Segment => segment_index
                        .get(rule.path.as_str())
                        .map(|&i| &mut segment[i].1),
                };
                if let Some(perms) = existing {
                    perms.merge(rule, &name);
                    continue;
                }
                let perms = Perms::new(rule, &name);
                match rule.kind {
                    PatternKind::Exact => {
                        exact.insert(rule.path.as_str().into(), perms);
                    }
                    PatternKind::Prefix => {
                        prefix.insert(rule.path[..rule.path.len() - 1].into(), perms);
                    }
                    PatternKind::Segment => {
                        segment_index.insert(rule.path.as_str().into(), segment.len());
                        segment.push((rule.path.as_str().into(), perms));
                    }
                }
            }
        }

        let mut prefix_lens: Vec<usize> = prefix.keys().map(|k| k.len()).collect();
        prefix_lens.sort_unstable_by(|a, b| b.cmp(a));
        prefix_lens.dedup();

        let mut segment_rules = Vec::with_capacity(segment.len());
        let mut segment_trie = SegmentNode::default();
        for (full, perms) in segment {
            let is_prefix = full.ends_with('*');
            let pattern = if is_prefix {
                &full[..full.len() - 1]
            } else {
                &full[..]
            };
            segment_trie.insert(pattern, is_prefix, segment_rules.len());
            segment_rules.push(SegmentRule {
                is_prefix,
                first_wildcard: full.find('+').unwrap_or(full.len()),
                wildcards: pattern.split('/').filter(|s| *s == "+").count(),
                pattern: pattern.into(),
                perms,
            });
        }

        Acl {
            root: false,
            exact,
            prefix,
            prefix_lens,
            segment_rules,
            segment_trie,
        }
    }

    /// The root ACL: every capability, `sudo` included, on every path.
    pub fn root() -> Acl {
        Acl {
            root: true,
            ..Acl::default()
        }
    }

    /// Whether this is [`Acl::root`] (which also allows `sudo` paths).
    pub fn is_root(&self) -> bool {
        self.root
    }

    /// What this ACL grants on `path`, as Vault's `sys/capabilities-self`
    /// computes it (evaluated as a list request, so a trailing `/` is also
    /// tried without). Use [`Capabilities::names`] for the API output.
    pub fn capabilities(&self, path: &str) -> Capabilities {
        if self.root {
            return Capabilities::ROOT;
        }
        self.lookup(path, Lookup::List)
            .map_or(Capabilities::EMPTY, |p| p.caps)
    }

    /// Whether a request needing `cap` on `path` is allowed, parameters
    /// aside. `Deny` is never "allowed". A root-protected path needs both the
    /// operation's capability and [`Capability::Sudo`].
    ///
    /// As in Vault, a list request's path must end in `/` (Vault's HTTP layer
    /// appends one to every LIST before the ACL sees it).
    pub fn allows(&self, path: &str, cap: Capability) -> bool {
        if cap == Capability::Deny {
            return false;
        }
        if self.root {
            return true;
        }
        self.lookup(path, Lookup::for_capability(cap))
            .is_some_and(|p| p.caps.contains(cap))
    }

    /// The full check of a request: the capability, then (for read, create,
    /// update and patch, as in Vault) the rule's `required_parameters`,
    /// `denied_parameters` and `allowed_parameters` against the request's
    /// parameters.
    pub fn check(
        &self,
        path: &str,
        cap: Capability,
        params: &Map<String, Value>,
    ) -> Result<(), AclDenied> {
        let missing = AclDenied::MissingCapability { capability: cap };
        if cap == Capability::Deny {
            return Err(missing);
        }
        if self.root {
            return Ok(());
        }
        let Some(perms) = self
            .lookup(path, Lookup::for_capability(cap))
            .filter(|p| p.caps.contains(cap))
        else {
            return Err(missing);
        };
        match (cap, perms.params.as_deref()) {
            (
                Capability::Read | Capability::Create | Capability::Update | Capability::Patch,
                Some(rules),
            ) => check_params(rules, params),
            _ => Ok(()),
        }
    }

    /// The names of the policies that grant `cap` on `path` (for audit
    /// entries); empty when it is not granted. Root gives `["root"]`.
    pub fn granting_policies(&self, path: &str, cap: Capability) -> Vec<&str> {
        if self.root {
            return if cap == Capability::Deny {
                Vec::new()
            } else {
                vec![ROOT_POLICY_NAME]
            };
        }
        match self.lookup(path, Lookup::for_capability(cap)) {
            Some(perms) if perms.caps.contains(cap) && cap != Capability::Deny => {
                let mut names: Vec<&str> = perms
                    .granting
                    .iter()
                    .filter(|(_, caps)| caps.contains(cap))
                    .map(|(name, _)| &**name)
                    .collect();
                names.dedup();
                names
            }
            _ => Vec::new(),
        }
    }

    /// Vault's `AllowOperation` rule lookup.
    fn lookup(&self, path: &str, op: Lookup) -> Option<&Perms> {
        let path = path.trim_start_matches('/');
        if let Some(perms) = self.exact.get(path) {
            return Some(perms);
        }
        let trimmed = path.strip_suffix('/');
        if op != Lookup::Other
            && let Some(perms) = trimmed.and_then(|t| self.exact.get(t))
        {
            return Some(perms);
        }
        if let Some(perms) = self.non_exact(path) {
            return Some(perms);
        }
        // Only when no rule matches the path as sent do lists fall back to
        // the wildcard rules without the trailing slash. HashiCorp Vault
        // tries the trimmed path first, which lets `foo/*` (list) override
        // `foo/private/*` (deny) for `LIST foo/private/`; OpenBao fixed that
        // (GHSA-xp3c-3jw3-4vcr) and 2.7.2 behaves as here.
        if op == Lookup::List {
            return trimmed.and_then(|t| self.non_exact(t));
        }
        None
    }

    /// The most specific prefix or `+` rule matching `path`, if any.
    fn non_exact(&self, path: &str) -> Option<&Perms> {
        let mut best: Option<Candidate<'_>> = None;

        // Only the longest matching prefix can be a candidate: among prefix
        // rules it ranks first on rule 1.
        for &len in &self.prefix_lens {
            if len > path.len() || !path.is_char_boundary(len) {
                continue;
            }
            if let Some((prefix, perms)) = self.prefix.get_key_value(&path[..len]) {
                best = Some(Candidate {
                    first_wildcard: len,
                    is_prefix: true,
                    wildcards: 0,
                    pattern: prefix,
                    perms,
                });
                break;
            }
        }

        if !self.segment_rules.is_empty() {
            self.segment_trie.walk(path.split('/'), &mut |i| {
                let rule = &self.segment_rules[i];
                let candidate = Candidate {
                    first_wildcard: rule.first_wildcard,
                    is_prefix: rule.is_prefix,
                    wildcards: rule.wildcards,
                    pattern: &rule.pattern,
                    perms: &rule.perms,
                };
                if best.is_none_or(|b| candidate.outranks(&b)) {
                    best = Some(candidate);
                }
            });
        }
        best.map(|c| c.perms)
    }
}

/// Lowercases a request parameter name only when it needs it.
fn lower(name: &str) -> Cow<'_, str> {
    let changes = |c: char| {
        let mut lowered = c.to_lowercase();
        lowered.next() != Some(c) || lowered.next().is_some()
    };
    if name.chars().any(changes) {
        Cow::Owned(name.to_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Vault's parameter checks (`AllowOperation`), in its order.
fn check_params(rules: &ParamRules, params: &Map<String, Value>) -> Result<(), AclDenied> {
    // Vault looks the lowercased required name up in the request as sent:
    // a request must send required parameters in lowercase.
    for name in &rules.required {
        if !params.contains_key(name) {
            return Err(AclDenied::MissingRequiredParameter { name: name.clone() });
        }
    }
    if params.is_empty() {
        return Ok(());
    }

    if !rules.denied.is_empty() {
        if rules.denied.contains_key("*") {
            return Err(AclDenied::DeniedParameter {
                name: "*".to_owned(),
            });
        }
        for (name, value) in params {
            if let Some(denied) = rules.denied.get(&*lower(name))
                && value_in_list(value, denied)
            {
                return Err(AclDenied::DeniedParameter { name: name.clone() });
            }
        }
    }

    if rules.allowed.is_empty() {
        return Ok(());
    }
    let allow_any_name = rules.allowed.contains_key("*");
    if allow_any_name && rules.allowed.len() == 1 {
        return Ok(());
    }
    for (name, value) in params {
        match rules.allowed.get(&*lower(name)) {
            None if !allow_any_name => {
                return Err(AclDenied::ParameterNotAllowed { name: name.clone() });
            }
            Some(allowed) if !value_in_list(value, allowed) => {
                return Err(AclDenied::ValueNotAllowed { name: name.clone() });
            }
            _ => {}
        }
    }
    Ok(())
}

/// An empty list allows any value; strings match with Vault's globs; other
/// values by equality (numbers by numeric value).
fn value_in_list(value: &Value, list: &[Value]) -> bool {
    list.is_empty()
        || list.iter().any(|item| match (item, value) {
            (Value::String(pattern), Value::String(v)) => glob_match(pattern, v),
            (a, b) => json_eq(a, b),
        })
}

/// Vault's `GlobbedStringsMatch`: `*x` is a suffix, `x*` a prefix, `*x*` a
/// substring; a pattern shorter than two characters (`*` itself) is literal.
fn glob_match(pattern: &str, value: &str) -> bool {
    if pattern.len() < 2 {
        return pattern == value;
    }
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(_), Some(_)) => value.contains(&pattern[1..pattern.len() - 1]),
        (Some(suffix), None) => value.ends_with(suffix),
        (None, Some(prefix)) => value.starts_with(prefix),
        (None, None) => pattern == value,
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_match_follows_vault() {
        for (pattern, value, expected) in [
            ("bar", "bar", true),
            ("bar", "barn", false),
            ("baz*", "bazooka", true),
            ("baz*", "xbaz", false),
            ("*suf", "asuf", true),
            ("*suf", "sufa", false),
            ("*mid*", "xmidx", true),
            ("*mid*", "mxd", false),
            ("*", "*", true),
            ("*", "anything", false),
            ("**", "", true),
        ] {
            assert_eq!(glob_match(pattern, value), expected, "{pattern} vs {value}");
        }
    }

    #[test]
    fn template_balance() {
        assert_eq!(check_template("a/b"), Ok(false));
        assert_eq!(check_template("a/{{identity.entity.id}}"), Ok(true));
        assert_eq!(check_template("a/{{x}}/{{y}}"), Ok(true));
        assert_eq!(check_template("a/{{identity.entity.id"), Err(()));
        assert_eq!(check_template("a/}}x{{"), Err(()));
        assert_eq!(check_template("a/{{x}}}}"), Err(()));
        assert_eq!(check_template("a/}}"), Err(()));
    }

    #[test]
    fn lower_only_allocates_when_needed() {
        assert!(matches!(lower("foo_bar-1"), Cow::Borrowed(_)));
        assert_eq!(lower("FoO"), "foo");
        assert_eq!(lower("ÜBER"), "über");
    }

    #[test]
    fn acl_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Acl>();
        assert_send_sync::<Policy>();
    }

    #[test]
    fn capability_bits_are_distinct() {
        let mut seen = 0u16;
        for cap in Capability::ALL {
            assert_eq!(seen & cap.bit(), 0);
            seen |= cap.bit();
        }
        assert_eq!(seen & ROOT_BIT, 0);
    }
}
