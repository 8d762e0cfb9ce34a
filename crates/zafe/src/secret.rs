//! `zafe secret set|get|list|history|delete`: a project's secrets, one per
//! key, at `<mount>/data/<project>/<env>/<KEY>` with data `{"value": ...}`.

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use zafe_client::Method;
use zeroize::Zeroizing;

use crate::ctx::Ctx;
use crate::output::outln;
use crate::project::{Conn, Scope, env_keys, from_file, project_file};

pub(crate) const EXAMPLES: &str = "\
Examples:
  zafe secret set DB_URL                     Prompts for the value (hidden), or reads stdin
  printf %s \"$URL\" | zafe secret set DB_URL
  zafe secret set DB_URL --from-file url.txt
  zafe secret get DB_URL --env prod
  zafe secret list --project myapp --env dev
  zafe secret history DB_URL                 Who changed it, and when
  zafe secret delete DB_URL

The project and environment come from .zafe.toml unless --project / --env are given.";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub scope: Scope,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Set a secret's value (a new version); the value is prompted for or read from stdin
    #[command(after_help = "\
Examples:
  zafe secret set DATABASE_URL -p myapp -e dev
  printf %s \"$VALUE\" | zafe secret set API_KEY
  zafe secret set TLS_KEY --from-file key.pem")]
    Set {
        key: String,
        /// Read the value from this file
        #[arg(long, value_name = "FILE")]
        from_file: Option<std::path::PathBuf>,
    },
    /// Print a secret's value
    #[command(after_help = "\
Examples:
  zafe secret get DATABASE_URL -p myapp -e prod
  zafe secret get API_KEY --version 3")]
    Get {
        key: String,
        /// A version (default: the latest)
        #[arg(long)]
        version: Option<u64>,
    },
    /// List an environment's keys
    #[command(after_help = "\
Examples:
  zafe secret list -p myapp -e prod
  zafe secret list --format json")]
    List,
    /// Show who changed a secret and when (no values)
    #[command(after_help = "\
Examples:
  zafe secret history DATABASE_URL -p myapp -e prod")]
    History { key: String },
    /// Delete a secret: every version, for good
    #[command(after_help = "\
Examples:
  zafe secret delete OLD_TOKEN -p myapp -e dev")]
    Delete { key: String },
}

/// A value to store: from a file, a hidden prompt, or standard input.
fn read_value(from_file: Option<&std::path::Path>, key: &str) -> anyhow::Result<Zeroizing<String>> {
    let value = match from_file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None if std::io::stdin().is_terminal() => Zeroizing::new(rpassword::prompt_password(
            format!("Value for {key} (hidden): "),
        )?),
        None => {
            let mut text = Zeroizing::new(String::new());
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
    };
    // One trailing newline (from `echo` or an editor) is not part of the value.
    let trimmed = value
        .strip_suffix("\r\n")
        .or_else(|| value.strip_suffix('\n'))
        .unwrap_or(&value);
    Ok(Zeroizing::new(trimmed.to_string()))
}

fn check_key(key: &str) -> anyhow::Result<()> {
    if key.is_empty()
        || key.len() > 256
        || key.starts_with('/')
        || key.ends_with('/')
        || key.chars().any(char::is_control)
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        bail!(
            "invalid key {key:?}: a name such as DB_URL (no control characters, empty, '.' or '..' segments)"
        );
    }
    Ok(())
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.project_client()?;
    let out = ctx.out();
    let ctx = Conn { client, out };
    let found = project_file()?;
    let slug = match args.scope.project {
        Some(p) => p,
        None => from_file(&found, "project")?,
    };
    let env = match args.scope.env {
        Some(e) => e,
        None => from_file(&found, "environment")?,
    };
    let project = ctx.project_with_env(&slug, &env).await?;
    match args.command {
        Command::Set { key, from_file } => {
            check_key(&key)?;
            let value = read_value(from_file.as_deref(), &key)?;
            let body = json!({ "data": { "value": value.as_str() } });
            let reply = ctx
                .call(Method::POST, &project.api("data", &env, &key), Some(&body))
                .await?;
            eprintln!(
                "Success! Set {key} in {slug}/{env} (version {}).",
                reply["data"]["version"]
            );
        }
        Command::Get { key, version } => {
            check_key(&key)?;
            let mut path = project.api("data", &env, &key);
            if let Some(v) = version {
                path.push_str(&format!("?version={v}"));
            }
            let reply = match ctx.client.request_json(Method::GET, &path, None).await {
                Ok(r) => r.unwrap_or_default(),
                Err(zafe_client::Error::ServerError { status: 404, .. }) => {
                    eprintln!("No secret {key} in {slug}/{env}.");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            };
            let value = &reply["data"]["data"]["value"];
            if out.json() {
                out.print_json(&reply["data"])?;
            } else if let Some(text) = value.as_str() {
                out.write_raw(text.as_bytes())?;
                if out.terminal() {
                    out.write_raw(b"\n")?;
                }
            } else {
                bail!(
                    "{slug}/{env}/{key} has no string field \"value\"; read it with `zafe kv get`"
                );
            }
        }
        Command::List => {
            let keys = env_keys(&ctx, &project, &env).await?;
            if out.json() {
                out.print_json(&keys)?;
            } else {
                for key in keys {
                    outln!(out, "{key}");
                }
            }
        }
        Command::History { key } => {
            check_key(&key)?;
            let reply = ctx
                .call(Method::GET, &project.api("metadata", &env, &key), None)
                .await?;
            let versions = reply["data"]["versions"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if out.json() {
                out.print_json(&versions)?;
            } else {
                let mut rows: Vec<(u64, &Value)> = versions
                    .iter()
                    .filter_map(|(n, v)| n.parse().ok().map(|n| (n, v)))
                    .collect();
                rows.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
                outln!(out, "{:7}  {:30}  {:12}  By", "Version", "Created", "State");
                for (n, v) in rows {
                    let state = if v["destroyed"].as_bool() == Some(true) {
                        "destroyed"
                    } else if v["deletion_time"].as_str().is_some_and(|t| !t.is_empty()) {
                        "deleted"
                    } else {
                        "live"
                    };
                    outln!(
                        out,
                        "{n:7}  {:30}  {state:12}  {}",
                        v["created_time"].as_str().unwrap_or_default(),
                        v["created_by"].as_str().unwrap_or("-")
                    );
                }
            }
        }
        Command::Delete { key } => {
            check_key(&key)?;
            ctx.call(Method::DELETE, &project.api("metadata", &env, &key), None)
                .await?;
            eprintln!("Success! Deleted {key} from {slug}/{env} (every version).");
        }
    }
    Ok(ExitCode::SUCCESS)
}
