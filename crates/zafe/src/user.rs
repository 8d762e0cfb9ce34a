//! `zafe user create|list|read|enable|disable|delete|passwd|invite`: people's
//! accounts. (Logging in and out is [`crate::login`]; the first
//! administrator, `zafe operator bootstrap-admin`, is [`crate::operator`].)
//!
//! Passwords are never arguments: a hidden prompt on a terminal (asked
//! twice when it is a new one), or one line of standard input with
//! `--password-stdin`.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};
use zafe_client::path::encode_segment;
use zafe_client::{Client, Method};

use crate::ctx::Ctx;
use crate::output::{Out, outln, print_fields};
use crate::prompt::{read_password, stdin_line};

pub(crate) const USER_EXAMPLES: &str = "\
Examples:
  zafe user create bob@example.com                 Prompts for an initial password
  zafe user create ops@example.com --admin --password-stdin < pw.txt
  zafe user invite carol@example.com --ttl 72h     Prints a single-use invitation
  zafe user list
  zafe user read bob@example.com --format json
  zafe user disable bob@example.com                Ends all of bob's sessions at once
  zafe user passwd                                 Change your own password
  zafe user passwd bob@example.com                 Set someone else's (administrators)
  zafe user delete bob@example.com

Managing other people needs a server administrator's session (or a root token).";

#[derive(Debug, Subcommand)]
pub(crate) enum Args {
    /// Create an account with a password (administrators)
    #[command(
        after_help = "Examples:\n  zafe user create bob@example.com --display-name Bob\n  zafe user create ops@example.com --admin --password-stdin < pw.txt\n  zafe user create sso-only@example.com --no-password"
    )]
    Create {
        #[arg(value_name = "EMAIL")]
        email: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Make them a server administrator (root on this server)
        #[arg(long)]
        admin: bool,
        /// An extra ACL policy (repeatable)
        #[arg(long = "policy")]
        policies: Vec<String>,
        /// Read the password from one line of standard input
        #[arg(long, conflicts_with = "no_password")]
        password_stdin: bool,
        /// No password: the account can log in only with single sign-on
        #[arg(long)]
        no_password: bool,
    },
    /// Invite someone to register with their email address (administrators)
    #[command(
        after_help = "Examples:\n  zafe user invite carol@example.com\n  zafe user invite carol@example.com --ttl 72h --format json\n\nThe invitation works once, for that address only, and needs registration mode invite or domains."
    )]
    Invite {
        #[arg(value_name = "EMAIL")]
        email: String,
        /// How long the invitation is valid, e.g. 72h (default: the server's, 7 days)
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List accounts (administrators)
    #[command(after_help = "Examples:\n  zafe user list\n  zafe user list --format json")]
    List,
    /// Show an account and its sessions (administrators)
    #[command(
        after_help = "Examples:\n  zafe user read bob@example.com\n  zafe user read 0b6f...-... --format json"
    )]
    Read {
        #[arg(value_name = "ID_OR_EMAIL")]
        user: String,
    },
    /// Disable an account: it cannot log in, and its sessions end at once
    #[command(after_help = "Examples:\n  zafe user disable bob@example.com")]
    Disable {
        #[arg(value_name = "ID_OR_EMAIL")]
        user: String,
    },
    /// Enable a disabled account again
    #[command(after_help = "Examples:\n  zafe user enable bob@example.com")]
    Enable {
        #[arg(value_name = "ID_OR_EMAIL")]
        user: String,
    },
    /// Delete an account and end its sessions
    #[command(after_help = "Examples:\n  zafe user delete bob@example.com")]
    Delete {
        #[arg(value_name = "ID_OR_EMAIL")]
        user: String,
    },
    /// Change your own password, or (administrators) set someone else's
    #[command(
        after_help = "Examples:\n  zafe user passwd                       Your own: asks for the current one first\n  zafe user passwd bob@example.com       Someone else's: ends all their sessions\n\nChanging your own password ends every other session of yours."
    )]
    Passwd {
        #[arg(value_name = "ID_OR_EMAIL")]
        user: Option<String>,
        /// Read the password(s) from standard input: the current one, then the new one, one per line
        #[arg(long)]
        password_stdin: bool,
    },
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    dispatch(&ctx.client()?, ctx.out(), args).await?;
    Ok(ExitCode::SUCCESS)
}

async fn dispatch(client: &Client, out: Out<'_>, cmd: Args) -> anyhow::Result<()> {
    match cmd {
        Args::Create {
            email,
            display_name,
            admin,
            policies,
            password_stdin,
            no_password,
        } => {
            let mut body = json!({ "email": email, "display_name": display_name, "admin": admin, "policies": policies });
            if !no_password {
                let pw = read_password(
                    &format!("Initial password for {email} (hidden): "),
                    true,
                    password_stdin,
                    &mut stdin_line,
                )?;
                body["password"] = json!(pw.as_str());
            }
            let reply = client
                .request_json(Method::POST, "/v1/sys/users", Some(&body))
                .await?
                .unwrap_or_default();
            print_user(out, &reply["data"])
        }
        Args::Invite { email, ttl } => {
            let body = json!({ "email": email, "invite": true, "ttl": ttl });
            let reply = client
                .request_json(Method::POST, "/v1/sys/users", Some(&body))
                .await?
                .unwrap_or_default();
            let data = &reply["data"];
            if out.json() {
                return out.print_json(data);
            }
            // The invitation alone on stdout, so it can be piped on.
            outln!(out, "{}", data["url"].as_str().unwrap_or_default());
            eprintln!(
                "{}",
                out.yellow(&format!(
                    "Invitation for {email}, valid until {}. It works once; send it to them privately. \
                     They register with POST /v1/auth/user/register {{email, password, invite_token}}.",
                    data["expire_time"].as_str().unwrap_or_default()
                ))
            );
            Ok(())
        }
        Args::List => {
            let reply = client
                .request_json(Method::GET, "/v1/sys/users?list=true", None)
                .await?
                .unwrap_or_default();
            let data = &reply["data"];
            if out.json() {
                return out.print_json(data);
            }
            let info = &data["key_info"];
            outln!(
                out,
                "{:36}  {:32}  {:5}  {:8}",
                "ID",
                "Email",
                "Admin",
                "Disabled"
            );
            for id in data["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let u = &info[id];
                outln!(
                    out,
                    "{id:36}  {:32}  {:5}  {:8}",
                    u["email"].as_str().unwrap_or_default(),
                    u["admin"].as_bool().unwrap_or_default(),
                    u["disabled"].as_bool().unwrap_or_default()
                );
            }
            Ok(())
        }
        Args::Read { user } => {
            let reply = client
                .request_json(Method::GET, &user_path(&user), None)
                .await?
                .unwrap_or_default();
            print_user(out, &reply["data"])
        }
        Args::Disable { user } => update(client, out, &user, json!({ "disabled": true })).await,
        Args::Enable { user } => update(client, out, &user, json!({ "disabled": false })).await,
        Args::Delete { user } => {
            client
                .request_json(Method::DELETE, &user_path(&user), None)
                .await?;
            if !out.json() {
                outln!(out, "Deleted {user}; their sessions have ended.");
            }
            Ok(())
        }
        Args::Passwd {
            user,
            password_stdin,
        } => passwd(client, out, user.as_deref(), password_stdin).await,
    }
}

fn user_path(user: &str) -> String {
    format!("/v1/sys/users/{}", encode_segment(user))
}

async fn update(client: &Client, out: Out<'_>, user: &str, body: Value) -> anyhow::Result<()> {
    let reply = client
        .request_json(Method::POST, &user_path(user), Some(&body))
        .await?
        .unwrap_or_default();
    print_user(out, &reply["data"])
}

async fn passwd(
    client: &Client,
    out: Out<'_>,
    user: Option<&str>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    match user {
        Some(user) => {
            let new = read_password(
                &format!("New password for {user} (hidden): "),
                true,
                password_stdin,
                &mut stdin_line,
            )?;
            update(client, out, user, json!({ "password": new.as_str() })).await
        }
        None => {
            let current = read_password(
                "Current password (hidden): ",
                false,
                password_stdin,
                &mut stdin_line,
            )?;
            let new = read_password(
                "New password (hidden): ",
                true,
                password_stdin,
                &mut stdin_line,
            )?;
            let body =
                json!({ "current_password": current.as_str(), "new_password": new.as_str() });
            let reply = client
                .request_json(Method::POST, "/v1/auth/user/password", Some(&body))
                .await?
                .unwrap_or_default();
            if out.json() {
                return out.print_json(&reply["data"]);
            }
            outln!(
                out,
                "Password changed. {} other session(s) ended; this one goes on.",
                reply["data"]["sessions_ended"].as_u64().unwrap_or(0)
            );
            Ok(())
        }
    }
}

fn print_user(out: Out<'_>, data: &Value) -> anyhow::Result<()> {
    if out.json() {
        return out.print_json(data);
    }
    let mut shown = data.clone();
    if let Some(sessions) = data.get("sessions").and_then(Value::as_array) {
        shown["sessions"] = json!(sessions.len());
    }
    print_fields(out, &shown);
    Ok(())
}
