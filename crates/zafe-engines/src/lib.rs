//! Zafe's engines, mounted at paths behind the core's router: KV v2 ([`kv`]), transit
//! ([`transit`]) and the AppRole auth method ([`approle`]).
//!
//! Each is written against the engine contract ([`zafe_engine`]) and nothing else: it sees one
//! request, its own mount's storage view, the caller's name and the system view. This crate
//! cannot depend on the server, so "an engine sees only its mount" is kept by the compiler. Auth
//! methods return a grant; the core mints the token.

#![warn(missing_docs)]

use std::sync::Arc;

use zafe_engine::Engine;

pub mod approle;
pub mod kv;
pub mod transit;

/// A new engine of `kind` (`kv`, `transit`, `approle`); `None` for a kind this build does not
/// have. The router keeps one per mount for as long as the mount exists.
pub fn build(kind: &str) -> Option<Arc<dyn Engine>> {
    match kind {
        "kv" => Some(Arc::new(kv::Kv::new())),
        "transit" => Some(Arc::new(transit::Transit::new())),
        "approle" => Some(Arc::new(approle::AppRole)),
        _ => None,
    }
}
