//! The pin store: which server identity each address proved (R-ID-3).
//!
//! `<config_dir>/servers.toml` maps a normalised address to the identity
//! first seen there. A later proof for that address must name the same key;
//! one that does not is an impostor until the user says otherwise (`forget`
//! for a replaced key, `migrate` for a moved server). The decisions live in
//! `PinStore::verify_and_pin` (used by the client) and [`PinStore::migrate`],
//! which take an already-fetched proof so that they can be tested without a
//! network.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zafe_core::identity::{
    DEFAULT_MAX_SKEW_SECS, IdentityError, IdentityProof, VerifiedIdentity, verify_proof,
};

use crate::config::{addr_key, write_private};
use crate::error::{Error, Result};

/// What was recorded the first time an address proved its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The server id proven (`zs_...`).
    pub server_id: String,
    /// Standard base64 of the Ed25519 public key.
    pub public_key: String,
    /// Whether the proof covered the TLS key of the connection. Once true,
    /// an unbound proof for this address is refused as a downgrade.
    pub tls_bound: bool,
    /// When the identity was first pinned (kept when `migrate` moves the pin).
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
}

impl Pin {
    fn new(identity: &VerifiedIdentity, now: OffsetDateTime) -> Self {
        Self {
            server_id: identity.server_id.clone(),
            public_key: base64::engine::general_purpose::STANDARD.encode(identity.public_key),
            tls_bound: identity.tls_bound,
            first_seen: now,
        }
    }

    fn holds(&self, identity: &VerifiedIdentity) -> bool {
        // The id is a hash of the key, so comparing the key is the real check.
        let key = base64::engine::general_purpose::STANDARD
            .decode(&self.public_key)
            .ok();
        self.server_id == identity.server_id && key.as_deref() == Some(&identity.public_key[..])
    }

    /// [`Pin::first_seen`] as RFC 3339 text, for display.
    pub fn first_seen_rfc3339(&self) -> String {
        self.first_seen
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    }
}

/// How a verified proof related to the pin store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinEvent {
    /// It matched the existing pin.
    Matched,
    /// Nothing was pinned for the address; it is now (trust on first use).
    FirstUse,
    /// It matched, and is now TLS-bound where the pin was not; the pin was
    /// upgraded so that unbound proofs are refused from now on.
    UpgradedToTls,
}

/// The outcome of an identity check that passed. The client sends
/// credentials only on a channel whose check produced one.
#[derive(Debug, Clone)]
pub struct Checked {
    /// What the proof established.
    pub identity: VerifiedIdentity,
    /// The pin as stored after the check.
    pub pin: Pin,
    /// Whether the pin was matched, created or upgraded.
    pub event: PinEvent,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PinFile {
    #[serde(default)]
    servers: BTreeMap<String, Pin>,
}

/// The pin file, `<config_dir>/servers.toml`. Holds public keys only, no
/// secret; written atomically with mode 0600 all the same, since whoever can
/// edit it can make the client trust another server.
#[derive(Debug, Clone)]
pub struct PinStore {
    path: PathBuf,
}

impl PinStore {
    /// The store of `config_dir`; nothing is read until it is used.
    pub fn new(config_dir: &Path) -> Self {
        Self {
            path: config_dir.join("servers.toml"),
        }
    }

    /// The pin file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every pin, by normalised address.
    pub fn list(&self) -> Result<BTreeMap<String, Pin>> {
        Ok(self.load()?.servers)
    }

    /// The pin for `addr` (normalised first), if any.
    pub fn get(&self, addr: &str) -> Result<Option<Pin>> {
        Ok(self.load()?.servers.remove(&addr_key(addr)?))
    }

    /// Removes the pin for `addr`, returning it if there was one.
    pub fn forget(&self, addr: &str) -> Result<Option<Pin>> {
        let key = addr_key(addr)?;
        let mut file = self.load()?;
        let removed = file.servers.remove(&key);
        if removed.is_some() {
            self.save(&file)?;
        }
        Ok(removed)
    }

    /// Verifies `proof` (fetched from `addr` with `nonce`, over a connection
    /// whose TLS key hash was `observed_tls`) and checks it against the pin
    /// for `addr` and against `expected_id` if one was given up front.
    /// Pins on first use.
    pub(crate) fn verify_and_pin(
        &self,
        addr: &str,
        proof: &IdentityProof,
        nonce: &[u8],
        now: OffsetDateTime,
        observed_tls: Option<&[u8; 32]>,
        expected_id: Option<&str>,
    ) -> Result<Checked> {
        let addr = addr_key(addr)?;
        let mut file = self.load()?;
        let pinned = file.servers.get(&addr).cloned();

        // A proof that does not cover the TLS key is acceptable only where
        // it always was: on first use, or for a pin recorded that way (a
        // server behind a TLS-terminating proxy).
        let allow_unbound_tls = pinned.as_ref().is_none_or(|p| !p.tls_bound);
        let identity = verify_proof(
            proof,
            nonce,
            now.unix_timestamp(),
            DEFAULT_MAX_SKEW_SECS,
            observed_tls,
            allow_unbound_tls,
        )
        .map_err(|reason| match (&reason, &pinned) {
            (IdentityError::TlsNotBound, Some(pin)) => Error::TlsDowngrade {
                addr: addr.clone(),
                server_id: pin.server_id.clone(),
            },
            _ => Error::Identity {
                addr: addr.clone(),
                reason,
            },
        })?;

        if let Some(expected) = expected_id
            .map(str::trim)
            .filter(|e| *e != identity.server_id)
        {
            return Err(Error::UnexpectedServerId {
                addr,
                expected: expected.to_string(),
                presented: identity.server_id,
            });
        }

        let (pin, event) = match pinned {
            Some(pin) if !pin.holds(&identity) => {
                return Err(Error::IdentityChanged {
                    addr,
                    first_seen: pin.first_seen_rfc3339(),
                    pinned: pin.server_id,
                    presented: identity.server_id,
                });
            }
            Some(mut pin) if identity.tls_bound && !pin.tls_bound => {
                pin.tls_bound = true;
                file.servers.insert(addr, pin.clone());
                self.save(&file)?;
                (pin, PinEvent::UpgradedToTls)
            }
            Some(pin) => (pin, PinEvent::Matched),
            None => {
                let pin = Pin::new(&identity, now);
                file.servers.insert(addr, pin.clone());
                self.save(&file)?;
                (pin, PinEvent::FirstUse)
            }
        };
        Ok(Checked {
            identity,
            pin,
            event,
        })
    }

    /// Moves the pin for `old` to `new`, but only if `proof` (fetched from
    /// `new`) proves the very key pinned for `old`, at least as strongly
    /// bound to TLS as before.
    pub fn migrate(
        &self,
        old: &str,
        new: &str,
        proof: &IdentityProof,
        nonce: &[u8],
        now: OffsetDateTime,
        observed_tls: Option<&[u8; 32]>,
    ) -> Result<Pin> {
        let (old, new) = (addr_key(old)?, addr_key(new)?);
        let refuse = |reason: String| Error::MigrateRefused {
            old: old.clone(),
            new: new.clone(),
            reason,
        };
        if old == new {
            return Err(refuse("the two addresses are the same".into()));
        }
        let mut file = self.load()?;
        let Some(old_pin) = file.servers.get(&old).cloned() else {
            return Err(refuse(format!("no pin is recorded for {old}")));
        };
        let identity = verify_proof(
            proof,
            nonce,
            now.unix_timestamp(),
            DEFAULT_MAX_SKEW_SECS,
            observed_tls,
            !old_pin.tls_bound,
        )
        .map_err(|reason| match reason {
            IdentityError::TlsNotBound => refuse(format!(
                "the pin for {old} is bound to its TLS key, but the proof from {new} does not cover the TLS key \
                 on the connection (is a proxy terminating TLS?)"
            )),
            reason => Error::Identity {
                addr: new.clone(),
                reason,
            },
        })?;
        if !old_pin.holds(&identity) {
            return Err(refuse(format!(
                "{new} proves {}, but {old} is pinned to {}: it is not the same server",
                identity.server_id, old_pin.server_id
            )));
        }
        if let Some(existing) = file
            .servers
            .get(&new)
            .filter(|p| p.server_id != old_pin.server_id)
        {
            return Err(refuse(format!(
                "{new} is already pinned to another server ({}); if that is obsolete, run \
                 `zafe server-id forget {new}` first",
                existing.server_id
            )));
        }
        let pin = Pin {
            tls_bound: identity.tls_bound,
            ..old_pin
        };
        file.servers.remove(&old);
        file.servers.insert(new, pin.clone());
        self.save(&file)?;
        Ok(pin)
    }

    fn load(&self) -> Result<PinFile> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PinFile::default()),
            Err(e) => return Err(self.error(e.to_string())),
        };
        toml::from_str(&text).map_err(|e| self.error(format!("cannot parse it: {}", e.message())))
    }

    fn save(&self, file: &PinFile) -> Result<()> {
        let text = toml::to_string_pretty(file).map_err(|e| self.error(e.to_string()))?;
        let text = format!(
            "# Server identities pinned by zafe (trust on first use). Managed by `zafe server-id`.\n\n{text}"
        );
        write_private(&self.path, text.as_bytes()).map_err(|e| self.error(e.to_string()))
    }

    fn error(&self, reason: String) -> Error {
        Error::PinStore {
            path: self.path.clone(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zafe_core::identity::IdentityKey;

    const ADDR: &str = "https://zafe.example.com:8200";
    const TLS: [u8; 32] = [7; 32];
    const NONCE: &[u8] = b"a fresh nonce of 32 random bytes";

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn store() -> (tempfile::TempDir, PinStore) {
        let dir = tempfile::tempdir().unwrap();
        // A config dir that does not exist yet, to check it is created 0700.
        let store = PinStore::new(&dir.path().join("zafe"));
        (dir, store)
    }

    fn check(
        store: &PinStore,
        key: &IdentityKey,
        signed: Option<[u8; 32]>,
        seen: Option<&[u8; 32]>,
    ) -> Result<Checked> {
        let proof = key.prove(NONCE, now().unix_timestamp(), signed);
        store.verify_and_pin(ADDR, &proof, NONCE, now(), seen, None)
    }

    // R-ID-3: trust on first use, then the pin is what is checked.
    #[test]
    fn first_use_pins_and_the_pin_round_trips() {
        let (_dir, store) = store();
        let key = IdentityKey::generate();
        let first = check(&store, &key, Some(TLS), Some(&TLS)).unwrap();
        assert_eq!(first.event, PinEvent::FirstUse);
        assert!(first.pin.tls_bound);

        // Any spelling of the address finds the same pin.
        let pin = store
            .get("https://ZAFE.example.com:8200/")
            .unwrap()
            .unwrap();
        assert_eq!(pin, first.pin);
        assert_eq!(pin.server_id, key.server_id());
        assert_eq!(pin.first_seen, now());
        assert_eq!(store.list().unwrap().len(), 1);

        let again = check(&store, &key, Some(TLS), Some(&TLS)).unwrap();
        assert_eq!(again.event, PinEvent::Matched);

        assert_eq!(store.forget(ADDR).unwrap(), Some(pin));
        assert!(store.get(ADDR).unwrap().is_none());
        assert_eq!(store.forget(ADDR).unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn the_pin_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let (_dir, store) = store();
        check(&store, &IdentityKey::generate(), None, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(mode(store.path().parent().unwrap()), 0o700);
    }

    // R-ID-3: a server that proves another key is refused, with a message
    // that says what changed and the two ways out.
    #[test]
    fn a_different_identity_is_refused_with_an_actionable_message() {
        let (_dir, store) = store();
        let real = IdentityKey::generate();
        let impostor = IdentityKey::generate();
        check(&store, &real, None, None).unwrap();
        let err = check(&store, &impostor, None, None).unwrap_err();
        assert!(matches!(err, Error::IdentityChanged { .. }), "{err:?}");
        let msg = err.to_string();
        for part in [
            real.server_id().as_str(),
            impostor.server_id().as_str(),
            "impostor",
            "No credentials were sent",
            "zafe server-id forget https://zafe.example.com:8200",
            "zafe server-id migrate https://zafe.example.com:8200 <new-addr>",
        ] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
        // The pin is unchanged.
        assert_eq!(
            store.get(ADDR).unwrap().unwrap().server_id,
            real.server_id()
        );
    }

    // R-ID-3: a pin given up front (CI) must match, and is then pinned.
    #[test]
    fn an_expected_server_id_must_match() {
        let (_dir, store) = store();
        let key = IdentityKey::generate();
        let other = IdentityKey::generate().server_id();
        let proof = key.prove(NONCE, now().unix_timestamp(), None);
        let err = store
            .verify_and_pin(ADDR, &proof, NONCE, now(), None, Some(&other))
            .unwrap_err();
        assert!(matches!(err, Error::UnexpectedServerId { .. }), "{err:?}");
        assert!(
            store.get(ADDR).unwrap().is_none(),
            "a refused proof must not be pinned"
        );

        let ok = store
            .verify_and_pin(ADDR, &proof, NONCE, now(), None, Some(&key.server_id()))
            .unwrap();
        assert_eq!(ok.event, PinEvent::FirstUse);
    }

    // A proof that fails verification is never pinned.
    #[test]
    fn a_bad_proof_is_refused_and_not_pinned() {
        let (_dir, store) = store();
        let key = IdentityKey::generate();
        let proof = key.prove(b"somebody else's nonce", now().unix_timestamp(), None);
        let err = store
            .verify_and_pin(ADDR, &proof, NONCE, now(), None, None)
            .unwrap_err();
        assert!(matches!(err, Error::Identity { .. }), "{err:?}");
        assert!(err.to_string().contains("No credentials were sent"));
        assert!(store.get(ADDR).unwrap().is_none());
    }

    // R-ID-3: once a pin is TLS-bound, an unbound proof is a downgrade.
    #[test]
    fn a_tls_downgrade_is_refused() {
        let (_dir, store) = store();
        let key = IdentityKey::generate();
        check(&store, &key, Some(TLS), Some(&TLS)).unwrap();
        let err = check(&store, &key, None, Some(&TLS)).unwrap_err();
        assert!(matches!(err, Error::TlsDowngrade { .. }), "{err:?}");
        assert!(err.to_string().contains("zafe server-id forget"));
        // A relaying proxy with its own certificate is caught as well.
        let err = check(&store, &key, Some(TLS), Some(&[9; 32])).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Identity {
                    reason: IdentityError::TlsKeyMismatch,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    // Behind a TLS-terminating proxy: unbound on first use is accepted, and a
    // later bound proof upgrades the pin for good.
    #[test]
    fn an_unbound_pin_is_upgraded_by_a_bound_proof() {
        let (_dir, store) = store();
        let key = IdentityKey::generate();
        let first = check(&store, &key, None, Some(&TLS)).unwrap();
        assert!(!first.pin.tls_bound);
        assert_eq!(
            check(&store, &key, None, Some(&TLS)).unwrap().event,
            PinEvent::Matched
        );
        let up = check(&store, &key, Some(TLS), Some(&TLS)).unwrap();
        assert_eq!(up.event, PinEvent::UpgradedToTls);
        assert!(matches!(
            check(&store, &key, None, Some(&TLS)),
            Err(Error::TlsDowngrade { .. })
        ));
    }

    const NEW: &str = "https://zafe-new.example.com:8200";

    #[test]
    fn migrate_moves_the_pin_when_the_new_address_proves_the_same_key() {
        let (_dir, store) = store();
        let key = IdentityKey::generate();
        let first = check(&store, &key, Some(TLS), Some(&TLS)).unwrap();
        let proof = key.prove(NONCE, now().unix_timestamp(), Some([8; 32]));
        let moved = store
            .migrate(ADDR, NEW, &proof, NONCE, now(), Some(&[8; 32]))
            .unwrap();
        assert_eq!(moved, first.pin);
        assert!(store.get(ADDR).unwrap().is_none());
        assert_eq!(store.get(NEW).unwrap(), Some(first.pin));
    }

    // R-ID-3: a migration that points at a server that cannot prove the
    // pinned key is refused, and nothing changes.
    #[test]
    fn migrate_refuses_a_server_that_cannot_prove_the_pinned_key() {
        let (_dir, store) = store();
        let key = IdentityKey::generate();
        check(&store, &key, Some(TLS), Some(&TLS)).unwrap();
        let before = store.list().unwrap();

        let other = IdentityKey::generate();
        let proof = other.prove(NONCE, now().unix_timestamp(), Some(TLS));
        let err = store
            .migrate(ADDR, NEW, &proof, NONCE, now(), Some(&TLS))
            .unwrap_err();
        assert!(matches!(err, Error::MigrateRefused { .. }), "{err:?}");
        assert!(err.to_string().contains("not the same server"), "{err}");

        // A parrot: the pinned public key and id, signed by another key.
        let mut parrot = other.prove(NONCE, now().unix_timestamp(), Some(TLS));
        let real = key.prove(NONCE, now().unix_timestamp(), Some(TLS));
        parrot.public_key = real.public_key;
        parrot.server_id = real.server_id;
        let err = store
            .migrate(ADDR, NEW, &parrot, NONCE, now(), Some(&TLS))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Identity {
                    reason: IdentityError::BadSignature,
                    ..
                }
            ),
            "{err:?}"
        );

        // The right key, but no longer bound to TLS.
        let unbound = key.prove(NONCE, now().unix_timestamp(), None);
        let err = store
            .migrate(ADDR, NEW, &unbound, NONCE, now(), Some(&TLS))
            .unwrap_err();
        assert!(matches!(err, Error::MigrateRefused { .. }), "{err:?}");

        // Nothing pinned for the old address.
        let err = store
            .migrate(NEW, ADDR, &real_proof(&key), NONCE, now(), Some(&TLS))
            .unwrap_err();
        assert!(err.to_string().contains("no pin is recorded"), "{err}");

        assert_eq!(store.list().unwrap(), before);
    }

    #[test]
    fn migrate_does_not_overwrite_another_servers_pin() {
        let (_dir, store) = store();
        let key = IdentityKey::generate();
        check(&store, &key, Some(TLS), Some(&TLS)).unwrap();
        let other = IdentityKey::generate();
        let other_proof = other.prove(NONCE, now().unix_timestamp(), None);
        store
            .verify_and_pin(NEW, &other_proof, NONCE, now(), None, None)
            .unwrap();

        let err = store
            .migrate(ADDR, NEW, &real_proof(&key), NONCE, now(), Some(&TLS))
            .unwrap_err();
        assert!(
            err.to_string().contains("already pinned to another server"),
            "{err}"
        );
        assert_eq!(
            store.get(NEW).unwrap().unwrap().server_id,
            other.server_id()
        );
    }

    fn real_proof(key: &IdentityKey) -> IdentityProof {
        key.prove(NONCE, now().unix_timestamp(), Some(TLS))
    }
}
