//! Auditing every request at the one place every request passes: the HTTP
//! guard (R-AUD-1). `Pending::start` notes what the request is before it
//! runs, `Pending::run` lets the core name the caller once it has
//! authenticated one ([`note_caller`]), and `Pending::finish` writes the
//! entry and only then lets the response go; if the entry cannot be
//! written, the response is replaced by a 503 and nothing of it leaves.
//!
//! A request that changes something writes its entry **with** its change
//! (R-AUD-0): `commit`, through which the barrier commits, sends the
//! request's entry (as known then: caller, path, operation, resources;
//! allowed, status 200) to storage together with the ops, in one
//! transaction. If the entry cannot be stored, nothing changes and the
//! request fails. `finish` then writes no second entry, unless the request
//! failed after all (its failure is recorded as usual). Later commits of the
//! same request are covered by that entry and go in plain.
//!
//! The token a request presents is never kept: only its keyed hash
//! (`hmac-sha256:...`, the `AUDIT_FIELD_HMAC` key), computed at once. No
//! request or response body is recorded, only the error message of a failed
//! request (which the server writes by hand and never fills with secrets).

use parking_lot::Mutex;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use zafe_storage::audit::AuditDraft;
use zafe_storage::{Backend, Op};

use super::{AuditKeys, linker, now_us};
use crate::core::Core;
use crate::error::Error;
use zafe_core::audit::{Actor, EVENT_VERSION, Event};

/// The caller, as the core authenticated it.
#[derive(Debug, Clone, Default)]
struct Caller {
    accessor: String,
    display_name: String,
    policies: Vec<String>,
}

/// What the core notes about a request while it runs.
#[derive(Debug, Default)]
struct Noted {
    caller: Option<Caller>,
    /// Secrets one request reaches besides its own path (`sys/resolve`).
    resources: Vec<String>,
    /// The sequence number of the request's entry, if it went in with one
    /// of its changes.
    committed: Option<i64>,
}

/// What is known of a request before it runs: everything its entry says
/// besides the caller, the outcome and the resources.
struct Known {
    time_us: i64,
    request_id: String,
    client_ip: IpAddr,
    method: String,
    path: String,
    operation: &'static str,
    token_hmac: String,
    /// The audit keys the request started with; `None` if it started sealed.
    keys: Option<Arc<AuditKeys>>,
}

/// A running request, as the audit hook sees it.
struct Context {
    known: Known,
    noted: Mutex<Noted>,
}

tokio::task_local! {
    static NOTED: Arc<Context>;
}

/// Called by the core when a request authenticates: the audit entry names
/// this caller. Outside a request (tests, background jobs) it does nothing.
pub fn note_caller(caller: &crate::caller::Caller) {
    let entry = caller.token();
    let _ = NOTED.try_with(|slot| {
        slot.noted.lock().caller = Some(Caller {
            accessor: entry.accessor.clone(),
            display_name: entry.display_name.clone(),
            policies: entry.policies.clone(),
        });
    });
}

/// Called by a handler that reaches secrets other than the request's own
/// path (`sys/resolve` reads many): the entry lists them, so the log says
/// which secrets a request touched. Names only (KV paths, references),
/// never values. Outside a request it does nothing.
pub fn note_resources(resources: impl IntoIterator<Item = String>) {
    let _ = NOTED.try_with(|slot| {
        slot.noted.lock().resources.extend(resources);
    });
}

/// The status an entry committed with its change records: the answer's
/// own (200 or 204) is not known yet. A request that fails after its change
/// gets a second entry with its failure.
const COMMITTED_STATUS: u16 = 200;

/// Commits `ops` (R-AUD-0). Inside an audited request whose entry has not
/// gone in yet, the entry goes in the same transaction: both or neither.
/// Outside a request (start-up, background jobs), in a request that started
/// sealed (no chain key; its entry is buffered as before) or once the
/// entry is in, a plain commit.
pub(crate) async fn commit(backend: &dyn Backend, ops: Vec<Op>) -> zafe_storage::Result<()> {
    let audited = NOTED.try_with(|c| c.clone()).ok().and_then(|c| {
        let entry_due = c.noted.lock().committed.is_none();
        let keys = c
            .known
            .keys
            .clone()
            .filter(|_| entry_due && !ops.is_empty())?;
        Some((c, keys))
    });
    let Some((context, keys)) = audited else {
        return backend.commit(ops).await;
    };
    let (caller, resources) = {
        let noted = context.noted.lock();
        (noted.caller.clone(), noted.resources.clone())
    };
    let event = context
        .known
        .event(caller, resources, COMMITTED_STATUS, String::new());
    let draft = AuditDraft {
        time_us: event.time_us,
        body: serde_json::to_vec(&event).expect("an event serialises"),
    };
    let rows = backend
        .commit_audited(ops, vec![draft], linker(keys))
        .await?;
    context.noted.lock().committed = rows.first().map(|r| r.seq);
    Ok(())
}

impl Known {
    fn event(
        &self,
        caller: Option<Caller>,
        resources: Vec<String>,
        status: u16,
        error: String,
    ) -> Event {
        let actor = match caller {
            Some(c) => Actor {
                kind: "token".into(),
                accessor: self
                    .keys
                    .as_ref()
                    .map(|k| k.hmac(&c.accessor))
                    .unwrap_or_default(),
                display_name: c.display_name,
                policies: c.policies,
                token: self.token_hmac.clone(),
            },
            None => Actor {
                kind: "anonymous".into(),
                token: self.token_hmac.clone(),
                ..Actor::default()
            },
        };
        let decision = match status {
            401 | 403 => "denied",
            s if s >= 400 => "failed",
            _ => "allowed",
        };
        Event {
            v: EVENT_VERSION,
            time_us: self.time_us,
            request_id: self.request_id.clone(),
            client_ip: self.client_ip.to_string(),
            method: self.method.clone(),
            path: self.path.clone(),
            operation: self.operation.to_string(),
            actor,
            decision: decision.into(),
            status,
            error,
            buffered: false,
            dropped: 0,
            resources,
        }
    }
}

/// What the HTTP edge saw of a request, for its audit entry.
pub(crate) struct Seen<'a> {
    /// The HTTP method, as sent.
    pub(crate) method: &'a str,
    /// The path without `/v1/`, percent-decoded.
    pub(crate) path: &'a str,
    /// A `GET` with `?list=true`.
    pub(crate) listing: bool,
    /// The token the request presents, if any (only its HMAC is recorded).
    pub(crate) token: Option<&'a str>,
    /// The request id the guard settled on (the caller's, if plain, or a
    /// new UUID).
    pub(crate) request_id: &'a str,
    /// The client's address, after trusted proxies.
    pub(crate) client_ip: IpAddr,
}

/// An audit entry in the making.
pub(crate) struct Pending {
    context: Arc<Context>,
    /// Only to make sure it appears in no error message; zeroized on drop.
    token: Option<zeroize::Zeroizing<String>>,
}

/// Longest path and error message kept, in characters.
const MAX_FIELD: usize = 1024;

impl Pending {
    /// Notes the request before it runs. The audit keys are the ones the
    /// request starts with: a request that starts sealed is buffered.
    pub(crate) fn start(core: &Core, seen: Seen<'_>) -> Self {
        let keys = core.audit.keys();
        let token_hmac = match (seen.token, &keys) {
            (Some(token), Some(keys)) => keys.hmac(token),
            _ => String::new(),
        };
        let token = seen.token.map(|t| zeroize::Zeroizing::new(t.to_string()));
        let (method, path, listing, request_id, client_ip) = (
            seen.method,
            seen.path,
            seen.listing,
            seen.request_id,
            seen.client_ip,
        );
        let known = Known {
            time_us: now_us(),
            request_id: request_id.to_string(),
            client_ip,
            method: clean(method),
            path: clean(path),
            operation: operation(method, listing),
            token_hmac,
            keys,
        };
        Self {
            context: Arc::new(Context {
                known,
                noted: Mutex::default(),
            }),
            token,
        }
    }

    /// Runs the request so that the core can name its caller (and the
    /// barrier can commit its entry with its change).
    pub(crate) async fn run<F: Future>(&self, request: F) -> F::Output {
        NOTED.scope(self.context.clone(), request).await
    }

    /// Writes the entry of a request answered with `status` (and, for a failure, the message it
    /// carried). An error means the entry could not be written: the caller must not send the
    /// response but a 503 (fail-closed, R-AUD-1).
    pub(crate) async fn finish(self, core: &Core, status: u16, error: &str) -> Result<(), Error> {
        let mut error = clean(error);
        // Messages are written never to hold a token; make sure.
        if let Some(token) = self.token.as_deref()
            && token.len() >= 8
            && error.contains(token.as_str())
        {
            error = error.replace(token.as_str(), "[token]");
        }
        let Noted {
            caller,
            resources,
            committed,
        } = std::mem::take(&mut *self.context.noted.lock());
        let known = &self.context.known;
        let failed = status >= 400;
        let written = if let (Some(seq), Some(keys), false) = (committed, &known.keys, failed) {
            // The entry went in with the change; only the file sink (if
            // any) still has to hold it before the response leaves.
            core.audit.sync_file(keys.clone(), seq).await
        } else {
            let event = known.event(caller, resources, status, error);
            core.audit.record(event, known.keys.clone()).await
        };
        written.map_err(Error::AuditUnavailable)
    }
}

fn operation(method: &str, listing: bool) -> &'static str {
    match method {
        "GET" if listing => "list",
        "GET" => "read",
        "LIST" => "list",
        "POST" | "PUT" => "write",
        "DELETE" => "delete",
        "PATCH" => "patch",
        "HEAD" => "head",
        _ => "",
    }
}

/// Bounded, and without control characters (no line breaks or terminal
/// escapes in anything that reads the log).
fn clean(text: &str) -> String {
    text.chars()
        .take(MAX_FIELD)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_follow_the_method() {
        assert_eq!(operation("GET", true), "list");
        assert_eq!(operation("GET", false), "read");
        assert_eq!(operation("PUT", false), "write");
        assert_eq!(operation("LIST", false), "list");
        assert_eq!(operation("CONNECT", false), "");
    }

    #[test]
    fn fields_are_cleaned() {
        assert_eq!(clean("a\nb\x1b[31m"), "a\u{FFFD}b\u{FFFD}[31m");
        assert_eq!(clean(&"x".repeat(5000)).len(), MAX_FIELD);
    }
}
