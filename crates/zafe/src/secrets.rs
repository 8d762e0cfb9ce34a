//! `zafe secrets enable|disable|list`: secrets engines.

use std::process::ExitCode;

use serde_json::json;
use zafe_client::path::encode_path;
use zafe_client::{Client, Method};

use crate::ctx::Ctx;
use crate::output::{Out, outln};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
    /// List enabled secrets engines
    #[command(after_help = "Examples:\n  zafe secrets list\n  zafe secrets list --format json")]
    List,
    /// Enable a secrets engine: kv (version 2) or transit
    #[command(
        after_help = "Examples:\n  zafe secrets enable transit\n  zafe secrets enable --path team-kv --description 'team secrets' kv"
    )]
    Enable {
        /// Engine type: kv, kv-v2 or transit
        #[arg(value_name = "TYPE")]
        kind: String,
        /// Mount path (default: the type's name)
        #[arg(long)]
        path: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Disable a secrets engine and delete all of its data
    #[command(
        after_help = "Examples:\n  zafe secrets disable team-kv\n\nEvery secret stored in the engine is deleted."
    )]
    Disable {
        #[arg(value_name = "PATH")]
        path: String,
    },
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.client()?;
    let out = ctx.out();
    match args {
        Args::List => list(client, out).await?,
        Args::Enable {
            kind,
            path,
            description,
        } => enable(client, &kind, path.as_deref(), description.as_deref()).await?,
        Args::Disable { path } => disable(client, &path).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
    let body = client
        .request_json(Method::GET, "/v1/sys/mounts", None)
        .await?
        .unwrap_or_default();
    let data = body["data"].as_object().cloned().unwrap_or_default();
    if out.json() {
        return out.print_json(&data);
    }
    let width = data.keys().map(String::len).max().unwrap_or(4).max(4);
    outln!(
        out,
        "{:width$}    {:10}    {:24}    Description",
        "Path",
        "Type",
        "Accessor"
    );
    outln!(
        out,
        "{:width$}    {:10}    {:24}    -----------",
        "----",
        "----",
        "--------"
    );
    for (path, mount) in data {
        outln!(
            out,
            "{path:width$}    {:10}    {:24}    {}",
            mount["type"].as_str().unwrap_or_default(),
            mount["accessor"].as_str().unwrap_or_default(),
            mount["description"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

async fn enable(
    client: &Client,
    kind: &str,
    path: Option<&str>,
    description: Option<&str>,
) -> anyhow::Result<()> {
    let path = path.unwrap_or(kind).trim_matches('/');
    let mut body = json!({ "type": kind, "description": description.unwrap_or_default() });
    if kind == "kv" || kind == "kv-v2" {
        body["options"] = json!({ "version": "2" });
    }
    client
        .request_json(
            Method::POST,
            &format!("/v1/sys/mounts/{}", encode_path(path)),
            Some(&body),
        )
        .await?;
    eprintln!("Success! Enabled the {kind} secrets engine at: {path}/");
    Ok(())
}

async fn disable(client: &Client, path: &str) -> anyhow::Result<()> {
    let path = path.trim_matches('/');
    client
        .request_json(
            Method::DELETE,
            &format!("/v1/sys/mounts/{}", encode_path(path)),
            None,
        )
        .await?;
    eprintln!("Success! Disabled the secrets engine (if it existed) at: {path}/");
    Ok(())
}
