//! Service accounts (R-AUTH-12): Zafe's simple machine identity for CI.
//!
//! A service account has scopes, an optional CIDR allowlist and an optional
//! expiry; it holds one or more `zafe_sa_...` tokens, stored only as HMACs.
//! It can only read and list, whatever its scopes say: its requests are
//! authorised by the one policy engine against a policy generated from its
//! scopes with `read` and `list` only, and the core refuses every other
//! capability for it on top (lessons.md: "read-only" service accounts that
//! could write through a second API).
//!
//! Scopes (resolved against the project registry at every request, by
//! `projects::service_account_acl`):
//! - `project:<slug>`: a project's secrets, `<mount>/data/<slug>/*` (read)
//!   and `<mount>/metadata/<slug>/*` (list and read) on the project's mount
//!   (`secret` while no such project is registered), and the project's
//!   record and environments (`sys/projects/<slug>`, read);
//! - `project-id:<uuid>`: the same for the project with that id, whatever
//!   its slug (nothing while there is none);
//! - `tag:<tag>`: the same for every project that has the tag now;
//! - a path glob in Vault's policy syntax, `secret/data/ci/*` or
//!   `secret/+/team/*` (read and list).
//!
//! Records behind the barrier:
//!
//! ```text
//! sys/service-account/account/<name>     the account
//! sys/service-account/token/<hash>       token → account, accessor, expiry, last use
//! ```

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zafe_core::policy::{Acl, Policy};
use zafe_core::secret::SecretKey;
use zafe_core::token::{self, TokenKind};

use crate::barrier::{Barrier, Expect, Write};
use crate::error::{Error, Result};

const ACCOUNT_PREFIX: &str = "sys/service-account/account/";
const TOKEN_PREFIX: &str = "sys/service-account/token/";
/// Last-use times are written at most this often per token, so that a busy
/// CI job does not turn every read into a write.
const LAST_USED_RESOLUTION_SECS: i64 = 60;
const MAX_SCOPES: usize = 64;

/// A service account, stored behind the barrier at
/// `sys/service-account/account/<name>`. It holds no token, only the
/// accessors of its tokens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceAccount {
    /// Its name: 1 to 64 lowercase letters, digits, `-` and `_`.
    pub(crate) name: String,
    /// Free text for people.
    #[serde(default)]
    pub(crate) description: String,
    /// What it may read, as given (1 to 64 of them); parsed with
    /// [`Scope::parse`] and resolved against the project registry at
    /// every request.
    pub(crate) scopes: Vec<String>,
    /// The client networks its tokens may be used from; empty is anywhere.
    #[serde(default)]
    pub(crate) allowed_cidrs: Vec<IpNet>,
    /// Unix seconds; the account and all its tokens stop working then.
    pub(crate) expires_at: Option<i64>,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// Accessors of its live tokens.
    #[serde(default)]
    pub(crate) tokens: Vec<String>,
}

/// One `zafe_sa_` token, stored at `sys/service-account/token/<hash>`
/// under its keyed hash (the token itself is never stored). It works only
/// while its accessor is in its account's `tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SaToken {
    /// The account's name.
    pub(crate) account: String,
    /// A non-secret handle (hex), for listing and revoking it.
    pub(crate) accessor: String,
    /// Hex of the token's keyed hash; repeats the storage key's, checked in
    /// constant time on use.
    pub(crate) id_hash: String,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// Unix seconds; `None` never. Set at creation to no later than the
    /// account's expiry, which also applies on its own at every use.
    pub(crate) expires_at: Option<i64>,
    /// The last request it authenticated, in Unix seconds, written at most
    /// once a minute.
    #[serde(default)]
    pub(crate) last_used_at: Option<i64>,
}

/// Who a service-account token belongs to, after authentication.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    /// The account, as read for this request.
    pub(crate) account: ServiceAccount,
    /// The token that was presented.
    pub(crate) token: SaToken,
}

impl Principal {
    /// The request's caller: the account, and its token as Vault's token lookups show it.
    pub(crate) fn into_caller(self) -> crate::caller::Caller {
        let token = crate::tokens::TokenEntry {
            id_hash: self.token.id_hash,
            accessor: self.token.accessor,
            display_name: format!("service-account-{}", self.account.name),
            created_at: self.token.created_at,
            expires_at: self.token.expires_at,
            path: "sys/service-accounts".into(),
            ..Default::default()
        };
        crate::caller::Caller::ServiceAccount(crate::caller::AccountCaller {
            account: self.account,
            token,
        })
    }
}

fn account_key(name: &str) -> String {
    format!("{ACCOUNT_PREFIX}{name}")
}

fn token_key(hash: &str) -> String {
    format!("{TOKEN_PREFIX}{hash}")
}

/// Names: lowercase letters, digits, `-` and `_`, 1 to 64 characters.
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(
            "a service account name is 1 to 64 lowercase letters, digits, '-' or '_'",
        ))
    }
}

/// One scope of a service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `project:<slug>`
    Project(String),
    /// `project-id:<uuid>`: the project with that id, whatever its slug.
    ProjectId(String),
    /// `tag:<tag>`: every project with that tag, at the time of each request.
    Tag(String),
    /// A path glob in Vault's policy syntax.
    Path(String),
}

impl Scope {
    /// Parses one scope as written in an account. A bad project slug, tag
    /// or id, an unknown `kind:` prefix, or a path under `sys/` or `auth/`
    /// is a 400 that says which.
    pub(crate) fn parse(scope: &str) -> Result<Scope> {
        let scope = scope.trim();
        let name = |kind: &str, value: &str| {
            if crate::projects::is_valid_name(value) {
                Ok(value.to_string())
            } else {
                Err(Error::bad_request(format!(
                    "invalid {kind} in scope {scope:?}"
                )))
            }
        };
        if let Some(slug) = scope.strip_prefix("project:") {
            return name("project slug", slug).map(Scope::Project);
        }
        if let Some(id) = scope.strip_prefix("project-id:") {
            return uuid::Uuid::parse_str(id)
                .map(|u| Scope::ProjectId(u.to_string()))
                .map_err(|_| Error::bad_request(format!("invalid project id in scope {scope:?}")));
        }
        if let Some(tag) = scope.strip_prefix("tag:") {
            return name("tag", tag).map(Scope::Tag);
        }
        if scope.contains(':') {
            return Err(Error::bad_request(format!(
                "unknown scope {scope:?}: use project:<slug>, project-id:<uuid>, tag:<tag> or a path glob such as secret/data/ci/*"
            )));
        }
        if scope.is_empty()
            || scope.contains('"')
            || scope.contains('\n')
            || scope.starts_with("sys/")
            || scope.starts_with("auth/")
        {
            return Err(Error::bad_request(format!("invalid path scope {scope:?}")));
        }
        Ok(Scope::Path(scope.to_string()))
    }
}

/// The read/list policy of one project: its secrets on `mount`, and its
/// registry entry and environments.
pub(crate) fn project_policy(slug: &str, mount: &str) -> String {
    let m = mount.trim_end_matches('/');
    format!(
        "path \"{m}/data/{slug}/*\" {{ capabilities = [\"read\"] }}\n\
         path \"{m}/metadata/{slug}/*\" {{ capabilities = [\"read\", \"list\"] }}\n\
         path \"{m}/metadata/{slug}/\" {{ capabilities = [\"list\"] }}\n\
         path \"sys/projects/{slug}\" {{ capabilities = [\"read\"] }}\n\
         path \"sys/projects/{slug}/environments\" {{ capabilities = [\"read\", \"list\"] }}\n\
         path \"sys/projects/{slug}/environments/*\" {{ capabilities = [\"read\", \"list\"] }}\n"
    )
}

/// The HCL policy of scopes once project ids and tags are resolved to
/// `(slug, mount)` pairs: read and list only.
pub(crate) fn policy_for(projects: &[(String, String)], scopes: &[Scope]) -> String {
    let mut hcl = String::new();
    for (slug, mount) in projects {
        hcl.push_str(&project_policy(slug, mount));
    }
    for scope in scopes {
        if let Scope::Path(glob) = scope {
            hcl.push_str(&format!(
                "path \"{glob}\" {{ capabilities = [\"read\", \"list\"] }}\n"
            ));
        }
    }
    hcl
}

/// Compiles a generated policy with the one policy engine.
/// Empty text (every scope resolved to nothing) grants nothing.
pub(crate) fn compile(account: &ServiceAccount, text: &str) -> Result<Acl> {
    if text.trim().is_empty() {
        return Ok(Acl::new(std::iter::empty::<&Policy>()));
    }
    let policy = Policy::parse(&format!("service-account/{}", account.name), text)
        .map_err(|e| Error::Internal(format!("generated policy does not parse: {e}")))?;
    Ok(Acl::new([&policy]))
}

fn compile_check(scope: &Scope) -> Result<()> {
    if !matches!(scope, Scope::Path(_)) {
        return Ok(());
    }
    let text = policy_for(&[], std::slice::from_ref(scope));
    Policy::parse("scope-check", &text)
        .map(|_| ())
        .map_err(|e| Error::bad_request(format!("invalid path scope: {e}")))
}

fn parse_request(name: &str, body: Option<&Value>, now: i64) -> Result<ServiceAccount> {
    validate_name(name)?;
    let body = body.ok_or_else(|| Error::bad_request("a JSON body with scopes is required"))?;
    let scopes: Vec<String> = match body.get("scopes") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::bad_request("scopes must be strings"))
            })
            .collect::<Result<_>>()?,
        Some(Value::String(s)) => s
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => {
            return Err(Error::bad_request(
                "scopes is required: a list of project:<slug> or path globs",
            ));
        }
    };
    if scopes.is_empty() || scopes.len() > MAX_SCOPES {
        return Err(Error::bad_request(format!(
            "between 1 and {MAX_SCOPES} scopes are required"
        )));
    }
    for scope in &scopes {
        let parsed = Scope::parse(scope)?;
        // The glob must also compile on its own.
        compile_check(&parsed)?;
    }
    let allowed_cidrs = match body.get("allowed_cidrs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|c| {
                let text = c.as_str().unwrap_or_default();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        Error::bad_request(format!("{text:?} is not an IP address or CIDR"))
                    })
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(Error::bad_request("allowed_cidrs must be a list")),
    };
    let expires_at = match body.get("ttl") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let secs = crate::mounts::parse_ttl(v)?;
            (secs > 0).then(|| now + secs as i64)
        }
    };
    Ok(ServiceAccount {
        name: name.to_string(),
        description: body
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        scopes,
        allowed_cidrs,
        expires_at,
        created_at: now,
        tokens: Vec::new(),
    })
}

/// Creates an account and its first token; the token is returned once.
pub(crate) async fn create(
    barrier: &Barrier,
    key: &SecretKey,
    name: &str,
    body: Option<&Value>,
    now: i64,
) -> Result<(ServiceAccount, String, SaToken)> {
    let mut account = parse_request(name, body, now)?;
    let (token, record) = new_token(key, &account, token_ttl(body, now)?, now);
    account.tokens.push(record.accessor.clone());
    let writes = vec![
        Write::Put {
            key: account_key(name),
            value: serde_json::to_vec(&account).expect("serialisable"),
            expect: Expect::Absent,
        },
        Write::Put {
            key: token_key(&record.id_hash),
            value: serde_json::to_vec(&record).expect("serialisable"),
            expect: Expect::Absent,
        },
    ];
    match barrier.commit(writes).await {
        Ok(()) => Ok((account, token, record)),
        Err(crate::barrier::BarrierError::Conflict { .. }) => Err(Error::bad_request(format!(
            "service account {name} already exists"
        ))),
        Err(e) => Err(e.into()),
    }
}

fn token_ttl(body: Option<&Value>, now: i64) -> Result<Option<i64>> {
    match body.and_then(|b| b.get("token_ttl")) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let secs = crate::mounts::parse_ttl(v)?;
            Ok((secs > 0).then(|| now + secs as i64))
        }
    }
}

fn new_token(
    key: &SecretKey,
    account: &ServiceAccount,
    expires_at: Option<i64>,
    now: i64,
) -> (String, SaToken) {
    let token = token::generate(TokenKind::ServiceAccount);
    let record = SaToken {
        account: account.name.clone(),
        accessor: hex::encode(zafe_core::crypto::random_bytes::<16>()),
        id_hash: hex::encode(token::lookup_hash(key, &token)),
        created_at: now,
        expires_at: match (expires_at, account.expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        last_used_at: None,
    };
    (token, record)
}

/// Issues another token for an existing account.
pub(crate) async fn issue_token(
    barrier: &Barrier,
    key: &SecretKey,
    name: &str,
    body: Option<&Value>,
    now: i64,
) -> Result<(String, SaToken)> {
    let expires = token_ttl(body, now)?;
    for _ in 0..16 {
        let (account, generation) = read(barrier, name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no service account {name}")))?;
        let (token, record) = new_token(key, &account, expires, now);
        let mut updated = account.clone();
        updated.tokens.push(record.accessor.clone());
        let writes = vec![
            Write::Put {
                key: account_key(name),
                value: serde_json::to_vec(&updated).expect("serialisable"),
                expect: Expect::Generation(generation),
            },
            Write::Put {
                key: token_key(&record.id_hash),
                value: serde_json::to_vec(&record).expect("serialisable"),
                expect: Expect::Absent,
            },
        ];
        match barrier.commit(writes).await {
            Ok(()) => return Ok((token, record)),
            Err(crate::barrier::BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal(
        "too many concurrent changes to the service account".into(),
    ))
}

/// The account named `name` and its record's generation (for a
/// compare-and-swap update), or `None`. An invalid name is a 400; a record
/// that does not parse is [`Error::Integrity`].
pub(crate) async fn read(barrier: &Barrier, name: &str) -> Result<Option<(ServiceAccount, i64)>> {
    validate_name(name)?;
    let Some(record) = barrier.get(&account_key(name)).await? else {
        return Ok(None);
    };
    let account = serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
        key: account_key(name),
    })?;
    Ok(Some((account, record.generation)))
}

/// The names of the accounts, at most
/// [`MAX_LIST`](crate::engine::MAX_LIST) of them.
pub(crate) async fn list(barrier: &Barrier) -> Result<Vec<String>> {
    Ok(barrier
        .list(ACCOUNT_PREFIX, "", crate::engine::MAX_LIST)
        .await?)
}

/// Deletes the account and every token it has: they stop working at once.
pub(crate) async fn delete(barrier: &Barrier, name: &str) -> Result<()> {
    let Some((account, _)) = read(barrier, name).await? else {
        return Ok(());
    };
    let mut writes = vec![Write::Delete {
        key: account_key(name),
        expect: None,
    }];
    // Token records are found by hash; the account keeps accessors, so find
    // the hashes by scanning this account's token records.
    let mut after = String::new();
    loop {
        let hashes = barrier.list(TOKEN_PREFIX, &after, 500).await?;
        let Some(last) = hashes.last().cloned() else {
            break;
        };
        for hash in &hashes {
            if let Some(record) = barrier.get(&token_key(hash)).await? {
                let t: SaToken =
                    serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
                        key: token_key(hash),
                    })?;
                if t.account == account.name {
                    writes.push(Write::Delete {
                        key: token_key(hash),
                        expect: None,
                    });
                }
            }
        }
        after = last;
    }
    barrier.commit(writes).await?;
    Ok(())
}

/// Resolves a `zafe_sa_` token: unknown, expired (token or account), or
/// used from outside the allowlist are all `None`, indistinguishable to
/// the caller.
pub(crate) async fn authenticate(
    barrier: &Barrier,
    key: &SecretKey,
    presented: &str,
    client_ip: IpAddr,
    now: i64,
) -> Result<Option<Principal>> {
    if !token::is_well_formed(presented, TokenKind::ServiceAccount) {
        return Ok(None);
    }
    let hash = hex::encode(token::lookup_hash(key, presented));
    let Some(record) = barrier.get(&token_key(&hash)).await? else {
        return Ok(None);
    };
    let sa_token: SaToken =
        serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
            key: token_key(&hash),
        })?;
    if !zafe_core::crypto::constant_time_eq(sa_token.id_hash.as_bytes(), hash.as_bytes()) {
        return Err(Error::Integrity {
            key: token_key(&hash),
        });
    }
    if sa_token.expires_at.is_some_and(|t| t <= now) {
        return Ok(None);
    }
    let Some((account, _)) = read(barrier, &sa_token.account).await? else {
        return Ok(None);
    };
    if account.expires_at.is_some_and(|t| t <= now) || !account.tokens.contains(&sa_token.accessor)
    {
        return Ok(None);
    }
    if !account.allowed_cidrs.is_empty()
        && !account
            .allowed_cidrs
            .iter()
            .any(|net| net.contains(&client_ip))
    {
        tracing::warn!(service_account = %account.name, %client_ip, "service account token used from outside its allowed CIDRs");
        return Ok(None);
    }
    // Usage is recorded, coarsely, so an idle token is easy to spot.
    if sa_token
        .last_used_at
        .is_none_or(|t| now - t >= LAST_USED_RESOLUTION_SECS)
    {
        let mut updated = sa_token.clone();
        updated.last_used_at = Some(now);
        let _ = barrier
            .put(
                &token_key(&hash),
                &serde_json::to_vec(&updated).expect("serialisable"),
                Expect::Generation(record.generation),
            )
            .await;
    }
    Ok(Some(Principal {
        account,
        token: sa_token,
    }))
}

/// Vault-style JSON for an account (never a token).
pub(crate) fn to_json(account: &ServiceAccount) -> Value {
    json!({
        "name": account.name,
        "description": account.description,
        "scopes": account.scopes,
        "allowed_cidrs": account.allowed_cidrs,
        "expire_time": account.expires_at.map(crate::tokens::rfc3339),
        "creation_time": crate::tokens::rfc3339(account.created_at),
        "token_accessors": account.tokens,
    })
}

/// Token details shown at creation (the token itself is added by the caller, once).
pub(crate) fn token_json(record: &SaToken) -> Value {
    json!({
        "accessor": record.accessor,
        "expire_time": record.expires_at.map(crate::tokens::rfc3339),
        "creation_time": crate::tokens::rfc3339(record.created_at),
    })
}

/// Last-use times of an account's tokens, for `read`.
pub(crate) async fn token_usage(barrier: &Barrier, account: &ServiceAccount) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let hashes = barrier.list(TOKEN_PREFIX, &after, 500).await?;
        let Some(last) = hashes.last().cloned() else {
            break;
        };
        for hash in &hashes {
            if let Some(record) = barrier.get(&token_key(hash)).await? {
                let t: SaToken =
                    serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
                        key: token_key(hash),
                    })?;
                if t.account == account.name {
                    out.push(json!({
                        "accessor": t.accessor,
                        "creation_time": crate::tokens::rfc3339(t.created_at),
                        "expire_time": t.expires_at.map(crate::tokens::rfc3339),
                        "last_used_time": t.last_used_at.map(crate::tokens::rfc3339),
                    }));
                }
            }
        }
        after = last;
    }
    Ok(out)
}

/// Revokes one token of an account by accessor.
pub(crate) async fn revoke_token(barrier: &Barrier, name: &str, accessor: &str) -> Result<()> {
    for _ in 0..16 {
        let (account, generation) = read(barrier, name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no service account {name}")))?;
        if !account.tokens.iter().any(|a| a == accessor) {
            return Err(Error::NotFound(format!(
                "service account {name} has no token with that accessor"
            )));
        }
        let mut updated = account.clone();
        updated.tokens.retain(|a| a != accessor);
        // Removing the accessor from the account is what revokes the token;
        // its record is then dead weight, removed by `delete` or left inert.
        match barrier
            .put(
                &account_key(name),
                &serde_json::to_vec(&updated).expect("serialisable"),
                Expect::Generation(generation),
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(crate::barrier::BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal(
        "too many concurrent changes to the service account".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zafe_core::policy::Capability;

    #[test]
    fn scopes_become_read_and_list_only_policies() {
        let account = ServiceAccount {
            name: "ci".into(),
            description: String::new(),
            scopes: vec![],
            allowed_cidrs: vec![],
            expires_at: None,
            created_at: 0,
            tokens: vec![],
        };
        let scopes = [Scope::parse("secret/data/shared/*").unwrap()];
        let text = policy_for(&[("myapp".into(), "secret".into())], &scopes);
        let acl = compile(&account, &text).unwrap();
        assert!(acl.allows("secret/data/myapp/prod", Capability::Read));
        assert!(acl.allows("secret/metadata/myapp/", Capability::List));
        assert!(acl.allows("secret/data/shared/x", Capability::Read));
        assert!(acl.allows("sys/projects/myapp", Capability::Read));
        for cap in [
            Capability::Create,
            Capability::Update,
            Capability::Delete,
            Capability::Patch,
            Capability::Sudo,
        ] {
            assert!(!acl.allows("secret/data/myapp/prod", cap), "{cap:?}");
            assert!(!acl.allows("sys/projects/myapp", cap), "{cap:?}");
        }
        assert!(!acl.allows("secret/data/other/prod", Capability::Read));
    }

    #[test]
    fn scopes_parse_and_bad_ones_are_refused() {
        assert_eq!(
            Scope::parse("tag:payments").unwrap(),
            Scope::Tag("payments".into())
        );
        assert_eq!(
            Scope::parse("project-id:6F9619FF-8B86-D011-B42D-00CF4FC964FF").unwrap(),
            Scope::ProjectId("6f9619ff-8b86-d011-b42d-00cf4fc964ff".into())
        );
        for bad in [
            "tag:",
            "tag:Bad",
            "project-id:nope",
            "project:",
            "project:a b",
            "team:x",
            "sys/policy/*",
            "auth/token/*",
            "a\"b",
            "",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }
}
