//! `zafe agent run --config agent.toml`: the host agent's daemon (R-AGT-1, R-AGT-3).
//!
//! It renders its templates at start, keeps one WebSocket to the server (verified identity,
//! pinned TLS, its own token), and re-renders a template the moment the server says a secret it
//! uses changed. Writes are atomic (temporary file and rename), 0600 unless the configuration
//! says otherwise, and skipped when the content is unchanged; a template that fails is reported
//! and leaves its file and the others alone. With the server away it keeps every rendered file,
//! says so, and reconnects with jittered back-off, catching up by re-rendering everything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use zafe_client::{Client, ClientConfig, Token};
use zafe_core::reference::Reference;
use zafe_core::template::Template;
use zeroize::Zeroizing;

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

/// Runs the agent until it is stopped (or its token is refused for good).
pub(crate) async fn run(config_path: &Path, ctx: &crate::ctx::Ctx<'_>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let config: Config = toml::from_str(&text)
        .with_context(|| format!("{}: invalid configuration", config_path.display()))?;
    let token = read_token(config.token_file.as_deref())?;
    let jobs = load_jobs(&config.templates)?;
    let client = {
        let base = match &config.address {
            Some(addr) => ctx.client_at(addr.clone())?,
            None => ctx.client()?,
        };
        let mut client_config: ClientConfig = base.config().clone();
        client_config.token = Some(Token::new(token.as_str()));
        Client::new(client_config)?
    };
    eprintln!("zafe agent: rendering {} template(s)", jobs.len());
    render_all(&client, &jobs).await;
    let mut backoff = Duration::from_millis(500);
    loop {
        match client.websocket("/v1/sys/agents/connect", &token).await {
            Ok(socket) => {
                backoff = Duration::from_millis(500);
                eprintln!("zafe agent: connected to {}", client.addr());
                // Catch up on what changed while the connection was down.
                render_all(&client, &jobs).await;
                match follow(&client, &jobs, socket).await {
                    Ok(Stop::Revoked) => bail!(
                        "the agent was revoked or its token replaced: stopping (the rendered files are kept)"
                    ),
                    Ok(Stop::Lost) | Err(_) => eprintln!(
                        "zafe agent: connection to {} lost; the rendered files are kept, reconnecting",
                        client.addr()
                    ),
                }
            }
            Err(zafe_client::Error::ServerError { status: 403, .. }) => {
                bail!(
                    "the server refuses this agent's token (revoked or replaced): stopping (the rendered files are kept)"
                )
            }
            Err(e) => eprintln!(
                "zafe agent: the server is unreachable ({e}); the rendered files are kept, retrying"
            ),
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
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

/// Renders every template; a failure is reported and leaves that file as it was.
async fn render_all(client: &Client, jobs: &[Job]) {
    for job in jobs {
        if let Err(e) = render(client, job).await {
            eprintln!(
                "zafe agent: {} not rendered: {e:#}",
                job.destination.display()
            );
        }
    }
}

async fn render(client: &Client, job: &Job) -> anyhow::Result<()> {
    let rendered =
        crate::inject::render(client, &job.text, &job.source.display().to_string()).await?;
    if let Ok(current) = std::fs::read(&job.destination)
        && current == rendered.as_bytes()
    {
        return Ok(());
    }
    crate::files::write_atomic(&job.destination, rendered.as_bytes(), job.mode)?;
    eprintln!("zafe agent: rendered {}", job.destination.display());
    Ok(())
}

enum Stop {
    /// The connection ended; reconnect.
    Lost,
    /// The server said this agent is revoked.
    Revoked,
}

/// Follows the server's frames: re-renders the templates that use a changed secret, answers
/// with sequenced frames of its own.
async fn follow(
    client: &Client,
    jobs: &[Job],
    mut socket: zafe_client::websocket::WebSocket,
) -> anyhow::Result<Stop> {
    let mut seq = 0u64;
    let mut send = |kind: &str, payload: Value| {
        seq += 1;
        json!({"v": 1, "type": kind, "id": format!("agent-{seq}"), "seq": seq, "ts": 0, "payload": payload})
            .to_string()
    };
    let hello = send(
        "hello",
        json!({"version": env!("CARGO_PKG_VERSION"), "host": hostname()}),
    );
    socket.send(Message::Text(hello.into())).await?;
    let mut last_seq = 0u64;
    while let Some(message) = socket.next().await {
        let text = match message? {
            Message::Text(text) => text,
            Message::Close(_) => return Ok(Stop::Lost),
            _ => continue,
        };
        let frame: Value = serde_json::from_str(&text)?;
        let frame_seq = frame["seq"].as_u64().unwrap_or(0);
        if frame_seq <= last_seq {
            // A replayed or duplicated frame from the server: ignore it.
            continue;
        }
        last_seq = frame_seq;
        match frame["type"].as_str() {
            Some("changed") => {
                let reference = frame["payload"]["reference"].as_str().unwrap_or_default();
                for job in jobs.iter().filter(|j| j.references.contains(reference)) {
                    if let Err(e) = render(client, job).await {
                        eprintln!(
                            "zafe agent: {} not rendered: {e:#}",
                            job.destination.display()
                        );
                    }
                }
            }
            Some("resync") => render_all(client, jobs).await,
            Some("bye") if frame["payload"]["reason"] == "revoked" => return Ok(Stop::Revoked),
            Some("heartbeat") => {
                let beat = send("heartbeat", json!({}));
                socket.send(Message::Text(beat.into())).await?;
            }
            _ => {}
        }
    }
    Ok(Stop::Lost)
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
    let mut byte = [0u8; 1];
    let _ = getrandom_fill(&mut byte);
    base + base.mul_f64(f64::from(byte[0]) / 510.0)
}

fn getrandom_fill(bytes: &mut [u8]) -> anyhow::Result<()> {
    use rand_core::RngCore as _;
    rand_core::OsRng.fill_bytes(bytes);
    Ok(())
}
