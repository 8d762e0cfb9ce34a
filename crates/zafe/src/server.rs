//! `zafe server`: runs the server (zafe-server) with its logging set up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::ctx::Ctx;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Configuration file (TOML)
    #[arg(long, value_name = "FILE", conflicts_with = "dev")]
    pub config: Option<PathBuf>,
    /// Development mode: in-memory storage, unsealed, root token printed. Never for real secrets
    #[arg(long)]
    pub dev: bool,
    /// Root token for --dev (default: a random one)
    #[arg(long, value_name = "TOKEN", requires = "dev")]
    pub dev_root_token: Option<zafe_core::secret::SecretString>,
    /// Address to listen on, e.g. 127.0.0.1:8200 (overrides the configuration file)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Start although the database is older than the last audit checkpoint this
    /// server saw (a restored backup). Recorded in the audit log. Also ZAFE_ACCEPT_ROLLBACK=1
    #[arg(long)]
    pub accept_rollback: bool,
}

/// `zafe server`; the server needs nothing of the client's context.
pub(crate) async fn run(_ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    init_tracing();
    zafe_server::run(zafe_server::Launch {
        config_path: args.config,
        dev: args.dev,
        dev_root_token: args.dev_root_token,
        listen: args.listen,
        accept_rollback: args.accept_rollback,
        engines: zafe_engines::build,
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
