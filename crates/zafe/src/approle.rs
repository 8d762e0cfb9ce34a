//! `zafe approle role create|read|list|delete`, `zafe approle role-id`,
//! `zafe approle secret-id create|list|lookup|destroy`.
//!
//! Secret ids are printed only when created; one to look up or destroy is
//! read from standard input (`--stdin`) or named by its accessor, never
//! given as an argument.

use std::process::ExitCode;

use clap::{ArgGroup, Subcommand};
use serde_json::{Map, Value, json};
use zafe_client::path::{encode_path, encode_segment};
use zafe_client::{Client, Method};

use crate::cli::parse_key_value;
use crate::ctx::Ctx;
use crate::output::{Out, display, outln, print_object};
use crate::prompt::read_secret;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the AppRole auth method is mounted (under auth/)
    #[arg(long, global = true, value_name = "PATH", default_value = "approle")]
    pub path: String,
    #[command(subcommand)]
    pub cmd: ApproleCmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ApproleCmd {
    /// Create, read, list and delete roles
    #[command(
        subcommand,
        after_help = "\
Examples:
  zafe approle role create ci --policy deploy --token-ttl 20m --secret-id-num-uses 1
  zafe approle role read ci
  zafe approle role list
  zafe approle role delete ci"
    )]
    Role(RoleCmd),

    /// Show a role's role id, or set a custom one
    #[command(
        name = "role-id",
        after_help = "\
Examples:
  zafe approle role-id ci
  zafe approle role-id ci --set ci-deployer --format json"
    )]
    RoleId {
        /// The role
        #[arg(value_name = "ROLE")]
        name: String,
        /// Replace the role id with this value (it must be unique)
        #[arg(long, value_name = "ROLE_ID")]
        set: Option<String>,
    },

    /// Create, list, look up and destroy a role's secret ids
    #[command(
        subcommand,
        name = "secret-id",
        after_help = "\
Examples:
  zafe approle secret-id create ci --cidr 10.0.0.0/8 --metadata host=runner-1
  zafe approle secret-id list ci
  zafe approle secret-id lookup ci --accessor 5f0c...
  echo \"$SECRET_ID\" | zafe approle secret-id destroy ci --stdin"
    )]
    SecretId(SecretIdCmd),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RoleCmd {
    /// Create a role, or update the given settings of an existing one
    #[command(after_help = "\
Examples:
  zafe approle role create ci --policy deploy --policy read-config
  zafe approle role create ci --token-ttl 20m --token-max-ttl 1h --secret-id-ttl 24h
  zafe approle role create ci --secret-id-bound-cidr 10.0.0.0/8 --token-bound-cidr 10.0.0.0/8")]
    Create(RoleSettings),

    /// Show a role's settings
    #[command(after_help = "\
Examples:
  zafe approle role read ci
  zafe approle role read ci --format json")]
    Read {
        #[arg(value_name = "ROLE")]
        name: String,
    },

    /// List roles
    #[command(after_help = "\
Examples:
  zafe approle role list
  zafe approle role list --format json")]
    List,

    /// Delete a role and all of its secret ids (tokens already issued stay valid)
    #[command(after_help = "\
Examples:
  zafe approle role delete ci")]
    Delete {
        #[arg(value_name = "ROLE")]
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct RoleSettings {
    /// The role
    #[arg(value_name = "ROLE")]
    pub name: String,
    /// A policy for tokens of this role (repeat for more)
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
    /// TTL of the tokens, e.g. 20m
    #[arg(long, value_name = "DURATION")]
    pub token_ttl: Option<String>,
    /// Maximum lifetime of the tokens, renewals included
    #[arg(long, value_name = "DURATION")]
    pub token_max_ttl: Option<String>,
    /// How many requests each token may make (0: unlimited)
    #[arg(long, value_name = "N")]
    pub token_num_uses: Option<u32>,
    /// Networks the tokens may be used from (repeat for more)
    #[arg(long = "token-bound-cidr", value_name = "CIDR")]
    pub token_bound_cidrs: Vec<String>,
    /// How long a secret id stays valid (0: forever)
    #[arg(long, value_name = "DURATION")]
    pub secret_id_ttl: Option<String>,
    /// How many logins a secret id allows (0: unlimited)
    #[arg(long, value_name = "N")]
    pub secret_id_num_uses: Option<u32>,
    /// Networks logins may come from (repeat for more)
    #[arg(long = "secret-id-bound-cidr", value_name = "CIDR")]
    pub secret_id_bound_cidrs: Vec<String>,
    /// Whether a login needs a secret id (if not, bind it to CIDRs)
    #[arg(long, value_name = "BOOL")]
    pub bind_secret_id: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretIdCmd {
    /// Create a secret id for a role (printed once)
    #[command(after_help = "\
Examples:
  zafe approle secret-id create ci
  zafe approle secret-id create ci --ttl 1h --num-uses 1 --format json
  zafe approle secret-id create ci --cidr 10.1.0.0/16 --metadata host=runner-1")]
    Create {
        /// The role
        #[arg(value_name = "ROLE")]
        name: String,
        /// Metadata KEY=VALUE, copied into the tokens it logs in (repeat for more)
        #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        metadata: Vec<(String, String)>,
        /// Networks this secret id may log in from (within the role's)
        #[arg(long = "cidr", value_name = "CIDR")]
        cidrs: Vec<String>,
        /// Networks its tokens may be used from (within the role's)
        #[arg(long = "token-bound-cidr", value_name = "CIDR")]
        token_bound_cidrs: Vec<String>,
        /// How long it stays valid (no longer than the role allows)
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// How many logins it allows (no more than the role allows)
        #[arg(long, value_name = "N")]
        num_uses: Option<u32>,
    },

    /// List the accessors of a role's secret ids
    #[command(after_help = "\
Examples:
  zafe approle secret-id list ci")]
    List {
        #[arg(value_name = "ROLE")]
        name: String,
    },

    /// Show a secret id's properties (never the secret id itself)
    #[command(
        group(ArgGroup::new("which").required(true).args(["accessor", "stdin"])),
        after_help = "\
Examples:
  zafe approle secret-id lookup ci --accessor 5f0c...
  echo \"$SECRET_ID\" | zafe approle secret-id lookup ci --stdin"
    )]
    Lookup {
        #[arg(value_name = "ROLE")]
        name: String,
        #[command(flatten)]
        which: Which,
    },

    /// Destroy a secret id: it can no longer log in
    #[command(
        group(ArgGroup::new("which").required(true).args(["accessor", "stdin"])),
        after_help = "\
Examples:
  zafe approle secret-id destroy ci --accessor 5f0c...
  echo \"$SECRET_ID\" | zafe approle secret-id destroy ci --stdin"
    )]
    Destroy {
        #[arg(value_name = "ROLE")]
        name: String,
        #[command(flatten)]
        which: Which,
    },
}

/// A secret id by its accessor, or itself on standard input.
#[derive(Debug, clap::Args)]
pub(crate) struct Which {
    /// The secret id's accessor
    #[arg(long, value_name = "ACCESSOR")]
    pub accessor: Option<String>,
    /// Read the secret id from ZAFE_SECRET_ID or standard input
    #[arg(long)]
    pub stdin: bool,
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    dispatch(&ctx.client()?, ctx.out(), args).await?;
    Ok(ExitCode::SUCCESS)
}

async fn dispatch(client: &Client, out: Out<'_>, args: Args) -> anyhow::Result<()> {
    let base = format!("/v1/auth/{}", encode_path(args.path.trim_matches('/')));
    let role_path = |name: &str| format!("{base}/role/{}", encode_segment(name));
    match args.cmd {
        ApproleCmd::Role(RoleCmd::Create(settings)) => {
            let name = settings.name.clone();
            client
                .request_json(Method::POST, &role_path(&name), Some(&role_body(settings)))
                .await?;
            done(
                out,
                &format!(
                    "Success! Data written to: auth/{}/role/{name}",
                    args.path.trim_matches('/')
                ),
            )
        }
        ApproleCmd::Role(RoleCmd::Read { name }) => {
            let answer = client
                .request_json(Method::GET, &role_path(&name), None)
                .await?
                .unwrap_or_default();
            if out.json() {
                return out.print_json(&answer["data"]);
            }
            print_object(out, &answer["data"]);
            Ok(())
        }
        ApproleCmd::Role(RoleCmd::List) => {
            let keys = list(client, &format!("{base}/role?list=true")).await?;
            print_keys(out, &keys)
        }
        ApproleCmd::Role(RoleCmd::Delete { name }) => {
            client
                .request_json(Method::DELETE, &role_path(&name), None)
                .await?;
            done(
                out,
                &format!("Success! Deleted role {name} and its secret ids."),
            )
        }
        ApproleCmd::RoleId { name, set } => {
            let path = format!("{}/role-id", role_path(&name));
            if let Some(id) = set {
                client
                    .request_json(Method::POST, &path, Some(&json!({ "role_id": id })))
                    .await?;
            }
            let answer = client
                .request_json(Method::GET, &path, None)
                .await?
                .unwrap_or_default();
            if out.json() {
                return out.print_json(&answer["data"]);
            }
            out.print_table(&[("role_id", display(&answer["data"]["role_id"]))]);
            Ok(())
        }
        ApproleCmd::SecretId(SecretIdCmd::Create {
            name,
            metadata,
            cidrs,
            token_bound_cidrs,
            ttl,
            num_uses,
        }) => {
            let mut body = Map::new();
            if !metadata.is_empty() {
                body.insert(
                    "metadata".into(),
                    json!(
                        metadata
                            .into_iter()
                            .collect::<std::collections::BTreeMap<_, _>>()
                    ),
                );
            }
            if !cidrs.is_empty() {
                body.insert("cidr_list".into(), json!(cidrs));
            }
            if !token_bound_cidrs.is_empty() {
                body.insert("token_bound_cidrs".into(), json!(token_bound_cidrs));
            }
            if let Some(t) = ttl {
                body.insert("ttl".into(), json!(t));
            }
            if let Some(n) = num_uses {
                body.insert("num_uses".into(), json!(n));
            }
            let path = format!("{}/secret-id", role_path(&name));
            let answer = client
                .request_json(Method::POST, &path, Some(&Value::Object(body)))
                .await?
                .unwrap_or_default();
            let d = &answer["data"];
            if out.json() {
                return out.print_json(d);
            }
            let order = [
                "secret_id",
                "secret_id_accessor",
                "secret_id_num_uses",
                "secret_id_ttl",
            ];
            let rows: Vec<(&str, String)> = order.iter().map(|k| (*k, display(&d[*k]))).collect();
            out.print_table(&rows);
            Ok(())
        }
        ApproleCmd::SecretId(SecretIdCmd::List { name }) => {
            let keys = list(client, &format!("{}/secret-id?list=true", role_path(&name))).await?;
            print_keys(out, &keys)
        }
        ApproleCmd::SecretId(SecretIdCmd::Lookup { name, which }) => {
            let (path, body) = which_request(&role_path(&name), &which, "lookup")?;
            let answer = client
                .request_json(Method::POST, &path, Some(&body))
                .await?;
            let Some(answer) = answer else {
                anyhow::bail!("no such secret id for role {name}");
            };
            if out.json() {
                return out.print_json(&answer["data"]);
            }
            print_object(out, &answer["data"]);
            Ok(())
        }
        ApproleCmd::SecretId(SecretIdCmd::Destroy { name, which }) => {
            let (path, body) = which_request(&role_path(&name), &which, "destroy")?;
            client
                .request_json(Method::POST, &path, Some(&body))
                .await?;
            done(out, "Success! The secret id was destroyed.")
        }
    }
}

fn role_body(s: RoleSettings) -> Value {
    let mut body = Map::new();
    if !s.policies.is_empty() {
        body.insert("token_policies".into(), json!(s.policies));
    }
    for (name, value) in [
        ("token_ttl", &s.token_ttl),
        ("token_max_ttl", &s.token_max_ttl),
        ("secret_id_ttl", &s.secret_id_ttl),
    ] {
        if let Some(v) = value {
            body.insert(name.into(), json!(v));
        }
    }
    for (name, value) in [
        ("token_num_uses", s.token_num_uses),
        ("secret_id_num_uses", s.secret_id_num_uses),
    ] {
        if let Some(v) = value {
            body.insert(name.into(), json!(v));
        }
    }
    for (name, value) in [
        ("token_bound_cidrs", &s.token_bound_cidrs),
        ("secret_id_bound_cidrs", &s.secret_id_bound_cidrs),
    ] {
        if !value.is_empty() {
            body.insert(name.into(), json!(value));
        }
    }
    if let Some(b) = s.bind_secret_id {
        body.insert("bind_secret_id".into(), json!(b));
    }
    Value::Object(body)
}

/// The endpoint and body for a secret id named by accessor or read from stdin.
fn which_request(role_path: &str, which: &Which, action: &str) -> anyhow::Result<(String, Value)> {
    Ok(match &which.accessor {
        Some(accessor) => (
            format!("{role_path}/secret-id-accessor/{action}"),
            json!({ "secret_id_accessor": accessor }),
        ),
        None => {
            let secret = read_secret("Secret ID (will be hidden): ", Some("ZAFE_SECRET_ID"))?;
            (
                format!("{role_path}/secret-id/{action}"),
                json!({ "secret_id": secret.as_str() }),
            )
        }
    })
}

/// A LIST: Vault answers an empty list with 404, which is just "none" here.
async fn list(client: &Client, path: &str) -> anyhow::Result<Vec<String>> {
    match client.request_json(Method::GET, path, None).await {
        Ok(answer) => Ok(answer
            .unwrap_or_default()
            .pointer("/data/keys")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()),
        Err(zafe_client::Error::ServerError { status: 404, .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn print_keys(out: Out<'_>, keys: &[String]) -> anyhow::Result<()> {
    if out.json() {
        return out.print_json(&keys);
    }
    if keys.is_empty() {
        eprintln!("No entries found.");
    }
    for k in keys {
        outln!(out, "{k}");
    }
    Ok(())
}

fn done(out: Out<'_>, message: &str) -> anyhow::Result<()> {
    if out.json() {
        return out.print_json(&json!({ "ok": true }));
    }
    outln!(out, "{message}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_body_sends_only_what_was_given() {
        let s = RoleSettings {
            name: "ci".into(),
            policies: vec!["a".into()],
            token_ttl: Some("20m".into()),
            token_max_ttl: None,
            token_num_uses: None,
            token_bound_cidrs: Vec::new(),
            secret_id_ttl: None,
            secret_id_num_uses: Some(1),
            secret_id_bound_cidrs: vec!["10.0.0.0/8".into()],
            bind_secret_id: None,
        };
        assert_eq!(
            role_body(s),
            json!({"token_policies": ["a"], "token_ttl": "20m", "secret_id_num_uses": 1, "secret_id_bound_cidrs": ["10.0.0.0/8"]})
        );
    }
}
