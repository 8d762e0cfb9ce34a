//! `zafe`: the server, the command-line client, and (later) the host agent
//! and the MCP server, in one binary.
//!
//! Exit codes: 0 success, 1 error, 2 usage error (clap) or, for `status`,
//! a sealed server. Errors go to stderr as `Error: <message>`; no message
//! carries a token or a key share.

mod admin;
mod approle;
mod audit;
mod child;
mod cli;
mod files;
mod harden;
mod import;
mod inject;
mod kv;
mod login;
mod mcp;
mod oidc_login;
mod operator;
mod output;
mod project;
mod prompt;
mod run;
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
use zafe_client::{Client, ClientConfig, Flags, PinStore};

use crate::cli::{Cli, Command, Global, Operator, PolicyCmd, SecretsCmd, ServerArgs, ServerId};
use crate::output::Out;

#[tokio::main]
async fn main() -> ExitCode {
    // Vault's single-dash flags for `zafe kv` (`-version=2`) become clap's `--version=2`.
    let cli = Cli::parse_from(kv::vault_style_args(std::env::args_os()));
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let out = Out::stdout(cli.global.format, cli.global.no_color);
    match cli.command {
        Command::Server(args) => return server(args).await,
        Command::Mcp(args) => {
            harden::forbid_inspection();
            let client = client(&cli.global, None)?;
            // The client holds the token now; the commands run_command
            // starts must not find it in our environment block.
            harden::scrub_environment(&harden::CREDENTIAL_VARIABLES);
            mcp::serve(args, client).await?;
        }
        Command::Setup(crate::cli::SetupCmd::Mcp(args)) => {
            let addr = cli.global.addr.clone().or_else(|| {
                ["ZAFE_ADDR", "VAULT_ADDR"]
                    .iter()
                    .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
            });
            setup::run(args, addr, out)?;
        }
        Command::Run(args) => {
            harden::forbid_inspection();
            let global = &cli.global;
            return Ok(run::run(args, || client(global, None)).await);
        }
        Command::Audit(cmd) => {
            let global = &cli.global;
            return audit::run(cmd, || client(global, None), global.server_id.clone(), out).await;
        }
        Command::Status => return status::run(&client(&cli.global, None)?, out).await,
        Command::Operator(Operator::Init {
            key_shares,
            key_threshold,
        }) => operator::init(&client(&cli.global, None)?, out, key_shares, key_threshold).await?,
        Command::Operator(Operator::Unseal { key, reset }) => {
            operator::unseal(&client(&cli.global, None)?, out, key, reset).await?
        }
        Command::Operator(Operator::BootstrapAdmin {
            email,
            display_name,
            password_stdin,
        }) => {
            user::bootstrap_admin(
                &client(&cli.global, None)?,
                out,
                &email,
                display_name.as_deref(),
                password_stdin,
            )
            .await?
        }
        Command::Operator(Operator::Seal) => {
            operator::seal(&client(&cli.global, None)?, out).await?
        }
        Command::Operator(Operator::Rotate { no_wait }) => {
            admin::rotate(&client(&cli.global, None)?, out, !no_wait).await?
        }
        Command::Operator(Operator::KeyStatus) => {
            admin::key_status(&client(&cli.global, None)?, out).await?
        }
        Command::Operator(Operator::Rekey {
            key_shares,
            key_threshold,
        }) => admin::rekey(&client(&cli.global, None)?, out, key_shares, key_threshold).await?,
        Command::Policy(cmd) => {
            let c = client(&cli.global, None)?;
            match cmd {
                PolicyCmd::List => admin::policy_list(&c, out).await?,
                PolicyCmd::Read { name } => admin::policy_read(&c, out, &name).await?,
                PolicyCmd::Write { name, file } => admin::policy_write(&c, &name, &file).await?,
                PolicyCmd::Delete { name } => admin::policy_delete(&c, &name).await?,
            }
        }
        Command::Transit(args) => {
            return transit::run(&client(&cli.global, None)?, out, args).await;
        }
        Command::Kv(args) => return kv::run(&client(&cli.global, None)?, out, args).await,
        Command::Import(args) => {
            return import::run(&project_client(&cli.global)?, out, args).await;
        }
        Command::Inject(args) => return inject::inject(&project_client(&cli.global)?, args).await,
        Command::Export(args) => {
            let format = cli.global.format;
            return inject::export(&project_client(&cli.global)?, format, args).await;
        }
        Command::Project(cmd) => {
            return project::project(&project_client(&cli.global)?, out, cmd).await;
        }
        Command::Env(cmd) => return project::env(&project_client(&cli.global)?, out, cmd).await,
        Command::Member(cmd) => {
            return project::member(&project_client(&cli.global)?, out, cmd).await;
        }
        Command::Secret(args) => {
            return project::secret(&project_client(&cli.global)?, out, args).await;
        }
        Command::ServiceAccount(cmd) => {
            use crate::cli::ServiceAccountCmd as Sa;
            let c = client(&cli.global, None)?;
            match cmd {
                Sa::Create {
                    name,
                    scopes,
                    cidrs,
                    ttl,
                    description,
                } => {
                    service_account::create(
                        &c,
                        out,
                        &name,
                        &scopes,
                        &cidrs,
                        ttl.as_deref(),
                        description.as_deref(),
                    )
                    .await?
                }
                Sa::List => service_account::list(&c, out).await?,
                Sa::Read { name } => service_account::read(&c, out, &name).await?,
                Sa::Token { name, ttl } => {
                    service_account::token(&c, out, &name, ttl.as_deref()).await?
                }
                Sa::Revoke { name, accessor } => {
                    service_account::revoke(&c, &name, accessor.as_deref()).await?
                }
            }
        }
        Command::Secrets(cmd) => {
            let c = client(&cli.global, None)?;
            match cmd {
                SecretsCmd::List => admin::secrets_list(&c, out).await?,
                SecretsCmd::Enable {
                    kind,
                    path,
                    description,
                } => {
                    admin::secrets_enable(&c, &kind, path.as_deref(), description.as_deref())
                        .await?
                }
                SecretsCmd::Disable { path } => admin::secrets_disable(&c, &path).await?,
            }
        }
        Command::ServerId(ServerId::Show) => {
            server_id::show(&client(&cli.global, None)?, out).await?
        }
        Command::ServerId(ServerId::List) => server_id::list(&pin_store()?, out)?,
        Command::ServerId(ServerId::Forget { addr }) => {
            server_id::forget(&pin_store()?, out, &addr)?
        }
        Command::ServerId(ServerId::Migrate { old, new }) => {
            server_id::migrate(&client(&cli.global, Some(new))?, out, &old).await?
        }
        Command::Login(args) => login::run(&client(&cli.global, None)?, out, args).await?,
        Command::Totp(cmd) => totp::run(&client(&cli.global, None)?, out, cmd).await?,
        Command::Logout => user::logout(&client(&cli.global, None)?, out).await?,
        Command::User(cmd) => user::run(&client(&cli.global, None)?, out, cmd).await?,
        Command::Token(cmd) => token::run(&client(&cli.global, None)?, out, cmd).await?,
        Command::Approle(args) => approle::run(&client(&cli.global, None)?, out, args).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// A client from the global flags and the environment; `addr` overrides
/// both (for `server-id migrate`, which talks to the new address).
fn client(global: &Global, addr: Option<String>) -> anyhow::Result<Client> {
    let flags = Flags {
        addr: addr.or_else(|| global.addr.clone()),
        ca_cert: global.ca_cert.clone(),
        server_id: global.server_id.clone(),
    };
    Ok(Client::new(ClientConfig::from_env_and_flags(&flags)?)?)
}

/// A client for project commands: inside a repository whose `.zafe.toml`
/// names a `server`, that address is used unless `--addr`, `ZAFE_ADDR` or
/// `VAULT_ADDR` says otherwise.
fn project_client(global: &Global) -> anyhow::Result<Client> {
    let from_env = ["ZAFE_ADDR", "VAULT_ADDR"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|a| !a.is_empty()));
    if global.addr.is_none()
        && !from_env
        && let Some(server) = project::project_file()?.and_then(|f| f.file.server)
    {
        return client(global, Some(server));
    }
    client(global, None)
}

/// The pin store alone: listing and forgetting pins needs neither a server
/// nor a token.
fn pin_store() -> anyhow::Result<PinStore> {
    Ok(PinStore::new(&zafe_client::config::config_dir_from_env()?))
}

async fn server(args: ServerArgs) -> anyhow::Result<ExitCode> {
    init_tracing();
    zafe_server::run(zafe_server::Launch {
        config_path: args.config,
        dev: args.dev,
        dev_root_token: args.dev_root_token,
        listen: args.listen,
        accept_rollback: args.accept_rollback,
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Logs for the server only: the level or filter from `ZAFE_LOG` (default
/// `info`), JSON lines when `ZAFE_LOG_FORMAT=json`, to stderr so that stdout
/// stays for what the server prints on purpose.
fn init_tracing() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("ZAFE_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).unwrap_or_else(|e| {
            eprintln!("zafe: ZAFE_LOG={spec:?} is not a valid filter ({e}); using info");
            EnvFilter::new("info")
        }),
        _ => EnvFilter::new("info"),
    };
    let json = std::env::var("ZAFE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    // Colour codes only for a person at a terminal, never in a log file.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
