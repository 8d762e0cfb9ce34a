//! TOTP second factor for password accounts (R-AUTH-9): RFC 6238 with
//! SHA-1, 6 digits, 30 s steps, one step either side (`totp-rs`).
//!
//! - `auth/user/totp/enroll` (with the password): a new secret, returned
//!   once as an `otpauth://` URI; not in force until confirmed.
//! - `auth/user/totp/confirm` (with a code): turns it on and returns ten
//!   single-use recovery codes, once; only their hashes are kept.
//! - `auth/user/totp/disable` (with a current code, a recovery code or the
//!   password).
//! - `auth/user/login`: after a correct password, a code is required
//!   (`mfa_required`); a recovery code works instead, once.
//!
//! The secret is a field of the user record, which the barrier encrypts;
//! no answer after enrolment contains it. A code's time step is recorded
//! when it is used, in the same compare-and-swap as the check, so a code
//! (or an older one) cannot be used twice, even by two requests at once.
//! Verification is rate-limited per account.

use std::num::NonZeroU32;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use totp_rs::{Algorithm, TOTP};
use zafe_core::crypto::{constant_time_eq, random_bytes};
use zafe_engine::Status;
use zeroize::Zeroizing;

use super::users::{self, User};
use crate::caller::Caller;
use crate::core::{Core, Operation, Request, Response};
use crate::error::{Error, Result};

const DIGITS: usize = 6;
const STEP_SECS: u64 = 30;
const SECRET_BYTES: usize = 20;
/// How many recovery codes a confirmation hands out.
const RECOVERY_CODES: usize = 10;
const ISSUER: &str = "Zafe";
/// Verification attempts per account (all addresses): 5 a minute.
const ATTEMPTS_PER_MINUTE: u32 = 5;

/// The second factor in a user record. `Debug` shows no secret, and no
/// answer after enrolment contains the secret or a recovery code (only
/// their hashes are kept).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TotpState {
    /// Hex of the shared secret.
    secret: String,
    /// Off until a code proves the person's app has the secret.
    pub(crate) confirmed: bool,
    /// The last time step a code was accepted for; only later ones pass.
    last_step: u64,
    /// Hashes of the unused recovery codes.
    recovery_hashes: Vec<String>,
    /// When enrolment started, in Unix seconds.
    pub(crate) enrolled_at: i64,
}

impl std::fmt::Debug for TotpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpState")
            .field("confirmed", &self.confirmed)
            .field("recovery_codes_left", &self.recovery_hashes.len())
            .finish_non_exhaustive()
    }
}

impl TotpState {
    /// How many recovery codes are still unused.
    pub(crate) fn recovery_codes_left(&self) -> usize {
        self.recovery_hashes.len()
    }
}

/// Per-account limit on code checks (login, confirm, disable): 5 a minute,
/// from all addresses together; past it, [`Error::TooManyRequests`].
pub(crate) struct TotpLimits {
    limiter: governor::DefaultKeyedRateLimiter<String>,
}

impl Default for TotpLimits {
    fn default() -> Self {
        let quota =
            governor::Quota::per_minute(NonZeroU32::new(ATTEMPTS_PER_MINUTE).expect("non-zero"));
        Self {
            limiter: governor::RateLimiter::keyed(quota),
        }
    }
}

impl TotpLimits {
    fn check(&self, user_id: &str) -> Result<()> {
        // Bounded memory: forget accounts whose allowance is full again.
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&user_id.to_string()).map_err(|_| {
            Error::TooManyRequests(
                "too many second-factor attempts; wait a minute and try again".into(),
            )
        })
    }
}

fn totp_for(secret_hex: &str, account: &str) -> Result<TOTP> {
    let secret = Zeroizing::new(
        hex::decode(secret_hex).map_err(|_| Error::Internal("stored TOTP secret".into()))?,
    );
    // The label may not contain ':'; an email address never does.
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        1,
        STEP_SECS,
        secret.to_vec(),
        Some(ISSUER.into()),
        account.replace(':', "_"),
    )
    .map_err(|_| Error::Internal("TOTP parameters".into()))
}

/// The time step a code is valid for (now, or one step either side), or
/// `None`. Compared in constant time.
fn matching_step(totp: &TOTP, code: &str, now: u64) -> Option<u64> {
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = now / STEP_SECS;
    let mut found = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = totp.generate(step * STEP_SECS);
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

fn recovery_hash(user_id: &str, code: &str) -> String {
    hex::encode(Sha256::digest(zafe_core::encoding::fields(&[
        b"zafe/v1/totp-recovery-code",
        user_id.as_bytes(),
        normalize_recovery(code).as_bytes(),
    ])))
}

fn normalize_recovery(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Ten codes of 10 characters (50 random bits each), `xxxxx-xxxxx`.
fn new_recovery_codes() -> Vec<Zeroizing<String>> {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    (0..RECOVERY_CODES)
        .map(|_| {
            let bytes = random_bytes::<10>();
            let chars: String = bytes
                .iter()
                .map(|b| ALPHABET[(*b & 31) as usize] as char)
                .collect();
            Zeroizing::new(format!("{}-{}", &chars[..5], &chars[5..]))
        })
        .collect()
}

/// Whether this account must give a second factor to log in.
pub(crate) fn required(user: &User) -> bool {
    user.totp.as_ref().is_some_and(|t| t.confirmed)
}

/// Checks `code` (a TOTP code or a recovery code) against a confirmed
/// second factor and uses it up, atomically with the check. A wrong code,
/// an account without a confirmed factor or a code already used is a 400;
/// too many attempts is [`Error::TooManyRequests`].
pub(crate) async fn verify_and_use(core: &Core, user_id: &str, code: &str) -> Result<()> {
    core.people.totp_limits.check(user_id)?;
    let code = code.trim();
    let now = core.now_secs().max(0) as u64;
    // A refused code makes the closure fail, so nothing is written.
    users::update(&core.barrier, user_id, core.now_secs(), |u| {
        let wrong = || Error::bad_request("invalid TOTP or recovery code");
        let (email, id) = (u.email.clone(), u.id.clone());
        let state = u.totp.as_mut().filter(|t| t.confirmed).ok_or_else(wrong)?;
        if code.len() == DIGITS {
            match matching_step(&totp_for(&state.secret, &email)?, code, now) {
                Some(step) if step > state.last_step => state.last_step = step,
                Some(_) => {
                    return Err(Error::bad_request(
                        "this TOTP code was already used; wait for the next one",
                    ));
                }
                None => return Err(wrong()),
            }
        } else {
            let hash = recovery_hash(&id, code);
            let before = state.recovery_hashes.len();
            state
                .recovery_hashes
                .retain(|h| !constant_time_eq(h.as_bytes(), hash.as_bytes()));
            if state.recovery_hashes.len() == before {
                return Err(wrong());
            }
        }
        Ok(())
    })
    .await
    .map(|_| ())
}

/// For `auth/user/login`, after the password was right: `None` to go on,
/// or the `mfa_required` answer when no code was given.
pub(crate) async fn second_factor(
    core: &Core,
    req: &Request,
    user: &User,
) -> Result<Option<Response>> {
    if !required(user) {
        return Ok(None);
    }
    let code = req
        .field("totp_code")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty());
    let Some(code) = code else {
        return Ok(Some(Response::Json(
            Status::BAD_REQUEST,
            json!({ "errors": ["a TOTP code is required"], "mfa_required": true }),
        )));
    };
    verify_and_use(core, &user.id, code).await?;
    Ok(None)
}

/// `auth/user/totp/<enroll|confirm|disable>`, for a person's own session.
pub(crate) async fn handle(
    core: &Arc<Core>,
    rest: &str,
    req: &Request,
    caller: Option<&Caller>,
) -> Result<Response> {
    let me = caller
        .and_then(|c| c.person())
        .ok_or_else(|| Error::bad_request("this endpoint needs a person's session token"))?;
    if req.operation != Operation::Write {
        return Err(Error::MethodNotAllowed("unsupported operation".into()));
    }
    let data = match rest.trim_matches('/') {
        "enroll" => enroll(core, req, &me.user_id, &me.email).await?,
        "confirm" => confirm(core, req, &me.user_id).await?,
        "disable" => disable(core, req, &me.user_id, &me.email).await?,
        _ => return Err(Error::NotFound("unsupported path".into())),
    };
    Ok(Response::data(data))
}

fn field<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.field(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

async fn check_password(core: &Core, req: &Request, email: &str) -> Result<()> {
    let password =
        field(req, "password").ok_or_else(|| Error::bad_request("password is required"))?;
    let password = super::password::Password::new(password);
    super::api::verify_password_login(core, email, &password, req.client_ip)
        .await
        .map(|_| ())
        .map_err(|e| match e {
            Error::BadRequest(_) => Error::bad_request("the password is wrong"),
            other => other,
        })
}

async fn enroll(core: &Core, req: &Request, user_id: &str, email: &str) -> Result<Value> {
    let (user, _) = users::read(&core.barrier, user_id)
        .await?
        .ok_or(Error::PermissionDenied)?;
    if user.password_hash.is_none() {
        return Err(Error::bad_request(
            "TOTP is for password accounts; OIDC accounts use their identity provider's second factor",
        ));
    }
    if required(&user) {
        return Err(Error::bad_request(
            "TOTP is already on for this account; disable it first to enrol a new device",
        ));
    }
    // A stolen session alone must not be able to lock the owner out.
    check_password(core, req, email).await?;
    let secret = Zeroizing::new(hex::encode(random_bytes::<SECRET_BYTES>()));
    let state = TotpState {
        secret: secret.to_string(),
        confirmed: false,
        last_step: 0,
        recovery_hashes: Vec::new(),
        enrolled_at: core.now_secs(),
    };
    users::update(&core.barrier, user_id, core.now_secs(), |u| {
        if required(u) {
            return Err(Error::bad_request("TOTP is already on for this account"));
        }
        u.totp = Some(state.clone());
        Ok(())
    })
    .await?;
    let totp = totp_for(&secret, email)?;
    let uri = Zeroizing::new(totp.get_url());
    let base32 = Zeroizing::new(totp.get_secret_base32());
    Ok(json!({
        "otpauth_uri": uri.as_str(),
        "secret": base32.as_str(),
        "issuer": ISSUER,
        "account": email,
        "algorithm": "SHA1",
        "digits": DIGITS,
        "period": STEP_SECS,
    }))
}

async fn confirm(core: &Core, req: &Request, user_id: &str) -> Result<Value> {
    let code = field(req, "code").ok_or_else(|| Error::bad_request("code is required"))?;
    core.people.totp_limits.check(user_id)?;
    let codes = new_recovery_codes();
    let hashes: Vec<String> = codes.iter().map(|c| recovery_hash(user_id, c)).collect();
    let now = core.now_secs().max(0) as u64;
    users::update(&core.barrier, user_id, core.now_secs(), |u| {
        let email = u.email.clone();
        let state =
            u.totp.as_mut().filter(|t| !t.confirmed).ok_or_else(|| {
                Error::bad_request("no TOTP enrolment is waiting: run enroll first")
            })?;
        let step = matching_step(&totp_for(&state.secret, &email)?, code.trim(), now)
            .ok_or_else(|| Error::bad_request("invalid TOTP code"))?;
        state.confirmed = true;
        state.last_step = step;
        state.recovery_hashes = hashes.clone();
        Ok(())
    })
    .await?;
    let shown: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    Ok(json!({ "enabled": true, "recovery_codes": shown }))
}

async fn disable(core: &Core, req: &Request, user_id: &str, email: &str) -> Result<Value> {
    match (field(req, "code"), field(req, "password")) {
        (Some(code), _) => verify_and_use(core, user_id, code).await?,
        (None, Some(_)) => check_password(core, req, email).await?,
        (None, None) => {
            return Err(Error::bad_request(
                "a current TOTP code (code) or the password (password) is required",
            ));
        }
    }
    users::update(&core.barrier, user_id, core.now_secs(), |u| {
        u.totp = None;
        Ok(())
    })
    .await?;
    Ok(json!({ "enabled": false }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_rfc_6238_and_the_window_is_one_step() {
        // RFC 6238 appendix B, SHA-1 secret "12345678901234567890".
        let totp = totp_for(&hex::encode(b"12345678901234567890"), "a@example.com").unwrap();
        assert_eq!(totp.generate(59), "287082");
        assert_eq!(matching_step(&totp, "287082", 59), Some(1));
        assert_eq!(matching_step(&totp, "287082", 59 + 30), Some(1));
        assert_eq!(matching_step(&totp, "287082", 59 + 60), None);
        assert_eq!(matching_step(&totp, "28708", 59), None);
        assert_eq!(matching_step(&totp, "28708a", 59), None);
    }

    #[test]
    fn recovery_codes_are_random_and_hash_per_user() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let unique: std::collections::HashSet<&str> = codes.iter().map(|c| c.as_str()).collect();
        assert_eq!(unique.len(), RECOVERY_CODES);
        assert_eq!(
            recovery_hash("u1", &codes[0]),
            recovery_hash("u1", &codes[0].to_uppercase().replace('-', " "))
        );
        assert_ne!(
            recovery_hash("u1", &codes[0]),
            recovery_hash("u2", &codes[0])
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let s = TotpState {
            secret: "deadbeef".into(),
            confirmed: true,
            last_step: 1,
            recovery_hashes: vec!["abc".into()],
            enrolled_at: 0,
        };
        assert!(!format!("{s:?}").contains("deadbeef"));
    }
}
