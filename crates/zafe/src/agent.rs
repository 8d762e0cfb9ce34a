//! `zafe agent create|list|events|revoke|rotate-token`: a project's host agents (R-AGT-1), and
//! what they report (R-AGT-4).
//!
//! What an agent reports is data: in table output every control character and escape sequence
//! in it is shown as a visible escape ([`zafe_core::text::inert`]), never interpreted by the
//! terminal; JSON output is JSON.

use std::process::ExitCode;

use serde_json::{Value, json};
use zafe_client::path::encode_segment;
use zafe_client::{Client, Method};

use crate::cli::Format;
use crate::ctx::Ctx;
use crate::output::{Out, outln};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
    /// Run the agent: render templates now and whenever a secret they use changes
    #[command(after_help = "\
Examples:
  zafe agent run --config /etc/zafe/agent.toml

agent.toml:
  address = \"https://zafe.example.com:8200\"   # else ZAFE_ADDR
  token_file = \"/etc/zafe/agent.token\"        # else ZAFE_AGENT_TOKEN

  [[template]]                                # repeatable; `zafe inject` syntax
  source = \"/etc/app/app.env.tpl\"             # {{ zafe://myapp/prod/DB_URL }}
  destination = \"/run/app/app.env\"            # 0600 unless `mode` says otherwise

  [exec]                                      # optional: run the app as the agent's child
  command = [\"./server\", \"--port\", \"8080\"]
  env = { DATABASE_URL = \"zafe://myapp/prod/DB_URL\" }   # and/or env_file = \".env.zafe\"
  on_change = \"restart\"      # or \"signal\" (reload_signal, SIGHUP by default)
  debounce = \"2s\"            # changes within this window make one restart
  stop_signal = \"SIGTERM\"    # then SIGKILL after stop_grace (10s)
  restart = \"never\"          # or \"on-failure\", \"always\": when the app exits by itself
  mask = false               # mask the app's output as `zafe run` does

The app is restarted only when a value it uses changed (never for a reconnect or a new token).
Signals sent to the agent are forwarded to it; its exit code becomes the agent's. With the server
away the files and the app stay as they are; the agent catches up when the server is back.

Exit codes: the app's own (with [exec]); 1 when revoked or misconfigured; 121 when the app's
secrets cannot be resolved at start")]
    Run {
        /// The agent's configuration file
        #[arg(long, value_name = "FILE")]
        config: std::path::PathBuf,
    },
    /// Register an agent and print its token (once)
    #[command(after_help = "\
Examples:
  zafe agent create web-1 --project myapp --env prod
  zafe agent create worker --project myapp --env prod --env staging --format json

The agent may read (and list) only the environments given here. The token is shown once:
put it in the host's token file (e.g. /etc/zafe/agent.token, mode 0600).")]
    Create {
        #[arg(value_name = "NAME")]
        name: String,
        /// The project the agent belongs to
        #[arg(long)]
        project: String,
        /// An environment the agent may read (repeatable)
        #[arg(long = "env", required = true, value_name = "ENV")]
        envs: Vec<String>,
    },
    /// List agents: name, environments, connected, last seen, last heartbeat, version, host
    #[command(after_help = "\
Examples:
  zafe agent list --project myapp
  zafe agent list --format json")]
    List {
        /// Only this project's agents (default: every project you may see)
        #[arg(long)]
        project: Option<String>,
    },
    /// Show what an agent reported: renders, its child process, reconnects
    #[command(after_help = "\
Examples:
  zafe agent events web-1 --project myapp
  zafe agent events web-1 --project myapp --follow
  zafe agent events web-1 --project myapp --limit 200 --format json

Newest last. With --follow, new events are printed as they arrive (polled about once a
second, from whichever server node stored them) until interrupted; with --format json or
jsonl, one JSON object a line. Control characters and escape sequences in what the agent
reported are shown as visible escapes (\\x1b, \\n, \\u{202e}), never interpreted.")]
    Events {
        #[arg(value_name = "NAME")]
        name: String,
        /// The project the agent belongs to
        #[arg(long)]
        project: String,
        /// Keep printing new events until interrupted
        #[arg(short, long)]
        follow: bool,
        /// How many of the newest events to show first
        #[arg(short = 'n', long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
        limit: u64,
    },
    /// Revoke an agent: its token is refused at once and the name can be registered again
    #[command(after_help = "\
Examples:
  zafe agent revoke web-1 --project myapp")]
    Revoke {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(long)]
        project: String,
    },
    /// Give an agent a new token (printed once); the old one is refused at once
    #[command(
        name = "rotate-token",
        after_help = "\
Examples:
  zafe agent rotate-token web-1 --project myapp > /etc/zafe/agent.token"
    )]
    RotateToken {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(long)]
        project: String,
    },
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    if let Args::Run { config } = &args {
        return crate::agent_run::run(config, ctx).await;
    }
    let client = &ctx.client()?;
    let out = ctx.out();
    match args {
        Args::Create {
            name,
            project,
            envs,
        } => {
            let reply = client
                .request_json(
                    Method::POST,
                    &agent_path(&project, &name),
                    Some(&json!({ "environments": envs })),
                )
                .await?
                .unwrap_or_default();
            print_token(out, &reply["data"], &format!("agent {name} of {project}"))?;
        }
        Args::List { project } => list(client, out, project.as_deref()).await?,
        Args::Events {
            name,
            project,
            follow,
            limit,
        } => events(client, out, &project, &name, follow, limit as usize).await?,
        Args::Revoke { name, project } => {
            client
                .request_json(Method::DELETE, &agent_path(&project, &name), None)
                .await?;
            eprintln!("Revoked agent {name} of project {project}: its token no longer works.");
        }
        Args::Run { .. } => unreachable!("handled above"),
        Args::RotateToken { name, project } => {
            let path = format!("{}/rotate-token", agent_path(&project, &name));
            let reply = client
                .request_json(Method::POST, &path, None)
                .await?
                .unwrap_or_default();
            print_token(
                out,
                &reply["data"],
                &format!("a new token for agent {name} of {project}"),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn agent_path(project: &str, name: &str) -> String {
    format!(
        "/v1/sys/agents/{}/{}",
        encode_segment(project),
        encode_segment(name)
    )
}

fn print_token(out: Out<'_>, data: &Value, what: &str) -> anyhow::Result<()> {
    crate::output::print_new_token(
        out,
        data,
        &format!(
            "Created {what}. The token above is shown only this once: put it in the agent's token file."
        ),
    )
}

async fn list(client: &Client, out: Out<'_>, project: Option<&str>) -> anyhow::Result<()> {
    let projects: Vec<String> = match project {
        Some(p) => vec![p.to_string()],
        None => {
            let reply = client
                .request_json(Method::GET, "/v1/sys/projects?list=true", None)
                .await?
                .unwrap_or_default();
            reply["data"]["keys"]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        }
    };
    let mut agents = Vec::new();
    for p in &projects {
        // Page by page (a project may have more agents than one answer holds).
        let mut after = String::new();
        loop {
            let path = format!(
                "/v1/sys/agents/{}?list=true&after={}",
                encode_segment(p),
                encode_segment(&after)
            );
            let reply = match client.request_json(Method::GET, &path, None).await {
                Ok(reply) => reply.unwrap_or_default(),
                // Listing every project: skip those whose agents this caller may not see.
                Err(_) if project.is_none() => break,
                Err(e) => return Err(e.into()),
            };
            if let Some(map) = reply["data"]["agents"].as_object() {
                agents.extend(map.values().cloned());
            }
            match reply["data"]["next"].as_str() {
                Some(next) if !next.is_empty() && next != after => after = next.to_string(),
                _ => break,
            }
        }
    }
    if out.json() {
        return out.print_json(&agents);
    }
    let text = |v: &Value| match v {
        Value::String(s) => zafe_core::text::inert(s),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    };
    outln!(
        out,
        "{:<12} {:<20} {:<16} {:<9} {:<22} {:<22} {:<10} HOST",
        "PROJECT",
        "NAME",
        "ENVIRONMENTS",
        "CONNECTED",
        "LAST SEEN",
        "LAST HEARTBEAT",
        "VERSION"
    );
    for a in &agents {
        outln!(
            out,
            "{:<12} {:<20} {:<16} {:<9} {:<22} {:<22} {:<10} {}",
            text(&a["project"]),
            text(&a["name"]),
            text(&a["environments"]),
            text(&a["connected"]),
            a["last_seen_time"].as_str().unwrap_or("never"),
            text(&a["last_heartbeat_time"]),
            text(&a["version"]),
            text(&a["host"])
        );
    }
    Ok(())
}

/// How often `--follow` asks for new events.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `zafe agent events`: the newest `limit` events, then (with `follow`) new ones as they come.
async fn events(
    client: &Client,
    out: Out<'_>,
    project: &str,
    name: &str,
    follow: bool,
    limit: usize,
) -> anyhow::Result<()> {
    let path = format!("{}/events", agent_path(project, name));
    // Everything held (at most 1,000 a page), to show the newest `limit`.
    let mut cursor = String::from("0");
    let mut held: Vec<Value> = Vec::new();
    loop {
        let (page, next, more) = events_page(client, &path, &cursor).await?;
        held.extend(page);
        cursor = next;
        if !more {
            break;
        }
    }
    let first = &held[held.len().saturating_sub(limit)..];
    let lines = follow || matches!(out.format, Format::Jsonl);
    if out.json() && !lines {
        return out.print_json(&first);
    }
    if !matches!(out.format, Format::Json | Format::Jsonl) {
        outln!(
            out,
            "{:<20} {:<16} {:>5}  {:<24} MESSAGE",
            "TIME",
            "KIND",
            "CODE",
            "DESTINATION"
        );
    }
    for event in first {
        print_event(out, event)?;
    }
    out.flush()?;
    while follow {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let (page, next, _) = events_page(client, &path, &cursor).await?;
        cursor = next;
        for event in &page {
            print_event(out, event)?;
        }
        out.flush()?;
    }
    Ok(())
}

/// One page of events after `cursor`: the events, the next cursor, whether more are held.
async fn events_page(
    client: &Client,
    path: &str,
    cursor: &str,
) -> anyhow::Result<(Vec<Value>, String, bool)> {
    let reply = client
        .request_json(
            Method::GET,
            &format!("{path}?after={}&limit=1000", encode_segment(cursor)),
            None,
        )
        .await?
        .unwrap_or_default();
    let data = &reply["data"];
    let page = data["events"].as_array().cloned().unwrap_or_default();
    let next = data["cursor"].as_str().unwrap_or(cursor).to_string();
    Ok((page, next, data["more"].as_bool().unwrap_or(false)))
}

/// One event: a JSON line for json/jsonl, else a table row with everything the agent reported
/// made inert.
fn print_event(out: Out<'_>, event: &Value) -> anyhow::Result<()> {
    if matches!(out.format, Format::Json | Format::Jsonl) {
        outln!(out, "{}", serde_json::to_string(event)?);
        return Ok(());
    }
    let text = |v: &Value| match v {
        Value::String(s) => zafe_core::text::inert(s),
        Value::Number(n) => n.to_string(),
        _ => "-".into(),
    };
    outln!(
        out,
        "{:<20} {:<16} {:>5}  {:<24} {}",
        text(&event["time"]),
        text(&event["kind"]),
        text(&event["code"]),
        text(&event["destination"]),
        text(&event["message"])
    );
    Ok(())
}
