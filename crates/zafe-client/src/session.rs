//! A person's session on this machine: the access token (`zafe_at_`) and
//! the refresh token (`zafe_rt_`) from `zafe login --email`.
//!
//! Where they are kept, in order of preference:
//!
//! 1. the OS credential store on macOS (Keychain) and Windows (Credential
//!    Manager), one entry per configuration directory and server address,
//!    unless `ZAFE_KEYRING=off`;
//! 2. otherwise (Linux, or the store refused), files readable by the owner
//!    only: the access token in the usual token file (`<config_dir>/token`)
//!    and the refresh token in `<config_dir>/refresh-token`.
//!
//! Linux has no credential store that fits a command-line tool: the kernel
//! keyring is scoped to one login session (a session stored from one
//! terminal is invisible to another ssh login or a cron job, which we saw
//! happen), and Secret Service needs a desktop D-Bus daemon.
//!
//! Reading prefers the credential store too, so a session there wins over
//! an older token file; `zafe logout` and a token login clear both places.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::{Token, read_token_file, save_token, token_file, write_private};
use crate::error::{Error, Result};

const SERVICE: &str = "zafe";

/// Both tokens of a session. `Debug` shows neither.
#[derive(Clone)]
pub struct Session {
    /// The short-lived access token (`zafe_at_`), sent with requests.
    pub access: Token,
    /// The refresh token (`zafe_rt_`), sent only to get a new pair.
    pub refresh: Token,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(<redacted>)")
    }
}

/// Where a session was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// In the OS credential store (macOS Keychain, Windows Credential
    /// Manager).
    Keyring,
    /// In owner-only files; the path is the access token's file (the refresh
    /// token is beside it, in `refresh-token`).
    Files(PathBuf),
}

#[derive(Serialize, Deserialize)]
struct Stashed {
    access_token: String,
    refresh_token: String,
}

pub(crate) fn refresh_token_file(config_dir: &Path) -> PathBuf {
    config_dir.join("refresh-token")
}

#[cfg(any(target_os = "macos", target_os = "windows"))]
fn keyring_enabled() -> bool {
    std::env::var("ZAFE_KEYRING").map_or(true, |v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false" | "no"
        )
    })
}

/// The credential store, where there is a usable one.
trait Store {
    fn set_password(&self, text: &str) -> bool;
    fn get_password(&self) -> Option<String>;
    fn delete_credential(&self);
}

#[cfg(any(target_os = "macos", target_os = "windows"))]
impl Store for keyring::Entry {
    fn set_password(&self, text: &str) -> bool {
        keyring::Entry::set_password(self, text).is_ok()
    }
    fn get_password(&self) -> Option<String> {
        keyring::Entry::get_password(self).ok()
    }
    fn delete_credential(&self) {
        let _ = keyring::Entry::delete_credential(self);
    }
}

/// One credential per configuration directory and server address, so two
/// profiles (or two test runs) never share a session.
#[cfg(any(target_os = "macos", target_os = "windows"))]
fn keyring_entry(config_dir: &Path, addr: &str) -> Option<impl Store> {
    if !keyring_enabled() {
        return None;
    }
    keyring::Entry::new(SERVICE, &format!("{}|{addr}", config_dir.display())).ok()
}

#[cfg(not(any(target_os = "macos", target_os = "windows")))]
fn keyring_entry(_config_dir: &Path, _addr: &str) -> Option<NoStore> {
    let _ = SERVICE;
    None
}

/// No credential store on this platform.
#[cfg(not(any(target_os = "macos", target_os = "windows")))]
struct NoStore;

#[cfg(not(any(target_os = "macos", target_os = "windows")))]
impl Store for NoStore {
    fn set_password(&self, _text: &str) -> bool {
        false
    }
    fn get_password(&self) -> Option<String> {
        None
    }
    fn delete_credential(&self) {}
}

/// Stores a session; the credential store if it works, else the files.
pub fn save(config_dir: &Path, addr: &str, session: &Session) -> Result<Stored> {
    if let Some(entry) = keyring_entry(config_dir, addr) {
        let text = Zeroizing::new(
            serde_json::to_string(&Stashed {
                access_token: session.access.expose().to_string(),
                refresh_token: session.refresh.expose().to_string(),
            })
            .expect("serialisable"),
        );
        if entry.set_password(&text) {
            // Leave no older copy in the files to be picked up later.
            remove_files(config_dir);
            return Ok(Stored::Keyring);
        }
    }
    save_token(config_dir, &session.access)?;
    let path = refresh_token_file(config_dir);
    write_private(&path, session.refresh.expose().as_bytes()).map_err(|e| Error::TokenFile {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(Stored::Files(token_file(config_dir)))
}

/// The stored session for this address, if there is one.
pub fn load(config_dir: &Path, addr: &str) -> Result<Option<Session>> {
    if let Some(entry) = keyring_entry(config_dir, addr)
        && let Some(text) = entry.get_password()
    {
        let text = Zeroizing::new(text);
        if let Ok(stashed) = serde_json::from_str::<Stashed>(&text) {
            return Ok(Some(Session {
                access: Token::new(stashed.access_token),
                refresh: Token::new(stashed.refresh_token),
            }));
        }
    }
    let refresh = read_token_file(&refresh_token_file(config_dir))?;
    let access = read_token_file(&token_file(config_dir))?;
    Ok(match (access, refresh) {
        (Some(access), Some(refresh)) if access.expose().starts_with("zafe_at_") => {
            Some(Session { access, refresh })
        }
        _ => None,
    })
}

/// Forgets the session everywhere it may be.
pub fn clear(config_dir: &Path, addr: &str) {
    if let Some(entry) = keyring_entry(config_dir, addr) {
        entry.delete_credential();
    }
    remove_files(config_dir);
}

fn remove_files(config_dir: &Path) {
    let _ = std::fs::remove_file(refresh_token_file(config_dir));
    // The token file holds a session's access token only in file mode; a
    // token from `zafe login` (token method) is left alone.
    if read_token_file(&token_file(config_dir))
        .ok()
        .flatten()
        .is_some_and(|t| t.expose().starts_with("zafe_at_"))
    {
        let _ = std::fs::remove_file(token_file(config_dir));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The only `unsafe` of this crate: setting an environment variable (unsafe since Rust 2024
    // because another thread may read the environment at the same time), sound for the reason
    // below.
    #[test]
    #[allow(unsafe_code)]
    fn sessions_round_trip_through_files_when_the_keyring_is_off() {
        // SAFETY: this test alone touches ZAFE_KEYRING in this process.
        unsafe { std::env::set_var("ZAFE_KEYRING", "off") };
        let dir = tempfile::tempdir().unwrap();
        let session = Session {
            access: Token::new("zafe_at_access"),
            refresh: Token::new("zafe_rt_refresh"),
        };
        assert!(!format!("{session:?}").contains("zafe_"));
        let stored = save(dir.path(), "http://127.0.0.1:8200", &session).unwrap();
        assert_eq!(stored, Stored::Files(token_file(dir.path())));
        let loaded = load(dir.path(), "http://127.0.0.1:8200").unwrap().unwrap();
        assert_eq!(loaded.access.expose(), "zafe_at_access");
        assert_eq!(loaded.refresh.expose(), "zafe_rt_refresh");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(refresh_token_file(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        clear(dir.path(), "http://127.0.0.1:8200");
        assert!(load(dir.path(), "http://127.0.0.1:8200").unwrap().is_none());
        // A plain token in the token file survives a logout.
        save_token(dir.path(), &Token::new("zafe_s_root")).unwrap();
        clear(dir.path(), "http://127.0.0.1:8200");
        assert!(read_token_file(&token_file(dir.path())).unwrap().is_some());
    }
}
