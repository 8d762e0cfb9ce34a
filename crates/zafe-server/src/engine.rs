//! The server's side of the engine contract ([`zafe_engine`]): the barrier as an engine's
//! storage, and the core as its system view. Engines themselves live in `zafe-engines` and see
//! only the contract.

use async_trait::async_trait;
use zafe_core::crypto::derive_key;
use zafe_core::secret::SecretKey;
use zafe_engine::Timestamp;
use zafe_engine::{Expect, Record, Storage, Write};
pub(crate) use zafe_engine::{MAX_LIST, View};

use crate::barrier::Barrier;
use crate::core::Core;
use crate::error::Result;

#[async_trait]
impl Storage for Barrier {
    async fn get(&self, key: &str) -> Result<Option<Record>> {
        Ok(Barrier::get(self, key).await?)
    }

    async fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<i64> {
        Ok(Barrier::put(self, key, value, expect).await?)
    }

    async fn update(
        &self,
        key: &str,
        f: &mut (dyn for<'v> FnMut(Option<&'v [u8]>) -> Option<Vec<u8>> + Send),
    ) -> Result<Option<i64>> {
        Ok(Barrier::update(self, key, f).await?)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        Ok(Barrier::delete(self, key).await?)
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<()> {
        Ok(Barrier::commit(self, writes).await?)
    }

    async fn list(&self, prefix: &str, start_after: &str, limit: usize) -> Result<Vec<String>> {
        Ok(Barrier::list(self, prefix, start_after, limit).await?)
    }
}

impl zafe_engine::SystemView for Core {
    fn now(&self) -> Timestamp {
        Core::now(self)
    }

    fn max_body_bytes(&self) -> usize {
        self.config.max_body_bytes()
    }

    fn changed(&self, mount: &zafe_engine::Mount, path: &str, version: Option<u64>) {
        self.changes().publish(crate::changes::SecretChange {
            mount: mount.path.clone(),
            path: path.to_string(),
            version,
        });
    }

    fn derived_key(&self, purpose: &str) -> Result<SecretKey> {
        Ok(derive_key(self.token_key()?.expose(), purpose))
    }
}
