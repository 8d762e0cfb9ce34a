//! The user store: records behind the barrier, and the email index.
//!
//! ```text
//! sys/people/user/<user_id>            the user (User)
//! sys/people/email/<HMAC(email)>       email → user id, created Absent-only
//! ```
//!
//! The index is keyed by a keyed hash of the lower-cased email, so storage
//! never holds an address in the clear in a key, and created with
//! `Expect::Absent` in the same commit as the user: two registrations of
//! one address cannot both succeed.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zafe_core::secret::SecretKey;

use crate::barrier::{Barrier, BarrierError, Expect, Write};
use crate::error::{Error, Result};

/// Storage prefix of user records (`sys/people/user/<id>`).
pub(crate) const USER_PREFIX: &str = "sys/people/user/";
const EMAIL_PREFIX: &str = "sys/people/email/";
/// Longest email address accepted, in bytes (RFC 5321's limit).
pub(crate) const MAX_EMAIL_LEN: usize = 254;
const MAX_DISPLAY_NAME: usize = 128;
/// How often a compare-and-swap update retries.
const MAX_RETRIES: usize = 32;

/// A person's account. `Debug` leaves out the password hash.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    /// A UUID; never reused.
    pub id: String,
    /// Lower-cased; unique (the email index).
    pub email: String,
    /// Name shown for the person; may be empty; at most 128 characters.
    #[serde(default)]
    pub display_name: String,
    /// Argon2id PHC string; `None` for accounts that log in only with OIDC.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// A server administrator: their sessions carry the `root` policy.
    #[serde(default)]
    pub admin: bool,
    /// A disabled account cannot log in and its sessions stop working.
    #[serde(default)]
    pub disabled: bool,
    /// Extra ACL policies an administrator gave this person.
    #[serde(default)]
    pub policies: Vec<String>,
    /// When the account was created (Unix seconds).
    pub created_at: i64,
    /// When the record last changed (Unix seconds).
    pub updated_at: i64,
    /// When the person last changed their password (Unix seconds); `None` if
    /// never changed since the account was made.
    #[serde(default)]
    pub password_changed_at: Option<i64>,
    /// IdP identities that log in as this person (people/oidc_accounts.rs).
    #[serde(default)]
    pub oidc_links: Vec<super::oidc_accounts::OidcLink>,
    /// Project roles (`<project>:<role>`) the IdP's groups gave at the last
    /// OIDC login (`[oidc.group_roles]`).
    #[serde(default)]
    pub oidc_roles: Vec<String>,
    /// The TOTP second factor (people/totp.rs); its secret never leaves.
    #[serde(default)]
    pub totp: Option<super::totp::TotpState>,
    /// Whether the owner of `email` is known to control it: true for
    /// accounts made by the setup link, an administrator, an invitation or a
    /// verified OIDC identity; false for self-registration, which proves
    /// nothing about the address. OIDC links by email only to verified
    /// accounts (R-AUTH-8). Records written before this field read false.
    #[serde(default)]
    pub email_verified: bool,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("admin", &self.admin)
            .field("disabled", &self.disabled)
            .field("has_password", &self.password_hash.is_some())
            .finish_non_exhaustive()
    }
}

impl User {
    /// A new account (not yet stored).
    /// `now`: Unix seconds, by the core's clock.
    pub fn new(
        email: &str,
        display_name: Option<&str>,
        password_hash: Option<String>,
        now: i64,
    ) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            email: email.to_string(),
            display_name: display_name.unwrap_or_default().to_string(),
            password_hash,
            admin: false,
            disabled: false,
            policies: Vec::new(),
            created_at: now,
            updated_at: now,
            password_changed_at: None,
            oidc_links: Vec::new(),
            oidc_roles: Vec::new(),
            totp: None,
            email_verified: false,
        }
    }

    /// The JSON an API answer shows: never the password hash.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "email": self.email,
            "display_name": self.display_name,
            "admin": self.admin,
            "disabled": self.disabled,
            "policies": self.policies,
            "has_password": self.password_hash.is_some(),
            "oidc_links": self.oidc_links.iter().map(|l| json!({"issuer": l.issuer, "subject": l.subject})).collect::<Vec<_>>(),
            "oidc_roles": self.oidc_roles,
            "totp_enabled": super::totp::required(self),
            "email_verified": self.email_verified,
            "recovery_codes_left": self.totp.as_ref().filter(|t| t.confirmed).map(|t| t.recovery_codes_left()),
            "creation_time": crate::tokens::rfc3339(self.created_at),
            "update_time": crate::tokens::rfc3339(self.updated_at),
        })
    }
}

/// Normalises and checks an email address: NFKC (so full-width or other
/// compatibility forms are the same address), lower case, one `@`,
/// something on both sides, no spaces or control characters, at most 254
/// bytes. Look-alikes are refused (UTS #39): a local part or domain label
/// that mixes scripts (`racе` with a Cyrillic `е`), or that is written
/// wholly in a non-Latin script whose letters all look like Latin ones
/// (`расе`), would be a second account that looks like the first.
pub(crate) fn normalize_email(raw: &str) -> Result<String> {
    use unicode_normalization::UnicodeNormalization;
    let email: String = raw.trim().nfkc().collect::<String>().to_lowercase();
    let email: String = email.nfkc().collect();
    let valid = email.len() <= MAX_EMAIL_LEN
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if !valid {
        return Err(Error::bad_request("a valid email address is required"));
    }
    let (local, domain) = email.split_once('@').expect("checked");
    if std::iter::once(local)
        .chain(domain.split('.'))
        .any(is_look_alike)
    {
        return Err(Error::bad_request(
            "this email address mixes writing systems or imitates a Latin one (for example a Cyrillic \"е\" among Latin letters); type the address with the letters your provider uses",
        ));
    }
    Ok(email)
}

/// Whether one part of an address (the local part, or a domain label) is
/// mixed-script, or a non-Latin whole-script look-alike of an ASCII text.
fn is_look_alike(part: &str) -> bool {
    use unicode_security::MixedScript;
    use unicode_security::mixed_script::AugmentedScriptSet;
    if part.is_ascii() {
        return false;
    }
    if !part.is_single_script() {
        return true;
    }
    let mut latin = part.resolve_script_set();
    latin.intersect_with(AugmentedScriptSet::for_char('a'));
    latin.is_empty() && unicode_security::skeleton(part).all(|c| c.is_ascii())
}

/// Checks a display name: at most 128 characters, no control characters.
pub(crate) fn check_display_name(name: &str) -> Result<()> {
    if name.chars().count() > MAX_DISPLAY_NAME || name.chars().any(char::is_control) {
        return Err(Error::bad_request(
            "display_name must be at most 128 characters without control characters",
        ));
    }
    Ok(())
}

pub(crate) fn user_key(id: &str) -> String {
    format!("{USER_PREFIX}{id}")
}

/// The email index key: a keyed hash, like the token store's accessors.
fn email_key(key: &SecretKey, email: &str) -> String {
    format!(
        "{EMAIL_PREFIX}{}",
        hex::encode(zafe_core::token::lookup_hash(
            key,
            &format!("email:{email}")
        ))
    )
}

#[derive(Serialize, Deserialize)]
struct EmailIndex {
    user_id: String,
    email: String,
}

fn decode(key: &str, bytes: &[u8]) -> Result<User> {
    serde_json::from_slice(bytes).map_err(|_| Error::Integrity { key: key.into() })
}

/// Whether any account exists (first-run setup is offered until one does).
pub(crate) async fn any_exist(barrier: &Barrier) -> Result<bool> {
    Ok(!barrier.list(USER_PREFIX, "", 1).await?.is_empty())
}

/// A user by id, with the generation it was read at.
pub async fn read(barrier: &Barrier, id: &str) -> Result<Option<(User, i64)>> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Ok(None);
    }
    let key = user_key(id);
    match barrier.get(&key).await? {
        Some(record) => Ok(Some((decode(&key, &record.value)?, record.generation))),
        None => Ok(None),
    }
}

/// A user by (normalised) email.
pub(crate) async fn find_by_email(
    barrier: &Barrier,
    key: &SecretKey,
    email: &str,
) -> Result<Option<(User, i64)>> {
    let index_key = email_key(key, email);
    let Some(record) = barrier.get(&index_key).await? else {
        return Ok(None);
    };
    let index: EmailIndex =
        serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
            key: index_key.clone(),
        })?;
    // The record repeats the address: a row copied to another address's
    // slot is refused (the barrier's location binding also catches it).
    if index.email != email {
        return Err(Error::Integrity { key: index_key });
    }
    read(barrier, &index.user_id).await
}

/// The user an id or an email names (admin routes accept either).
pub async fn find(
    barrier: &Barrier,
    key: &SecretKey,
    id_or_email: &str,
) -> Result<Option<(User, i64)>> {
    if id_or_email.contains('@') {
        find_by_email(barrier, key, &normalize_email(id_or_email)?).await
    } else {
        read(barrier, id_or_email).await
    }
}

/// The writes that create `user` with its email index; a taken email fails
/// the whole commit with a conflict. Callers may add writes (the setup
/// record, an invitation) to make one atomic step.
pub(crate) fn create_writes(key: &SecretKey, user: &User) -> Vec<Write> {
    vec![
        Write::Put {
            key: user_key(&user.id),
            value: serde_json::to_vec(user).expect("serialisable"),
            expect: Expect::Absent,
        },
        Write::Put {
            key: email_key(key, &user.email),
            value: serde_json::to_vec(&EmailIndex {
                user_id: user.id.clone(),
                email: user.email.clone(),
            })
            .expect("serialisable"),
            expect: Expect::Absent,
        },
    ]
}

/// Stores a new user; an email that is taken is a 400.
pub async fn create(barrier: &Barrier, key: &SecretKey, user: &User) -> Result<()> {
    commit_create(barrier, create_writes(key, user)).await
}

/// Commits writes that include [`create_writes`], turning a conflict into
/// the message a person understands.
pub(crate) async fn commit_create(barrier: &Barrier, writes: Vec<Write>) -> Result<()> {
    match barrier.commit(writes).await {
        Ok(()) => Ok(()),
        Err(BarrierError::Conflict { key }) if key.starts_with(EMAIL_PREFIX) => Err(
            Error::bad_request("an account with this email address already exists"),
        ),
        Err(e) => Err(e.into()),
    }
}

/// Read-modify-write of one user with compare-and-swap; `change` may refuse
/// with an error. Returns the user as stored.
pub async fn update<F>(barrier: &Barrier, id: &str, now: i64, mut change: F) -> Result<User>
where
    F: FnMut(&mut User) -> Result<()>,
{
    for _ in 0..MAX_RETRIES {
        let (mut user, generation) = read(barrier, id)
            .await?
            .ok_or_else(|| Error::NotFound("no such user".into()))?;
        change(&mut user)?;
        user.updated_at = now;
        match barrier
            .put(
                &user_key(id),
                &serde_json::to_vec(&user).expect("serialisable"),
                Expect::Generation(generation),
            )
            .await
        {
            Ok(_) => return Ok(user),
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict { key: user_key(id) })
}

/// A server administrator who can act: admin and not disabled.
fn active_admin(user: &User) -> bool {
    user.admin && !user.disabled
}

/// The refusal when a change would leave the server without an administrator.
pub(crate) fn last_admin() -> Error {
    Error::bad_request("this is the last administrator; make another one first")
}

/// Another active administrator than `id`, with the generation it was read at.
pub(crate) async fn another_admin(barrier: &Barrier, id: &str) -> Result<Option<(User, i64)>> {
    for user in list(barrier, usize::MAX).await? {
        if user.id == id || !active_admin(&user) {
            continue;
        }
        if let Some((user, generation)) = read(barrier, &user.id).await?
            && active_admin(&user)
        {
            return Ok(Some((user, generation)));
        }
    }
    Ok(None)
}

/// Re-writes `witness` unchanged at the generation read. A commit carrying
/// this write fails if the witness changed in between, so a check "another
/// administrator exists" stays true up to the commit that relies on it: two
/// administrators demoting (or deleting) each other at once cannot both
/// succeed.
pub(crate) fn witness_write(witness: &User, generation: i64) -> Write {
    Write::Put {
        key: user_key(&witness.id),
        value: serde_json::to_vec(witness).expect("serialisable"),
        expect: Expect::Generation(generation),
    }
}

/// As [`update`], but refused with [`last_admin`] when the change would
/// take away the last active administrator; the check and the change are
/// one conditional commit (see [`witness_write`]).
pub(crate) async fn update_keeping_an_admin<F>(
    barrier: &Barrier,
    id: &str,
    now: i64,
    mut change: F,
) -> Result<User>
where
    F: FnMut(&mut User) -> Result<()>,
{
    for _ in 0..MAX_RETRIES {
        let (mut user, generation) = read(barrier, id)
            .await?
            .ok_or_else(|| Error::NotFound("no such user".into()))?;
        let was_admin = active_admin(&user);
        change(&mut user)?;
        user.updated_at = now;
        let mut writes = vec![Write::Put {
            key: user_key(id),
            value: serde_json::to_vec(&user).expect("serialisable"),
            expect: Expect::Generation(generation),
        }];
        if was_admin && !active_admin(&user) {
            let (witness, witness_generation) =
                another_admin(barrier, id).await?.ok_or_else(last_admin)?;
            writes.push(witness_write(&witness, witness_generation));
        }
        match barrier.commit(writes).await {
            Ok(()) => return Ok(user),
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict { key: user_key(id) })
}

/// The writes that delete a user and its email index.
pub(crate) fn delete_writes(key: &SecretKey, user: &User) -> Vec<Write> {
    vec![
        Write::Delete {
            key: user_key(&user.id),
            expect: None,
        },
        Write::Delete {
            key: email_key(key, &user.email),
            expect: None,
        },
    ]
}

/// Every user, in id order (bounded by `limit`).
pub async fn list(barrier: &Barrier, limit: usize) -> Result<Vec<User>> {
    let mut out = Vec::new();
    let mut after = String::new();
    while out.len() < limit {
        let ids = barrier.list(USER_PREFIX, &after, 500).await?;
        let Some(last) = ids.last().cloned() else {
            break;
        };
        for id in &ids {
            if let Some((user, _)) = read(barrier, id).await? {
                out.push(user);
            }
        }
        after = last;
    }
    out.truncate(limit);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "a b@example.com",
            "a@b@c",
            "a\n@b",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(250))).is_err());
        // NFKC: full-width letters and a full-width @ are the plain address.
        assert_eq!(
            normalize_email("\u{FF21}lice\u{FF20}example.com").unwrap(),
            "alice@example.com"
        );
        // UTS #39 look-alikes (R-AUTH-8).
        for look_alike in [
            "rac\u{0435}@example.com",
            "race@ex\u{0430}mple.com",
            "\u{0440}\u{0430}\u{0441}\u{0435}@example.com",
            "paypal@\u{0440}\u{0430}\u{0443}\u{0440}\u{0430}l.com",
        ] {
            assert!(normalize_email(look_alike).is_err(), "{look_alike}");
        }
        for fine in [
            "jos\u{00E9}@example.com",
            "m\u{00FC}ller@stra\u{00DF}e.de",
            "\u{0438}\u{0432}\u{0430}\u{043D}@\u{043F}\u{0440}\u{0438}\u{043C}\u{0435}\u{0440}.\u{0440}\u{0444}",
            "\u{7530}\u{4E2D}@example.jp",
        ] {
            assert!(normalize_email(fine).is_ok(), "{fine}");
        }
    }

    #[test]
    fn debug_never_shows_the_hash() {
        let u = User::new(
            "a@example.com",
            None,
            Some("$argon2id$secret-hash".into()),
            1_700_000_000,
        );
        assert!(!format!("{u:?}").contains("secret-hash"));
        assert!(!u.to_json().to_string().contains("secret-hash"));
    }
}
