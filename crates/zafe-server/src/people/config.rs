//! `[auth.password]`, `[auth.sessions]` and `[auth.registration]`: how people
//! log in, how long their sessions live, and who may create an account.
//!
//! Every setting has a safe default, so an empty `[auth]` section is a
//! working configuration: OWASP's Argon2id baseline, 15-minute access
//! tokens, 24-hour refresh tokens, registration off.

use serde::Deserialize;

/// Argon2id cost and login rate limits (R-AUTH-2, R-AUTH-3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Password login can be turned off (OIDC only, R-AUTH-8).
    pub enabled: bool,
    /// Argon2id memory cost in KiB (OWASP: 19 MiB with t = 2).
    pub m_cost: u32,
    /// Argon2id iterations.
    pub t_cost: u32,
    /// Argon2id lanes.
    pub p_cost: u32,
    /// How many hashes may run at once; 0 is the number of CPUs. This many
    /// threads hash, each with one `m_cost` KiB block allocated at its first
    /// hash and reused, so memory stays within this × `m_cost` whatever the
    /// load; further logins wait their turn.
    pub max_concurrent_hashes: usize,
    /// Login attempts per client address per minute (all accounts).
    pub per_ip_per_minute: u32,
    /// Login attempts per account per minute from all addresses together.
    /// Addresses the account has logged in from before are exempt, so a
    /// distributed flood cannot lock the owner out (see `limits.rs`).
    pub per_account_per_minute: u32,
    /// Failures from one address on one account before back-off starts.
    pub backoff_after_failures: u32,
    /// The longest back-off, in seconds, however many failures.
    pub max_backoff_secs: u64,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            m_cost: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
            max_concurrent_hashes: 0,
            per_ip_per_minute: 30,
            per_account_per_minute: 20,
            backoff_after_failures: 5,
            max_backoff_secs: 300,
        }
    }
}

/// Lifetimes of sessions and one-time links (R-AUTH-4, R-AUTH-13).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Lifetime of a `zafe_at_` access token.
    pub access_ttl_secs: i64,
    /// Lifetime of a `zafe_rt_` refresh token; each refresh starts it again.
    pub refresh_ttl_secs: i64,
    /// No session outlives this, however often it is refreshed.
    pub max_session_secs: i64,
    /// Lifetime of the first-run setup link.
    pub setup_token_ttl_secs: i64,
    /// Default lifetime of an invitation.
    pub invite_ttl_secs: i64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            access_ttl_secs: 15 * 60,
            refresh_ttl_secs: 24 * 3600,
            max_session_secs: 30 * 24 * 3600,
            setup_token_ttl_secs: 15 * 60,
            invite_ttl_secs: 7 * 24 * 3600,
        }
    }
}

/// Who may create their own account (R-AUTH-8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Nobody: administrators create accounts (`zafe user create`).
    #[default]
    Off,
    /// Only with an invitation an administrator created (`zafe user invite`).
    Invite,
    /// With an invitation, or with an email address in one of `domains`.
    Domains,
}

/// `[auth.registration]`: who may create their own account.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Off (the default), invite or domains.
    pub mode: RegistrationMode,
    /// Lower-case domains, without `@`, for `mode = "domains"`.
    pub domains: Vec<String>,
}

impl PasswordConfig {
    /// Refuses Argon2 costs Argon2 does not accept and rate limits of 0.
    pub(crate) fn validate(&self) -> Result<(), String> {
        argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, None)
            .map_err(|e| format!("invalid Argon2 parameters: {e}"))?;
        if self.per_ip_per_minute == 0 || self.per_account_per_minute == 0 {
            return Err("login rate limits must be at least 1 per minute".into());
        }
        Ok(())
    }
}

impl SessionConfig {
    /// Refuses a lifetime of 0 or less.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("access_ttl_secs", self.access_ttl_secs),
            ("refresh_ttl_secs", self.refresh_ttl_secs),
            ("max_session_secs", self.max_session_secs),
            ("setup_token_ttl_secs", self.setup_token_ttl_secs),
            ("invite_ttl_secs", self.invite_ttl_secs),
        ] {
            if v <= 0 {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        Ok(())
    }
}

impl RegistrationConfig {
    /// Refuses `domains` mode without domains, and domains that are empty or
    /// hold `@` or whitespace.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.mode == RegistrationMode::Domains && self.domains.is_empty() {
            return Err("mode = \"domains\" needs at least one domain".into());
        }
        if let Some(bad) = self
            .domains
            .iter()
            .find(|d| d.is_empty() || d.contains('@') || d.chars().any(char::is_whitespace))
        {
            return Err(format!("{bad:?} is not a domain"));
        }
        Ok(())
    }

    /// Whether an email address may register without an invitation.
    pub(crate) fn allows_domain_of(&self, email: &str) -> bool {
        self.mode == RegistrationMode::Domains
            && email.rsplit_once('@').is_some_and(|(_, domain)| {
                self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
            })
    }
}
