//! The token store (R-AUTH-5, R-AUTH-10).
//!
//! A token is stored only as `HMAC-SHA256(token key, token)`: the storage key
//! of its entry is that hash, so a lookup is one indexed read and the token
//! itself is never written anywhere. The entry (behind the barrier) repeats
//! the hash, and the lookup checks it in constant time, so a record copied
//! to another token's slot is refused even before the barrier's own location
//! binding would catch it.
//!
//! The token key is derived from the keyring with HKDF, or from the
//! configured token pepper (`ZAFE_TOKEN_PEPPER`) when one is set.
//!
//! Records, all behind the barrier:
//!
//! ```text
//! sys/token/id/<hash>                      the entry
//! sys/token/accessor/<HMAC(accessor)>      accessor index → hash
//! sys/token/parent/<parent hash>/<hash>    children of a token
//! ```
//!
//! Invariants:
//! - a child is registered in the same atomic commit that re-writes its
//!   parent at the generation that was read, so a child can never be added
//!   to a parent that is being revoked (revocation deletes the parent first,
//!   then walks `parent/<hash>/`): children always die with their parent;
//! - a child never outlives its parent: its expiry and hard maximum are
//!   capped by the parent's at creation, and renewing a token to an earlier
//!   expiry caps its whole subtree;
//! - use counts are decremented with compare-and-swap, so each use is
//!   counted exactly once, and the last use deletes the token.

pub(crate) mod api;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use zafe_core::crypto::constant_time_eq;
use zafe_core::secret::SecretKey;
use zafe_core::token::{self, TokenKind};

use crate::barrier::{Barrier, BarrierError, Expect, Write};
use crate::error::{Error, Result};

const ID_PREFIX: &str = "sys/token/id/";
const ACCESSOR_PREFIX: &str = "sys/token/accessor/";
const PARENT_PREFIX: &str = "sys/token/parent/";
/// Tokens whose children are being made orphans (see [`revoke_orphan`]).
const ORPHANING_PREFIX: &str = "sys/token/orphaning/";

/// How often a compare-and-swap loop retries before giving up.
const MAX_RETRIES: usize = 64;
/// Page size for walking index folders.
const PAGE: usize = 500;

/// Vault's default and maximum lease TTL when the mount sets none: 32 days.
pub(crate) const SYSTEM_MAX_TTL: i64 = 32 * 24 * 3600;

/// A token as stored behind the barrier at `sys/token/id/<hash>`: who it
/// is, what it may do and how long it lives. The token itself is never in
/// it (only its keyed hash), so an entry may be logged or returned by a
/// lookup; times are Unix seconds and durations seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Hex of the token's keyed hash; also the last segment of its storage key.
    pub(crate) id_hash: String,
    /// A non-secret handle for the token (for listing and revoking it).
    pub(crate) accessor: String,
    /// The names of the policies it carries; `root` grants everything.
    pub(crate) policies: Vec<String>,
    /// A label for people and the audit log (`root` for the root token,
    /// `token-<name>` from `auth/token/create`), never used for an
    /// authorization decision.
    pub(crate) display_name: String,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// Unix seconds; `None` never expires (the root token).
    pub(crate) expires_at: Option<i64>,
    /// The path that created it: `auth/token/create`, `auth/approle/login`.
    #[serde(default)]
    pub(crate) path: String,
    /// Free-form key/value metadata given at creation (Vault's `meta`),
    /// returned by lookups.
    #[serde(default)]
    pub(crate) meta: BTreeMap<String, String>,
    /// The parent's hash; `None` for orphans.
    #[serde(default)]
    pub(crate) parent: Option<String>,
    /// Uses left; 0 is unlimited.
    #[serde(default)]
    pub(crate) num_uses: u32,
    /// The TTL it was created with, in seconds (what a renewal without an
    /// increment extends by).
    #[serde(default)]
    pub(crate) creation_ttl: i64,
    /// The explicit maximum TTL asked for at creation, in seconds; 0 is
    /// none (only the mount's or system maximum applies).
    #[serde(default)]
    pub(crate) explicit_max_ttl: i64,
    /// The hard limit no renewal can pass: creation + explicit max TTL or
    /// the mount's maximum, and never later than the parent's limit.
    #[serde(default)]
    pub(crate) max_expires_at: Option<i64>,
    /// A periodic token renews by this many seconds each time.
    #[serde(default)]
    pub(crate) period: i64,
    /// Whether a renewal may extend it (a token that never expires cannot
    /// be renewed either way).
    #[serde(default)]
    pub(crate) renewable: bool,
    /// The token role it was created from, if any.
    #[serde(default)]
    pub(crate) role: Option<String>,
    /// Client addresses the token may be used from; empty is anywhere.
    #[serde(default)]
    pub(crate) bound_cidrs: Vec<IpNet>,
    /// Set (never stored) on the entry handed to the request that took a
    /// limited-use token's last use: the token is already gone.
    #[serde(skip)]
    pub(crate) uses_exhausted: bool,
}

impl TokenEntry {
    /// Whether it carries the `root` policy, which passes every policy
    /// check.
    pub(crate) fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }

    /// Whether it has no parent: revoking another token never revokes it.
    pub(crate) fn is_orphan(&self) -> bool {
        self.parent.is_none()
    }

    /// Seconds left, 0 for a token that never expires.
    pub(crate) fn ttl(&self, now: i64) -> i64 {
        self.expires_at.map_or(0, |t| (t - now).max(0))
    }

    fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.bound_cidrs.is_empty() || self.bound_cidrs.iter().any(|net| net.contains(&ip))
    }
}

/// What a new token should be (the root token at initialisation), for
/// [`create`].
pub struct TokenSpec {
    /// The policies it carries (`["root"]` for the root token).
    pub policies: Vec<String>,
    /// Its label in lookups and the audit log.
    pub display_name: String,
    /// Its lifetime in seconds; `None` or 0 never expires. Also its hard
    /// limit: such a token cannot be renewed past it.
    pub ttl_secs: Option<i64>,
}

/// Everything about a new token, decided by the caller (the token engine,
/// AppRole login). Lifetimes are planned with [`plan_lifetime`] first.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewToken {
    /// Final, sanitised policies.
    pub(crate) policies: Vec<String>,
    /// Its label ([`TokenEntry::display_name`]).
    pub(crate) display_name: String,
    /// The path that creates it, recorded in the entry
    /// (`auth/token/create`, `auth/approle/login`).
    pub(crate) path: String,
    /// Free-form metadata, already checked against the size limits.
    pub(crate) meta: BTreeMap<String, String>,
    /// The parent's entry, for a child token; `None` for an orphan.
    pub(crate) parent: Option<TokenEntry>,
    /// How many requests it may make; 0 is unlimited.
    pub(crate) num_uses: u32,
    /// Its TTL and limits, from [`plan_lifetime`].
    pub(crate) lifetime: Lifetime,
    /// Whether it may be renewed.
    pub(crate) renewable: bool,
    /// The token role it is created from, if any.
    pub(crate) role: Option<String>,
    /// The client networks it may be used from; empty is anywhere.
    pub(crate) bound_cidrs: Vec<IpNet>,
}

/// A token's planned lifetime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Lifetime {
    /// Seconds; 0 never expires.
    pub(crate) ttl: i64,
    /// When it expires, in Unix seconds; `None` never.
    pub(crate) expires_at: Option<i64>,
    /// The hard limit no renewal can pass, in Unix seconds; `None` is none.
    pub(crate) max_expires_at: Option<i64>,
    /// The explicit maximum TTL asked for, in seconds; 0 is none.
    pub(crate) explicit_max_ttl: i64,
    /// For a periodic token, what each renewal extends it by, in seconds;
    /// 0 for other tokens.
    pub(crate) period: i64,
}

pub(crate) use zafe_engine::LifetimeRequest;

/// Decides a new token's TTL and hard limit, Vault's way, and caps both by
/// the parent's remaining lifetime. Returns the lifetime and the warnings to
/// show (when a requested TTL was capped).
pub(crate) fn plan_lifetime(
    req: &LifetimeRequest,
    parent: Option<&TokenEntry>,
    now: i64,
) -> (Lifetime, Vec<String>) {
    let mut warnings = Vec::new();
    let or_system = |v: i64| if v > 0 { v } else { SYSTEM_MAX_TTL };
    let requested = req.ttl.filter(|t| *t > 0);
    let mut ttl;
    let hard: Option<i64>;
    if req.period > 0 {
        // Periodic: every renewal extends by the period; no maximum but an
        // explicit one.
        ttl = req.period;
        hard = (req.explicit_max_ttl > 0).then_some(req.explicit_max_ttl);
    } else if requested.is_none() && req.explicit_max_ttl == 0 && req.may_be_unlimited {
        ttl = 0;
        hard = None;
    } else {
        ttl = requested.unwrap_or(or_system(req.default_ttl));
        let mut max = or_system(req.max_ttl);
        if req.explicit_max_ttl > 0 {
            max = max.min(req.explicit_max_ttl);
        }
        hard = Some(max);
    }
    if let Some(max) = hard
        && ttl > max
    {
        warnings.push(format!(
            "TTL of {:?} exceeded the effective max_ttl of {:?}; TTL value is capped accordingly",
            format_duration(ttl),
            format_duration(max)
        ));
        ttl = max;
    }
    let mut expires_at = (ttl > 0).then_some(now + ttl);
    let mut max_expires_at = hard.map(|h| now + h);
    if let Some(parent) = parent {
        if let Some(pe) = parent.expires_at
            && expires_at.is_none_or(|e| e > pe)
        {
            warnings.push(format!(
                "TTL of {:?} exceeded the parent token's remaining lifetime of {:?}; TTL value is capped accordingly",
                format_duration(ttl),
                format_duration((pe - now).max(0))
            ));
            expires_at = Some(pe);
            ttl = (pe - now).max(0);
        }
        if let Some(pm) = parent
            .max_expires_at
            .or(parent.expires_at.filter(|_| !parent.renewable))
        {
            max_expires_at = Some(max_expires_at.map_or(pm, |m| m.min(pm)));
        }
    }
    let lifetime = Lifetime {
        ttl,
        expires_at,
        max_expires_at,
        explicit_max_ttl: req.explicit_max_ttl,
        period: req.period,
    };
    (lifetime, warnings)
}

/// A duration the way Vault prints it in warnings: `"2h"`, `"1h30m"`, `"45s"`.
pub(crate) fn format_duration(secs: i64) -> String {
    if secs <= 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

fn id_key(hash: &str) -> String {
    format!("{ID_PREFIX}{hash}")
}

fn accessor_key(key: &SecretKey, accessor: &str) -> String {
    // Keyed, so a copy of the storage does not hand out usable accessors.
    format!(
        "{ACCESSOR_PREFIX}{}",
        hex::encode(token::lookup_hash(key, &format!("accessor:{accessor}")))
    )
}

fn child_key(parent: &str, child: &str) -> String {
    format!("{PARENT_PREFIX}{parent}/{child}")
}

/// The hash a token is stored under.
pub fn hash_of(key: &SecretKey, token: &str) -> String {
    hex::encode(token::lookup_hash(key, token))
}

#[derive(Serialize, Deserialize)]
struct AccessorIndex {
    id_hash: String,
    accessor: String,
}

/// Issues the root token at initialisation; returns the token (shown once)
/// and its entry. `fixed` is only for `zafe server --dev --dev-root-token`.
pub async fn create(
    barrier: &Barrier,
    key: &SecretKey,
    spec: TokenSpec,
    fixed: Option<&str>,
    now: i64,
) -> Result<(String, TokenEntry)> {
    let ttl = spec.ttl_secs.unwrap_or(0);
    let new = NewToken {
        policies: spec.policies,
        display_name: spec.display_name,
        path: "auth/token/root".into(),
        lifetime: Lifetime {
            ttl,
            expires_at: (ttl > 0).then_some(now + ttl),
            max_expires_at: (ttl > 0).then_some(now + ttl),
            ..Lifetime::default()
        },
        ..NewToken::default()
    };
    issue_with(barrier, key, new, fixed, now).await
}

/// Issues a new token; returns the token (shown once) and its entry.
/// A child is registered in the same commit that re-writes its parent at
/// the generation that was read; a parent that is gone by then gives
/// [`Error::PermissionDenied`].
pub(crate) async fn issue(
    barrier: &Barrier,
    key: &SecretKey,
    new: NewToken,
    now: i64,
) -> Result<(String, TokenEntry)> {
    issue_with(barrier, key, new, None, now).await
}

async fn issue_with(
    barrier: &Barrier,
    key: &SecretKey,
    new: NewToken,
    fixed: Option<&str>,
    now: i64,
) -> Result<(String, TokenEntry)> {
    for _ in 0..MAX_RETRIES {
        let token = fixed
            .map(str::to_string)
            .unwrap_or_else(|| token::generate(TokenKind::Service));
        let id_hash = hash_of(key, &token);
        let entry = TokenEntry {
            id_hash: id_hash.clone(),
            accessor: hex::encode(zafe_core::crypto::random_bytes::<16>()),
            policies: new.policies.clone(),
            display_name: new.display_name.clone(),
            created_at: now,
            expires_at: new.lifetime.expires_at,
            path: new.path.clone(),
            meta: new.meta.clone(),
            parent: new.parent.as_ref().map(|p| p.id_hash.clone()),
            num_uses: new.num_uses,
            creation_ttl: new.lifetime.ttl,
            explicit_max_ttl: new.lifetime.explicit_max_ttl,
            max_expires_at: new.lifetime.max_expires_at,
            period: new.lifetime.period,
            renewable: new.renewable,
            role: new.role.clone(),
            bound_cidrs: new.bound_cidrs.clone(),
            uses_exhausted: false,
        };
        let mut writes = vec![
            Write::Put {
                key: id_key(&id_hash),
                value: serde_json::to_vec(&entry).expect("serialisable"),
                expect: Expect::Absent,
            },
            Write::Put {
                key: accessor_key(key, &entry.accessor),
                value: serde_json::to_vec(&AccessorIndex {
                    id_hash: id_hash.clone(),
                    accessor: entry.accessor.clone(),
                })
                .expect("serialisable"),
                expect: Expect::Absent,
            },
        ];
        if let Some(parent) = &new.parent {
            // Re-write the parent exactly as read: if it was revoked (or
            // changed) since, the whole commit fails and no child appears.
            let Some(record) = barrier.get(&id_key(&parent.id_hash)).await? else {
                return Err(Error::PermissionDenied);
            };
            writes.push(Write::Put {
                key: id_key(&parent.id_hash),
                value: record.value.to_vec(),
                expect: Expect::Generation(record.generation),
            });
            writes.push(Write::Put {
                key: child_key(&parent.id_hash, &id_hash),
                value: b"{}".to_vec(),
                expect: Expect::Absent,
            });
        }
        match barrier.commit(writes).await {
            Ok(()) => return Ok((token, entry)),
            Err(BarrierError::Conflict { .. }) if fixed.is_none() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal(
        "could not register a new token: too many concurrent changes to its parent".into(),
    ))
}

/// Reads an entry by hash, checking the stored hash against the key it was
/// found under.
async fn read(barrier: &Barrier, id_hash: &str) -> Result<Option<(TokenEntry, i64)>> {
    let key = id_key(id_hash);
    let Some(record) = barrier.get(&key).await? else {
        return Ok(None);
    };
    let entry: TokenEntry =
        serde_json::from_slice(&record.value).map_err(|_| Error::Integrity { key: key.clone() })?;
    if !constant_time_eq(entry.id_hash.as_bytes(), id_hash.as_bytes()) {
        return Err(Error::Integrity { key });
    }
    Ok(Some((entry, record.generation)))
}

/// Reads a live entry by hash: an expired one is revoked on the spot (with
/// its children) and reported as absent.
async fn read_live(
    barrier: &Barrier,
    id_hash: &str,
    now: i64,
) -> Result<Option<(TokenEntry, i64)>> {
    match read(barrier, id_hash).await? {
        Some((entry, _)) if entry.is_expired(now) => {
            if let Err(e) = revoke_tree(barrier, id_hash).await {
                tracing::warn!(error = %e, "could not remove an expired token yet; tidy will retry");
            }
            Ok(None)
        }
        other => Ok(other),
    }
}

/// The live entry for `token`, or `None` for unknown, malformed or expired
/// tokens (all indistinguishable to the caller). One barrier read. Does not
/// count a use: see [`authenticate`].
pub(crate) async fn lookup(
    barrier: &Barrier,
    key: &SecretKey,
    token: &str,
    now: i64,
) -> Result<Option<TokenEntry>> {
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    Ok(read_live(barrier, &hash_of(key, token), now)
        .await?
        .map(|(e, _)| e))
}

/// The live entry for a token, by hash (for the parent of a renewal, and
/// for engines that hold a hash).
pub(crate) async fn lookup_hash(
    barrier: &Barrier,
    id_hash: &str,
    now: i64,
) -> Result<Option<TokenEntry>> {
    Ok(read_live(barrier, id_hash, now).await?.map(|(e, _)| e))
}

/// The live entry an accessor names; `None` for an unknown accessor or a
/// token that is gone. An index row that names another accessor is
/// [`Error::Integrity`].
pub(crate) async fn lookup_accessor(
    barrier: &Barrier,
    key: &SecretKey,
    accessor: &str,
    now: i64,
) -> Result<Option<TokenEntry>> {
    if accessor.is_empty() || accessor.len() > 128 {
        return Ok(None);
    }
    let index_key = accessor_key(key, accessor);
    let Some(record) = barrier.get(&index_key).await? else {
        return Ok(None);
    };
    let index: AccessorIndex =
        serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
            key: index_key.clone(),
        })?;
    if index.accessor != accessor {
        return Err(Error::Integrity { key: index_key });
    }
    let entry = lookup_hash(barrier, &index.id_hash, now).await?;
    Ok(entry.filter(|e| e.accessor == accessor))
}

/// Resolves the token of a request: it must be live, used from an address
/// its bound CIDRs allow, and have a use left. A limited-use token has one
/// use taken here, with compare-and-swap so that concurrent requests each
/// take their own; the last use deletes it (this request still runs).
pub(crate) async fn authenticate(
    barrier: &Barrier,
    key: &SecretKey,
    token: &str,
    client_ip: IpAddr,
    now: i64,
) -> Result<Option<TokenEntry>> {
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    let id_hash = hash_of(key, token);
    for _ in 0..MAX_RETRIES {
        let Some((mut entry, generation)) = read_live(barrier, &id_hash, now).await? else {
            return Ok(None);
        };
        if !entry.allows_ip(client_ip) {
            return Ok(None);
        }
        let result = match entry.num_uses {
            0 => return Ok(Some(entry)),
            1 => {
                entry.num_uses = 0;
                entry.uses_exhausted = true;
                // The last use: the token goes now. It cannot have children
                // (limited-use tokens may not create any).
                barrier
                    .commit(delete_writes(key, &entry, Some(generation)))
                    .await
            }
            n => {
                entry.num_uses = n - 1;
                barrier
                    .put(
                        &id_key(&id_hash),
                        &serde_json::to_vec(&entry).expect("serialisable"),
                        Expect::Generation(generation),
                    )
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => return Ok(Some(entry)),
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal(
        "could not count a token use: too many concurrent uses".into(),
    ))
}

/// The writes that remove one token and its index rows (not its children).
fn delete_writes(key: &SecretKey, entry: &TokenEntry, generation: Option<i64>) -> Vec<Write> {
    let mut writes = vec![
        Write::Delete {
            key: id_key(&entry.id_hash),
            expect: generation.map(Expect::Generation),
        },
        Write::Delete {
            key: accessor_key(key, &entry.accessor),
            expect: None,
        },
    ];
    if let Some(parent) = &entry.parent {
        writes.push(Write::Delete {
            key: child_key(parent, &entry.id_hash),
            expect: None,
        });
    }
    writes
}

/// Revokes `token` and every token created under it; revoking an unknown
/// token is not an error.
pub(crate) async fn revoke(barrier: &Barrier, key: &SecretKey, token: &str) -> Result<()> {
    if token.is_empty() || token.len() > 256 {
        return Ok(());
    }
    revoke_tree_with(barrier, Some(key), &hash_of(key, token)).await
}

/// Revokes the token stored under `id_hash` and its whole subtree.
pub(crate) async fn revoke_tree(barrier: &Barrier, id_hash: &str) -> Result<()> {
    revoke_tree_with(barrier, None, id_hash).await
}

async fn revoke_tree_with(barrier: &Barrier, key: Option<&SecretKey>, id_hash: &str) -> Result<()> {
    // Depth first, each token deleted before its children are listed: once
    // a parent is gone no new child can be registered under it (see
    // `issue`), so the listing is complete.
    let mut stack = vec![id_hash.to_string()];
    while let Some(hash) = stack.pop() {
        delete_one(barrier, key, &hash).await?;
        let folder = format!("{PARENT_PREFIX}{hash}/");
        loop {
            let children = barrier.list(&folder, "", PAGE).await?;
            if children.is_empty() {
                break;
            }
            let mut writes = Vec::with_capacity(children.len());
            for child in children {
                let child = child.trim_end_matches('/').to_string();
                writes.push(Write::Delete {
                    key: format!("{folder}{child}"),
                    expect: None,
                });
                stack.push(child);
            }
            barrier.commit(writes).await?;
        }
    }
    Ok(())
}

/// Deletes one token's entry and index rows. Without the token key the
/// accessor index row is left for tidy (it points at nothing and is
/// harmless: every accessor lookup re-reads the entry).
async fn delete_one(barrier: &Barrier, key: Option<&SecretKey>, id_hash: &str) -> Result<()> {
    for _ in 0..MAX_RETRIES {
        let Some((entry, generation)) = read(barrier, id_hash).await? else {
            return Ok(());
        };
        let writes = match key {
            Some(key) => delete_writes(key, &entry, Some(generation)),
            None => {
                let mut w = vec![Write::Delete {
                    key: id_key(id_hash),
                    expect: Some(Expect::Generation(generation)),
                }];
                if let Some(parent) = &entry.parent {
                    w.push(Write::Delete {
                        key: child_key(parent, id_hash),
                        expect: None,
                    });
                }
                w
            }
        };
        match barrier.commit(writes).await {
            Ok(()) => return Ok(()),
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal(
        "could not revoke a token: too many concurrent changes".into(),
    ))
}

/// Revokes by hash with the token key at hand, so index rows go too.
pub(crate) async fn revoke_hash(barrier: &Barrier, key: &SecretKey, id_hash: &str) -> Result<()> {
    revoke_tree_with(barrier, Some(key), id_hash).await
}

/// Revokes one token and makes its children orphans.
pub(crate) async fn revoke_orphan(barrier: &Barrier, key: &SecretKey, id_hash: &str) -> Result<()> {
    // The marker tells tidy that the children of this token are being
    // orphaned, not revoked: a tidy that runs meanwhile (or after a crash
    // half-way) finishes the orphaning instead of revoking them.
    let marker = format!("{ORPHANING_PREFIX}{id_hash}");
    barrier.update(&marker, |_| Some(b"{}".to_vec())).await?;
    delete_one(barrier, Some(key), id_hash).await?;
    orphan_children(barrier, id_hash).await?;
    barrier.delete(&marker).await?;
    Ok(())
}

/// Makes every child of `id_hash` an orphan and removes the index rows.
async fn orphan_children(barrier: &Barrier, id_hash: &str) -> Result<usize> {
    let folder = format!("{PARENT_PREFIX}{id_hash}/");
    let mut count = 0;
    loop {
        let children = barrier.list(&folder, "", PAGE).await?;
        if children.is_empty() {
            return Ok(count);
        }
        for child in children {
            let child = child.trim_end_matches('/');
            barrier
                .update(&id_key(child), |current| {
                    let mut entry: TokenEntry = serde_json::from_slice(current?).ok()?;
                    entry.parent = None;
                    Some(serde_json::to_vec(&entry).expect("serialisable"))
                })
                .await?;
            barrier.delete(&format!("{folder}{child}")).await?;
            count += 1;
        }
    }
}

/// The outcome of a renewal.
pub(crate) struct Renewed {
    /// The entry as written, with its new expiry.
    pub(crate) entry: TokenEntry,
    /// What to tell the caller when the increment was capped (by the hard
    /// limit or the parent's expiry), Vault's wording.
    pub(crate) warnings: Vec<String>,
    /// The second the new lifetime was granted at: the reply's
    /// `lease_duration` counts from here, not from whenever it is written.
    pub(crate) renewed_at: i64,
}

/// Renews a token: a periodic one by its period, others by `increment` (or
/// their creation TTL), never past their hard limit or their parent's
/// expiry. A renewal to an earlier expiry caps the token's subtree too.
pub(crate) async fn renew(
    barrier: &Barrier,
    id_hash: &str,
    increment: Option<i64>,
    now: i64,
) -> Result<Renewed> {
    for _ in 0..MAX_RETRIES {
        let Some((mut entry, generation)) = read_live(barrier, id_hash, now).await? else {
            return Err(Error::bad_request("token not found"));
        };
        if !entry.renewable || entry.expires_at.is_none() {
            return Err(Error::bad_request("lease is not renewable"));
        }
        let mut warnings = Vec::new();
        let wanted = if entry.period > 0 {
            entry.period
        } else {
            increment.filter(|i| *i > 0).unwrap_or(entry.creation_ttl)
        };
        let mut expires = now + wanted;
        if let Some(max) = entry.max_expires_at
            && expires > max
        {
            warnings.push(format!(
                "TTL of {:?} exceeded the effective max_ttl of {:?}; TTL value is capped accordingly",
                format_duration(wanted),
                format_duration((max - now).max(0))
            ));
            expires = max;
        }
        if let Some(parent) = &entry.parent
            && let Some((p, _)) = read(barrier, parent).await?
            && let Some(pe) = p.expires_at
            && expires > pe
        {
            warnings.push("the TTL was capped by the parent token's remaining lifetime".into());
            expires = pe;
        }
        let old = entry.expires_at;
        entry.expires_at = Some(expires);
        match barrier
            .put(
                &id_key(id_hash),
                &serde_json::to_vec(&entry).expect("serialisable"),
                Expect::Generation(generation),
            )
            .await
        {
            Ok(_) => {
                if old.is_some_and(|o| expires < o) {
                    cap_subtree(barrier, id_hash, expires).await?;
                }
                return Ok(Renewed {
                    entry,
                    warnings,
                    renewed_at: now,
                });
            }
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal(
        "could not renew: too many concurrent changes".into(),
    ))
}

/// Caps the expiry of every token under `id_hash` at `bound`.
async fn cap_subtree(barrier: &Barrier, id_hash: &str, bound: i64) -> Result<()> {
    let mut stack = vec![id_hash.to_string()];
    while let Some(hash) = stack.pop() {
        let folder = format!("{PARENT_PREFIX}{hash}/");
        let mut after = String::new();
        loop {
            let children = barrier.list(&folder, &after, PAGE).await?;
            let Some(last) = children.last() else {
                break;
            };
            after = last.clone();
            for child in children {
                let child = child.trim_end_matches('/').to_string();
                barrier
                    .update(&id_key(&child), |current| {
                        let mut entry: TokenEntry = serde_json::from_slice(current?).ok()?;
                        if entry.expires_at.is_some_and(|e| e <= bound) {
                            return None;
                        }
                        entry.expires_at = Some(bound);
                        entry.max_expires_at =
                            Some(entry.max_expires_at.map_or(bound, |m| m.min(bound)));
                        Some(serde_json::to_vec(&entry).expect("serialisable"))
                    })
                    .await?;
                stack.push(child);
            }
        }
    }
    Ok(())
}

/// One page of accessors, in storage order, after the index row `after`.
/// Returns the accessors and the cursor for the next page.
pub(crate) async fn list_accessors(
    barrier: &Barrier,
    after: &str,
    limit: usize,
) -> Result<(Vec<String>, Option<String>)> {
    let rows = barrier.list(ACCESSOR_PREFIX, after, limit).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let key = format!("{ACCESSOR_PREFIX}{row}");
        if let Some(record) = barrier.get(&key).await? {
            let index: AccessorIndex =
                serde_json::from_slice(&record.value).map_err(|_| Error::Integrity { key })?;
            // Only live tokens: the row may outlive a token revoked without
            // the key (tidy removes it).
            if barrier.get(&id_key(&index.id_hash)).await?.is_some() {
                out.push(index.accessor);
            }
        }
    }
    let next = (rows.len() == limit)
        .then(|| rows.last().cloned())
        .flatten();
    Ok((out, next))
}

/// What [`tidy`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TidyReport {
    /// Expired tokens revoked, each with its subtree (the subtree's tokens
    /// are not counted).
    pub(crate) expired_revoked: usize,
    /// Accessor index rows removed because their token was gone (or the
    /// row unreadable).
    pub(crate) dangling_accessors: usize,
    /// Parent-to-child rows removed because the child or the parent was
    /// gone, and children made orphans for an unfinished orphan
    /// revocation.
    pub(crate) dangling_children: usize,
}

/// Removes expired tokens (with their subtrees) and index rows that point
/// at tokens that no longer exist.
pub async fn tidy(barrier: &Barrier, now: i64) -> Result<TidyReport> {
    let mut report = TidyReport::default();
    let mut after = String::new();
    loop {
        let hashes = barrier.list(ID_PREFIX, &after, PAGE).await?;
        let Some(last) = hashes.last() else { break };
        after = last.clone();
        for hash in hashes {
            if let Some((entry, _)) = read(barrier, &hash).await?
                && entry.is_expired(now)
            {
                revoke_tree(barrier, &hash).await?;
                report.expired_revoked += 1;
            }
        }
    }
    let mut after = String::new();
    loop {
        let rows = barrier.list(ACCESSOR_PREFIX, &after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.clone();
        for row in rows {
            let key = format!("{ACCESSOR_PREFIX}{row}");
            let Some(record) = barrier.get(&key).await? else {
                continue;
            };
            let dangling = match serde_json::from_slice::<AccessorIndex>(&record.value) {
                Ok(index) => barrier.get(&id_key(&index.id_hash)).await?.is_none(),
                Err(_) => true,
            };
            if dangling {
                barrier.delete(&key).await?;
                report.dangling_accessors += 1;
            }
        }
    }
    let mut after = String::new();
    loop {
        let parents = barrier.list(PARENT_PREFIX, &after, PAGE).await?;
        let Some(last) = parents.last() else { break };
        after = last.clone();
        for parent in parents {
            let parent = parent.trim_end_matches('/').to_string();
            let parent_gone = barrier.get(&id_key(&parent)).await?.is_none();
            if parent_gone
                && barrier
                    .get(&format!("{ORPHANING_PREFIX}{parent}"))
                    .await?
                    .is_some()
            {
                // A revoke-orphan that did not finish: finish it.
                report.dangling_children += orphan_children(barrier, &parent).await?;
                barrier
                    .delete(&format!("{ORPHANING_PREFIX}{parent}"))
                    .await?;
                continue;
            }
            let folder = format!("{PARENT_PREFIX}{parent}/");
            let mut child_after = String::new();
            loop {
                let children = barrier.list(&folder, &child_after, PAGE).await?;
                let Some(last) = children.last() else { break };
                child_after = last.clone();
                for child in children {
                    if parent_gone {
                        // A parent that vanished without its subtree (a
                        // crash mid-revocation): finish the job.
                        revoke_tree(barrier, &child).await?;
                    }
                    if parent_gone || barrier.get(&id_key(&child)).await?.is_none() {
                        barrier.delete(&format!("{folder}{child}")).await?;
                        report.dangling_children += 1;
                    }
                }
            }
        }
    }
    Ok(report)
}

pub(crate) use zafe_engine::rfc3339;

#[cfg(test)]
mod tests {
    use super::*;

    fn parent(expires: Option<i64>, max: Option<i64>) -> TokenEntry {
        TokenEntry {
            id_hash: "p".into(),
            policies: vec!["default".into()],
            expires_at: expires,
            max_expires_at: max,
            renewable: true,
            ..TokenEntry::default()
        }
    }

    // R-AUTH-10: TTL defaults, explicit max, periodic tokens, parent caps.
    #[test]
    fn lifetimes_follow_vault_and_never_outlive_the_parent() {
        let now = 1000;
        let req = |ttl: Option<i64>, max: i64, period: i64| LifetimeRequest {
            ttl,
            explicit_max_ttl: max,
            period,
            ..Default::default()
        };
        let (l, w) = plan_lifetime(&req(None, 0, 0), None, now);
        assert_eq!(
            (l.ttl, l.max_expires_at),
            (SYSTEM_MAX_TTL, Some(now + SYSTEM_MAX_TTL))
        );
        assert!(w.is_empty());
        let (l, w) = plan_lifetime(&req(Some(7200), 3600, 0), None, now);
        assert_eq!(
            (l.ttl, l.expires_at, l.max_expires_at),
            (3600, Some(now + 3600), Some(now + 3600))
        );
        assert!(w[0].contains("capped"), "{w:?}");
        let (l, _) = plan_lifetime(&req(Some(60), 0, 600), None, now);
        assert_eq!(
            (l.ttl, l.max_expires_at),
            (600, None),
            "periodic: the period, no maximum"
        );
        let unlimited = LifetimeRequest {
            may_be_unlimited: true,
            ..Default::default()
        };
        assert_eq!(plan_lifetime(&unlimited, None, now).0.expires_at, None);
        let p = parent(Some(now + 100), Some(now + 500));
        let (l, w) = plan_lifetime(&req(Some(3600), 0, 0), Some(&p), now);
        assert_eq!(
            (l.ttl, l.expires_at, l.max_expires_at),
            (100, Some(now + 100), Some(now + 500))
        );
        assert!(w.iter().any(|w| w.contains("parent")));
        // A parent without expiry does not shorten the child.
        let (l, _) = plan_lifetime(&req(Some(60), 0, 0), Some(&parent(None, None)), now);
        assert_eq!(l.expires_at, Some(now + 60));
    }

    #[test]
    fn durations_print_like_vault() {
        assert_eq!(format_duration(7200), "2h");
        assert_eq!(format_duration(5400), "1h30m");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(0), "0s");
    }
}
