//! From a verified OIDC identity to a Zafe account and a session (R-AUTH-8).
//!
//! In this order:
//! 1. an account already linked to (issuer, subject) — the link index
//!    `sys/people/oidc/subject/<SHA-256(issuer, subject)>` → user id;
//! 2. else an existing account with the same email, **only** when
//!    `[oidc] link_by_verified_email` is on and the IdP says
//!    `email_verified` (lessons.md: linking on an unverified email lets
//!    anyone who can set that address at some IdP take the account) and
//!    the local account's own address is verified (`User::email_verified`:
//!    a self-registered account proves nothing, and linking it would give
//!    the real owner's logins to whoever registered it);
//! 3. else a new account, when `[oidc] create_users` is on, the email is
//!    verified and the registration settings let that address register.
//!
//! A link is written in the same atomic commit as the account (or the
//! account's compare-and-swap update), with the index created `Absent`: one
//! IdP identity can never end up linked to two accounts.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::oidc::VerifiedIdentity;
use super::sessions::{self, Origin};
use super::users::{self, User};
use crate::barrier::{BarrierError, Expect, Write};
use crate::core::{Core, Request, Response};
use crate::error::{Error, Result};

const SUBJECT_PREFIX: &str = "sys/people/oidc/subject/";

/// An IdP identity linked to an account (kept in the user record). The
/// pair (issuer, subject) names one person at one IdP and is linked to at
/// most one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcLink {
    /// The IdP's issuer identifier (`iss`), as configured.
    pub(crate) issuer: String,
    /// The person's stable id at that IdP (`sub`), at most 255 bytes.
    pub(crate) subject: String,
    /// When the link was made, in Unix seconds (the account's creation for
    /// an account created by the login).
    pub(crate) linked_at: i64,
}

#[derive(Serialize, Deserialize)]
struct SubjectIndex {
    user_id: String,
    issuer: String,
    subject: String,
}

fn subject_key(issuer: &str, subject: &str) -> String {
    let digest = Sha256::digest(zafe_core::encoding::fields(&[
        b"zafe/v1/oidc-subject",
        issuer.as_bytes(),
        subject.as_bytes(),
    ]));
    format!("{SUBJECT_PREFIX}{}", hex::encode(digest))
}

fn refused(reason: &str) -> Error {
    Error::BadRequest(format!("OIDC login refused: {reason}"))
}

/// The account linked to this identity, if any.
async fn linked_user(core: &Core, id: &VerifiedIdentity) -> Result<Option<User>> {
    let key = subject_key(&id.issuer, &id.subject);
    let Some(record) = core.barrier.get(&key).await? else {
        return Ok(None);
    };
    let index: SubjectIndex =
        serde_json::from_slice(&record.value).map_err(|_| Error::Integrity { key: key.clone() })?;
    if index.issuer != id.issuer || index.subject != id.subject {
        return Err(Error::Integrity { key });
    }
    let Some((user, _)) = users::read(&core.barrier, &index.user_id).await? else {
        // The account was deleted; the stale link goes with it.
        core.barrier.delete(&key).await?;
        return Ok(None);
    };
    Ok(Some(user))
}

fn link_writes(user: &User, id: &VerifiedIdentity, expect_user: Expect) -> Vec<Write> {
    vec![
        Write::Put {
            key: users::user_key(&user.id),
            value: serde_json::to_vec(user).expect("serialisable"),
            expect: expect_user,
        },
        Write::Put {
            key: subject_key(&id.issuer, &id.subject),
            value: serde_json::to_vec(&SubjectIndex {
                user_id: user.id.clone(),
                issuer: id.issuer.clone(),
                subject: id.subject.clone(),
            })
            .expect("serialisable"),
            expect: Expect::Absent,
        },
    ]
}

/// Links an existing account, found by its verified email.
async fn link_by_email(core: &Core, id: &VerifiedIdentity, email: &str) -> Result<Option<User>> {
    let key = core.token_key()?;
    let Some((mut user, generation)) = users::find_by_email(&core.barrier, &key, email).await?
    else {
        return Ok(None);
    };
    let oidc = super::oidc::configured(core)?;
    if !oidc.config.link_by_verified_email {
        return Err(refused(
            "an account with this email address exists but is not linked to this identity provider account; ask an administrator",
        ));
    }
    if !id.email_verified {
        return Err(refused(
            "the identity provider has not verified this email address, so it cannot be linked to an existing account",
        ));
    }
    if !user.email_verified {
        // The local account was self-registered: whoever made it never
        // proved they own the address, so linking would hand the real
        // owner's OIDC logins to it (account takeover). Refuse; no second
        // account can be made either (the email index is unique).
        return Err(refused(
            "an account with this email address was self-registered and its address was never verified, so it cannot be linked automatically; ask an administrator",
        ));
    }
    user.oidc_links.push(OidcLink {
        issuer: id.issuer.clone(),
        subject: id.subject.clone(),
        linked_at: core.now_secs(),
    });
    user.updated_at = core.now_secs();
    match core
        .barrier
        .commit(link_writes(&user, id, Expect::Generation(generation)))
        .await
    {
        Ok(()) => Ok(Some(user)),
        Err(BarrierError::Conflict { .. }) => Err(Error::Conflict {
            key: users::user_key(&user.id),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Creates an account for a first login, if the settings allow it.
async fn create(core: &Core, id: &VerifiedIdentity, email: &str) -> Result<User> {
    let oidc = super::oidc::configured(core)?;
    let registration = &core.config.auth.registration;
    if !oidc.config.create_users || !registration.allows_domain_of(email) {
        return Err(refused(
            "no Zafe account is linked to this identity and registration does not allow this address; ask an administrator",
        ));
    }
    if !id.email_verified {
        return Err(refused(
            "the identity provider has not verified this email address; an account cannot be created for it",
        ));
    }
    if super::setup::required(core).await? {
        // The first account must be the administrator made with the setup
        // link: an OIDC login made first would end the link (R-AUTH-13).
        return Err(refused(
            "no administrator exists yet: the first account is created with the setup link",
        ));
    }
    let mut user = User::new(email, id.name.as_deref(), None, core.now_secs());
    // Checked above: the IdP verified the address.
    user.email_verified = true;
    user.oidc_links.push(OidcLink {
        issuer: id.issuer.clone(),
        subject: id.subject.clone(),
        linked_at: user.created_at,
    });
    let key = core.token_key()?;
    let mut writes = users::create_writes(&key, &user);
    writes.extend(link_writes(&user, id, Expect::Absent).into_iter().skip(1));
    match core.barrier.commit(writes).await {
        Ok(()) => Ok(user),
        // A concurrent first login of the same person, or the address was
        // just registered: one wins, the other is told to retry.
        Err(BarrierError::Conflict { .. }) => Err(Error::Conflict {
            key: users::user_key(&user.id),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The account for a verified identity, linking or creating as allowed.
pub(crate) async fn account_for(core: &Core, id: &VerifiedIdentity) -> Result<User> {
    if let Some(user) = linked_user(core, id).await? {
        return Ok(user);
    }
    let email = id
        .email
        .as_deref()
        .ok_or_else(|| refused("the identity provider sent no email address"))?;
    let email = users::normalize_email(email)?;
    if let Some(user) = link_by_email(core, id, &email).await? {
        return Ok(user);
    }
    create(core, id, &email).await
}

/// `POST auth/oidc/callback`: verify, find or create the account, start a
/// session, answer like a password login.
pub(crate) async fn callback_route(core: &Arc<Core>, req: &Request) -> Result<Response> {
    let oidc = super::oidc::configured(core)?;
    let identity = oidc.callback(core, req).await?;
    let mut user = account_for(core, &identity).await?;
    if user.disabled {
        return Err(refused("this account is disabled"));
    }
    // R-AUTH-9: an account with TOTP on (a password account linked to an
    // IdP) gives its code here too; otherwise OIDC would be a way around
    // the second factor. Without a code the answer is `mfa_required`, as
    // for a password login; the state is used up, so the client starts the
    // login again with `totp_code` in the callback body.
    if let Some(mfa_required) = super::totp::second_factor(core, req, &user).await? {
        return Ok(mfa_required);
    }
    let roles = oidc.roles_for(&identity.groups);
    if user.oidc_roles != roles {
        user = users::update(&core.barrier, &user.id, core.now_secs(), |u| {
            u.oidc_roles = roles.clone();
            Ok(())
        })
        .await?;
    }
    let key = core.token_key()?;
    sessions::sweep_expired(&core.barrier, &user.id, core.now_secs()).await?;
    let origin = Origin {
        client_ip: req.client_ip,
        user_agent: req.user_agent.clone(),
        method: "oidc",
    };
    let issued = sessions::issue(
        &core.barrier,
        &key,
        &core.config.auth.sessions,
        &user,
        &origin,
        core.now_secs(),
    )
    .await?;
    tracing::info!(request_id = %req.request_id, user_id = %user.id, session_id = %issued.session_id, issuer = %identity.issuer, "logged in with OIDC");
    let mut reply = super::api::auth_reply(&user, &issued, core.now_secs());
    if let Response::Vault {
        auth: Some(auth), ..
    } = &mut reply
    {
        auth["metadata"]["oidc_roles"] = json!(roles);
    }
    Ok(reply)
}
