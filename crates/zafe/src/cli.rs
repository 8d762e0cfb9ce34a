//! The command line, as clap sees it. Tokens are deliberately not a flag:
//! they come from ZAFE_TOKEN / VAULT_TOKEN or the token file, so that they
//! never land in shell history or in `ps`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str =
    "Zafe: a Vault-compatible secrets manager. One binary: server, client, agent and MCP server.";

const TOP_EXAMPLES: &str = "\
Examples:
  zafe server --dev            Start a throwaway in-memory server
  export ZAFE_ADDR=https://zafe.example.com:8200
  zafe status                  Seal status, health and the server's verified identity
  zafe operator init           Initialise a server; shows the unseal keys and root token once
  zafe operator unseal         Submit one unseal key (prompted for without echo)

Environment:
  ZAFE_ADDR (VAULT_ADDR)      server address [default: http://127.0.0.1:8200]
  ZAFE_TOKEN (VAULT_TOKEN)    token; else read from <config dir>/token (mode 0600)
  ZAFE_CACERT (VAULT_CACERT)  PEM file of CA certificates to trust instead of the public roots
  ZAFE_SERVER_ID              server_id the server must prove (e.g. in CI)
  ZAFE_CONFIG_DIR             where pins (servers.toml) and the token file live
  NO_COLOR                    never colour the output

Exit codes: 0 success, 1 error, 2 usage error (or, for `status`, sealed).";

#[derive(Debug, Parser)]
#[command(name = "zafe", version, about = ABOUT, after_help = TOP_EXAMPLES, max_term_width = 100)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Server address [env: ZAFE_ADDR, then VAULT_ADDR] [default: http://127.0.0.1:8200]
    #[arg(long, global = true, value_name = "URL")]
    pub addr: Option<String>,

    /// PEM file of CA certificates to trust for TLS [env: ZAFE_CACERT, then VAULT_CACERT]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// The server_id the server must prove, given up front (e.g. in CI) [env: ZAFE_SERVER_ID]
    #[arg(long, global = true, value_name = "ID")]
    pub server_id: Option<String>,

    /// Output format
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Never colour the output (colour is used only on a terminal, and never when NO_COLOR is set)
    #[arg(long, global = true)]
    pub no_color: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
    /// JSON lines (`audit export`, `audit tail`)
    Jsonl,
    /// CSV (`audit export`)
    Csv,
    /// KEY=value lines (`export`)
    Dotenv,
    /// export KEY='value' lines (`export`)
    Shell,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Show the server's seal status, health and verified identity
    #[command(after_help = "\
Examples:
  zafe status
  zafe status --format json
  zafe --addr https://zafe.example.com:8200 --server-id zs_0123... status

Exit codes: 0 unsealed, 2 sealed or not initialised, 1 error (including an identity check that failed).")]
    Status,

    /// Initialise, unseal and seal the server; back it up and restore it
    #[command(
        subcommand,
        after_help = "\
Examples:
  zafe operator init
  zafe operator unseal
  zafe operator seal
  zafe operator backup -o zafe.zbak
  zafe operator restore zafe.zbak"
    )]
    Operator(crate::operator::Args),

    /// Manage ACL policies
    #[command(
        subcommand,
        after_help = "\
Examples:
  zafe policy list
  zafe policy read app-reader
  zafe policy write app-reader app-reader.hcl
  echo 'path \"secret/data/app/*\" { capabilities = [\"read\"] }' | zafe policy write app-reader -
  zafe policy delete app-reader"
    )]
    Policy(crate::policy::Args),

    /// Manage service accounts: read-only, scoped machine tokens for CI
    #[command(
        subcommand,
        name = "service-account",
        after_help = "\
Examples:
  zafe service-account create ci --scope project:myapp --cidr 10.0.0.0/8 --ttl 90d
  zafe service-account list
  zafe service-account read ci
  zafe service-account token ci          Another token for the same account
  zafe service-account revoke ci         Delete the account and all its tokens

A service account can only read and list, and only inside its scopes."
    )]
    ServiceAccount(crate::service_account::Args),

    /// Manage a project's host agents: per-agent tokens that read one project's environments
    #[command(
        subcommand,
        after_help = "\
Examples:
  zafe agent create web-1 --project myapp --env prod
  zafe agent list --project myapp
  zafe agent rotate-token web-1 --project myapp
  zafe agent revoke web-1 --project myapp

An agent can only read and list, and only the environments it was created for."
    )]
    Agent(crate::agent::Args),

    /// Enable, disable and list secrets engines
    #[command(
        subcommand,
        after_help = "\
Examples:
  zafe secrets list
  zafe secrets enable transit
  zafe secrets enable --path team-kv kv
  zafe secrets disable team-kv"
    )]
    Secrets(crate::secrets::Args),

    /// Run a command with the secrets its environment and env files refer to (output masked)
    #[command(after_help = crate::run::EXAMPLES)]
    Run(crate::run::Args),

    /// Serve the Model Context Protocol on stdio for AI coding assistants (no tool returns a value)
    #[command(after_help = crate::mcp::EXAMPLES)]
    Mcp(crate::mcp::Args),

    /// Configure other tools to use Zafe
    #[command(subcommand, after_help = crate::setup::EXAMPLES)]
    Setup(crate::setup::Args),

    /// Encrypt, decrypt, sign and verify with named keys kept by the server (transit engine)
    #[command(after_help = crate::transit::EXAMPLES)]
    Transit(crate::transit::Args),

    /// Create, list, show and delete projects
    #[command(subcommand, after_help = crate::project::EXAMPLES)]
    Project(crate::project::Args),

    /// A project's environments: list, create, delete, diff and copy
    #[command(subcommand, after_help = crate::env::EXAMPLES)]
    Env(crate::env::Args),

    /// A project's members and their roles
    #[command(subcommand, after_help = crate::member::EXAMPLES)]
    Member(crate::member::Args),

    /// A project's secrets, one per key (project and environment from .zafe.toml or flags)
    #[command(after_help = crate::secret::EXAMPLES)]
    Secret(crate::secret::Args),

    /// Read, write, list and version key/value secrets (KV v2, like `vault kv`)
    #[command(after_help = crate::kv::EXAMPLES)]
    Kv(crate::kv::Args),

    /// Store a .env file's values in Zafe and write .env.zafe with zafe:// references instead
    #[command(after_help = crate::import::EXAMPLES)]
    Import(crate::import::Args),

    /// Render a template, replacing {{ zafe://... }} with secret values
    #[command(after_help = crate::inject::EXAMPLES)]
    Inject(crate::inject::Args),

    /// Write a project environment's secrets as dotenv, JSON or shell exports
    #[command(after_help = crate::export::EXAMPLES)]
    Export(crate::export::Args),

    /// Show, forget or move the server identities this client has pinned
    #[command(
        subcommand,
        name = "server-id",
        after_help = "\
Examples:
  zafe server-id show
  zafe server-id list
  zafe server-id forget https://zafe.example.com:8200
  zafe server-id migrate https://old.example.com:8200 https://zafe.example.com:8200

The first connection to an address pins the identity the server proves there; later
connections must prove the same identity, or the client refuses to send credentials."
    )]
    ServerId(crate::server_id::Args),

    /// Log in with your email and password, your identity provider (OIDC), a token, or AppRole
    #[command(after_help = "\
Examples:
  zafe login --email you@example.com                Password at a hidden prompt
  zafe login --email ci@example.com --password-stdin < pw.txt
  zafe login                                        Paste a token at a hidden prompt
  echo \"$TOKEN\" | zafe login                        Or pipe it in
  ZAFE_SECRET_ID=... zafe login --method approle --role-id 4b1c...
  zafe login --method approle --role-id 4b1c... --no-store --format json < secret-id.txt
  zafe login --oidc                                 Log in through your identity provider (browser)
  zafe login --oidc --no-browser                    Print the URL to open elsewhere on this machine

A password login keeps its session (access and refresh token) in the OS credential store,
or in files readable only by you (<config dir>/token and refresh-token) where there is none,
and refreshes it automatically. A token is checked with the server before it is stored.
Passwords, tokens and secret ids are never command-line arguments: they would end up in shell
history and in `ps`.")]
    Login(crate::login::Args),

    /// Turn the TOTP second factor of your password account on or off
    #[command(subcommand, after_help = crate::totp::EXAMPLES)]
    Totp(crate::totp::Args),
    /// End your session (from `zafe login --email`) on the server and forget it here
    #[command(after_help = "\
Examples:
  zafe logout")]
    Logout,

    /// Manage people's accounts: create, invite, list, disable, delete, change passwords
    #[command(subcommand, after_help = crate::user::USER_EXAMPLES)]
    User(crate::user::Args),

    /// Create, look up, renew and revoke tokens
    #[command(
        subcommand,
        after_help = "\
Examples:
  zafe token create --policy app-reader --ttl 1h
  zafe token lookup
  zafe token renew --increment 2h
  zafe token revoke --accessor 9f2c...
  zafe token capabilities secret/data/app"
    )]
    Token(crate::token::Args),

    /// Manage AppRole roles, role ids and secret ids
    #[command(after_help = "\
Examples:
  zafe approle role create ci --policy deploy --secret-id-ttl 24h
  zafe approle role-id ci
  zafe approle secret-id create ci
  zafe --format json approle role list
  zafe approle --path ci-approle role read deployer")]
    Approle(crate::approle::Args),

    /// Run a Zafe server
    #[command(after_help = "\
Examples:
  zafe server --dev                            In memory, unsealed, root token printed
  zafe server --dev --dev-root-token dev-only  The same, with a fixed root token
  zafe server --config /etc/zafe/zafe.toml     A real server from a configuration file
  zafe server --listen 0.0.0.0:8200            Quick start in the default data directory

Logging: ZAFE_LOG sets the level or filter (default info), ZAFE_LOG_FORMAT=json logs JSON lines.")]
    Server(crate::server::Args),

    /// Verify, export and follow the tamper-evident audit log
    #[command(
        subcommand,
        after_help = "\
Examples:
  zafe audit verify
  zafe audit export --format csv --since 2024-01-01T00:00:00Z -o audit.csv
  zafe audit tail --follow"
    )]
    Audit(crate::audit::Args),
}

/// A `KEY=VALUE` argument (`--metadata`), split at the first `=`.
pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_examples() {
        fn walk(cmd: &clap::Command, path: &str) {
            let path = format!("{path} {}", cmd.get_name());
            let help = cmd
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(help.contains("Examples:"), "`{path}` has no examples");
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &path);
            }
        }
        walk(&Cli::command(), "");
    }

    #[test]
    fn there_is_no_token_flag() {
        let err = Cli::try_parse_from(["zafe", "--token", "x", "status"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    // Secrets given on the command line (an unseal key, a dev root token, KEY=VALUE data)
    // do not show in the parsed command's Debug.
    #[test]
    fn debug_of_the_command_line_prints_no_secret() {
        for (args, secret) in [
            (
                &["zafe", "operator", "unseal", "c0ffee5ecret"][..],
                "c0ffee5ecret",
            ),
            (
                &[
                    "zafe",
                    "server",
                    "--dev",
                    "--dev-root-token",
                    "zafe_r_d3vt0k3n",
                ][..],
                "d3vt0k3n",
            ),
            (
                &["zafe", "kv", "put", "secret/app", "password=hunter2sw0rd"][..],
                "hunter2sw0rd",
            ),
            (
                &["zafe", "kv", "patch", "secret/app", "password=hunter2sw0rd"][..],
                "hunter2sw0rd",
            ),
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            let shown = format!("{cli:?}");
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
