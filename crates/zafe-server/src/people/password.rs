//! Passwords (R-AUTH-2, R-AUTH-3): the policy new passwords must meet, and
//! Argon2id hashing with a per-user salt and the server's pepper.
//!
//! - The pepper is Argon2's secret input (`K`), so a stolen database alone
//!   cannot be attacked offline: the pepper lives in configuration or is
//!   derived from the keyring, never in storage.
//! - Hashing runs on a fixed pool of `max_concurrent_hashes` threads, each
//!   with one Argon2 memory block of `m_cost` KiB that it allocates at its
//!   first hash and reuses for every later one. A login flood queues (in
//!   order) instead of starving the runtime, and memory stays bounded by
//!   threads × `m_cost`: a fresh allocation per hash on ever-changing
//!   threads left each thread's allocator arena holding its 19 MiB, and a
//!   flood of 25 logins grew a server from 17 MB to 626 MB for good.
//! - An unknown user costs exactly what a known one does: [`Hasher::verify`]
//!   is given a dummy hash made with the same parameters, and
//!   `Hasher::verify_dummy` spends the same work on it.
//! - Hashes made with older parameters still verify (the PHC string carries
//!   them) and `Hasher::needs_rehash` says when to re-hash after a login.

use parking_lot::Mutex;
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use zafe_core::secret::SecretKey;
use zeroize::{Zeroize, Zeroizing};

use super::config::PasswordConfig;
use crate::error::{Error, Result};

/// Shortest password accepted, in characters.
pub(crate) const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in bytes (bounds the hashing work an
/// attacker can ask for).
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;

const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// A password in memory: zeroized on drop, never printed.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Takes ownership of the text; it is zeroized when the `Password` drops.
    pub fn new(text: impl Into<String>) -> Self {
        Self(Zeroizing::new(text.into()))
    }

    /// The password itself, to check or hash. Never log or return it.
    pub(crate) fn expose(&self) -> &str {
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
pub(crate) fn check_policy(password: &str, email: &str) -> Result<()> {
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
    pool: Pool,
    /// A hash of a random password with the current parameters, verified
    /// against when the account does not exist (made on first use).
    dummy: OnceLock<String>,
    /// Recent verification time, for answering rate-limited attempts after
    /// a comparable wait.
    typical: Mutex<Duration>,
}

impl Hasher {
    /// A hasher with `config`'s Argon2id costs and pool size; an internal error
    /// if the costs are not valid Argon2 parameters.
    pub(crate) fn new(config: &PasswordConfig) -> Result<Self> {
        let params = Params::new(config.m_cost, config.t_cost, config.p_cost, None)
            .map_err(|e| Error::Internal(format!("invalid Argon2 parameters: {e}")))?;
        let threads = match config.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let pool = Pool::new(threads, params.block_count())?;
        Ok(Self {
            params,
            pool,
            dummy: OnceLock::new(),
            typical: Mutex::new(Duration::from_millis(50)),
        })
    }

    /// A new PHC string for `password`, with a fresh 128-bit salt.
    pub async fn hash(&self, pepper: &SecretKey, password: &Password) -> Result<String> {
        let pepper = pepper.duplicate();
        let password = Zeroizing::new(password.expose().to_string());
        let params = self.params.clone();
        let failed = || Error::Internal("password hashing failed".into());
        self.pool
            .run(move |memory| {
                let salt = SaltString::encode_b64(&zafe_core::crypto::random_bytes::<16>())
                    .expect("16 bytes is a valid salt");
                let mut salt_buf = [0u8; 64];
                let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|_| failed())?;
                let mut out = Zeroizing::new(vec![0u8; Params::DEFAULT_OUTPUT_LEN]);
                let argon2 = Argon2::new_with_secret(
                    pepper.expose(),
                    Algorithm::Argon2id,
                    Version::V0x13,
                    params.clone(),
                )
                .map_err(|_| failed())?;
                compute(
                    &argon2,
                    &params,
                    password.as_bytes(),
                    salt_bytes,
                    &mut out,
                    memory,
                )
                .map_err(|_| failed())?;
                let phc = PasswordHash {
                    algorithm: Algorithm::Argon2id.ident(),
                    version: Some(Version::V0x13.into()),
                    params: ParamsString::try_from(&params).map_err(|_| failed())?,
                    salt: Some(salt.as_salt()),
                    hash: Some(Output::new(&out).map_err(|_| failed())?),
                };
                Ok(phc.to_string())
            })
            .await?
    }

    /// Whether `password` matches `phc` (compared in constant time by the
    /// password-hash crate's `Output`). A malformed stored hash is an
    /// integrity error. Hashes made with other parameters verify with
    /// theirs (the pool's block is used when it is large enough).
    pub async fn verify(&self, pepper: &SecretKey, password: &Password, phc: &str) -> Result<bool> {
        let pepper = pepper.duplicate();
        let password = Zeroizing::new(password.expose().to_string());
        let phc = phc.to_string();
        let started = Instant::now();
        let matched = self
            .pool
            .run(move |memory| {
                let integrity = || Error::Integrity {
                    key: "sys/people/user".into(),
                };
                let parsed = PasswordHash::new(&phc).map_err(|_| integrity())?;
                let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|_| integrity())?;
                let version = match parsed.version {
                    Some(v) => Version::try_from(v).map_err(|_| integrity())?,
                    None => Version::default(),
                };
                let params = Params::try_from(&parsed).map_err(|_| integrity())?;
                let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
                    return Err(integrity());
                };
                let mut salt_buf = [0u8; 64];
                let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|_| integrity())?;
                let argon2 =
                    Argon2::new_with_secret(pepper.expose(), algorithm, version, params.clone())
                        .map_err(|_| integrity())?;
                let mut out = Zeroizing::new(vec![0u8; expected.len()]);
                compute(
                    &argon2,
                    &params,
                    password.as_bytes(),
                    salt_bytes,
                    &mut out,
                    memory,
                )
                .map_err(|_| Error::Internal("password hashing failed".into()))?;
                let computed = Output::new(&out).map_err(|_| integrity())?;
                Ok::<_, Error>(computed == expected)
            })
            .await??;
        self.observe(started.elapsed());
        Ok(matched)
    }

    /// The same work as [`Self::verify`] on an account that does not exist,
    /// so that the answer takes as long (lessons.md: 248 ms against 2 ms).
    pub(crate) async fn verify_dummy(&self, pepper: &SecretKey, password: &Password) -> Result<()> {
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
    pub(crate) fn needs_rehash(&self, phc: &str) -> bool {
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
    pub(crate) fn typical_verify_time(&self) -> Duration {
        *self.typical.lock()
    }

    fn observe(&self, took: Duration) {
        let mut typical = self.typical.lock();
        *typical = (*typical * 7 + took) / 8;
    }
}

/// Argon2 into `out`, in the worker's `memory` when it is large enough (it
/// is for every hash made with the configured parameters) and in a block of
/// its own otherwise (a hash stored with a larger `m_cost` than today's).
/// The memory is wiped afterwards: it is derived from the password.
fn compute(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: &mut [Block],
) -> argon2::Result<()> {
    let needed = params.block_count();
    if needed > memory.len() {
        let mut own = vec![Block::default(); needed];
        let result = argon2.hash_password_into_with_memory(password, salt, out, &mut own[..]);
        own.iter_mut().for_each(Zeroize::zeroize);
        return result;
    }
    let memory = &mut memory[..needed];
    let result = argon2.hash_password_into_with_memory(password, salt, out, &mut *memory);
    memory.iter_mut().for_each(Zeroize::zeroize);
    result
}

/// One Argon2 computation, given the worker's memory block.
type Job = Box<dyn FnOnce(&mut [Block]) + Send>;

/// A fixed set of threads that run Argon2, each owning one memory block of
/// the configured size, fed in order through a channel.
struct Pool {
    jobs: mpsc::Sender<Job>,
}

impl Pool {
    fn new(threads: usize, blocks: usize) -> Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("zafe-argon2-{n}"))
                .spawn(move || {
                    // Allocated at the first hash, then kept and reused.
                    let mut memory: Vec<Block> = Vec::new();
                    loop {
                        let next = queue.lock().recv();
                        // Err: the Hasher (and its sender) is gone.
                        let Ok(job) = next else { return };
                        if memory.len() < blocks {
                            memory = vec![Block::default(); blocks];
                        }
                        // A panic loses that one answer, never the thread.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            job(&mut memory)
                        }));
                    }
                })
                .map_err(|e| Error::Internal(format!("cannot start password hashing: {e}")))?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on a pool thread and waits for its answer.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> Result<T> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // Nobody waits any more (the client went away): skip the work.
            if !answer.is_closed() {
                let _ = answer.send(work(memory));
            }
        });
        self.jobs
            .send(job)
            .map_err(|_| Error::Internal("password hashing is shut down".into()))?;
        answered
            .await
            .map_err(|_| Error::Internal("password hashing failed".into()))
    }
}

#[cfg(test)]
impl Hasher {
    /// Holds the hasher's timing lock, for the test that a panic cannot wedge the server.
    pub(crate) fn hold_locks(&self) -> impl Sized + '_ {
        self.typical.lock()
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
