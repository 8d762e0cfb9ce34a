//! People: user accounts, their sessions, and how they log in
//! (docs/design/people-and-workflow.md; R-AUTH-2..6, R-AUTH-8, R-AUTH-13).
//!
//! - [`users`]: the user store (records and the email index);
//! - [`password`]: the password policy and Argon2id hashing;
//! - `sessions`: access/refresh token families, rotation, revocation;
//! - [`limits`]: login rate limits and back-off;
//! - [`setup`]: the first-run setup link and invitations;
//! - `api`: the HTTP handlers behind the routes in `sys::ROUTES`;
//! - [`oidc`] and `oidc_accounts`: single sign-on, and the accounts it
//!   creates or links;
//! - `totp`: the second factor (authenticator codes and recovery codes).
//!
//! The core holds one [`People`] (hasher, limits) and, while unsealed, the
//! password pepper. Session tokens are hashed with the token store's key.

pub(crate) mod api;
pub mod config;
pub mod limits;
pub mod password;
pub(crate) mod sessions;
pub mod setup;
pub mod users;

use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

use zafe_core::secret::SecretKey;

use crate::error::Result;

pub mod oidc;
pub mod oidc_accounts;
pub mod totp;

/// Who a session belongs to, as the core sees it for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserCaller {
    /// The user's id (a UUID).
    pub(crate) user_id: String,
    /// Lower-cased.
    pub(crate) email: String,
    /// A server administrator: the session carries the `root` policy.
    pub(crate) admin: bool,
    /// The session family the access token belongs to.
    pub(crate) session_id: String,
}

/// Server-wide state for people: built once from the configuration.
pub struct People {
    /// Argon2id hashing, with its bounded thread pool.
    pub(crate) hasher: password::Hasher,
    /// Password login rate limits and back-off.
    pub(crate) limits: limits::LoginLimits,
    /// Per-account limit on TOTP and recovery code checks.
    pub(crate) totp_limits: totp::TotpLimits,
    /// The configured password pepper (`ZAFE_PASSWORD_PEPPER`), if any;
    /// otherwise the core derives one from the keyring at unseal.
    configured_pepper: OnceLock<SecretKey>,
    /// The setup link is printed at most once per process.
    pub(crate) setup_announced: AtomicBool,
}

impl People {
    /// Builds the hasher and limits from `[auth]`; an error if the Argon2
    /// parameters are invalid.
    pub(crate) fn new(config: &crate::config::AuthConfig) -> Result<Self> {
        Ok(Self {
            hasher: password::Hasher::new(&config.password)?,
            limits: limits::LoginLimits::new(&config.password),
            totp_limits: totp::TotpLimits::default(),
            configured_pepper: OnceLock::new(),
            setup_announced: AtomicBool::new(false),
        })
    }

    /// Sets the configured pepper; only before the first unseal matters,
    /// and only the first call counts.
    pub(crate) fn set_configured_pepper(&self, pepper: SecretKey) {
        let _ = self.configured_pepper.set(pepper);
    }

    /// The Argon2 secret: from the configured pepper, or from the keyring.
    pub(crate) fn pepper_from(&self, keyring: &zafe_core::keyring::Keyring) -> SecretKey {
        use zafe_core::keyring::purpose::PASSWORD_PEPPER;
        match self.configured_pepper.get() {
            Some(p) => zafe_core::crypto::derive_key(p.expose(), PASSWORD_PEPPER),
            None => keyring.derive(PASSWORD_PEPPER),
        }
    }
}
