//! `zafe service-account create|list|read|token|revoke` (R-AUTH-12).

use std::process::ExitCode;

use serde_json::{Value, json};
use zafe_client::path::encode_segment;
use zafe_client::{Client, Method};

use crate::ctx::Ctx;

use crate::output::{Out, outln};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
    /// Create a service account and print its first token (once)
    #[command(
        after_help = "Examples:\n  zafe service-account create ci --scope project:myapp\n  zafe service-account create deploy --scope 'secret/data/shared/*' --cidr 203.0.113.0/24 --ttl 30d\n\nScopes: project:<slug>, or a path glob in policy syntax (read and list only)."
    )]
    Create {
        #[arg(value_name = "NAME")]
        name: String,
        /// A scope (repeatable): project:<slug> or a path glob
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// A client network the tokens may be used from (repeatable); default anywhere
        #[arg(long = "cidr")]
        cidrs: Vec<String>,
        /// Lifetime of the account, e.g. 90d, 12h
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List service accounts
    #[command(after_help = "Examples:\n  zafe service-account list --format json")]
    List,
    /// Show a service account, its scopes and its tokens' last use
    #[command(after_help = "Examples:\n  zafe service-account read ci")]
    Read {
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Issue another token for a service account
    #[command(after_help = "Examples:\n  zafe service-account token ci --ttl 7d")]
    Token {
        #[arg(value_name = "NAME")]
        name: String,
        /// Lifetime of this token (never beyond the account's)
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Revoke one token (by accessor) or, without one, delete the account and all its tokens
    #[command(
        after_help = "Examples:\n  zafe service-account revoke ci\n  zafe service-account revoke ci --accessor 3f2a..."
    )]
    Revoke {
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(long)]
        accessor: Option<String>,
    },
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.client()?;
    let out = ctx.out();
    match args {
        Args::Create {
            name,
            scopes,
            cidrs,
            ttl,
            description,
        } => {
            create(
                client,
                out,
                &name,
                &scopes,
                &cidrs,
                ttl.as_deref(),
                description.as_deref(),
            )
            .await?
        }
        Args::List => list(client, out).await?,
        Args::Read { name } => read(client, out, &name).await?,
        Args::Token { name, ttl } => token(client, out, &name, ttl.as_deref()).await?,
        Args::Revoke { name, accessor } => revoke(client, &name, accessor.as_deref()).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn create(
    client: &Client,
    out: Out<'_>,
    name: &str,
    scopes: &[String],
    cidrs: &[String],
    ttl: Option<&str>,
    description: Option<&str>,
) -> anyhow::Result<()> {
    let mut body = json!({ "scopes": scopes, "allowed_cidrs": cidrs, "description": description.unwrap_or_default() });
    if let Some(ttl) = ttl {
        body["ttl"] = json!(ttl);
    }
    let path = format!("/v1/sys/service-accounts/{}", encode_segment(name));
    let reply = client
        .request_json(Method::POST, &path, Some(&body))
        .await?
        .unwrap_or_default();
    print_token(out, &reply["data"], &format!("service account {name}"))
}

async fn token(client: &Client, out: Out<'_>, name: &str, ttl: Option<&str>) -> anyhow::Result<()> {
    let body = ttl.map(|t| json!({ "token_ttl": t }));
    let path = format!("/v1/sys/service-accounts/{}/token", encode_segment(name));
    let reply = client
        .request_json(Method::POST, &path, body.as_ref())
        .await?
        .unwrap_or_default();
    print_token(
        out,
        &reply["data"],
        &format!("a new token of service account {name}"),
    )
}

fn print_token(out: Out<'_>, data: &Value, what: &str) -> anyhow::Result<()> {
    crate::output::print_new_token(
        out,
        data,
        &format!(
            "Created {what}. The token above is shown only this once: store it in your CI's secret store."
        ),
    )
}

async fn list(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
    let reply = client
        .request_json(Method::GET, "/v1/sys/service-accounts?list=true", None)
        .await?
        .unwrap_or_default();
    let keys = reply["data"]["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if out.json() {
        return out.print_json(&keys);
    }
    for k in keys {
        outln!(out, "{}", k.as_str().unwrap_or_default());
    }
    Ok(())
}

async fn read(client: &Client, out: Out<'_>, name: &str) -> anyhow::Result<()> {
    let path = format!("/v1/sys/service-accounts/{}", encode_segment(name));
    let reply = client
        .request_json(Method::GET, &path, None)
        .await?
        .unwrap_or_default();
    let data = &reply["data"];
    if out.json() {
        return out.print_json(data);
    }
    let list = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let mut rows = vec![
        (
            "Name",
            data["name"].as_str().unwrap_or_default().to_string(),
        ),
        (
            "Description",
            data["description"].as_str().unwrap_or_default().to_string(),
        ),
        ("Scopes", list(&data["scopes"])),
        ("Allowed CIDRs", list(&data["allowed_cidrs"])),
        (
            "Expires",
            data["expire_time"].as_str().unwrap_or("never").to_string(),
        ),
    ];
    for t in data["tokens"].as_array().cloned().unwrap_or_default() {
        rows.push((
            "Token",
            format!(
                "{} (last used {})",
                t["accessor"].as_str().unwrap_or_default(),
                t["last_used_time"].as_str().unwrap_or("never")
            ),
        ));
    }
    out.print_table(&rows);
    Ok(())
}

/// Without an accessor: deletes the account and every token it has.
async fn revoke(client: &Client, name: &str, accessor: Option<&str>) -> anyhow::Result<()> {
    let path = match accessor {
        Some(a) => format!(
            "/v1/sys/service-accounts/{}/token/{}",
            encode_segment(name),
            encode_segment(a)
        ),
        None => format!("/v1/sys/service-accounts/{}", encode_segment(name)),
    };
    client.request_json(Method::DELETE, &path, None).await?;
    match accessor {
        Some(_) => eprintln!("Success! Revoked that token of service account {name}."),
        None => eprintln!("Success! Deleted service account {name}; its tokens no longer work."),
    }
    Ok(())
}
