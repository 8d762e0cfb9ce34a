//! Passwords (R-AUTH-2, R-AUTH-3): the policy new passwords must meet, and
//! Argon2id hashing with a per-user salt and the server's pepper.
//!
//! - The pepper is Argon2's secret input (`K`), so a stolen database alone
//!   cannot be attacked offline: the pepper lives in configuration or is
//!   derived from the keyring, never in storage.
//! - Hashing runs on Tokio's blocking threads, at most
//!   `max_concurrent_hashes` at a time (a semaphore), so a login flood
//!   queues instead of starving the runtime or exhausting memory.
//! - An unknown user costs exactly what a known one does: [`Hasher::verify`]
//!   is given a dummy hash made with the same parameters, and
//!   [`Hasher::verify_dummy`] spends the same work on it.
//! - Hashes made with older parameters still verify (the PHC string carries
//!   them) and [`Hasher::needs_rehash`] says when to re-hash after a login.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;
use zafe_core::secret::SecretKey;
use zeroize::Zeroizing;

use super::config::PasswordConfig;
use crate::error::{Error, Result};

pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_BYTES: usize = 1024;

const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// A password in memory: zeroized on drop, never printed.
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn new(text: impl Into<String>) -> Self {
        Self(Zeroizing::new(text.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Refuses passwords that are too short or long, on the common list, or
/// the account's own email address. Messages never repeat the password.
pub fn check_policy(password: &str, email: &str) -> Result<()> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::bad_request(format!(
            "the password is too long: at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::bad_request(format!(
            "the password is too short: at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let folded = password.trim().to_lowercase();
    let local_part = email.split('@').next().unwrap_or_default();
    if folded == email.to_lowercase() || folded == local_part.to_lowercase() {
        return Err(Error::bad_request(
            "the password must not be your email address",
        ));
    }
    let mut chars = folded.chars();
    let first = chars.next();
    if first.is_some() && chars.all(|c| Some(c) == first) {
        return Err(Error::bad_request(
            "the password must not repeat one character",
        ));
    }
    if is_common(&folded) {
        return Err(Error::bad_request(
            "this password is on the list of commonly used passwords; choose another",
        ));
    }
    Ok(())
}

fn is_common(folded: &str) -> bool {
    COMMON_PASSWORDS
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .any(|l| l == folded)
}

/// Hashes and verifies passwords; one per server.
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// A hash of a random password with the current parameters, verified
    /// against when the account does not exist (made on first use).
    dummy: OnceLock<String>,
    /// Recent verification time, for answering rate-limited attempts after
    /// a comparable wait.
    typical: Mutex<Duration>,
}

impl Hasher {
    pub fn new(config: &PasswordConfig) -> Result<Self> {
        let params = Params::new(config.m_cost, config.t_cost, config.p_cost, None)
            .map_err(|e| Error::Internal(format!("invalid Argon2 parameters: {e}")))?;
        let permits = match config.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(permits)),
            dummy: OnceLock::new(),
            typical: Mutex::new(Duration::from_millis(50)),
        })
    }

    fn argon2<'k>(pepper: &'k SecretKey, params: Params) -> Argon2<'k> {
        Argon2::new_with_secret(pepper.expose(), Algorithm::Argon2id, Version::V0x13, params)
            .expect("a 32-byte secret is accepted")
    }

    /// A new PHC string for `password`, with a fresh 128-bit salt.
    pub async fn hash(&self, pepper: &SecretKey, password: &Password) -> Result<String> {
        let pepper = pepper.duplicate();
        let password = Zeroizing::new(password.expose().to_string());
        let params = self.params.clone();
        self.blocking(move || {
            let salt = SaltString::encode_b64(&zafe_core::crypto::random_bytes::<16>())
                .expect("16 bytes is a valid salt");
            Self::argon2(&pepper, params)
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|_| Error::Internal("password hashing failed".into()))
        })
        .await?
    }

    /// Whether `password` matches `phc` (compared in constant time by the
    /// argon2 crate). A malformed stored hash is an integrity error.
    pub async fn verify(&self, pepper: &SecretKey, password: &Password, phc: &str) -> Result<bool> {
        let pepper = pepper.duplicate();
        let password = Zeroizing::new(password.expose().to_string());
        let phc = phc.to_string();
        let started = Instant::now();
        let matched = self
            .blocking(move || {
                let parsed = PasswordHash::new(&phc).map_err(|_| Error::Integrity {
                    key: "sys/people/user".into(),
                })?;
                let params = Params::try_from(&parsed).map_err(|_| Error::Integrity {
                    key: "sys/people/user".into(),
                })?;
                Ok::<_, Error>(
                    Self::argon2(&pepper, params)
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok(),
                )
            })
            .await??;
        self.observe(started.elapsed());
        Ok(matched)
    }

    /// The same work as [`Self::verify`] on an account that does not exist,
    /// so that the answer takes as long (lessons.md: 248 ms against 2 ms).
    pub async fn verify_dummy(&self, pepper: &SecretKey, password: &Password) -> Result<()> {
        let dummy = match self.dummy.get() {
            Some(d) => d.clone(),
            None => {
                let random = Password::new(hex::encode(zafe_core::crypto::random_bytes::<16>()));
                let made = self.hash(pepper, &random).await?;
                self.dummy.get_or_init(|| made).clone()
            }
        };
        self.verify(pepper, password, &dummy).await.map(|_| ())
    }

    /// Whether a stored hash was made with other parameters than today's.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        PasswordHash::new(phc)
            .ok()
            .and_then(|h| {
                Params::try_from(&h)
                    .ok()
                    .map(|p| (h.algorithm.as_str() == "argon2id", p))
            })
            .is_none_or(|(argon2id, p)| {
                !argon2id
                    || p.m_cost() != self.params.m_cost()
                    || p.t_cost() != self.params.t_cost()
                    || p.p_cost() != self.params.p_cost()
            })
    }

    /// How long a verification takes these days (a moving average).
    pub fn typical_verify_time(&self) -> Duration {
        *self.typical.lock().expect("typical lock")
    }

    fn observe(&self, took: Duration) {
        let mut typical = self.typical.lock().expect("typical lock");
        *typical = (*typical * 7 + took) / 8;
    }

    /// Runs CPU-heavy work on a blocking thread, holding a permit.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("password hashing is shut down".into()))?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|_| Error::Internal("password hashing failed".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Hasher {
        Hasher::new(&PasswordConfig {
            m_cost: 256,
            t_cost: 1,
            ..PasswordConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_only_with_the_same_password_and_pepper() {
        let h = cheap();
        let pepper = SecretKey::generate();
        let pw = Password::new("a perfectly fine passphrase");
        let phc = h.hash(&pepper, &pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
        assert!(h.verify(&pepper, &pw, &phc).await.unwrap());
        assert!(
            !h.verify(&pepper, &Password::new("a perfectly fine passphrasE"), &phc)
                .await
                .unwrap()
        );
        assert!(
            !h.verify(&SecretKey::generate(), &pw, &phc).await.unwrap(),
            "the pepper is part of the hash"
        );
        // Per-user salt: the same password hashes differently twice.
        assert_ne!(phc, h.hash(&pepper, &pw).await.unwrap());
        assert!(!h.needs_rehash(&phc));
        let stronger = Hasher::new(&PasswordConfig {
            m_cost: 512,
            t_cost: 1,
            ..PasswordConfig::default()
        })
        .unwrap();
        assert!(stronger.needs_rehash(&phc));
        assert!(stronger.verify(&pepper, &pw, &phc).await.unwrap());
        assert!(h.verify(&pepper, &pw, "not a hash").await.is_err());
    }

    #[test]
    fn the_policy_refuses_weak_passwords() {
        let email = "alice@example.com";
        for bad in [
            "short",
            "elevenchars",
            "password1234",
            "PassWord1234",
            "alice@example.com",
            "ALICE@EXAMPLE.COM",
            "aaaaaaaaaaaaaaaa",
            "correct horse battery staple",
        ] {
            assert!(check_policy(bad, email).is_err(), "{bad}");
        }
        assert!(check_policy(&"x".repeat(1025), email).is_err());
        assert!(check_policy("tangerine-orbit-42-quietly", email).is_ok());
        assert!(check_policy(&"xy".repeat(512), email).is_ok());
        // Twelve characters, counted as characters, not bytes.
        assert!(check_policy("ééééééééééé1", email).is_ok());
        let message = check_policy("password1234", email).unwrap_err().to_string();
        assert!(!message.contains("password1234"));
    }
}
