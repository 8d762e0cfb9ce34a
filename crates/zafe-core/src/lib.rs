//! Zafe's pure core: the parts of the system that decide what is secret and how
//! it is protected, with no I/O at all, so that each can be read and tested on
//! its own.
//!
//! - [`secret`]: key material that zeroizes on drop and is kept out of swap.
//! - [`crypto`]: the envelope format (XChaCha20-Poly1305, per-record data keys,
//!   associated data that binds every ciphertext to its location), HKDF, HMAC.
//! - [`keyring`]: versioned key-encryption keys and the root of derived keys.
//! - [`shamir`]: splitting the root key into unseal shares.
//! - [`identity`]: the server's Ed25519 identity and its signed proofs.
//! - [`policy`]: Vault's ACL policy language, parsed and evaluated (R-ACL-1).
//! - [`token`]: the format of every bearer token Zafe issues.
//! - [`reference`](mod@reference): `zafe://` references, the one parser (R-DEV-1).
//! - [`dotenv`]: the `.env` parser and writer with a lossless document model (R-DEV-2).
//! - [`template`]: `{{ zafe://... }}` placeholders for `zafe inject` (R-DEV-4).
//! - [`text`]: text from elsewhere (an agent's report) made inert for a terminal.
//! - [`audit`]: the audit chain's formats and its verifier (hashes, MACs,
//!   signed checkpoints, export lines), shared by the server and the CLI.
//! - [`encoding`]: the one length-prefixed encoding used under every MAC and
//!   signature, so that no two field lists can ever encode to the same bytes.
//!
//! Invariants every module keeps:
//!
//! - Key material and secret values live in [`SecretKey`] and
//!   [`SecretString`] (zeroized on drop, `Debug` redacted, bytes reached only
//!   through `expose`); nothing here logs, prints or returns them in an error.
//! - Errors describe what is wrong and where (line, field, part), never the
//!   input that may hold a secret.
//! - Randomness comes only from the operating system's CSPRNG; primitives
//!   come from RustCrypto, dalek and `vsss-rs`, nothing is hand-rolled.
//!   Derived keys are separated by purpose ([`keyring::purpose`]) and signed
//!   messages by a domain string, so no value made for one use verifies in
//!   another.
//! - No I/O: no files, network, clock or environment. Callers pass the time
//!   in; the only system calls are `mlock` for key pages.

#![warn(missing_docs)]

pub mod audit;
pub mod backup;
pub mod crypto;
pub mod dotenv;
pub mod encoding;
pub mod identity;
pub mod keyring;
pub mod policy;
pub mod reference;
pub mod secret;
pub mod shamir;
pub mod template;
pub mod text;
pub mod token;

pub use crypto::CryptoError;
pub use reference::Reference;
pub use secret::{SecretKey, SecretString};
