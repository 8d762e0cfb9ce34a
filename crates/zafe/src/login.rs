//! `zafe login` and `zafe logout`: get a token or a session and keep it (a
//! token in the token file, mode 0600; a password or OIDC login's session
//! in the OS credential store or private files), and end it again.
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
use zafe_client::session::{self, Session, Stored};
use zafe_client::{Client, Method, Token};
use zeroize::Zeroizing;

use crate::ctx::{Ctx, with_token};
use crate::output::{Out, outln, print_fields};
use crate::prompt::{read_code, read_password, read_secret, stdin_line};

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
            Err(e) if is_totp_required(&e) => {
                let code = crate::prompt::prompt_totp_code()?;
                eprintln!("Completing the login in the browser once more, with the code.");
                crate::oidc_login::login(&anonymous, args.no_browser, timeout, Some(code.as_str()))
                    .await?
            }
            other => other?,
        };
        return store_session(client, out, &answer, "Logged in with OIDC");
    }
    if let Some(email) = &args.email {
        return password_login(client, out, email, args.password_stdin).await;
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

/// Whether a login failed only because the account's TOTP code is missing.
pub(crate) fn is_totp_required(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<zafe_client::Error>(),
        Some(zafe_client::Error::ServerError { status: 400, errors })
            if errors.iter().any(|e| e == "a TOTP code is required")
    )
}

/// `zafe login --email`: a password login; the session is stored.
pub(crate) async fn password_login(
    client: &Client,
    out: Out<'_>,
    email: &str,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let password = read_password(
        "Password (will be hidden): ",
        false,
        password_stdin,
        &mut stdin_line,
    )?;
    let mut body = json!({ "email": email, "password": password.as_str() });
    // No token goes to a login endpoint.
    let anonymous = with_token(client, None)?;
    let answer = match anonymous
        .request_json(Method::POST, "/v1/auth/user/login", Some(&body))
        .await
    {
        // R-AUTH-9: the password was right and TOTP is on: ask for a code
        // (or a recovery code), then log in again with both.
        Err(zafe_client::Error::ServerError {
            status: 400,
            errors,
        }) if errors.iter().any(|e| e == "a TOTP code is required") => {
            let code = read_code(password_stdin, &mut stdin_line)?;
            body["totp_code"] = json!(code.as_str());
            anonymous
                .request_json(Method::POST, "/v1/auth/user/login", Some(&body))
                .await
        }
        other => other,
    }
    .context("login failed")?
    .unwrap_or_default();
    store_session(client, out, &answer, "Logged in")
}

/// Keeps the session a login answered with, and shows what it is.
pub(crate) fn store_session(
    client: &Client,
    out: Out<'_>,
    answer: &Value,
    done: &str,
) -> anyhow::Result<()> {
    let auth = &answer["auth"];
    let (Some(access), Some(refresh)) = (
        auth["client_token"].as_str(),
        auth["refresh_token"].as_str(),
    ) else {
        bail!("the server's answer holds no session");
    };
    let session = Session {
        access: Token::new(access),
        refresh: Token::new(refresh),
    };
    let stored = session::save(&client.config().config_dir, client.addr(), &session)?;
    if std::env::var_os("ZAFE_TOKEN").is_some_and(|v| !v.is_empty())
        || std::env::var_os("VAULT_TOKEN").is_some_and(|v| !v.is_empty())
    {
        eprintln!(
            "{}",
            out.yellow("Warning: ZAFE_TOKEN or VAULT_TOKEN is set and takes precedence over this session; unset it to use it.")
        );
    }
    let info = json!({
        "email": auth["metadata"]["email"],
        "user_id": auth["metadata"]["user_id"],
        "session_id": auth["session_id"],
        "policies": auth["policies"],
        "token_duration": auth["lease_duration"],
        "refresh_expires_in": auth["refresh_expires_in"],
        "stored_in": match &stored {
            Stored::Keyring => "the OS credential store".to_string(),
            Stored::Files(path) => path.display().to_string(),
        },
    });
    if out.json() {
        return out.print_json(&info);
    }
    outln!(
        out,
        "{done}. The session is kept in {} and refreshed automatically.\n",
        info["stored_in"].as_str().unwrap_or_default()
    );
    print_fields(out, &info);
    Ok(())
}

/// `zafe logout`: ends the session on the server and forgets it here.
pub(crate) async fn logout(ctx: &Ctx<'_>) -> anyhow::Result<ExitCode> {
    end_session(&ctx.client()?, ctx.out()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn end_session(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
    let config = client.config();
    if config.refresh_token.is_none() {
        bail!(
            "not logged in with a session here (`zafe login --email`); a token from ZAFE_TOKEN or `zafe login` is revoked with `zafe token revoke`"
        );
    }
    // An expired access token is refreshed first, so the server ends it.
    let ended = client
        .request_json(Method::POST, "/v1/auth/user/logout", None)
        .await;
    session::clear(&config.config_dir, client.addr());
    match ended {
        Ok(_) => {
            if !out.json() {
                outln!(
                    out,
                    "Logged out: the session has ended and is forgotten here."
                );
            } else {
                out.print_json(&json!({ "logged_out": true }))?;
            }
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "{}",
                out.yellow(&format!(
                    "The session is forgotten here, but the server did not confirm its end: {e}"
                ))
            );
            Ok(())
        }
    }
}
