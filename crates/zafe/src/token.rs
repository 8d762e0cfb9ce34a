//! `zafe token create | lookup | renew | revoke | capabilities`.
//!
//! The token a command acts on is the caller's own, one named by its
//! accessor, or one piped on standard input (`--stdin`): never an argument.
//! Lookups never print a token (`id` is left out).

use std::process::ExitCode;

use anyhow::bail;
use clap::{ArgGroup, Subcommand};
use serde_json::{Map, Value, json};
use zafe_client::path::encode_segment;
use zafe_client::{Client, Method};

use crate::cli::parse_key_value;
use crate::ctx::Ctx;
use crate::output::{Out, display, outln, print_object};
use crate::prompt::read_secret;

#[derive(Debug, Subcommand)]
pub(crate) enum Args {
    /// Create a child token (or an orphan) of the current token
    #[command(after_help = "\
Examples:
  zafe token create --policy app-reader --ttl 1h
  zafe token create --policy ci --num-uses 3 --ttl 10m --format json
  zafe token create --role web --metadata team=ops
  zafe token create --orphan --policy app-reader

A non-root token can only give its children policies it has itself (and `default`).
The new token is printed once: store it now.")]
    Create(CreateArgs),

    /// Show a token's properties (your own by default)
    #[command(after_help = "\
Examples:
  zafe token lookup                          Your own token
  zafe token lookup --accessor 9f2c...       Another token, by accessor
  echo \"$OTHER_TOKEN\" | zafe token lookup --stdin --format json")]
    Lookup(Target),

    /// Extend a token's lease (your own by default)
    #[command(after_help = "\
Examples:
  zafe token renew
  zafe token renew --increment 2h
  zafe token renew --accessor 9f2c... --increment 30m")]
    Renew {
        #[command(flatten)]
        target: Target,
        /// The new TTL, e.g. 30m or 3600 (capped by the token's maximum)
        #[arg(long, value_name = "DURATION")]
        increment: Option<String>,
    },

    /// Revoke a token and every token created under it
    #[command(
        group(ArgGroup::new("which").required(true).args(["self_", "accessor", "stdin"])),
        after_help = "\
Examples:
  zafe token revoke --self
  zafe token revoke --accessor 9f2c...
  echo \"$OLD_TOKEN\" | zafe token revoke --stdin
  echo \"$OLD_TOKEN\" | zafe token revoke --stdin --orphan   Keep its children (needs sudo)"
    )]
    Revoke {
        /// Revoke the token this command runs with
        #[arg(long = "self")]
        self_: bool,
        /// Revoke the token with this accessor
        #[arg(long, value_name = "ACCESSOR")]
        accessor: Option<String>,
        /// Read the token to revoke from standard input
        #[arg(long)]
        stdin: bool,
        /// Revoke only the token; its children become orphans (needs sudo; with --stdin)
        #[arg(long, requires = "stdin")]
        orphan: bool,
    },

    /// Show what a token may do on paths (your own by default)
    #[command(after_help = "\
Examples:
  zafe token capabilities secret/data/app
  zafe token capabilities sys/mounts secret/data/app --format json
  echo \"$OTHER_TOKEN\" | zafe token capabilities --stdin secret/data/app")]
    Capabilities {
        /// Paths to check
        #[arg(value_name = "PATH", required = true)]
        paths: Vec<String>,
        /// Read the token to check from standard input
        #[arg(long)]
        stdin: bool,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// A policy for the new token (repeat for more); default: the current token's policies
    #[arg(long = "policy", value_name = "NAME")]
    pub policies: Vec<String>,
    /// Time to live, e.g. 30m, 1h or 3600
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// A hard limit no renewal can pass
    #[arg(long, value_name = "DURATION")]
    pub explicit_max_ttl: Option<String>,
    /// Renew by this period each time, without a maximum (needs sudo)
    #[arg(long, value_name = "DURATION")]
    pub period: Option<String>,
    /// How many requests the token may make (0: unlimited)
    #[arg(long, value_name = "N")]
    pub num_uses: Option<u32>,
    /// Create an orphan: it survives the revocation of the current token
    #[arg(long)]
    pub orphan: bool,
    /// Leave out the `default` policy
    #[arg(long)]
    pub no_default_policy: bool,
    /// Whether the token can be renewed
    #[arg(long, value_name = "BOOL")]
    pub renewable: Option<bool>,
    /// A name shown in lookups and logs (stored as token-NAME)
    #[arg(long, value_name = "NAME")]
    pub display_name: Option<String>,
    /// Metadata KEY=VALUE (repeat for more)
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
    /// Create the token through this token role
    #[arg(long, value_name = "ROLE", conflicts_with = "orphan")]
    pub role: Option<String>,
}

/// Which token a command is about: the caller's own unless one of these.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// The token with this accessor
    #[arg(long, value_name = "ACCESSOR", conflicts_with = "stdin")]
    pub accessor: Option<String>,
    /// Read the token from standard input
    #[arg(long)]
    pub stdin: bool,
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    dispatch(&ctx.client()?, ctx.out(), args).await?;
    Ok(ExitCode::SUCCESS)
}

async fn dispatch(client: &Client, out: Out<'_>, cmd: Args) -> anyhow::Result<()> {
    match cmd {
        Args::Create(args) => create(client, out, args).await,
        Args::Lookup(target) => lookup(client, out, target).await,
        Args::Renew { target, increment } => renew(client, out, target, increment).await,
        Args::Revoke {
            self_,
            accessor,
            stdin,
            orphan,
        } => revoke(client, out, self_, accessor, stdin, orphan).await,
        Args::Capabilities { paths, stdin } => capabilities(client, out, paths, stdin).await,
    }
}

async fn create(client: &Client, out: Out<'_>, args: CreateArgs) -> anyhow::Result<()> {
    let mut body = Map::new();
    if !args.policies.is_empty() {
        body.insert("policies".into(), json!(args.policies));
    }
    for (name, value) in [
        ("ttl", &args.ttl),
        ("explicit_max_ttl", &args.explicit_max_ttl),
        ("period", &args.period),
        ("display_name", &args.display_name),
    ] {
        if let Some(v) = value {
            body.insert(name.into(), json!(v));
        }
    }
    if let Some(n) = args.num_uses {
        body.insert("num_uses".into(), json!(n));
    }
    if let Some(r) = args.renewable {
        body.insert("renewable".into(), json!(r));
    }
    if args.no_default_policy {
        body.insert("no_default_policy".into(), json!(true));
    }
    if !args.metadata.is_empty() {
        body.insert(
            "meta".into(),
            json!(
                args.metadata
                    .iter()
                    .cloned()
                    .collect::<std::collections::BTreeMap<_, _>>()
            ),
        );
    }
    let path = match (&args.role, args.orphan) {
        (Some(role), _) => format!("/v1/auth/token/create/{}", encode_segment(role)),
        (None, true) => "/v1/auth/token/create-orphan".to_string(),
        (None, false) => "/v1/auth/token/create".to_string(),
    };
    let answer = client
        .request_json(Method::POST, &path, Some(&Value::Object(body)))
        .await?
        .unwrap_or_default();
    print_warnings(out, &answer);
    print_auth(out, &answer["auth"], true)
}

async fn lookup(client: &Client, out: Out<'_>, target: Target) -> anyhow::Result<()> {
    let answer = if let Some(accessor) = target.accessor {
        client
            .request_json(
                Method::POST,
                "/v1/auth/token/lookup-accessor",
                Some(&json!({ "accessor": accessor })),
            )
            .await?
    } else if target.stdin {
        let token = read_secret("Token to look up (will be hidden): ", None)?;
        client
            .request_json(
                Method::POST,
                "/v1/auth/token/lookup",
                Some(&json!({ "token": token.as_str() })),
            )
            .await?
    } else {
        client
            .request_json(Method::GET, "/v1/auth/token/lookup-self", None)
            .await?
    }
    .unwrap_or_default();
    show_lookup(out, &answer)
}

/// What `token lookup` prints of the server's answer: its data, without the
/// token itself, as JSON or a sorted Key/Value table.
fn show_lookup(out: Out<'_>, answer: &Value) -> anyhow::Result<()> {
    let mut data = answer["data"].clone();
    // The token itself is never printed.
    if let Some(map) = data.as_object_mut() {
        map.remove("id");
    }
    if out.json() {
        return out.print_json(&data);
    }
    print_object(out, &data);
    Ok(())
}

async fn renew(
    client: &Client,
    out: Out<'_>,
    target: Target,
    increment: Option<String>,
) -> anyhow::Result<()> {
    let mut body = Map::new();
    if let Some(i) = increment {
        body.insert("increment".into(), json!(i));
    }
    let path = if let Some(accessor) = target.accessor {
        body.insert("accessor".into(), json!(accessor));
        "/v1/auth/token/renew-accessor"
    } else if target.stdin {
        let token = read_secret("Token to renew (will be hidden): ", None)?;
        body.insert("token".into(), json!(token.as_str()));
        "/v1/auth/token/renew"
    } else {
        "/v1/auth/token/renew-self"
    };
    let answer = client
        .request_json(Method::POST, path, Some(&Value::Object(body)))
        .await?
        .unwrap_or_default();
    print_warnings(out, &answer);
    print_auth(out, &answer["auth"], false)
}

async fn revoke(
    client: &Client,
    out: Out<'_>,
    self_: bool,
    accessor: Option<String>,
    stdin: bool,
    orphan: bool,
) -> anyhow::Result<()> {
    let (path, body, what) = if self_ {
        ("/v1/auth/token/revoke-self", json!({}), "the current token")
    } else if let Some(accessor) = accessor {
        (
            "/v1/auth/token/revoke-accessor",
            json!({ "accessor": accessor }),
            "the token",
        )
    } else if stdin {
        let token = read_secret("Token to revoke (will be hidden): ", None)?;
        let path = if orphan {
            "/v1/auth/token/revoke-orphan"
        } else {
            "/v1/auth/token/revoke"
        };
        (path, json!({ "token": token.as_str() }), "the token")
    } else {
        bail!("say which token to revoke: --self, --accessor or --stdin");
    };
    let answer = client.request_json(Method::POST, path, Some(&body)).await?;
    if let Some(answer) = &answer {
        print_warnings(out, answer);
    }
    if out.json() {
        return out.print_json(&json!({ "revoked": true }));
    }
    outln!(
        out,
        "Success! Revoked {what}{}.",
        if orphan {
            "; its children are now orphans"
        } else {
            " and its children"
        }
    );
    Ok(())
}

async fn capabilities(
    client: &Client,
    out: Out<'_>,
    paths: Vec<String>,
    stdin: bool,
) -> anyhow::Result<()> {
    let answer = if stdin {
        let token = read_secret("Token to check (will be hidden): ", None)?;
        client
            .request_json(
                Method::POST,
                "/v1/sys/capabilities",
                Some(&json!({ "token": token.as_str(), "paths": paths })),
            )
            .await?
    } else {
        client
            .request_json(
                Method::POST,
                "/v1/sys/capabilities-self",
                Some(&json!({ "paths": paths })),
            )
            .await?
    }
    .unwrap_or_default();
    let data = if answer["data"].is_object() {
        &answer["data"]
    } else {
        &answer
    };
    let per_path: Map<String, Value> = paths
        .iter()
        .map(|p| (p.clone(), data[p.as_str()].clone()))
        .collect();
    if out.json() {
        return out.print_json(&per_path);
    }
    if paths.len() == 1 {
        outln!(out, "{}", display(&per_path[&paths[0]]));
    } else {
        let rows: Vec<(&str, String)> = per_path
            .iter()
            .map(|(p, c)| (p.as_str(), display(c)))
            .collect();
        out.print_table(&rows);
    }
    Ok(())
}

/// Vault's rows for a new or renewed token.
fn print_auth(out: Out<'_>, auth: &Value, show_token: bool) -> anyhow::Result<()> {
    let mut shown = json!({
        "token_accessor": auth["accessor"],
        "token_duration": auth["lease_duration"],
        "token_renewable": auth["renewable"],
        "token_policies": auth["token_policies"],
        "policies": auth["policies"],
        "orphan": auth["orphan"],
        "num_uses": auth["num_uses"],
    });
    if show_token {
        shown["token"] = auth["client_token"].clone();
    }
    if out.json() {
        return out.print_json(&shown);
    }
    let order = [
        "token",
        "token_accessor",
        "token_duration",
        "token_renewable",
        "token_policies",
        "policies",
        "orphan",
        "num_uses",
    ];
    let rows: Vec<(&str, String)> = order
        .iter()
        .filter(|k| shown.get(**k).is_some())
        .map(|k| (*k, display(&shown[*k])))
        .collect();
    out.print_table(&rows);
    Ok(())
}

fn print_warnings(out: Out<'_>, answer: &Value) {
    for w in answer["warnings"].as_array().into_iter().flatten() {
        eprintln!(
            "{}",
            out.yellow(&format!("Warning: {}", w.as_str().unwrap_or_default()))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_and_display() {
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("x").is_err());
        assert_eq!(display(&json!(["a", "b"])), "[a b]");
        assert_eq!(display(&json!({"k": "v"})), "map[k:v]");
        assert_eq!(display(&Value::Null), "n/a");
    }
}

/// What `token lookup` prints, rendered in-process.
#[cfg(test)]
mod output_tests {
    use super::*;
    use crate::cli::Format;
    use crate::output::Captured;

    fn answer() -> Value {
        json!({
            "data": {
                "id": "zafe_s_THE_TOKEN_ITSELF",
                "accessor": "9f2c",
                "display_name": "token-ci",
                "policies": ["default", "deploy"],
                "ttl": 3600,
                "expire_time": null,
                "meta": { "team": "ops" }
            }
        })
    }

    #[test]
    fn token_lookup_prints_a_sorted_table_without_the_token() {
        let captured = Captured::new();
        show_lookup(captured.out(Format::Table), &answer()).unwrap();
        assert_eq!(
            captured.text(),
            "\
Key             Value
---             -----
accessor        9f2c
display_name    token-ci
expire_time     n/a
meta            map[team:ops]
policies        [default deploy]
ttl             3600
"
        );
    }

    #[test]
    fn token_lookup_prints_json_without_the_token() {
        let captured = Captured::new();
        show_lookup(captured.out(Format::Json), &answer()).unwrap();
        let text = captured.text();
        assert!(!text.contains("THE_TOKEN_ITSELF"), "{text}");
        let mut expected = answer()["data"].clone();
        expected.as_object_mut().unwrap().remove("id");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
        assert!(text.ends_with("}\n"));
    }
}
