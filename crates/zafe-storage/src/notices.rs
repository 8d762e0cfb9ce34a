//! Change notices: how every node learns what the others committed.
//!
//! Whatever a node keeps in memory that was derived from storage (compiled ACLs, the mount
//! table, the keyring, cached entries) is only as good as its knowledge of later commits. Each
//! backend therefore announces every commit as a [`Notice::Keys`], to every node sharing the
//! storage, and carries small [`Notice::Message`]s between nodes (a secret changed, an agent was
//! revoked). When a backend cannot vouch that no notice was missed (its notification connection
//! dropped, or a subscriber fell behind) it says [`Notice::Lost`], and subscribers drop
//! everything they derived from storage: never stale, only slower.
//!
//! - SQLite (one process): notices are sent in process, after each commit.
//! - PostgreSQL: `pg_notify` after each commit, batched by one task per node, and a `LISTEN`
//!   connection per node, which hears the node's own commits too (each notice once, on every
//!   node); while that
//!   connection is down, `Lost` is repeated every [`BACKSTOP`], and `Resumed` says it is back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::Op;

/// What a subscriber is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A commit wrote or deleted these keys (on this node or another).
    Keys(Arc<[String]>),
    /// A node published `payload` on `topic` ([`crate::Backend::publish`]).
    Message {
        /// What the message is about (`zafe.secret-changed`, ...).
        topic: String,
        /// Its text: never a secret.
        payload: String,
    },
    /// Notices may have been missed: forget everything derived from storage. Repeated every
    /// [`BACKSTOP`] while the notification connection is down.
    Lost,
    /// The notification connection is back after a loss: as [`Notice::Lost`] for caches, and the
    /// moment for whoever follows changes (agents) to catch up, once.
    Resumed,
}

/// How many notices a slow subscriber may fall behind before it is told it lagged (it then
/// treats that as [`Notice::Lost`]).
pub const BACKLOG: usize = 4096;

/// While the notification connection is down, how often [`Notice::Lost`] is repeated: nothing
/// derived from storage lives longer than this unchecked.
pub const BACKSTOP: Duration = Duration::from_millis(250);

/// The largest payload of one PostgreSQL notification (its limit is 8,000 bytes): keys that do
/// not fit one are announced in several, and a key too long for one as `*` (read as
/// [`Notice::Lost`]).
pub(crate) const MAX_PAYLOAD: usize = 7_900;

/// The keys a commit touches.
pub(crate) fn keys_of(ops: &[Op]) -> Arc<[String]> {
    ops.iter()
        .map(|op| match op {
            Op::Put { entry, .. } => entry.key.clone(),
            Op::Delete { key, .. } => key.clone(),
        })
        .collect()
}

/// A sender of notices with its own subscribers.
#[derive(Debug, Clone)]
pub(crate) struct Notices {
    sender: broadcast::Sender<Notice>,
}

impl Default for Notices {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Notices {
    pub(crate) fn send(&self, notice: Notice) {
        // No subscriber is not an error.
        let _ = self.sender.send(notice);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.sender.subscribe()
    }
}

/// Encodes keys for PostgreSQL notifications: as few JSON arrays as fit the payload limit (a
/// key too long for one on its own becomes `*`, "everything").
pub(crate) fn encode_key_batches(keys: &[String]) -> Vec<String> {
    let mut batches = Vec::new();
    let mut current: Vec<&String> = Vec::new();
    let mut size = 2;
    for key in keys {
        let cost = serde_json::to_string(key).map_or(usize::MAX, |k| k.len() + 1);
        if cost + 2 > MAX_PAYLOAD {
            batches.push("*".to_string());
            continue;
        }
        if size + cost > MAX_PAYLOAD {
            batches.push(serde_json::to_string(&current).unwrap_or_else(|_| "*".into()));
            current.clear();
            size = 2;
        }
        current.push(key);
        size += cost;
    }
    if !current.is_empty() {
        batches.push(serde_json::to_string(&current).unwrap_or_else(|_| "*".into()));
    }
    batches
}

/// Reads a notification of keys; anything else (`*`, or garbage) means "assume everything".
pub(crate) fn decode_keys(payload: &str) -> Notice {
    match serde_json::from_str::<Vec<String>>(payload) {
        Ok(keys) => Notice::Keys(keys.into()),
        Err(_) => Notice::Lost,
    }
}

/// Encodes a message: topic, a newline, payload (topics have no newline).
pub(crate) fn encode_message(topic: &str, payload: &str) -> Option<String> {
    let text = format!("{topic}\n{payload}");
    (!topic.contains('\n') && text.len() <= MAX_PAYLOAD).then_some(text)
}

pub(crate) fn decode_message(text: &str) -> Option<Notice> {
    let (topic, payload) = text.split_once('\n')?;
    Some(Notice::Message {
        topic: topic.to_string(),
        payload: payload.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_messages_round_trip_and_oversized_ones_mean_everything() {
        let keys: Vec<String> = vec!["core/policy/app".into(), "a\"b\nc".into()];
        let encoded = encode_key_batches(&keys);
        assert_eq!(encoded.len(), 1);
        assert_eq!(decode_keys(&encoded[0]), Notice::Keys(keys.into()));
        let many: Vec<String> = (0..1000).map(|i| format!("logical/x/{i}")).collect();
        // Batched: every key arrives, in notifications that fit.
        let batches = encode_key_batches(&many);
        assert!(batches.len() > 1 && batches.iter().all(|b| b.len() <= MAX_PAYLOAD));
        let back: Vec<String> = batches
            .iter()
            .flat_map(|b| match decode_keys(b) {
                Notice::Keys(keys) => keys.to_vec(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(back, many);
        assert_eq!(encode_key_batches(&["x".repeat(MAX_PAYLOAD)]), ["*"]);
        assert_eq!(decode_keys("*"), Notice::Lost);
        assert_eq!(decode_keys("not json"), Notice::Lost);
        let m = encode_message("zafe.topic", "{\"a\":1}\nsecond line").unwrap();
        assert_eq!(
            decode_message(&m),
            Some(Notice::Message {
                topic: "zafe.topic".into(),
                payload: "{\"a\":1}\nsecond line".into()
            })
        );
        assert_eq!(encode_message("bad\ntopic", "x"), None);
        assert_eq!(encode_message("t", &"x".repeat(MAX_PAYLOAD)), None);
    }
}
