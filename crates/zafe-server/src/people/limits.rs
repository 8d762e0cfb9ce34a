//! Login rate limits (R-AUTH-3): credential stuffing is slowed down without
//! handing an attacker a way to lock the owner out of their own account.
//!
//! Three checks, in this order, before any password is hashed:
//!
//! 1. **Back-off per (account, client address)**: after
//!    `backoff_after_failures` failures from one address on one account,
//!    each further attempt from that address must wait 1 s, 2 s, 4 s, ...
//!    up to `max_backoff_secs` (never longer). A success clears it. It only
//!    slows the address that keeps failing: the owner elsewhere is unaffected.
//! 2. **Per client address** (governor, GCRA): at most `per_ip_per_minute`
//!    attempts a minute from one address over all accounts, which stops one
//!    machine from spraying many accounts.
//! 3. **Per account, all addresses together** (governor): at most
//!    `per_account_per_minute`, which stops a botnet from trying one account
//!    from thousands of addresses. Addresses this account has logged in
//!    from successfully (remembered in memory, a few per account) are
//!    exempt, so a distributed flood on an account does not keep its owner
//!    out; a new address waits at most until the flood stops plus one
//!    refill interval.
//!
//! Every check keys on the email address as typed (normalised), never on
//! whether the account exists, so limits reveal nothing about which
//! accounts exist. A refused attempt gets the same answer as a wrong
//! password, after about as long as a real verification takes.
//!
//! State is in memory, per server process, bounded: entries expire and the
//! maps are pruned when they grow past `MAX_TRACKED`. Accounts are keyed by
//! a SHA-256 of the address typed, so a flood of huge made-up addresses
//! costs 32 bytes per entry, and no address is kept in memory in clear.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use super::config::PasswordConfig;

/// Most (account, address) pairs and accounts tracked at once.
const MAX_TRACKED: usize = 100_000;
/// Addresses remembered per account as known-good.
const KNOWN_PER_ACCOUNT: usize = 8;

/// Why an attempt was refused (for logs; the caller sees nothing of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Too many recent failures from this address on this account: wait.
    BackOff,
    /// Too many attempts from this address this minute (all accounts).
    PerAddress,
    /// Too many attempts on this account this minute, from addresses it has
    /// not logged in from before.
    PerAccount,
}

struct Failures {
    count: u32,
    /// No attempt from this address on this account before then.
    until: Instant,
    last: Instant,
}

/// Login rate limits and back-off, in memory and per node: per address,
/// per account (addresses the account logged in from before are exempt),
/// and exponential back-off per (account, address) after repeated failures.
/// Accounts are keyed by a SHA-256 of the name, not the name itself.
pub struct LoginLimits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_account: DefaultKeyedRateLimiter<AccountKey>,
    failures: Mutex<HashMap<(AccountKey, IpAddr), Failures>>,
    known: Mutex<HashMap<AccountKey, Vec<IpAddr>>>,
    backoff_after: u32,
    max_backoff: Duration,
    checks: AtomicU64,
}

type AccountKey = [u8; 32];

fn account_key(account: &str) -> AccountKey {
    Sha256::digest(account.as_bytes()).into()
}

fn per_minute(n: u32) -> Quota {
    let n = NonZeroU32::new(n.max(1)).expect("at least one");
    Quota::per_minute(n).allow_burst(n)
}

impl LoginLimits {
    /// Limits as `[auth.password]` sets them.
    pub(crate) fn new(config: &PasswordConfig) -> Self {
        Self {
            per_ip: RateLimiter::keyed(per_minute(config.per_ip_per_minute)),
            per_account: RateLimiter::keyed(per_minute(config.per_account_per_minute)),
            failures: Mutex::new(HashMap::new()),
            known: Mutex::new(HashMap::new()),
            backoff_after: config.backoff_after_failures,
            max_backoff: Duration::from_secs(config.max_backoff_secs),
            checks: AtomicU64::new(0),
        }
    }

    /// Whether an attempt on `account` from `ip` may go ahead now.
    pub fn check(&self, account: &str, ip: IpAddr) -> Result<(), Limited> {
        let account = account_key(account);
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.prune();
        }
        let now = Instant::now();
        if self
            .failures
            .lock()
            .get(&(account, ip))
            .is_some_and(|f| now < f.until)
        {
            return Err(Limited::BackOff);
        }
        self.per_ip
            .check_key(&ip)
            .map_err(|_| Limited::PerAddress)?;
        if !self.is_known(&account, ip) {
            self.per_account
                .check_key(&account)
                .map_err(|_| Limited::PerAccount)?;
        }
        Ok(())
    }

    /// A failed attempt: counts towards the back-off of this address.
    pub fn failed(&self, account: &str, ip: IpAddr) {
        let account = account_key(account);
        let now = Instant::now();
        let mut failures = self.failures.lock();
        let entry = failures.entry((account, ip)).or_insert(Failures {
            count: 0,
            until: now,
            last: now,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        if entry.count >= self.backoff_after {
            let doublings = (entry.count - self.backoff_after).min(30);
            let wait = Duration::from_secs(1u64 << doublings).min(self.max_backoff);
            entry.until = now + wait;
        }
    }

    /// A successful login: clears the back-off and remembers the address.
    pub fn succeeded(&self, account: &str, ip: IpAddr) {
        let account = account_key(account);
        self.failures.lock().remove(&(account, ip));
        let mut known = self.known.lock();
        if known.len() >= MAX_TRACKED && !known.contains_key(&account) {
            // Forgetting is safe: a forgotten address is merely not exempt.
            known.clear();
        }
        let addresses = known.entry(account).or_default();
        addresses.retain(|a| *a != ip);
        addresses.push(ip);
        if addresses.len() > KNOWN_PER_ACCOUNT {
            addresses.remove(0);
        }
    }

    fn is_known(&self, account: &AccountKey, ip: IpAddr) -> bool {
        self.known
            .lock()
            .get(account)
            .is_some_and(|a| a.contains(&ip))
    }

    /// Drops state that no longer limits anything.
    fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_account.retain_recent();
        let now = Instant::now();
        let horizon = self.max_backoff.max(Duration::from_secs(600));
        let mut failures = self.failures.lock();
        failures.retain(|_, f| now < f.until || now.duration_since(f.last) < horizon);
        if failures.len() > MAX_TRACKED {
            // Under a flood of distinct pairs, keep only those backing off.
            failures.retain(|_, f| now < f.until);
        }
    }
}

#[cfg(test)]
impl LoginLimits {
    /// Holds the limits' locks, for the test that a panic cannot wedge the server.
    pub(crate) fn hold_locks(&self) -> impl Sized + '_ {
        (self.failures.lock(), self.known.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: u32, per_account: u32) -> LoginLimits {
        LoginLimits::new(&PasswordConfig {
            per_ip_per_minute: per_ip,
            per_account_per_minute: per_account,
            backoff_after_failures: 3,
            max_backoff_secs: 4,
            ..PasswordConfig::default()
        })
    }

    #[test]
    fn back_off_grows_is_capped_and_clears_on_success() {
        let l = limits(1000, 1000);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            l.check("a@x", ip).unwrap();
            l.failed("a@x", ip);
        }
        assert_eq!(l.check("a@x", ip), Err(Limited::BackOff));
        // Only that address, only that account.
        assert!(l.check("a@x", other).is_ok());
        assert!(l.check("b@x", ip).is_ok());
        for _ in 0..20 {
            l.failed("a@x", ip);
        }
        let until = l.failures.lock()[&(account_key("a@x"), ip)].until;
        assert!(until <= Instant::now() + Duration::from_secs(4), "capped");
        l.succeeded("a@x", ip);
        assert!(l.check("a@x", ip).is_ok());
    }

    #[test]
    fn known_addresses_are_exempt_from_the_account_limit() {
        let l = limits(1000, 3);
        let owner: IpAddr = "198.51.100.7".parse().unwrap();
        l.succeeded("a@x", owner);
        for i in 0..10u8 {
            let _ = l.check("a@x", IpAddr::from([203, 0, 113, i]));
        }
        assert_eq!(
            l.check("a@x", "203.0.113.200".parse().unwrap()),
            Err(Limited::PerAccount)
        );
        assert!(l.check("a@x", owner).is_ok());
    }

    #[test]
    fn one_address_is_limited_over_all_accounts() {
        let l = limits(5, 1000);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for i in 0..5 {
            l.check(&format!("u{i}@x"), ip).unwrap();
        }
        assert_eq!(l.check("u9@x", ip), Err(Limited::PerAddress));
    }
}
