//! `zafe agent run --config agent.toml`: the host agent's daemon (R-AGT-1..4).
//!
//! It renders its templates at start, keeps one WebSocket to the server (verified identity,
//! pinned TLS, its own token), and re-renders a template the moment the server says a secret it
//! uses changed. Writes are atomic (temporary file and rename), 0600 unless the configuration
//! says otherwise, and skipped when the content is unchanged; a template that fails is reported
//! and leaves its file and the others alone.
//!
//! With `[exec]` it also runs the application as its child ([`exec`]): restarted (or signalled)
//! once per burst of changes to the values it uses, never for a reconnect or a token rotation;
//! signals sent to the agent are forwarded to it, and its exit becomes the agent's exit unless
//! `restart` says otherwise.
//!
//! With the server away it keeps every rendered file and the child running, says so, and
//! reconnects with jittered back-off; once back it catches up (renders everything again and
//! compares the child's environment). What happened (renders, the child's starts, exits and
//! restarts, connection losses) is reported to the server as `event` frames, kept in a bounded
//! queue while the server is away.
//!
//! A revoked agent (or one whose token was replaced) stops following: it reads its token file
//! again, and a rotated token there is used at once without restarting anything. Without a new
//! token it exits, or, with `[exec]`, keeps supervising its child without updates.

mod exec;

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use nix::sys::signal::Signal;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use zafe_client::{Client, ClientConfig, Token};
use zafe_core::reference::Reference;
use zafe_core::template::Template;
use zeroize::Zeroizing;

use crate::run::IsolatedConfigDir;

/// The agent's configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The server; else `ZAFE_ADDR`.
    address: Option<String>,
    /// The file holding the agent's token; else `ZAFE_AGENT_TOKEN`.
    token_file: Option<PathBuf>,
    #[serde(default, rename = "template")]
    templates: Vec<TemplateConfig>,
    /// The application to run as the agent's child.
    exec: Option<exec::ExecConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateConfig {
    /// A template in `zafe inject` syntax.
    source: PathBuf,
    /// Where it is rendered.
    destination: PathBuf,
    /// The file's mode, in octal (`"0640"`); 0600 by default.
    mode: Option<String>,
}

/// One template, parsed, with the references it uses.
struct Job {
    source: PathBuf,
    destination: PathBuf,
    mode: u32,
    text: String,
    references: BTreeSet<String>,
}

/// The WebSocket route agents connect to.
const CONNECT: &str = "/v1/sys/agents/connect";
/// The first and the longest wait between connection attempts (jittered).
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a revoked agent looks for a new token in its token file.
const TOKEN_RECHECK: Duration = Duration::from_secs(5);
/// Events kept while the server is away; the oldest are dropped beyond this.
const OUTBOX: usize = 256;
/// Events sent per second at most: the server refuses an agent that sends more than 50 frames
/// a second, and a queue filled while it was away must not get the agent disconnected.
const EVENTS_PER_SECOND: usize = 20;
/// A child that ran this long starts again without back-off.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// Runs the agent until it is stopped, its command exits (with `[exec]`), or its token is
/// refused for good.
pub(crate) async fn run(config_path: &Path, ctx: &crate::ctx::Ctx<'_>) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let config: Config = toml::from_str(&text)
        .with_context(|| format!("{}: invalid configuration", config_path.display()))?;
    let jobs = load_jobs(&config.templates)?;
    let exec = config.exec.map(exec::Spec::new).transpose()?;
    if jobs.is_empty() && exec.is_none() {
        bail!(
            "{}: nothing to do: add a [[template]] or an [exec] section",
            config_path.display()
        );
    }
    let base = match &config.address {
        Some(addr) => ctx.client_at(addr.clone())?,
        None => ctx.client()?,
    }
    .config()
    .clone();
    let token = read_token(config.token_file.as_deref())?;
    // The agent's credentials must not reach its command's environment block.
    crate::harden::scrub_environment(&["ZAFE_AGENT_TOKEN"]);
    let client = client_with(&base, &token)?;
    let exec_references = match &exec {
        Some(spec) => spec.references()?,
        None => BTreeSet::new(),
    };
    let agent = Agent {
        base,
        token_file: config.token_file,
        token,
        client,
        jobs,
        exec,
        exec_references,
        outbox: VecDeque::new(),
        flush_at: None,
    };
    agent.main().await
}

fn client_with(base: &ClientConfig, token: &str) -> anyhow::Result<Client> {
    let mut config = base.clone();
    config.token = Some(Token::new(token));
    Ok(Client::new(config)?)
}

fn read_token(file: Option<&Path>) -> anyhow::Result<Zeroizing<String>> {
    let token = match file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?,
        ),
        None => Zeroizing::new(std::env::var("ZAFE_AGENT_TOKEN").map_err(|_| {
            anyhow!("no token: set token_file in the configuration or ZAFE_AGENT_TOKEN")
        })?),
    };
    let token = Zeroizing::new(token.trim().to_string());
    if !token.starts_with("zafe_ag_") {
        bail!("the token is not an agent token (zafe_ag_...): create one with `zafe agent create`");
    }
    Ok(token)
}

fn load_jobs(templates: &[TemplateConfig]) -> anyhow::Result<Vec<Job>> {
    templates
        .iter()
        .map(|t| {
            let text = std::fs::read_to_string(&t.source)
                .with_context(|| format!("cannot read the template {}", t.source.display()))?;
            let parsed =
                Template::parse(&text).map_err(|e| anyhow!("{}: {e}", t.source.display()))?;
            let references = parsed
                .references()
                .into_iter()
                .map(Reference::to_string)
                .collect();
            let mode = match &t.mode {
                Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| {
                        anyhow!(
                            "{}: mode must be octal, like \"0640\"",
                            t.destination.display()
                        )
                    })?,
                None => 0o600,
            };
            Ok(Job {
                source: t.source.clone(),
                destination: t.destination.clone(),
                mode,
                text,
                references,
            })
        })
        .collect()
}

/// Unix microseconds now, as frames carry them.
fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Something the agent reports to the server (R-AGT-4): never a value.
struct Event {
    ts: i64,
    payload: Value,
}

fn event(kind: &str, fields: Value) -> Event {
    let mut payload = json!({ "kind": kind });
    if let (Some(map), Value::Object(fields)) = (payload.as_object_mut(), fields) {
        map.extend(fields);
    }
    Event {
        ts: now_micros(),
        payload,
    }
}

/// One connection to the server.
struct Link {
    socket: zafe_client::websocket::WebSocket,
    /// The last sequence number this agent sent, and the last one it accepted.
    sent: u64,
    received: u64,
}

impl Link {
    async fn send(&mut self, kind: &str, ts: i64, payload: Value) -> bool {
        self.sent += 1;
        let frame = json!({
            "v": 1,
            "type": kind,
            "id": format!("{kind}-{ts}-{}", self.sent),
            "seq": self.sent,
            "ts": ts,
            "payload": payload,
        });
        self.socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_ok()
    }
}

/// Reads the next message of the connection, if there is one (never completes otherwise).
async fn next_message(
    link: &mut Option<Link>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match link {
        Some(link) => link.socket.next().await,
        None => std::future::pending().await,
    }
}

/// Waits until `at`, or forever when there is no `at`.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a frame of the server asks for.
enum Frame {
    Changed(String),
    Resync,
    Heartbeat,
    Revoked,
    Ignored,
}

/// Reads one frame of the server: a replayed or duplicated one (its `seq` not above the last
/// accepted) is ignored.
fn read_frame(text: &str, link: &mut Link) -> Frame {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return Frame::Ignored;
    };
    let seq = frame["seq"].as_u64().unwrap_or(0);
    if seq <= link.received {
        return Frame::Ignored;
    }
    link.received = seq;
    match frame["type"].as_str() {
        Some("changed") => frame["payload"]["reference"]
            .as_str()
            .map_or(Frame::Ignored, |r| Frame::Changed(r.to_string())),
        Some("resync") => Frame::Resync,
        Some("heartbeat") => Frame::Heartbeat,
        Some("bye") if frame["payload"]["reason"] == "revoked" => Frame::Revoked,
        Some("error") => {
            eprintln!(
                "zafe agent: the server refused a frame: {}",
                frame["payload"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect::<String>()
            );
            Frame::Ignored
        }
        _ => Frame::Ignored,
    }
}

struct Agent {
    base: ClientConfig,
    token_file: Option<PathBuf>,
    token: Zeroizing<String>,
    client: Client,
    jobs: Vec<Job>,
    exec: Option<exec::Spec>,
    exec_references: BTreeSet<String>,
    outbox: VecDeque<Event>,
    /// When queued events are sent next.
    flush_at: Option<Instant>,
}

/// What the agent does about a refused token.
enum Refused {
    /// A new token is in the token file: connect with it.
    NewToken,
    /// Revoked for good.
    Revoked,
}

impl Agent {
    fn report(&mut self, event: Event) {
        if self.outbox.len() == OUTBOX {
            self.outbox.pop_front();
        }
        self.outbox.push_back(event);
        self.flush_at.get_or_insert_with(Instant::now);
    }

    /// Sends up to [`EVENTS_PER_SECOND`] queued events, and plans the next batch a second
    /// later; an event whose send failed stays queued.
    async fn flush(&mut self, link: &mut Link) {
        self.flush_at = None;
        for _ in 0..EVENTS_PER_SECOND {
            let Some(event) = self.outbox.pop_front() else {
                return;
            };
            if !link.send("event", event.ts, event.payload.clone()).await {
                self.outbox.push_front(event);
                return;
            }
        }
        if !self.outbox.is_empty() {
            self.flush_at = Some(Instant::now() + Duration::from_secs(1));
        }
    }

    /// Renders one template; `true` when its file was rewritten.
    async fn render(&mut self, index: usize) -> bool {
        let job = &self.jobs[index];
        let destination = job.destination.display().to_string();
        match render(&self.client, job).await {
            Ok(written) => {
                if written {
                    eprintln!("zafe agent: rendered {destination}");
                    self.report(event("render_ok", json!({ "destination": destination })));
                }
                written
            }
            Err(e) => {
                let message = format!("{e:#}");
                eprintln!("zafe agent: {destination} not rendered: {message}");
                self.report(event(
                    "render_failed",
                    json!({ "destination": destination, "message": message }),
                ));
                false
            }
        }
    }

    /// Renders every template (a failure leaves that file as it was); `true` when any file was
    /// rewritten.
    async fn render_all(&mut self) -> bool {
        let mut written = false;
        for index in 0..self.jobs.len() {
            written |= self.render(index).await;
        }
        written
    }

    /// Renders the templates that use `reference`; `true` when any file was rewritten.
    async fn render_using(&mut self, reference: &str) -> bool {
        let mut written = false;
        for index in 0..self.jobs.len() {
            if self.jobs[index].references.contains(reference) {
                written |= self.render(index).await;
            }
        }
        written
    }

    /// Reads the token file again after a refusal.
    fn refused(&mut self) -> Refused {
        match read_token(self.token_file.as_deref()) {
            Ok(token) if *token != *self.token => match client_with(&self.base, &token) {
                Ok(client) => {
                    eprintln!("zafe agent: using the new token from the token file");
                    self.token = token;
                    self.client = client;
                    Refused::NewToken
                }
                Err(_) => Refused::Revoked,
            },
            _ => Refused::Revoked,
        }
    }

    async fn main(mut self) -> anyhow::Result<ExitCode> {
        // Apart from the rest of the agent: the child is supervised while events are reported.
        let exec = self.exec.take();
        let mut signals = exec.as_ref().map(|_| exec::forwarded_signals());
        let isolated = match &exec {
            Some(_) => Some(IsolatedConfigDir::create().map_err(|e| anyhow!(e))?),
            None => None,
        };
        eprintln!("zafe agent: rendering {} template(s)", self.jobs.len());
        self.render_all().await;

        let mut link: Option<Link> = None;
        let mut connect_at = Some(Instant::now());
        let mut backoff = MIN_BACKOFF;
        let mut offline_since: Option<Instant> = None;
        let mut revoked = false;

        let mut child: Option<exec::Running> = None;
        let mut start_at = exec.as_ref().map(|_| Instant::now());
        let mut start_backoff = Duration::from_secs(1);
        let mut ever_started = false;
        // When the child's environment is compared next (the debounce window's end).
        let mut check_at: Option<Instant> = None;
        // A template was rewritten since the child started or was signalled.
        let mut templates_changed = false;
        // A stop signal was forwarded: the child's exit ends the agent.
        let mut stopping = false;

        loop {
            tokio::select! {
                message = next_message(&mut link) => {
                    let Some(current) = link.as_mut() else { continue };
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            link = None;
                            eprintln!(
                                "zafe agent: connection to {} lost; the rendered files{} are kept, reconnecting",
                                self.client.addr(),
                                if child.is_some() { " and the command" } else { "" }
                            );
                            offline_since = Some(Instant::now());
                            self.report(event("offline", json!({ "message": "connection to the server lost" })));
                            connect_at = Some(Instant::now() + jittered(backoff));
                            continue;
                        }
                        Some(Ok(_)) => continue,
                    };
                    match read_frame(&text, current) {
                        Frame::Changed(reference) => {
                            let written = self.render_using(&reference).await;
                            templates_changed |= written;
                            if let Some(spec) = &exec
                                && (written || self.exec_references.contains(&reference))
                            {
                                check_at.get_or_insert(Instant::now() + spec.debounce);
                            }
                        }
                        Frame::Resync => {
                            templates_changed |= self.render_all().await;
                            if let Some(spec) = &exec {
                                check_at.get_or_insert(Instant::now() + spec.debounce);
                            }
                        }
                        Frame::Heartbeat => {
                            let _ = current.send("heartbeat", now_micros(), json!({})).await;
                        }
                        Frame::Revoked => {
                            link = None;
                            match self.refused() {
                                Refused::NewToken => connect_at = Some(Instant::now()),
                                Refused::Revoked if child.is_some() || start_at.is_some() => {
                                    eprintln!("zafe agent: the agent was revoked or its token replaced: no more updates; the command keeps running and the rendered files are kept");
                                    revoked = true;
                                    connect_at = Some(Instant::now() + TOKEN_RECHECK);
                                }
                                Refused::Revoked => bail!(
                                    "the agent was revoked or its token replaced: stopping (the rendered files are kept)"
                                ),
                            }
                        }
                        Frame::Ignored => {}
                    }
                }

                () = until(self.flush_at), if link.is_some() => {
                    if let Some(current) = link.as_mut() {
                        self.flush(current).await;
                    }
                }

                () = until(connect_at), if link.is_none() => {
                    connect_at = None;
                    if revoked {
                        // Only a new token in the token file brings a revoked agent back.
                        match self.refused() {
                            Refused::NewToken => revoked = false,
                            Refused::Revoked => {
                                connect_at = Some(Instant::now() + TOKEN_RECHECK);
                                continue;
                            }
                        }
                    }
                    let attempt = tokio::time::timeout(
                        CONNECT_TIMEOUT,
                        self.client.websocket(CONNECT, &self.token),
                    )
                    .await
                    .unwrap_or_else(|_| Err(zafe_client::Error::Transport {
                        addr: self.client.addr().to_string(),
                        detail: "timed out".into(),
                    }));
                    match attempt {
                        Ok(socket) => {
                            backoff = MIN_BACKOFF;
                            eprintln!("zafe agent: connected to {}", self.client.addr());
                            let mut current = Link { socket, sent: 0, received: 0 };
                            let hello = json!({"version": env!("CARGO_PKG_VERSION"), "host": hostname()});
                            if let Some(since) = offline_since.take() {
                                let secs = since.elapsed().as_secs();
                                self.report(event("reconnected", json!({ "message": format!("back after {secs} s offline") })));
                            }
                            if current.send("hello", now_micros(), hello).await {
                                link = Some(current);
                            } else {
                                connect_at = Some(Instant::now() + jittered(backoff));
                                continue;
                            }
                            // Catch up on what changed while the connection was down.
                            templates_changed |= self.render_all().await;
                            if child.is_some() {
                                check_at.get_or_insert(Instant::now());
                            }
                        }
                        Err(zafe_client::Error::ServerError { status: 403, .. }) => match self.refused() {
                            Refused::NewToken => connect_at = Some(Instant::now()),
                            Refused::Revoked if child.is_some() || start_at.is_some() => {
                                if !revoked {
                                    eprintln!("zafe agent: the server refuses this agent's token (revoked or replaced): no updates; the command keeps running");
                                }
                                revoked = true;
                                connect_at = Some(Instant::now() + TOKEN_RECHECK);
                            }
                            Refused::Revoked => bail!(
                                "the server refuses this agent's token (revoked or replaced): stopping (the rendered files are kept)"
                            ),
                        },
                        Err(e) => {
                            eprintln!(
                                "zafe agent: cannot connect to the server: {e}; the rendered files{} are kept, retrying",
                                if child.is_some() { " and the command" } else { "" }
                            );
                            offline_since.get_or_insert_with(Instant::now);
                            connect_at = Some(Instant::now() + jittered(backoff));
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }

                () = until(start_at), if child.is_none() && !stopping => {
                    start_at = None;
                    let spec = exec.as_ref().expect("start_at is set only with [exec]");
                    let prepared = match spec.prepare(&self.client).await {
                        Ok(prepared) => prepared,
                        Err(failure) if !ever_started && failure.code == crate::run::EXIT_UNRESOLVED => {
                            eprintln!("zafe agent: the command's environment: {}", failure.message);
                            return Ok(ExitCode::from(failure.code));
                        }
                        Err(failure) => {
                            eprintln!("zafe agent: the command's environment: {}; retrying", failure.message);
                            self.report(event("render_failed", json!({ "destination": "[exec] env", "message": failure.message })));
                            start_at = Some(Instant::now() + jittered(start_backoff));
                            start_backoff = (start_backoff * 2).min(MAX_BACKOFF);
                            continue;
                        }
                    };
                    match spec.spawn(&prepared, isolated.as_ref().expect("with [exec]")) {
                        Ok(running) => {
                            eprintln!("zafe agent: started the command (pid {})", running.pid());
                            self.report(event("child_started", json!({ "message": format!("pid {}", running.pid()) })));
                            ever_started = true;
                            templates_changed = false;
                            child = Some(running);
                        }
                        Err(message) => {
                            eprintln!("zafe agent: {message}");
                            if !ever_started {
                                bail!("the command could not be started");
                            }
                            start_at = Some(Instant::now() + jittered(start_backoff));
                            start_backoff = (start_backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }

                () = until(check_at), if child.is_some() => {
                    check_at = None;
                    let spec = exec.as_ref().expect("a child only with [exec]");
                    let prepared = match spec.prepare(&self.client).await {
                        Ok(prepared) => prepared,
                        Err(failure) => {
                            // The command keeps what it has; the next change or reconnect tries again.
                            eprintln!("zafe agent: the command's environment: {}; the command keeps running as it is", failure.message);
                            self.report(event("render_failed", json!({ "destination": "[exec] env", "message": failure.message })));
                            continue;
                        }
                    };
                    let running = child.as_mut().expect("checked");
                    if prepared.fingerprint() == running.fingerprint && !templates_changed {
                        continue;
                    }
                    templates_changed = false;
                    match spec.on_change {
                        exec::OnChange::Signal(sig) => {
                            running.fingerprint = prepared.fingerprint();
                            running.signal(sig);
                            eprintln!("zafe agent: a value the command uses changed: sent it {sig}");
                            self.report(event("child_signalled", json!({ "message": sig.as_str() })));
                        }
                        exec::OnChange::Restart => {
                            let old = child.take().expect("checked");
                            eprintln!("zafe agent: a value the command uses changed: restarting it");
                            let status = spec.stop(old).await;
                            self.report(event("child_exited", json!({ "code": crate::child::exit_code(status), "message": "stopped for a restart" })));
                            match spec.spawn(&prepared, isolated.as_ref().expect("with [exec]")) {
                                Ok(running) => {
                                    eprintln!("zafe agent: started the command (pid {})", running.pid());
                                    self.report(event("child_restarted", json!({ "message": format!("pid {}: a value it uses changed", running.pid()) })));
                                    child = Some(running);
                                }
                                Err(message) => {
                                    eprintln!("zafe agent: {message}; retrying");
                                    start_at = Some(Instant::now() + jittered(start_backoff));
                                }
                            }
                        }
                    }
                    drop(prepared);
                }

                status = exec::exited(&mut child) => {
                    let running = child.take().expect("exited only with a child");
                    let ran = running.started.elapsed();
                    running.finish().await;
                    let code = crate::child::exit_code(status);
                    eprintln!("zafe agent: the command exited with code {code}");
                    self.report(event("child_exited", json!({ "code": code })));
                    let spec = exec.as_ref().expect("a child only with [exec]");
                    let again = !stopping && match spec.restart {
                        exec::Restart::Never => false,
                        exec::Restart::OnFailure => code != 0,
                        exec::Restart::Always => true,
                    };
                    if !again {
                        if let Some(current) = link.as_mut() {
                            self.flush(current).await;
                        }
                        return Ok(ExitCode::from(code));
                    }
                    if ran >= STABLE_RUN {
                        start_backoff = Duration::from_secs(1);
                    }
                    eprintln!("zafe agent: starting it again (restart = {:?})", spec.restart);
                    start_at = Some(Instant::now() + jittered(start_backoff));
                    start_backoff = (start_backoff * 2).min(MAX_BACKOFF);
                }

                Some(sig) = next_signal(&mut signals) => {
                    let ends = matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT);
                    match &child {
                        Some(running) => {
                            running.signal(sig);
                            if ends {
                                stopping = true;
                            }
                        }
                        None if ends => return Ok(ExitCode::SUCCESS),
                        None => {}
                    }
                }
            }
        }
    }
}

async fn next_signal(signals: &mut Option<tokio::sync::mpsc::Receiver<Signal>>) -> Option<Signal> {
    match signals {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Renders a template to its file; `Ok(false)` when the file already held this content.
async fn render(client: &Client, job: &Job) -> anyhow::Result<bool> {
    let rendered =
        crate::inject::render(client, &job.text, &job.source.display().to_string()).await?;
    if let Ok(current) = std::fs::read(&job.destination)
        && current == rendered.as_bytes()
    {
        return Ok(false);
    }
    crate::files::write_atomic(&job.destination, rendered.as_bytes(), job.mode)?;
    Ok(true)
}

/// The host's name, as the agent reports it (empty where the system does not say).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().chars().take(253).collect())
        .unwrap_or_default()
}

/// `base` plus up to half of it again, at random: agents that lost the same server do not all
/// come back at the same instant.
fn jittered(base: Duration) -> Duration {
    use rand_core::RngCore as _;
    let mut byte = [0u8; 1];
    rand_core::OsRng.fill_bytes(&mut byte);
    base + base.mul_f64(f64::from(byte[0]) / 510.0)
}
