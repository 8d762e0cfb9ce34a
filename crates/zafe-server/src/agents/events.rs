//! What agents report (R-AGT-4): renders, their child process, reconnects, stored bounded and
//! audited, read back with a cursor.
//!
//! An agent sends an `event` frame: `payload` is `{"kind", "message"?, "destination"?,
//! "code"?}` with a kind of [`KINDS`]; anything else (an unknown kind, a field of the wrong type,
//! an unknown field) is refused with an `error` frame and counted, and the connection stays.
//! `message` and `destination` are cut to [`MAX_MESSAGE_BYTES`] and [`MAX_DESTINATION_BYTES`]
//! (on a character boundary). Payloads are data: stored and returned as JSON strings, never
//! evaluated or templated; the CLI shows them through [`zafe_core::text::inert`].
//!
//! **Identity.** An event is known by a content-derived id: SHA-256 over the agent's id, the
//! time the agent says it happened (`ts`, its clock) and the canonical payload. An agent that
//! buffers events while offline and sends them again after a reconnect, or a duplicate on
//! another connection or node, is stored once (while the first copy is still held). The frame's
//! own `id` is not trusted for identity.
//!
//! **Bounds.** Per agent at most [`MAX_EVENTS`] events, [`MAX_BYTES`] bytes of stored records
//! and [`RETENTION_SECS`] of age (by the server's clock when the event arrived); the oldest go
//! first, in the same commit as the new one. Events older than the retention are not shown even
//! before a new event evicts them.
//!
//! **Audit.** Each stored event goes in with its own audit entry, in one transaction
//! (`audit::hook::commit`): `EVENT sys/agents/<project>/<name>/events/<kind>`, the agent as the
//! actor. The entry names the agent and the kind, never the payload's text. If the entry cannot
//! be written, the event is not stored and the agent gets an `error` frame.
//!
//! Records behind the barrier, keyed by the agent's id (a re-created agent of the same name is
//! another agent and sees none of the old one's events; revoking deletes them):
//!
//! ```text
//! sys/agents/events/<agent id>/index        sequence counter; per event: seq, id, size, arrival
//! sys/agents/events/<agent id>/e/<seq>      one event (seq zero-padded, so keys sort by it)
//! ```
//!
//! Events are numbered 1, 2, 3... per agent in the order they were stored (the index is
//! updated with compare-and-swap, so across nodes too); `after=<cursor>` returns the ones
//! stored later, newest last.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::Agent;
use crate::barrier::{BarrierError, Expect, Write};
use crate::core::Core;
use crate::error::{Error, Result};

/// The kinds of event an agent may report.
pub const KINDS: &[&str] = &[
    "render_ok",
    "render_failed",
    "child_started",
    "child_exited",
    "child_restarted",
    "child_signalled",
    "reconnected",
    "offline",
];
/// Events kept per agent.
pub const MAX_EVENTS: usize = 1000;
/// Bytes of stored event records kept per agent.
pub const MAX_BYTES: usize = 256 * 1024;
/// How long an event is kept, by the server's clock when it arrived: seven days.
pub const RETENTION_SECS: i64 = 7 * 24 * 3600;
/// `message` is cut to this many bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// `destination` is cut to this many bytes.
pub const MAX_DESTINATION_BYTES: usize = 4096;
/// Events one read returns by default, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// How often a store retries a lost race on the index (another connection of the agent).
const MAX_RETRIES: usize = 16;

const EVENTS_PREFIX: &str = "sys/agents/events/";

/// What an agent reported, after checks and caps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reported {
    pub(crate) kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<i64>,
}

/// One stored event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    seq: u64,
    /// The content-derived id (hex SHA-256).
    id: String,
    /// When the agent says it happened, Unix microseconds by its clock.
    ts: i64,
    /// When the server stored it, Unix microseconds by the server's clock.
    received_us: i64,
    #[serde(flatten)]
    reported: Reported,
}

/// The per-agent index: what is held, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Index {
    /// The last sequence number given out.
    last: u64,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    seq: u64,
    id: String,
    bytes: usize,
    received_us: i64,
}

fn index_key(agent_id: &str) -> String {
    format!("{EVENTS_PREFIX}{agent_id}/index")
}

fn event_key(agent_id: &str, seq: u64) -> String {
    format!("{EVENTS_PREFIX}{agent_id}/e/{seq:020}")
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cap(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Checks an event frame's payload: a known kind, optional strings `message` and
/// `destination` (capped), an optional integer `code`, nothing else.
pub(crate) fn parse(payload: &Value) -> std::result::Result<Reported, String> {
    let Some(fields) = payload.as_object() else {
        return Err("an event's payload must be an object".into());
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["kind", "message", "destination", "code"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown event field {:?}",
            super::reported(unknown, 64)
        ));
    }
    let kind = fields
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("an event needs a kind")?;
    if !KINDS.contains(&kind) {
        return Err("unknown event kind".into());
    }
    let text = |name: &str, max: usize| match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(cap(s, max))),
        Some(_) => Err(format!("an event's {name} must be a string")),
    };
    let code = match fields.get("code") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .ok_or("an event's code must be an integer".to_string())?,
        ),
    };
    Ok(Reported {
        kind: kind.to_string(),
        message: text("message", MAX_MESSAGE_BYTES)?,
        destination: text("destination", MAX_DESTINATION_BYTES)?,
        code,
    })
}

/// The content-derived id of an event: the same report of the same moment by the same agent
/// has the same id, whichever connection or node it arrives on.
fn content_id(agent_id: &str, ts: i64, reported: &Reported) -> String {
    let code = reported.code.map(|c| c.to_string());
    let field = |v: &Option<String>| -> Vec<u8> {
        match v {
            // A leading byte tells an absent field from an empty one.
            None => vec![0],
            Some(s) => [&[1u8][..], s.as_bytes()].concat(),
        }
    };
    let (message, destination, code) = (
        field(&reported.message),
        field(&reported.destination),
        field(&code),
    );
    let encoded = zafe_core::encoding::fields(&[
        b"zafe agent event v1",
        agent_id.as_bytes(),
        ts.to_string().as_bytes(),
        reported.kind.as_bytes(),
        &message,
        &destination,
        &code,
    ]);
    hex::encode(Sha256::digest(encoded))
}

/// What became of a reported event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Stored (and audited) as event `seq` of the agent.
    Stored(u64),
    /// The same event is already held: nothing stored.
    Duplicate,
}

/// Stores one event of `agent`, with its audit entry in the same transaction, evicting what
/// the bounds require. An error means nothing was stored.
pub(crate) async fn record(
    core: &Core,
    agent: &Agent,
    ts: i64,
    reported: Reported,
    client_ip: IpAddr,
) -> Result<Outcome> {
    let id = content_id(&agent.id, ts, &reported);
    let path = format!(
        "sys/agents/{}/{}/events/{}",
        agent.project, agent.name, reported.kind
    );
    let request_id = uuid::Uuid::new_v4().to_string();
    let pending = crate::audit::hook::Pending::start(
        core,
        crate::audit::hook::Seen {
            method: "EVENT",
            path: &path,
            listing: false,
            token: None,
            request_id: &request_id,
            client_ip,
        },
    );
    let outcome = pending
        .run(async {
            crate::audit::note_caller(&super::as_caller(agent.clone()));
            store(core, agent, ts, &id, &reported).await
        })
        .await;
    match outcome {
        Ok(Outcome::Duplicate) => Ok(Outcome::Duplicate),
        Ok(stored) => {
            pending.finish(core, 200, "").await?;
            Ok(stored)
        }
        Err(e) => {
            // The failure is audited like a failed request; the event is not stored.
            let _ = pending
                .finish(core, 503, "the event could not be stored")
                .await;
            Err(e)
        }
    }
}

async fn store(
    core: &Core,
    agent: &Agent,
    ts: i64,
    id: &str,
    reported: &Reported,
) -> Result<Outcome> {
    let key = index_key(&agent.id);
    for _ in 0..MAX_RETRIES {
        let (mut index, expect) = match core.barrier.get(&key).await? {
            Some(record) => (
                serde_json::from_slice::<Index>(&record.value)
                    .map_err(|_| Error::Integrity { key: key.clone() })?,
                Expect::Generation(record.generation),
            ),
            None => (Index::default(), Expect::Absent),
        };
        if index.entries.iter().any(|e| e.id == id) {
            return Ok(Outcome::Duplicate);
        }
        let now = core.now().micros();
        let seq = index.last + 1;
        let stored = Stored {
            seq,
            id: id.to_string(),
            ts,
            received_us: now,
            reported: reported.clone(),
        };
        let value = serde_json::to_vec(&stored).expect("serialisable");
        index.last = seq;
        index.entries.push(Entry {
            seq,
            id: id.to_string(),
            bytes: value.len(),
            received_us: now,
        });
        let mut writes = vec![Write::Put {
            key: event_key(&agent.id, seq),
            value,
            expect: Expect::Absent,
        }];
        let evict = evicted(&index.entries, now, &LIMITS);
        for oldest in index.entries.drain(..evict) {
            writes.push(Write::Delete {
                key: event_key(&agent.id, oldest.seq),
                expect: None,
            });
        }
        writes.push(Write::Put {
            key: key.clone(),
            value: serde_json::to_vec(&index).expect("serialisable"),
            expect,
        });
        match core.barrier.commit(writes).await {
            Ok(()) => return Ok(Outcome::Stored(seq)),
            // Another connection of this agent stored one first: read the index again.
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::StorageUnavailable(
        "the agent's event index kept changing; try again".into(),
    ))
}

/// The bounds of one agent's events.
struct Limits {
    events: usize,
    bytes: usize,
    retention_us: i64,
}

const LIMITS: Limits = Limits {
    events: MAX_EVENTS,
    bytes: MAX_BYTES,
    retention_us: RETENTION_SECS * 1_000_000,
};

/// How many of the oldest `entries` must go for the rest to keep `limits` at `now` (Unix µs):
/// those past the retention, then as many as the count and the bytes require. The newest (the
/// one just added) always stays.
fn evicted(entries: &[Entry], now: i64, limits: &Limits) -> usize {
    let cutoff = now - limits.retention_us;
    let mut bytes: usize = entries.iter().map(|e| e.bytes).sum();
    let mut evict = 0;
    while entries.len() - evict > 1 {
        let oldest = &entries[evict];
        if oldest.received_us < cutoff
            || entries.len() - evict > limits.events
            || bytes > limits.bytes
        {
            bytes -= oldest.bytes;
            evict += 1;
        } else {
            break;
        }
    }
    evict
}

/// The writes that delete every event of agent `agent_id` (for revocation).
pub(crate) async fn deletions(core: &Core, agent_id: &str) -> Result<Vec<Write>> {
    let key = index_key(agent_id);
    let Some(record) = core.barrier.get(&key).await? else {
        return Ok(Vec::new());
    };
    let index: Index =
        serde_json::from_slice(&record.value).map_err(|_| Error::Integrity { key: key.clone() })?;
    let mut writes: Vec<Write> = index
        .entries
        .iter()
        .map(|e| Write::Delete {
            key: event_key(agent_id, e.seq),
            expect: None,
        })
        .collect();
    writes.push(Write::Delete { key, expect: None });
    Ok(writes)
}

/// `GET sys/agents/<project>/<name>/events?after=<cursor>&limit=<n>`: the agent's events stored
/// after `cursor`, newest last, at most `limit`, and the cursor for the next call.
pub(crate) async fn list(core: &Core, agent: &Agent, req: &crate::core::Request) -> Result<Value> {
    let number = |name: &str| -> Result<Option<u64>> {
        match req.query(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| Error::bad_request(format!("{name} must be a whole number"))),
        }
    };
    let after = number("after")?.unwrap_or(0);
    let limit = number("limit")?
        .map(|l| (l as usize).clamp(1, MAX_LIMIT))
        .unwrap_or(DEFAULT_LIMIT);
    let key = index_key(&agent.id);
    let index: Index = match core.barrier.get(&key).await? {
        Some(record) => serde_json::from_slice(&record.value)
            .map_err(|_| Error::Integrity { key: key.clone() })?,
        None => Index::default(),
    };
    let cutoff = core.now().micros() - RETENTION_SECS * 1_000_000;
    let mut events = Vec::new();
    let mut cursor = after;
    for entry in index.entries.iter().filter(|e| e.seq > after).take(limit) {
        cursor = entry.seq;
        if entry.received_us < cutoff {
            continue;
        }
        let key = event_key(&agent.id, entry.seq);
        let Some(record) = core.barrier.get(&key).await? else {
            continue;
        };
        let stored: Stored =
            serde_json::from_slice(&record.value).map_err(|_| Error::Integrity { key })?;
        events.push(to_json(&stored));
    }
    Ok(json!({
        "project": agent.project,
        "name": agent.name,
        "events": events,
        "cursor": cursor.to_string(),
        "more": index.entries.iter().any(|e| e.seq > cursor),
    }))
}

fn to_json(stored: &Stored) -> Value {
    json!({
        "cursor": stored.seq.to_string(),
        "id": stored.id,
        "kind": stored.reported.kind,
        "time": rfc3339_micros(stored.ts),
        "ts": stored.ts,
        "received_time": rfc3339_micros(stored.received_us),
        "message": stored.reported.message,
        "destination": stored.reported.destination,
        "code": stored.reported.code,
    })
}

fn rfc3339_micros(us: i64) -> String {
    crate::tokens::rfc3339(us.div_euclid(1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_checked_and_capped() {
        let ok = parse(&json!({"kind": "render_failed", "message": "é".repeat(1000), "destination": "/run/app.env", "code": 3})).unwrap();
        assert_eq!(ok.kind, "render_failed");
        let message = ok.message.unwrap();
        assert!(message.len() <= MAX_MESSAGE_BYTES && message.len() >= MAX_MESSAGE_BYTES - 1);
        assert!(message.chars().all(|c| c == 'é'));
        assert_eq!(ok.code, Some(3));
        for bad in [
            json!({"kind": "launch_missiles"}),
            json!({"message": "no kind"}),
            json!({"kind": "render_ok", "code": "3"}),
            json!({"kind": "render_ok", "code": 1.5}),
            json!({"kind": "render_ok", "message": 3}),
            json!({"kind": "render_ok", "extra": "x"}),
            json!("render_ok"),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }

    // The oldest go first, as far as the count, the bytes and the retention require; the newest
    // always stays.
    #[test]
    fn the_oldest_are_evicted_past_each_bound() {
        let limits = Limits {
            events: 3,
            bytes: 100,
            retention_us: 1_000,
        };
        let entries = |sizes: &[(usize, i64)]| -> Vec<Entry> {
            sizes
                .iter()
                .enumerate()
                .map(|(i, &(bytes, received_us))| Entry {
                    seq: i as u64 + 1,
                    id: i.to_string(),
                    bytes,
                    received_us,
                })
                .collect()
        };
        // Within every bound: nothing goes.
        assert_eq!(evicted(&entries(&[(10, 5_000); 3]), 5_000, &limits), 0);
        // One past the count: the oldest goes.
        assert_eq!(evicted(&entries(&[(10, 5_000); 4]), 5_000, &limits), 1);
        assert_eq!(evicted(&entries(&[(10, 5_000); 9]), 5_000, &limits), 6);
        // Past the bytes: as many of the oldest as needed.
        assert_eq!(
            evicted(
                &entries(&[(60, 5_000), (30, 5_000), (30, 5_000)]),
                5_000,
                &limits
            ),
            1
        );
        // Past the retention: the old ones go even within the count and bytes.
        assert_eq!(
            evicted(
                &entries(&[(1, 1_000), (1, 3_999), (1, 4_000)]),
                5_000,
                &limits
            ),
            2
        );
        // The newest stays, even alone over the bytes.
        assert_eq!(evicted(&entries(&[(500, 5_000)]), 5_000, &limits), 0);
        assert_eq!(
            evicted(&entries(&[(1, 0), (500, 5_000)]), 5_000, &limits),
            1
        );
        // The real bounds are the documented ones.
        assert_eq!((LIMITS.events, LIMITS.bytes), (1000, 256 * 1024));
        assert_eq!(LIMITS.retention_us, 7 * 24 * 3600 * 1_000_000);
    }

    #[test]
    fn the_id_follows_the_content_not_the_frame() {
        let a = parse(&json!({"kind": "child_exited", "code": 1})).unwrap();
        let b = parse(&json!({"code": 1, "kind": "child_exited"})).unwrap();
        assert_eq!(content_id("ag", 5, &a), content_id("ag", 5, &b));
        assert_ne!(content_id("ag", 5, &a), content_id("ag", 6, &a));
        assert_ne!(content_id("ag", 5, &a), content_id("other", 5, &a));
        let empty = parse(&json!({"kind": "render_ok", "message": ""})).unwrap();
        let absent = parse(&json!({"kind": "render_ok"})).unwrap();
        assert_ne!(content_id("ag", 5, &empty), content_id("ag", 5, &absent));
    }
}
