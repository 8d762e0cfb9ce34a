//! The engines Zafe can mount, by kind. Each lives in its own module and
//! sees only its own storage view (see `crate::engine`).

use std::sync::Arc;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::mounts::MountEntry;

pub mod approle;
pub mod kv;
pub mod token;
pub mod transit;

pub fn build(entry: &MountEntry) -> Result<Arc<dyn Engine>> {
    match entry.kind.as_str() {
        "kv" => Ok(Arc::new(kv::Kv::new())),
        "transit" => Ok(Arc::new(transit::Transit::new())),
        "token" => Ok(Arc::new(token::TokenEngine)),
        "approle" => Ok(Arc::new(approle::AppRoleEngine)),
        other => Err(Error::Internal(format!(
            "no engine of kind {other:?} (mount {})",
            entry.path
        ))),
    }
}

/// Stands in for an engine that could not be built (say, a mount table
/// written by a newer Zafe): every request gets a 503.
pub struct Unavailable;

#[async_trait::async_trait]
impl Engine for Unavailable {
    async fn handle(
        &self,
        ctx: &crate::engine::Ctx<'_>,
        _req: &crate::core::Request,
        _rel: &str,
    ) -> Result<crate::core::Reply> {
        Err(Error::StorageUnavailable(format!(
            "the {} engine at {} is unavailable",
            ctx.mount.kind, ctx.mount.path
        )))
    }
}
