//! `zafe totp enroll|disable`: the TOTP second factor of a password account
//! (R-AUTH-9), with the session `zafe login` stored.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};
use zafe_client::{Client, Method};
use zeroize::Zeroizing;

use crate::ctx::Ctx;
use crate::output::{Out, outln};
use crate::prompt::{read_secret, read_visible};

#[derive(Debug, Subcommand)]
pub(crate) enum Args {
    /// Turn TOTP on: asks for the password, shows a QR code for an authenticator app,
    /// checks one code, and prints ten single-use recovery codes (once)
    #[command(
        after_help = "Examples:\n  zafe totp enroll\n  zafe totp enroll --format json     Recovery codes as JSON"
    )]
    Enroll,
    /// Turn TOTP off: asks for a current code or a recovery code (or, with --password, the password)
    #[command(after_help = "Examples:\n  zafe totp disable\n  zafe totp disable --password")]
    Disable {
        /// Prove it with the password instead of a code
        #[arg(long)]
        password: bool,
    },
}

pub(crate) const EXAMPLES: &str = "\
Examples:
  zafe totp enroll            Scan the QR code, type a code, keep the recovery codes safe
  zafe totp disable           Asks for a current code (or a recovery code)
  zafe totp disable --password

Once TOTP is on, `zafe login` asks for a code after the password. Answers are read from the
terminal, or one line each from standard input.";

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    dispatch(&ctx.client()?, ctx.out(), args).await?;
    Ok(ExitCode::SUCCESS)
}

async fn dispatch(client: &Client, out: Out<'_>, cmd: Args) -> anyhow::Result<()> {
    match cmd {
        Args::Enroll => enroll(client, out).await,
        Args::Disable { password } => disable(client, out, password).await,
    }
}

async fn post(client: &Client, what: &str, body: Value) -> anyhow::Result<Value> {
    Ok(client
        .request_json(
            Method::POST,
            &format!("/v1/auth/user/totp/{what}"),
            Some(&body),
        )
        .await?
        .unwrap_or_default()["data"]
        .clone())
}

async fn enroll(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
    let password =
        read_secret("Password (will be hidden): ", None).context("reading the password")?;
    let enrolled = post(client, "enroll", json!({ "password": password.as_str() }))
        .await
        .context("TOTP enrolment failed")?;
    let uri = Zeroizing::new(
        enrolled["otpauth_uri"]
            .as_str()
            .context("the server's answer has no otpauth URI")?
            .to_string(),
    );
    let secret = Zeroizing::new(enrolled["secret"].as_str().unwrap_or_default().to_string());
    // On stderr: stdout stays for the result (and --format json).
    if std::io::stderr().is_terminal() {
        let qr = qrcode::QrCode::new(uri.as_bytes()).context("making the QR code")?;
        let picture = qr
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build();
        eprintln!("Scan this with an authenticator app:\n\n{picture}\n");
    }
    eprintln!(
        "Or enter this secret by hand: {}\n(otpauth URI: {})\n",
        secret.as_str(),
        uri.as_str()
    );
    let code = read_visible("Code from the app: ").context("reading the code")?;
    let confirmed = post(client, "confirm", json!({ "code": code.as_str() }))
        .await
        .context("the code was not accepted; run `zafe totp enroll` again")?;
    let codes: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    if out.json() {
        return out.print_json(&json!({ "enabled": true, "recovery_codes": codes }));
    }
    outln!(
        out,
        "{}\n\nRecovery codes: each works once instead of a code. They are shown only now;\nkeep them somewhere safe, apart from this device:\n",
        out.green("TOTP is on: `zafe login` will ask for a code after the password.")
    );
    for code in &codes {
        outln!(out, "    {code}");
    }
    Ok(())
}

async fn disable(client: &Client, out: Out<'_>, with_password: bool) -> anyhow::Result<()> {
    let body = if with_password {
        let password =
            read_secret("Password (will be hidden): ", None).context("reading the password")?;
        json!({ "password": password.as_str() })
    } else {
        let code = read_visible("Current code or a recovery code: ").context("reading the code")?;
        json!({ "code": code.as_str() })
    };
    post(client, "disable", body)
        .await
        .context("TOTP was not turned off")?;
    if out.json() {
        return out.print_json(&json!({ "enabled": false }));
    }
    outln!(out, "TOTP is off for this account.");
    Ok(())
}
