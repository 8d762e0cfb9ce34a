//! `zafe login`: get a token and keep it in the token file (mode 0600).
//!
//! Tokens and secret ids are never command-line arguments (they would land
//! in shell history and in `ps`): a token is typed at a prompt without echo
//! or piped on standard input; an AppRole secret id comes from
//! `ZAFE_SECRET_ID` or standard input.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use serde_json::{Value, json};
use zafe_client::path::encode_path;
use zafe_client::{Client, Method, Token};
use zeroize::Zeroizing;

use crate::ctx::{Ctx, with_token};
use crate::output::{Out, outln};
use crate::prompt::read_secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LoginMethod {
    /// An existing token, typed at a hidden prompt or piped on standard input
    Token,
    /// AppRole: --role-id, and the secret id from ZAFE_SECRET_ID or standard input
    Approle,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Log in as this person, with a password (prompted for without echo)
    #[arg(long, value_name = "EMAIL", conflicts_with_all = ["role_id", "no_store"])]
    pub email: Option<String>,
    /// With --email: read the password from one line of standard input
    #[arg(long, requires = "email")]
    pub password_stdin: bool,
    /// How to log in (without --email)
    #[arg(long, value_enum, default_value_t = LoginMethod::Token)]
    pub method: LoginMethod,
    /// The AppRole role id (not a secret; the secret id is read from ZAFE_SECRET_ID or standard input)
    #[arg(long, value_name = "ROLE_ID", required_if_eq("method", "approle"))]
    pub role_id: Option<String>,
    /// Where the AppRole auth method is mounted (under auth/)
    #[arg(long, value_name = "PATH", default_value = "approle")]
    pub path: String,
    /// Print the new token instead of storing it in the token file
    #[arg(long)]
    pub no_store: bool,
    /// Log in as a person through the server's OpenID Connect identity provider (opens a browser)
    #[arg(long, conflicts_with_all = ["role_id", "email", "no_store"])]
    pub oidc: bool,
    /// With --oidc: print the login URL instead of opening a browser (BROWSER is respected otherwise)
    #[arg(long, requires = "oidc")]
    pub no_browser: bool,
    /// With --oidc: how long to wait for the browser to come back, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub oidc_timeout: u64,
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    dispatch(&ctx.client()?, ctx.out(), args).await?;
    Ok(ExitCode::SUCCESS)
}

async fn dispatch(client: &Client, out: Out<'_>, args: Args) -> anyhow::Result<()> {
    if args.oidc {
        // No token goes to a login endpoint.
        let anonymous = with_token(client, None)?;
        let timeout = std::time::Duration::from_secs(args.oidc_timeout.max(1));
        let answer = match crate::oidc_login::login(&anonymous, args.no_browser, timeout, None)
            .await
        {
            // R-AUTH-9: the account has TOTP on. The first login's state is
            // used up, so ask for the code and go through the browser again
            // (the identity provider usually remembers the person).
            Err(e) if crate::user::is_totp_required(&e) => {
                let code = crate::prompt::prompt_totp_code()?;
                eprintln!("Completing the login in the browser once more, with the code.");
                crate::oidc_login::login(&anonymous, args.no_browser, timeout, Some(code.as_str()))
                    .await?
            }
            other => other?,
        };
        return crate::user::store_session(client, out, &answer, "Logged in with OIDC");
    }
    if let Some(email) = &args.email {
        return crate::user::login(client, out, email, args.password_stdin).await;
    }
    let (token, info) = match args.method {
        LoginMethod::Token => {
            let token =
                read_secret("Token (will be hidden): ", None).context("reading the token")?;
            // Check it before keeping it: a typo should not replace a working token.
            let looked_up = with_token(client, Some(Token::new(token.as_str())))?
                .request_json(Method::GET, "/v1/auth/token/lookup-self", None)
                .await
                .context("the token was not accepted")?
                .unwrap_or_default();
            let d = &looked_up["data"];
            let info = json!({
                "token_accessor": d["accessor"],
                "token_duration": d["ttl"],
                "token_renewable": d["renewable"],
                "token_policies": d["policies"],
            });
            (token, info)
        }
        LoginMethod::Approle => {
            let role_id = args.role_id.as_deref().unwrap_or_default();
            let secret_id = read_secret("Secret ID (will be hidden): ", Some("ZAFE_SECRET_ID"))
                .context("reading the secret id")?;
            let path = format!(
                "/v1/auth/{}/login",
                encode_path(args.path.trim_matches('/'))
            );
            let body = json!({ "role_id": role_id, "secret_id": secret_id.as_str() });
            // No token goes to a login endpoint.
            let answer = with_token(client, None)?
                .request_json(Method::POST, &path, Some(&body))
                .await
                .context("AppRole login failed")?
                .unwrap_or_default();
            let auth = &answer["auth"];
            let token = Zeroizing::new(
                auth["client_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            if token.is_empty() {
                bail!("the server's answer holds no token");
            }
            let info = json!({
                "token_accessor": auth["accessor"],
                "token_duration": auth["lease_duration"],
                "token_renewable": auth["renewable"],
                "token_policies": auth["policies"],
            });
            (token, info)
        }
    };
    if args.no_store {
        let mut shown = info.clone();
        shown["token"] = json!(token.as_str());
        return print(out, &shown);
    }
    let config_dir = &client.config().config_dir;
    // A token login replaces a person's session for this server.
    zafe_client::session::clear(config_dir, client.addr());
    zafe_client::config::save_token(config_dir, &Token::new(token.as_str()))?;
    if std::env::var_os("ZAFE_TOKEN").is_some_and(|v| !v.is_empty())
        || std::env::var_os("VAULT_TOKEN").is_some_and(|v| !v.is_empty())
    {
        eprintln!(
            "{}",
            out.yellow("Warning: ZAFE_TOKEN or VAULT_TOKEN is set and takes precedence over the token file; unset it to use this login.")
        );
    }
    if !out.json() {
        outln!(
            out,
            "Success! You are now authenticated. The token is stored in {} and will be used by later commands.\n",
            zafe_client::config::token_file(config_dir).display()
        );
    }
    print(out, &info)
}

fn print(out: Out<'_>, info: &Value) -> anyhow::Result<()> {
    if out.json() {
        return out.print_json(info);
    }
    let rows: Vec<(&str, String)> = info
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), crate::output::display(v)))
        .collect();
    out.print_table(&rows);
    Ok(())
}
