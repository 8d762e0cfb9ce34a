//! One agent's connection (R-AGT-2, R-AGT-3): sequenced frames in both directions, change
//! notices pushed as they happen, heartbeats, and the end of the connection the moment the agent
//! is revoked.
//!
//! The session speaks in JSON text frames over any transport (the HTTP edge bridges a WebSocket
//! to it): `{"v": 1, "type": "...", "id": "...", "seq": N, "ts": <unix µs>, "payload": {...}}`.
//! - The server's frames carry `seq` 1, 2, 3... in order: `hello`, `changed` (a secret the agent
//!   may read has a new version: its reference and version, never its value), `heartbeat`,
//!   `error`, `bye`.
//! - The agent's frames must carry `seq` 1, 2, 3... too. A frame whose `seq` is not above the
//!   last one accepted (a replay or a duplicate) is dropped and counted; one that skips ahead is
//!   out of order and ends the connection; so do a frame over the size limit, a malformed frame,
//!   and more than [`MAX_FRAMES_PER_SECOND`] frames a second. Unknown types are refused with an
//!   `error` frame and counted.
//! - The agent's `event` frames are stored (bounded, audited, once per content) by
//!   [`super::events`]; a malformed one or one of an unknown kind is refused with an `error`
//!   frame and counted, and the connection stays. Its `heartbeat` frames are not stored as
//!   events: they record when the agent was last heard from.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Agent;
use super::events::{self, Outcome};
use crate::core::Core;

/// The frame format's version.
pub const VERSION: u64 = 1;
/// The largest frame an agent may send, in bytes.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Frames an agent may send per second, on average over a second.
pub const MAX_FRAMES_PER_SECOND: u32 = 50;
/// How often the server sends a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The agent closed the connection.
    Closed,
    /// The agent was revoked, or its token rotated: it must not stay connected.
    Revoked,
    /// The agent broke the protocol (the reason is in the last `error` frame it was sent).
    Refused(String),
    /// The server is going away (sealed or shutting down).
    ServerGone,
}

/// What a session counted, for the agent's status and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Frames accepted from the agent.
    pub accepted: u64,
    /// Replayed or duplicated frames dropped.
    pub dropped: u64,
    /// Frames of unknown types refused.
    pub unknown: u64,
    /// Change notices sent.
    pub notices: u64,
    /// Events stored.
    pub events: u64,
    /// Events already held (the same content sent again), not stored again.
    pub duplicate_events: u64,
    /// Events refused: an unknown kind or a malformed payload.
    pub refused_events: u64,
    /// Events that could not be stored (storage or audit unavailable); the agent was told.
    pub failed_events: u64,
}

/// Serves one connected agent until the connection ends: reads the agent's frames from
/// `incoming`, writes the server's to `outgoing`. `client_ip` is where the agent connected from
/// (for the audit entries of its events).
pub async fn serve(
    core: &Core,
    agent: Agent,
    client_ip: IpAddr,
    mut incoming: mpsc::Receiver<String>,
    outgoing: mpsc::Sender<String>,
    heartbeat: Duration,
) -> (Ended, Counts) {
    let mut changes = core.changes().subscribe();
    let mut revocations = core.agent_revocations();
    let mut out = Outgoing {
        core,
        sender: outgoing,
        seq: 0,
    };
    let mut counts = Counts::default();
    let mut last_in: u64 = 0;
    let limiter = governor::RateLimiter::direct(governor::Quota::per_second(
        std::num::NonZeroU32::new(MAX_FRAMES_PER_SECOND).expect("non-zero"),
    ));
    // This agent is connected here until the session ends, however it ends; other nodes learn
    // it from storage.
    let _present = Present::new(core, &agent);
    let mut presence = super::presence::Writer::new(core, &agent);
    presence.refresh(core).await;
    let mut ticks = tokio::time::interval(heartbeat);
    ticks.tick().await;
    if !out
        .send("hello", json!({ "project": agent.project, "name": agent.name, "environments": agent.environments }))
        .await
    {
        presence.remove(core).await;
        return (Ended::Closed, counts);
    }
    let ended = loop {
        tokio::select! {
            frame = incoming.recv() => {
                let Some(text) = frame else { break Ended::Closed };
                if limiter.check().is_err() {
                    break out.refuse("too many frames: at most 50 a second").await;
                }
                match check_frame(&text, last_in) {
                    Ok(Incoming::Accepted { seq, kind, frame }) if kind == "hello" => {
                        last_in = seq;
                        counts.accepted += 1;
                        let payload = &frame["payload"];
                        let reported = super::Presence {
                            version: super::reported(payload["version"].as_str().unwrap_or_default(), 64),
                            host: super::reported(payload["host"].as_str().unwrap_or_default(), 253),
                            since: core.now_secs(),
                            last_heartbeat: None,
                        };
                        core.connected_agents().set(&agent.id, reported.clone());
                        presence.hello(core, reported.version, reported.host).await;
                    }
                    Ok(Incoming::Accepted { seq, kind, frame }) if kind == "event" => {
                        last_in = seq;
                        let checked = events::parse(&frame["payload"]).and_then(|reported| {
                            frame["ts"]
                                .as_i64()
                                .map(|ts| (ts, reported))
                                .ok_or_else(|| "an event needs its time: ts, in Unix microseconds".to_string())
                        });
                        let refusal = match checked {
                            Err(reason) => {
                                counts.refused_events += 1;
                                Some(reason)
                            }
                            Ok((ts, reported)) => {
                                match events::record(core, &agent, ts, reported, client_ip).await {
                                    Ok(Outcome::Stored(_)) => {
                                        counts.accepted += 1;
                                        counts.events += 1;
                                        None
                                    }
                                    Ok(Outcome::Duplicate) => {
                                        counts.accepted += 1;
                                        counts.duplicate_events += 1;
                                        None
                                    }
                                    Err(e) => {
                                        tracing::warn!(agent = %agent.name, project = %agent.project, error = %e, "an agent's event could not be stored");
                                        counts.failed_events += 1;
                                        Some("the event could not be stored; send it again later".to_string())
                                    }
                                }
                            }
                        };
                        if let Some(reason) = refusal
                            && !out.send("error", json!({ "message": reason, "seq": seq })).await
                        {
                            break Ended::Closed;
                        }
                    }
                    Ok(Incoming::Accepted { seq, kind, .. }) => {
                        last_in = seq;
                        if !KNOWN_TYPES.contains(&kind.as_str()) {
                            counts.unknown += 1;
                            if !out.send("error", json!({ "message": "unknown frame type", "seq": seq })).await {
                                break Ended::Closed;
                            }
                            continue;
                        }
                        counts.accepted += 1;
                        if kind == "bye" {
                            break Ended::Closed;
                        }
                        if kind == "heartbeat" {
                            core.connected_agents().heartbeat(&agent.id, core.now_secs());
                            presence.heartbeat(core).await;
                        }
                    }
                    Ok(Incoming::Dropped) => counts.dropped += 1,
                    Err(reason) => break out.refuse(&reason).await,
                }
            }
            change = changes.recv() => {
                let change = match change {
                    Ok(crate::changes::Change::Secret(change)) => change,
                    // Changes may have been missed (another node's were lost in transit).
                    Ok(crate::changes::Change::Resync) => {
                        if !out.send("resync", json!({})).await {
                            break Ended::Closed;
                        }
                        continue;
                    }
                    // Fell behind: the agent catches up by comparing versions.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if !out.send("resync", json!({})).await {
                            break Ended::Closed;
                        }
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break Ended::ServerGone,
                };
                if let Some(reference) = follows(core, &agent, &change).await {
                    counts.notices += 1;
                    if !out.send("changed", json!({ "reference": reference, "version": change.version })).await {
                        break Ended::Closed;
                    }
                }
            }
            revoked = revocations.recv() => {
                match revoked {
                    Ok(id) if id == agent.id => {
                        let _ = out.send("bye", json!({ "reason": "revoked" })).await;
                        break Ended::Revoked;
                    }
                    Ok(_) => {}
                    // Missed some: check this agent's record instead.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if still_current(core, &agent).await != Some(true) {
                            let _ = out.send("bye", json!({ "reason": "revoked" })).await;
                            break Ended::Revoked;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break Ended::ServerGone,
                }
            }
            _ = ticks.tick() => {
                // A revocation on another node reaches this one through storage.
                if still_current(core, &agent).await == Some(false) {
                    let _ = out.send("bye", json!({ "reason": "revoked" })).await;
                    break Ended::Revoked;
                }
                if !out.send("heartbeat", json!({})).await {
                    break Ended::Closed;
                }
                presence.refresh(core).await;
            }
        }
    };
    presence.remove(core).await;
    (ended, counts)
}

/// Marks an agent connected while it lives.
struct Present<'a> {
    core: &'a Core,
    id: String,
}

impl<'a> Present<'a> {
    fn new(core: &'a Core, agent: &Agent) -> Self {
        core.connected_agents().set(
            &agent.id,
            super::Presence {
                since: core.now_secs(),
                ..Default::default()
            },
        );
        Present {
            core,
            id: agent.id.clone(),
        }
    }
}

impl Drop for Present<'_> {
    fn drop(&mut self) {
        self.core.connected_agents().remove(&self.id);
    }
}

/// The types an agent may send.
const KNOWN_TYPES: &[&str] = &["hello", "heartbeat", "event", "bye"];

#[derive(Debug)]
enum Incoming {
    Accepted {
        seq: u64,
        kind: String,
        frame: Value,
    },
    Dropped,
}

/// Checks one frame of the agent against the last sequence number accepted.
fn check_frame(text: &str, last: u64) -> Result<Incoming, String> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(format!("frame too large: at most {MAX_FRAME_BYTES} bytes"));
    }
    let frame: Value = serde_json::from_str(text).map_err(|_| "malformed frame".to_string())?;
    if frame["v"].as_u64() != Some(VERSION) {
        return Err(format!(
            "unsupported frame version (this server speaks {VERSION})"
        ));
    }
    let seq = frame["seq"]
        .as_u64()
        .ok_or_else(|| "a frame needs a sequence number".to_string())?;
    let kind = frame["type"]
        .as_str()
        .ok_or_else(|| "a frame needs a type".to_string())?;
    if seq <= last {
        return Ok(Incoming::Dropped);
    }
    if seq != last + 1 {
        return Err(format!(
            "out-of-order frame: expected sequence {} after {last}",
            last + 1
        ));
    }
    let kind = kind.to_string();
    Ok(Incoming::Accepted { seq, kind, frame })
}

/// The reference the agent knows a changed secret by, if the agent may read it.
async fn follows(
    core: &Core,
    agent: &Agent,
    change: &crate::changes::SecretChange,
) -> Option<String> {
    let (project, _) = crate::projects::read(core, &agent.project).await.ok()??;
    if project.id != agent.project_id
        || change.mount.trim_end_matches('/') != project.mount.trim_end_matches('/')
    {
        return None;
    }
    let rest = change.path.strip_prefix(&format!("{}/", agent.project))?;
    let (env, key) = rest.split_once('/')?;
    (agent.environments.iter().any(|e| e == env) && project.environments.iter().any(|e| e == env))
        .then(|| format!("zafe://{}/{env}/{key}", agent.project))
}

/// Whether the agent's record still names this agent and token (`None`: storage unavailable).
async fn still_current(core: &Core, agent: &Agent) -> Option<bool> {
    match super::read(&core.barrier, &agent.project, &agent.name).await {
        Ok(Some((now, _))) => Some(now.id == agent.id && now.token_hash == agent.token_hash),
        Ok(None) => Some(false),
        Err(_) => None,
    }
}

struct Outgoing<'a> {
    core: &'a Core,
    sender: mpsc::Sender<String>,
    seq: u64,
}

impl Outgoing<'_> {
    /// Sends one frame; `false` when the connection is gone.
    async fn send(&mut self, kind: &str, payload: Value) -> bool {
        self.seq += 1;
        let frame = json!({
            "v": VERSION,
            "type": kind,
            "id": uuid::Uuid::new_v4().to_string(),
            "seq": self.seq,
            "ts": self.core.now().micros(),
            "payload": payload,
        });
        self.sender.send(frame.to_string()).await.is_ok()
    }

    async fn refuse(&mut self, reason: &str) -> Ended {
        let _ = self.send("error", json!({ "message": reason })).await;
        Ended::Refused(reason.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, kind: &str) -> String {
        json!({"v": 1, "type": kind, "id": "x", "seq": seq, "ts": 0, "payload": {}}).to_string()
    }

    // R-AGT-2: the next frame is accepted, replays and duplicates are
    // dropped, a frame that skips ahead is refused, and so are malformed,
    // oversized and versionless frames.
    #[test]
    fn frames_are_checked_against_the_sequence() {
        assert!(matches!(
            check_frame(&frame(1, "hello"), 0),
            Ok(Incoming::Accepted { seq: 1, .. })
        ));
        assert!(matches!(
            check_frame(&frame(5, "event"), 5),
            Ok(Incoming::Dropped)
        ));
        assert!(matches!(
            check_frame(&frame(3, "event"), 5),
            Ok(Incoming::Dropped)
        ));
        assert!(
            check_frame(&frame(7, "event"), 5)
                .unwrap_err()
                .contains("out-of-order")
        );
        assert!(check_frame("{not json", 0).is_err());
        assert!(check_frame(&json!({"type": "x", "seq": 1}).to_string(), 0).is_err());
        assert!(check_frame(&json!({"v": 1, "type": "x"}).to_string(), 0).is_err());
        let big =
            json!({"v": 1, "type": "event", "seq": 1, "payload": "x".repeat(MAX_FRAME_BYTES)});
        assert!(
            check_frame(&big.to_string(), 0)
                .unwrap_err()
                .contains("too large")
        );
    }
}
