//! `zafe policy list|read|write|delete`: ACL policies.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;
use zafe_client::path::encode_segment as encode;
use zafe_client::{Client, Method};

use crate::ctx::Ctx;
use crate::output::{Out, outln};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
    /// List policy names
    #[command(after_help = "Examples:\n  zafe policy list\n  zafe policy list --format json")]
    List,
    /// Show a policy's text
    #[command(
        after_help = "Examples:\n  zafe policy read default\n  zafe policy read app-reader --format json"
    )]
    Read {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Create or replace a policy from a file (`-` for standard input)
    #[command(
        after_help = "Examples:\n  zafe policy write app-reader app-reader.hcl\n  zafe policy write app-reader - < app-reader.hcl\n\nThe policy is parsed before it is stored: a policy with an error is never saved."
    )]
    Write {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// Delete a policy
    #[command(
        after_help = "Examples:\n  zafe policy delete app-reader\n\nThe root and default policies cannot be deleted."
    )]
    Delete {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.client()?;
    let out = ctx.out();
    match args {
        Args::List => list(client, out).await?,
        Args::Read { name } => read(client, out, &name).await?,
        Args::Write { name, file } => write(client, &name, &file).await?,
        Args::Delete { name } => delete(client, &name).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
    let body = client
        .request_json(Method::GET, "/v1/sys/policy", None)
        .await?
        .unwrap_or_default();
    let names = body["policies"].as_array().cloned().unwrap_or_default();
    if out.json() {
        return out.print_json(&names);
    }
    for name in names {
        outln!(out, "{}", name.as_str().unwrap_or_default());
    }
    Ok(())
}

async fn read(client: &Client, out: Out<'_>, name: &str) -> anyhow::Result<()> {
    let path = format!("/v1/sys/policy/{}", encode(name));
    let body = client
        .request_json(Method::GET, &path, None)
        .await?
        .unwrap_or_default();
    if out.json() {
        return out.print_json(&body["data"]);
    }
    outln!(out, "{}", body["rules"].as_str().unwrap_or_default());
    Ok(())
}

/// `FILE` may be `-` for standard input.
async fn write(client: &Client, name: &str, file: &str) -> anyhow::Result<()> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let path = format!("/v1/sys/policy/{}", encode(name));
    client
        .request_json(Method::PUT, &path, Some(&json!({ "policy": text })))
        .await?;
    eprintln!("Success! Uploaded policy: {name}");
    Ok(())
}

async fn delete(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .request_json(
            Method::DELETE,
            &format!("/v1/sys/policy/{}", encode(name)),
            None,
        )
        .await?;
    eprintln!("Success! Deleted policy: {name}");
    Ok(())
}
