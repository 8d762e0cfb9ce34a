//! `zafe`: the server, the command-line client, and (later) the host agent
//! and the MCP server, in one binary.
//!
//! Exit codes: 0 success, 1 error, 2 usage error (clap) or, for `status`,
//! a sealed server. Errors go to stderr as `Error: <message>`; no message
//! carries a token or a key share.

mod agent;
mod agent_run;
mod approle;
mod audit;
mod backup;
mod child;
mod cli;
mod ctx;
mod env;
mod export;
mod files;
mod harden;
mod import;
mod inject;
mod kv;
mod login;
mod mcp;
mod member;
mod oidc_login;
mod operator;
mod output;
mod policy;
mod project;
mod prompt;
mod run;
mod secret;
mod secrets;
mod server;
mod server_id;
mod service_account;
mod setup;
mod status;
mod token;
mod totp;
mod transit;
mod user;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Command};
use crate::ctx::Ctx;
use crate::output::Out;

#[tokio::main]
async fn main() -> ExitCode {
    // Vault's single-dash flags for `zafe kv` (`-version=2`) become clap's `--version=2`.
    let cli = Cli::parse_from(kv::vault_style_args(std::env::args_os()));
    let out = Out::stdout(cli.global.format, cli.global.no_color);
    let ctx = Ctx::new(cli.global, out);
    match run(&ctx, cli.command).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every command group: its module's `run` with the context and its arguments.
async fn run(ctx: &Ctx<'_>, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Server(args) => server::run(ctx, args).await,
        Command::Mcp(args) => mcp::run(ctx, args).await,
        Command::Setup(args) => setup::run(ctx, args).await,
        Command::Run(args) => run::run(ctx, args).await,
        Command::Audit(args) => audit::run(ctx, args).await,
        Command::Status => status::run(ctx).await,
        Command::Operator(args) => operator::run(ctx, args).await,
        Command::Policy(args) => policy::run(ctx, args).await,
        Command::Transit(args) => transit::run(ctx, args).await,
        Command::Kv(args) => kv::run(ctx, args).await,
        Command::Import(args) => import::run(ctx, args).await,
        Command::Inject(args) => inject::run(ctx, args).await,
        Command::Export(args) => export::run(ctx, args).await,
        Command::Project(args) => project::run(ctx, args).await,
        Command::Env(args) => env::run(ctx, args).await,
        Command::Member(args) => member::run(ctx, args).await,
        Command::Secret(args) => secret::run(ctx, args).await,
        Command::ServiceAccount(args) => service_account::run(ctx, args).await,
        Command::Agent(args) => agent::run(ctx, args).await,
        Command::Secrets(args) => secrets::run(ctx, args).await,
        Command::ServerId(args) => server_id::run(ctx, args).await,
        Command::Login(args) => login::run(ctx, args).await,
        Command::Totp(args) => totp::run(ctx, args).await,
        Command::Logout => login::logout(ctx).await,
        Command::User(args) => user::run(ctx, args).await,
        Command::Token(args) => token::run(ctx, args).await,
        Command::Approle(args) => approle::run(ctx, args).await,
    }
}
