//! First run (R-AUTH-13) and invitations.
//!
//! **Setup link.** While no account exists, the server makes a one-time
//! `zafe_su_` token after every unseal and prints, once per process, to
//! standard error:
//!
//! ```text
//! <public_url or http(s)://<listen>>/ui/setup#token=zafe_su_...
//! ```
//!
//! The token is in the URL's fragment, which browsers never send to a
//! server, so it does not reach proxy or access logs. `POST sys/setup`
//! with it creates the first administrator. It is stored only as an HMAC
//! (`sys/people/setup`: hash, expiry, consumed), expires after
//! `[auth.sessions] setup_token_ttl_secs` (15 minutes), and is consumed in
//! the same atomic commit that creates the account, conditional on the
//! generation of the setup record that was read: of two concurrent setups,
//! one commit fails and exactly one administrator exists. A new start (or
//! unseal) while still no account exists prints a new link, which replaces
//! the old one. There are no default credentials.
//!
//! **Invitations** (`sys/people/invite/<HMAC(token)>`): made by an
//! administrator for one email address; a `zafe_iv_` token, single use
//! (deleted, conditionally, in the commit that creates the account).

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use zafe_core::secret::SecretKey;
use zafe_core::token::{self, TokenKind};
use zeroize::Zeroizing;

use super::users;
use crate::barrier::{BarrierError, Expect, Write};
use crate::core::Core;
use crate::error::{Error, Result};
use crate::tokens::hash_of;

const SETUP_KEY: &str = "sys/people/setup";
const INVITE_PREFIX: &str = "sys/people/invite/";

/// The one message for every unusable setup token.
pub(crate) const SETUP_REFUSED: &str = "the setup token is invalid, expired or already used";
/// The one message for every unusable invitation.
pub(crate) const INVITE_REFUSED: &str = "the invitation is invalid, expired or already used";

#[derive(Serialize, Deserialize)]
struct SetupRecord {
    hash: String,
    expires_at: i64,
    consumed: bool,
}

/// An invitation to create an account for one email address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Invite {
    /// Keyed hash of the invitation token (the record's storage key); the token
    /// itself is shown once and never stored.
    pub hash: String,
    /// The only address the invitation registers (lower-cased).
    pub email: String,
    /// When the invitation stops working (Unix seconds).
    pub expires_at: i64,
    /// Display name of whoever created it; empty if unknown.
    pub created_by: String,
    /// When it was created (Unix seconds).
    pub created_at: i64,
}

/// After an unseal: if no account exists, make a setup token and print the
/// link (at most once per process). Errors are logged, never fatal.
pub(crate) async fn announce_if_needed(core: &Core) {
    if core.is_sealed() || core.people.setup_announced.load(Ordering::SeqCst) {
        return;
    }
    match new_setup_token(core).await {
        Ok(Some(token)) => {
            if core.people.setup_announced.swap(true, Ordering::SeqCst) {
                return;
            }
            let minutes = core.config.auth.sessions.setup_token_ttl_secs / 60;
            // Standard error, not the log: the link is a credential, and
            // logs are often shipped elsewhere.
            eprintln!(
                "\nNo account exists yet. Create the first administrator within {minutes} minutes:\n\n\
                 \x20   {}\n\n\
                 or from a terminal:\n\n\
                 \x20   ZAFE_SETUP_TOKEN={} zafe operator bootstrap-admin --email you@example.com\n\n\
                 The link works once. Restarting the server while no account exists makes a new one.\n",
                setup_url(core, &token),
                token.as_str()
            );
        }
        Ok(None) => core.people.setup_announced.store(true, Ordering::SeqCst),
        Err(e) => tracing::error!(error = %e, "could not prepare the first-run setup link"),
    }
}

/// `<public url or listen address>/ui/setup#token=...`
pub(crate) fn setup_url(core: &Core, token: &str) -> String {
    let base = match &core.config.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let scheme = if core.config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}", core.config.listen())
        }
    };
    format!("{base}/ui/setup#token={token}")
}

/// A fresh setup token replacing any earlier one, or `None` once an account
/// exists.
pub async fn new_setup_token(core: &Core) -> Result<Option<Zeroizing<String>>> {
    if users::any_exist(&core.barrier).await? {
        return Ok(None);
    }
    let key = core.token_key()?;
    let token = Zeroizing::new(token::generate(TokenKind::Setup));
    let record = SetupRecord {
        hash: hash_of(&key, &token),
        expires_at: core.now_secs() + core.config.auth.sessions.setup_token_ttl_secs,
        consumed: false,
    };
    let value = serde_json::to_vec(&record).expect("serialisable");
    let expect = match core.barrier.get(SETUP_KEY).await? {
        Some(existing) => Expect::Generation(existing.generation),
        None => Expect::Absent,
    };
    core.barrier.put(SETUP_KEY, &value, expect).await?;
    Ok(Some(token))
}

/// Whether the first administrator still has to be created.
pub async fn required(core: &Core) -> Result<bool> {
    Ok(!users::any_exist(&core.barrier).await?)
}

/// Checks the setup token and returns the writes that consume it; to be
/// committed with the writes that create the administrator.
pub(crate) async fn consume_writes(
    core: &Core,
    key: &SecretKey,
    presented: &str,
) -> Result<Vec<Write>> {
    let refused = || Error::bad_request(SETUP_REFUSED);
    if !token::is_well_formed(presented, TokenKind::Setup) {
        return Err(refused());
    }
    let record = core.barrier.get(SETUP_KEY).await?.ok_or_else(refused)?;
    let mut setup: SetupRecord =
        serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
            key: SETUP_KEY.into(),
        })?;
    let hash = hash_of(key, presented);
    let matches = zafe_core::crypto::constant_time_eq(setup.hash.as_bytes(), hash.as_bytes());
    if !matches || setup.consumed || setup.expires_at <= core.now_secs() {
        return Err(refused());
    }
    setup.consumed = true;
    Ok(vec![Write::Put {
        key: SETUP_KEY.into(),
        value: serde_json::to_vec(&setup).expect("serialisable"),
        expect: Expect::Generation(record.generation),
    }])
}

/// Commits writes that consume the setup token or an invitation and create
/// an account: a lost race on the token is the same refusal as a used one.
pub(crate) async fn commit_consuming(core: &Core, writes: Vec<Write>, refused: &str) -> Result<()> {
    match core.barrier.commit(writes).await {
        Ok(()) => Ok(()),
        Err(BarrierError::Conflict { key })
            if key == SETUP_KEY || key.starts_with(INVITE_PREFIX) =>
        {
            Err(Error::bad_request(refused))
        }
        Err(BarrierError::Conflict { .. }) => Err(Error::bad_request(
            "an account with this email address already exists",
        )),
        Err(e) => Err(e.into()),
    }
}

fn invite_key(hash: &str) -> String {
    format!("{INVITE_PREFIX}{hash}")
}

/// Creates an invitation; returns the token (shown once) and the record.
pub(crate) async fn create_invite(
    core: &Core,
    email: &str,
    ttl_secs: i64,
    created_by: &str,
) -> Result<(Zeroizing<String>, Invite)> {
    let key = core.token_key()?;
    let token = Zeroizing::new(token::generate(TokenKind::Invite));
    let now = core.now_secs();
    let invite = Invite {
        hash: hash_of(&key, &token),
        email: email.to_string(),
        expires_at: now + ttl_secs,
        created_by: created_by.to_string(),
        created_at: now,
    };
    core.barrier
        .put(
            &invite_key(&invite.hash),
            &serde_json::to_vec(&invite).expect("serialisable"),
            Expect::Absent,
        )
        .await?;
    Ok((token, invite))
}

/// Checks an invitation for `email`; returns the write that consumes it.
pub(crate) async fn consume_invite_writes(
    core: &Core,
    key: &SecretKey,
    presented: &str,
    email: &str,
) -> Result<Vec<Write>> {
    let refused = || Error::bad_request(INVITE_REFUSED);
    if !token::is_well_formed(presented, TokenKind::Invite) {
        return Err(refused());
    }
    let hash = hash_of(key, presented);
    let record = core
        .barrier
        .get(&invite_key(&hash))
        .await?
        .ok_or_else(refused)?;
    let invite: Invite = serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
        key: invite_key(&hash),
    })?;
    if !zafe_core::crypto::constant_time_eq(invite.hash.as_bytes(), hash.as_bytes())
        || invite.expires_at <= core.now_secs()
        || invite.email != email
    {
        return Err(refused());
    }
    Ok(vec![Write::Delete {
        key: invite_key(&hash),
        expect: Some(Expect::Generation(record.generation)),
    }])
}
