//! Sessions (R-AUTH-4..6): a login starts a session *family*; it holds one
//! access token (`zafe_at_`, short-lived, sent with every request) and one
//! refresh token (`zafe_rt_`, trades itself for a new pair).
//!
//! ```text
//! sys/people/family/<session_id>               Family: user, current hashes, expiry, client
//! sys/people/session/<HMAC(token)>             SessionToken: access or refresh → family
//! sys/people/user-sessions/<user_id>/<session_id>   index, to end a person's sessions
//! ```
//!
//! Tokens are 256-bit `zafe_core::token`s stored only as HMACs under the
//! token store's key (`tokens::hash_of`), like every other token.
//!
//! Rotation: a refresh replaces both tokens in one atomic commit that
//! re-writes the family at the generation that was read. The used refresh
//! token's record stays behind, marked `rotated`, until the family ends:
//! presenting it again means it was copied (or the legitimate client lost a
//! race with a thief), and the whole family is revoked at once (lessons.md:
//! re-use was refused but did not revoke the session). Two refreshes racing
//! with the same token are treated the same way: only one can win the
//! compare-and-swap, and the other is a re-use.
//!
//! Expired families are removed when their owner next logs in
//! ([`sweep_expired`]), or when any of their tokens is presented.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zafe_core::secret::SecretKey;
use zafe_core::token::{self, TokenKind};
use zeroize::Zeroizing;

use super::config::SessionConfig;
use super::users::{self, User};
use crate::barrier::{Barrier, BarrierError, Expect, Write};
use crate::caller::{Caller, Person};
use crate::error::{Error, Result};
use crate::tokens::{TokenEntry, hash_of};

const FAMILY_PREFIX: &str = "sys/people/family/";
const SESSION_PREFIX: &str = "sys/people/session/";
const USER_SESSIONS_PREFIX: &str = "sys/people/user-sessions/";
/// A family that has been refreshed this many times must log in again
/// (bounds the list of rotated tokens it keeps).
const MAX_ROTATIONS: usize = 2000;
const MAX_RETRIES: usize = 8;
/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 256;

/// Which of a session's two tokens a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SessionTokenKind {
    /// `zafe_at_`: authenticates requests; never refreshes anything.
    Access,
    /// `zafe_rt_`: only trades itself for a new pair at
    /// `auth/user/refresh`; never authenticates a request.
    Refresh,
}

/// One token of a session, stored under its keyed hash (the token itself
/// is never stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionToken {
    /// Access or refresh.
    pub(crate) kind: SessionTokenKind,
    /// Repeats the storage key's hash; checked in constant time on lookup.
    pub(crate) id_hash: String,
    /// The family it belongs to.
    pub(crate) session_id: String,
    /// Whose session it is (a user id).
    pub(crate) user_id: String,
    /// Unix seconds; never later than the family's `expires_at`.
    pub(crate) expires_at: i64,
    /// Unix seconds.
    #[serde(default)]
    pub(crate) created_at: i64,
    /// A refresh token that was already traded for a new pair.
    #[serde(default)]
    pub(crate) rotated: bool,
}

/// A session family: everything one login led to.
/// Times are Unix seconds. Holds hashes only, never a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Family {
    /// A random id, shown to its owner (`auth/user/sessions`) and used as
    /// the accessor of the session's token lookups.
    pub(crate) session_id: String,
    /// Whose session it is.
    pub(crate) user_id: String,
    /// Keyed hash of the current access token.
    pub(crate) access_hash: String,
    /// Keyed hash of the current refresh token.
    pub(crate) refresh_hash: String,
    /// Refresh tokens already used, kept so re-use can be recognised.
    #[serde(default)]
    pub(crate) retired: Vec<String>,
    /// When the login happened.
    pub(crate) created_at: i64,
    /// No refresh can go past this.
    pub(crate) expires_at: i64,
    /// When the current access token expires.
    pub(crate) access_expires_at: i64,
    /// When the current refresh token expires.
    pub(crate) refresh_expires_at: i64,
    /// The last refresh; `None` if never refreshed.
    #[serde(default)]
    pub(crate) refreshed_at: Option<i64>,
    /// The client address of the login, as text.
    pub(crate) client_ip: String,
    /// The login's `User-Agent` without control characters, cut to 256
    /// characters; empty if none.
    #[serde(default)]
    pub(crate) user_agent: String,
    /// How the session was started: `password`, `setup`, `oidc`.
    #[serde(default)]
    pub(crate) method: String,
}

impl Family {
    /// The JSON `auth/user/sessions` shows (no hashes).
    pub(crate) fn to_json(&self, current: Option<&str>) -> Value {
        json!({
            "session_id": self.session_id,
            "current": current == Some(self.session_id.as_str()),
            "method": self.method,
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "creation_time": crate::tokens::rfc3339(self.created_at),
            "last_refresh_time": self.refreshed_at.map(crate::tokens::rfc3339),
            "expire_time": crate::tokens::rfc3339(self.refresh_expires_at.min(self.expires_at)),
        })
    }
}

/// A fresh pair of tokens, shown to the client once. `Debug` hides them;
/// they must never be logged, and are wiped from memory when dropped.
pub(crate) struct Issued {
    /// The new `zafe_at_` access token.
    pub(crate) access_token: Zeroizing<String>,
    /// The new `zafe_rt_` refresh token.
    pub(crate) refresh_token: Zeroizing<String>,
    /// The family both belong to.
    pub(crate) session_id: String,
    /// When the access token expires, in Unix seconds.
    pub(crate) access_expires_at: i64,
    /// When the refresh token expires, in Unix seconds.
    pub(crate) refresh_expires_at: i64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// Where a login came from, kept with its session.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// The client's address (after trusted proxies).
    pub(crate) client_ip: IpAddr,
    /// The `User-Agent` header, if any.
    pub(crate) user_agent: Option<String>,
    /// How the session starts: `password`, `setup`, `oidc`.
    pub(crate) method: &'static str,
}

/// What a refresh came to.
#[derive(Debug)]
pub(crate) enum Refreshed {
    /// The refresh token was current: here is the new pair (the old
    /// access token stops working at once).
    Rotated(Issued),
    /// Unknown, expired, or the account is gone or disabled.
    Invalid,
    /// A rotated refresh token was presented again: the family is revoked.
    Reused {
        /// The revoked family.
        session_id: String,
        /// Its owner, for the log.
        user_id: String,
    },
}

fn family_key(session_id: &str) -> String {
    format!("{FAMILY_PREFIX}{session_id}")
}

fn session_key(hash: &str) -> String {
    format!("{SESSION_PREFIX}{hash}")
}

fn index_key(user_id: &str, session_id: &str) -> String {
    format!("{USER_SESSIONS_PREFIX}{user_id}/{session_id}")
}

fn json_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialisable")
}

fn new_token_record(
    kind: SessionTokenKind,
    key: &SecretKey,
    session_id: &str,
    user_id: &str,
    expires_at: i64,
    now: i64,
) -> (Zeroizing<String>, SessionToken) {
    let token = Zeroizing::new(token::generate(match kind {
        SessionTokenKind::Access => TokenKind::Access,
        SessionTokenKind::Refresh => TokenKind::Refresh,
    }));
    let record = SessionToken {
        kind,
        id_hash: hash_of(key, &token),
        session_id: session_id.to_string(),
        user_id: user_id.to_string(),
        expires_at,
        created_at: now,
        rotated: false,
    };
    (token, record)
}

/// Starts a session for `user`; returns its tokens (shown once).
pub(crate) async fn issue(
    barrier: &Barrier,
    key: &SecretKey,
    config: &SessionConfig,
    user: &User,
    origin: &Origin,
    now: i64,
) -> Result<Issued> {
    let session_id = uuid::Uuid::new_v4().to_string();
    let expires_at = now + config.max_session_secs;
    let access_expires_at = (now + config.access_ttl_secs).min(expires_at);
    let refresh_expires_at = (now + config.refresh_ttl_secs).min(expires_at);
    let (access, access_record) = new_token_record(
        SessionTokenKind::Access,
        key,
        &session_id,
        &user.id,
        access_expires_at,
        now,
    );
    let (refresh, refresh_record) = new_token_record(
        SessionTokenKind::Refresh,
        key,
        &session_id,
        &user.id,
        refresh_expires_at,
        now,
    );
    let family = Family {
        session_id: session_id.clone(),
        user_id: user.id.clone(),
        access_hash: access_record.id_hash.clone(),
        refresh_hash: refresh_record.id_hash.clone(),
        retired: Vec::new(),
        created_at: now,
        expires_at,
        access_expires_at,
        refresh_expires_at,
        refreshed_at: None,
        client_ip: origin.client_ip.to_string(),
        user_agent: origin
            .user_agent
            .as_deref()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_USER_AGENT)
            .collect(),
        method: origin.method.to_string(),
    };
    barrier
        .commit(vec![
            Write::Put {
                key: family_key(&session_id),
                value: json_bytes(&family),
                expect: Expect::Absent,
            },
            Write::Put {
                key: session_key(&access_record.id_hash),
                value: json_bytes(&access_record),
                expect: Expect::Absent,
            },
            Write::Put {
                key: session_key(&refresh_record.id_hash),
                value: json_bytes(&refresh_record),
                expect: Expect::Absent,
            },
            Write::Put {
                key: index_key(&user.id, &session_id),
                value: b"{}".to_vec(),
                expect: Expect::Absent,
            },
        ])
        .await?;
    Ok(Issued {
        access_token: access,
        refresh_token: refresh,
        session_id,
        access_expires_at,
        refresh_expires_at,
    })
}

/// Reads a token record by the presented token; `None` when there is none.
/// A record whose inner hash differs from its key is an integrity error.
async fn lookup(
    barrier: &Barrier,
    key: &SecretKey,
    presented: &str,
    kind: TokenKind,
) -> Result<Option<(SessionToken, i64)>> {
    if !token::is_well_formed(presented, kind) {
        return Ok(None);
    }
    let hash = hash_of(key, presented);
    let storage_key = session_key(&hash);
    let Some(record) = barrier.get(&storage_key).await? else {
        return Ok(None);
    };
    let entry: SessionToken =
        serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
            key: storage_key.clone(),
        })?;
    if !zafe_core::crypto::constant_time_eq(entry.id_hash.as_bytes(), hash.as_bytes()) {
        return Err(Error::Integrity { key: storage_key });
    }
    Ok(Some((entry, record.generation)))
}

async fn read_family(barrier: &Barrier, session_id: &str) -> Result<Option<(Family, i64)>> {
    let key = family_key(session_id);
    match barrier.get(&key).await? {
        Some(record) => Ok(Some((
            serde_json::from_slice(&record.value).map_err(|_| Error::Integrity { key })?,
            record.generation,
        ))),
        None => Ok(None),
    }
}

/// Resolves a `zafe_at_` access token to its caller, or `None` (unknown,
/// expired, revoked, or the account is disabled or gone: one answer).
///
/// Revocation deletes the access record in the same commit as the family,
/// but the record alone does not decide: the family must still exist and
/// name this token as its current access token. A revocation that read the
/// family just before a refresh committed would otherwise leave the
/// refreshed access token's record behind, alive without a family.
pub(crate) async fn authenticate(
    barrier: &Barrier,
    key: &SecretKey,
    presented: &str,
    now: i64,
) -> Result<Option<Caller>> {
    let Some((entry, _)) = lookup(barrier, key, presented, TokenKind::Access).await? else {
        return Ok(None);
    };
    if entry.kind != SessionTokenKind::Access || entry.expires_at <= now {
        return Ok(None);
    }
    let Some((family, _)) = read_family(barrier, &entry.session_id).await? else {
        return Ok(None);
    };
    if family.user_id != entry.user_id
        || !zafe_core::crypto::constant_time_eq(
            family.access_hash.as_bytes(),
            entry.id_hash.as_bytes(),
        )
    {
        return Ok(None);
    }
    let Some((user, _)) = users::read(barrier, &entry.user_id).await? else {
        return Ok(None);
    };
    if user.disabled {
        return Ok(None);
    }
    Ok(Some(caller_entry(&user, &entry)))
}

/// The caller a session's requests run as. A server administrator
/// carries `root`; everyone else their extra policies (project roles are
/// added by `Core::authorize`).
fn caller_entry(user: &User, entry: &SessionToken) -> Caller {
    let policies = if user.admin {
        vec!["root".to_string()]
    } else {
        user.policies.clone()
    };
    let session = TokenEntry {
        id_hash: entry.id_hash.clone(),
        // The session id is the non-secret handle audit entries name.
        accessor: entry.session_id.clone(),
        policies,
        display_name: format!("user-{}", user.email),
        created_at: entry.created_at,
        expires_at: Some(entry.expires_at),
        path: "auth/user/login".into(),
        meta: [
            ("user_id".to_string(), user.id.clone()),
            ("email".to_string(), user.email.clone()),
        ]
        .into(),
        ..TokenEntry::default()
    };
    Caller::Person(Person {
        user: super::UserCaller {
            user_id: user.id.clone(),
            email: user.email.clone(),
            admin: user.admin,
            session_id: entry.session_id.clone(),
        },
        session,
    })
}

/// Trades a refresh token for a new pair (R-AUTH-4).
pub(crate) async fn refresh(
    barrier: &Barrier,
    key: &SecretKey,
    config: &SessionConfig,
    presented: &str,
    now: i64,
) -> Result<Refreshed> {
    for _ in 0..MAX_RETRIES {
        let Some((entry, entry_generation)) =
            lookup(barrier, key, presented, TokenKind::Refresh).await?
        else {
            return Ok(Refreshed::Invalid);
        };
        let Some((family, family_generation)) = read_family(barrier, &entry.session_id).await?
        else {
            return Ok(Refreshed::Invalid);
        };
        if entry.kind != SessionTokenKind::Refresh {
            return Ok(Refreshed::Invalid);
        }
        if entry.rotated || family.refresh_hash != entry.id_hash {
            revoke_family(barrier, &family.session_id).await?;
            return Ok(Refreshed::Reused {
                session_id: family.session_id,
                user_id: family.user_id,
            });
        }
        if entry.expires_at <= now || family.expires_at <= now {
            revoke_family(barrier, &family.session_id).await?;
            return Ok(Refreshed::Invalid);
        }
        match users::read(barrier, &family.user_id).await? {
            Some((user, _)) if !user.disabled => {}
            _ => {
                revoke_family(barrier, &family.session_id).await?;
                return Ok(Refreshed::Invalid);
            }
        }
        if family.retired.len() >= MAX_ROTATIONS {
            revoke_family(barrier, &family.session_id).await?;
            return Ok(Refreshed::Invalid);
        }
        let access_expires_at = (now + config.access_ttl_secs).min(family.expires_at);
        let refresh_expires_at = (now + config.refresh_ttl_secs).min(family.expires_at);
        let (access, access_record) = new_token_record(
            SessionTokenKind::Access,
            key,
            &family.session_id,
            &family.user_id,
            access_expires_at,
            now,
        );
        let (refresh, refresh_record) = new_token_record(
            SessionTokenKind::Refresh,
            key,
            &family.session_id,
            &family.user_id,
            refresh_expires_at,
            now,
        );
        let mut updated = family.clone();
        updated.retired.push(entry.id_hash.clone());
        updated.access_hash = access_record.id_hash.clone();
        updated.refresh_hash = refresh_record.id_hash.clone();
        updated.access_expires_at = access_expires_at;
        updated.refresh_expires_at = refresh_expires_at;
        updated.refreshed_at = Some(now);
        let mut used = entry.clone();
        used.rotated = true;
        // The retired token outlives its own expiry (until the family
        // ends), so a late re-use is still recognised.
        used.expires_at = family.expires_at;
        let writes = vec![
            Write::Put {
                key: family_key(&family.session_id),
                value: json_bytes(&updated),
                expect: Expect::Generation(family_generation),
            },
            Write::Put {
                key: session_key(&entry.id_hash),
                value: json_bytes(&used),
                expect: Expect::Generation(entry_generation),
            },
            // The old access token dies with the rotation.
            Write::Delete {
                key: session_key(&family.access_hash),
                expect: None,
            },
            Write::Put {
                key: session_key(&access_record.id_hash),
                value: json_bytes(&access_record),
                expect: Expect::Absent,
            },
            Write::Put {
                key: session_key(&refresh_record.id_hash),
                value: json_bytes(&refresh_record),
                expect: Expect::Absent,
            },
        ];
        match barrier.commit(writes).await {
            Ok(()) => {
                return Ok(Refreshed::Rotated(Issued {
                    access_token: access,
                    refresh_token: refresh,
                    session_id: family.session_id,
                    access_expires_at,
                    refresh_expires_at,
                }));
            }
            // Someone else rotated (or revoked) this family meanwhile: look
            // again; the token is now rotated, which is a re-use.
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict {
        key: "sys/people/family".into(),
    })
}

/// Ends a session: the family, every token it ever had, and its index
/// entry go in one commit, so its access token stops working at once.
///
/// The family is deleted at the generation that was read: a refresh that
/// commits in between (new tokens this commit would not list) makes the
/// delete conflict, and it is retried with the family as it is now.
pub(crate) async fn revoke_family(barrier: &Barrier, session_id: &str) -> Result<()> {
    for _ in 0..MAX_RETRIES {
        let Some((family, generation)) = read_family(barrier, session_id).await? else {
            return Ok(());
        };
        match barrier
            .commit(revoke_writes(session_id, &family, generation))
            .await
        {
            Ok(()) => return Ok(()),
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict {
        key: family_key(session_id),
    })
}

fn revoke_writes(session_id: &str, family: &Family, generation: i64) -> Vec<Write> {
    let mut writes = vec![
        Write::Delete {
            key: family_key(session_id),
            expect: Some(Expect::Generation(generation)),
        },
        Write::Delete {
            key: index_key(&family.user_id, session_id),
            expect: None,
        },
        Write::Delete {
            key: session_key(&family.access_hash),
            expect: None,
        },
        Write::Delete {
            key: session_key(&family.refresh_hash),
            expect: None,
        },
    ];
    for retired in &family.retired {
        writes.push(Write::Delete {
            key: session_key(retired),
            expect: None,
        });
    }
    writes
}

/// Session ids of a user (bounded).
async fn session_ids(barrier: &Barrier, user_id: &str) -> Result<Vec<String>> {
    let prefix = format!("{USER_SESSIONS_PREFIX}{user_id}/");
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let page = barrier.list(&prefix, &after, 500).await?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        out.extend(page);
        after = last;
    }
    Ok(out)
}

/// Ends every session of a user except `keep` (the caller's own, after a
/// password change); returns how many ended.
pub(crate) async fn revoke_all_for_user(
    barrier: &Barrier,
    user_id: &str,
    keep: Option<&str>,
) -> Result<usize> {
    let mut ended = 0;
    for session_id in session_ids(barrier, user_id).await? {
        if keep != Some(session_id.as_str()) {
            revoke_family(barrier, &session_id).await?;
            ended += 1;
        }
    }
    Ok(ended)
}

/// The live sessions of a user.
pub(crate) async fn list_for_user(
    barrier: &Barrier,
    user_id: &str,
    now: i64,
) -> Result<Vec<Family>> {
    let mut out = Vec::new();
    for session_id in session_ids(barrier, user_id).await? {
        if let Some((family, _)) = read_family(barrier, &session_id).await?
            && family.expires_at > now
            && family.refresh_expires_at > now
        {
            out.push(family);
        }
    }
    Ok(out)
}

/// Removes a user's sessions that can no longer be refreshed.
pub(crate) async fn sweep_expired(barrier: &Barrier, user_id: &str, now: i64) -> Result<()> {
    for session_id in session_ids(barrier, user_id).await? {
        match read_family(barrier, &session_id).await? {
            Some((family, _)) if family.expires_at > now && family.refresh_expires_at > now => {}
            Some(_) => revoke_family(barrier, &session_id).await?,
            // An index entry left without its family: drop it.
            None => barrier.delete(&index_key(user_id, &session_id)).await?,
        }
    }
    Ok(())
}
