//! `zafe setup mcp`: the configuration snippet that registers `zafe mcp`
//! with an AI editor, printed or (after a confirmation) merged into the
//! editor's configuration file.
//!
//! The snippet holds the command and the server address, never a token:
//! whatever sits in an editor's configuration, the assistant can read.
//! `zafe mcp` reads its token from the environment or the token file when
//! it starts.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::ctx::Ctx;
use crate::output::{Out, outln};
use anyhow::{Context as _, bail};
use clap::ValueEnum;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Editor {
    /// Claude Code: .mcp.json in the project
    Claude,
    /// Cursor: .cursor/mcp.json in the project
    Cursor,
    /// Visual Studio Code: .vscode/mcp.json in the project
    Vscode,
    /// Windsurf: ~/.codeium/windsurf/mcp_config.json
    Windsurf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SetupMcpArgs {
    /// The editor to configure
    #[arg(long, value_enum, default_value_t = Editor::Claude)]
    pub editor: Editor,

    /// Merge the entry into the editor's configuration file (asks first)
    #[arg(long)]
    pub write: bool,

    /// With --write: do not ask
    #[arg(long, short = 'y', requires = "write")]
    pub yes: bool,

    /// Default project for the MCP server's tools
    #[arg(long, value_name = "SLUG")]
    pub project: Option<String>,

    /// Default environment for the MCP server's tools
    #[arg(long = "env", value_name = "ENV")]
    pub environment: Option<String>,
}

pub(crate) const EXAMPLES: &str = "\
Examples:
  zafe setup mcp --editor claude             Print the entry for Claude Code (.mcp.json)
  zafe setup mcp --editor cursor --write     Add it to .cursor/mcp.json, after asking
  zafe setup mcp --editor vscode --project myapp --env dev

The entry never contains a token: `zafe mcp` reads ZAFE_TOKEN or the token file (zafe login)
when it starts.";

/// The editor's configuration file and the JSON key its servers live under.
fn target(editor: Editor) -> anyhow::Result<(PathBuf, &'static str)> {
    Ok(match editor {
        Editor::Claude => (PathBuf::from(".mcp.json"), "mcpServers"),
        Editor::Cursor => (PathBuf::from(".cursor/mcp.json"), "mcpServers"),
        Editor::Vscode => (PathBuf::from(".vscode/mcp.json"), "servers"),
        Editor::Windsurf => (
            dirs_home()?.join(".codeium/windsurf/mcp_config.json"),
            "mcpServers",
        ),
    })
}

fn dirs_home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// The server entry: the command, its arguments, and the address; no token.
fn entry(args: &SetupMcpArgs, addr: Option<&str>) -> anyhow::Result<Value> {
    let exe = std::env::current_exe().context("cannot find the zafe executable")?;
    let mut argv = vec!["mcp".to_string()];
    if let Some(p) = &args.project {
        argv.extend(["--project".into(), p.clone()]);
    }
    if let Some(e) = &args.environment {
        argv.extend(["--env".into(), e.clone()]);
    }
    let mut server = json!({ "command": exe.to_string_lossy(), "args": argv });
    if args.editor == Editor::Vscode {
        server["type"] = json!("stdio");
    }
    if let Some(addr) = addr {
        server["env"] = json!({ "ZAFE_ADDR": addr });
    }
    Ok(server)
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
    /// Print or write the configuration that registers `zafe mcp` with an AI editor
    #[command(after_help = EXAMPLES)]
    Mcp(SetupMcpArgs),
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    match args {
        Args::Mcp(args) => mcp(args, ctx.addr(), ctx.out())?,
    }
    Ok(ExitCode::SUCCESS)
}

fn mcp(args: SetupMcpArgs, addr: Option<String>, out: Out<'_>) -> anyhow::Result<()> {
    let (path, servers_key) = target(args.editor)?;
    let server = entry(&args, addr.as_deref())?;
    if !args.write {
        let snippet = json!({ servers_key: { "zafe": server } });
        outln!(out, "{}", serde_json::to_string_pretty(&snippet)?);
        eprintln!(
            "zafe: add this to {} (or run with --write). It holds no token: zafe mcp reads \
             ZAFE_TOKEN or the token file when it starts.",
            path.display()
        );
        return Ok(());
    }

    let mut config: Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON; not touching it", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if !config.is_object() {
        bail!(
            "{} does not hold a JSON object; not touching it",
            path.display()
        );
    }
    if !config[servers_key].is_object() {
        config[servers_key] = json!({});
    }
    config[servers_key]["zafe"] = server;

    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("--write asks for confirmation on a terminal; add --yes to write without asking");
        }
        if !crate::prompt::confirm(&format!(
            "Write the zafe MCP server entry to {}? [y/N] ",
            path.display()
        ))? {
            bail!("nothing written");
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Write a sibling and rename, so an interrupted write never leaves a
    // half-written configuration behind.
    let tmp = path.with_extension("json.zafe-tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&config)? + "\n")
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "zafe: wrote the zafe MCP server entry to {}",
        path.display()
    );
    Ok(())
}
