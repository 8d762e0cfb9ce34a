//! The agent's `[exec]` command: the application runs as the agent's child, with its secrets in
//! its environment, and is restarted (or signalled) only when a value it uses changed.
//!
//! - The environment is `zafe run`'s ([`crate::run::Prepared`]): the `env_file` and `env`
//!   table of the configuration, every reference resolved in one request; the agent's own
//!   credentials (`ZAFE_AGENT_TOKEN`, `ZAFE_TOKEN`, ...) and configuration directory are not
//!   passed on.
//! - Whether a value changed is decided by the environment's fingerprint (a SHA-256 over names
//!   and values), so a notice for a secret rewritten with the same value, a reconnect or a
//!   token rotation never restarts the command.
//! - The command leads its own process group: a stop reaches the programs it started too (a
//!   shell's children), and a terminal's Ctrl-C reaches only the agent, which forwards it once.
//! - Output is the agent's own stdout/stderr, or, with `mask = true`, goes through the same
//!   masker as `zafe run`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use zafe_client::Client;
use zafe_client::mask::MaskOptions;

use crate::child;
use crate::run::{Failure, IsolatedConfigDir, Local, Prepared};

/// `[exec]` as written in agent.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecConfig {
    /// The program and its arguments.
    command: Vec<String>,
    /// Variables for the command: plain values or `zafe://` references.
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// A dotenv file of plain values and references (`zafe import`'s `.env.zafe`); `env` wins.
    env_file: Option<PathBuf>,
    /// `"restart"` (default) or `"signal"`: what a changed value does to the command.
    on_change: Option<String>,
    /// The signal `on_change = "signal"` sends; SIGHUP by default.
    reload_signal: Option<String>,
    /// The signal that asks the command to stop before a restart; SIGTERM by default.
    stop_signal: Option<String>,
    /// How long a stopping command may take before it is killed; 10s by default.
    stop_grace: Option<String>,
    /// Changes within this window make one restart; 2s by default.
    debounce: Option<String>,
    /// What the command's own exit does: `"never"` (default: the agent exits with its code),
    /// `"on-failure"` or `"always"` (it is started again, with back-off).
    restart: Option<String>,
    /// Mask the command's output as `zafe run` does; off by default.
    #[serde(default)]
    mask: bool,
}

/// What a changed value does to the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnChange {
    /// Stop it (stop signal, grace, SIGKILL) and start it with the new environment.
    Restart,
    /// Send it this signal (it reloads its files; its environment cannot change).
    Signal(Signal),
}

/// When the command is started again after it exited by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Restart {
    Never,
    OnFailure,
    Always,
}

/// `[exec]`, checked.
#[derive(Debug)]
pub(super) struct Spec {
    command: Vec<OsString>,
    env: BTreeMap<String, String>,
    env_files: Vec<PathBuf>,
    pub(super) on_change: OnChange,
    stop_signal: Signal,
    stop_grace: Duration,
    pub(super) debounce: Duration,
    pub(super) restart: Restart,
    mask: bool,
}

fn signal(name: &str) -> anyhow::Result<Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full)
        .map_err(|_| anyhow!("[exec]: unknown signal {name:?} (like \"SIGHUP\")"))
}

fn duration(key: &str, value: Option<&str>, default: Duration) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text).map_err(|e| {
            anyhow!("[exec] {key} = {text:?}: {e} (write it like \"2s\" or \"500ms\")")
        }),
    }
}

impl Spec {
    pub(super) fn new(config: ExecConfig) -> anyhow::Result<Self> {
        if config.command.is_empty() || config.command[0].is_empty() {
            bail!(
                "[exec] command is empty: give the program and its arguments, like [\"./server\", \"--port\", \"8080\"]"
            );
        }
        let on_change = match config.on_change.as_deref() {
            None | Some("restart") => {
                if config.reload_signal.is_some() {
                    bail!("[exec] reload_signal is used with on_change = \"signal\"");
                }
                OnChange::Restart
            }
            Some("signal") => {
                OnChange::Signal(signal(config.reload_signal.as_deref().unwrap_or("SIGHUP"))?)
            }
            Some(other) => bail!("[exec] on_change = {other:?}: use \"restart\" or \"signal\""),
        };
        let restart = match config.restart.as_deref() {
            None | Some("never") => Restart::Never,
            Some("on-failure") => Restart::OnFailure,
            Some("always") => Restart::Always,
            Some(other) => {
                bail!("[exec] restart = {other:?}: use \"never\", \"on-failure\" or \"always\"")
            }
        };
        let spec = Self {
            command: config.command.into_iter().map(OsString::from).collect(),
            env: config.env,
            env_files: config.env_file.into_iter().collect(),
            on_change,
            stop_signal: signal(config.stop_signal.as_deref().unwrap_or("SIGTERM"))?,
            stop_grace: duration(
                "stop_grace",
                config.stop_grace.as_deref(),
                Duration::from_secs(10),
            )?,
            debounce: duration(
                "debounce",
                config.debounce.as_deref(),
                Duration::from_secs(2),
            )?,
            restart,
            mask: config.mask,
        };
        // The env file and the references must be readable and valid now, not at the first
        // restart in production.
        spec.references()?;
        Ok(spec)
    }

    fn local(&self) -> Result<Local, Failure> {
        Local::from_config(&self.env_files, &self.env)
    }

    /// The references the command's environment uses, as written.
    pub(super) fn references(&self) -> anyhow::Result<BTreeSet<String>> {
        let local = self.local().map_err(|f| anyhow!("[exec]: {}", f.message))?;
        local
            .references()
            .map(|r| {
                zafe_core::reference::Reference::parse(r)
                    .map(|_| r.to_string())
                    .map_err(|e| anyhow!("[exec]: invalid reference: {e}"))
            })
            .collect()
    }

    /// The command's environment, every reference resolved (the env file is read again).
    pub(super) async fn prepare(&self, client: &Client) -> Result<Prepared, Failure> {
        Prepared::resolve(self.local()?, None, Some(client), &[]).await
    }

    /// Starts the command with `prepared`'s environment.
    pub(super) fn spawn(
        &self,
        prepared: &Prepared,
        isolated: &IsolatedConfigDir,
    ) -> Result<Running, String> {
        let cmd = prepared
            .command(&self.command, Some(isolated), None)
            .map_err(|f| f.message)?;
        let mut cmd = cmd;
        cmd.process_group(0);
        let mut pumps = Vec::new();
        let done = Arc::new(AtomicBool::new(false));
        if self.mask {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        let mut process = tokio::process::Command::from(cmd)
            .spawn()
            .map_err(|e| child::spawn_failure(&self.command[0], &e).1)?;
        if self.mask {
            let set = Arc::new(prepared.mask_set(MaskOptions::default()));
            let lazy: child::LazyMaskSet = Arc::new(LazyLock::new(Box::new(move || set)));
            if let Some(out) = process.stdout.take().and_then(|o| o.into_owned_fd().ok()) {
                pumps.push(child::pump_thread(
                    out,
                    Box::new(std::io::stdout()),
                    lazy.clone(),
                    done.clone(),
                ));
            }
            if let Some(err) = process.stderr.take().and_then(|e| e.into_owned_fd().ok()) {
                pumps.push(child::pump_thread(
                    err,
                    Box::new(std::io::stderr()),
                    lazy,
                    done.clone(),
                ));
            }
        }
        let pid = Pid::from_raw(process.id().map_or(0, |id| id as i32));
        Ok(Running {
            process,
            pid,
            fingerprint: prepared.fingerprint(),
            started: Instant::now(),
            pumps,
            done,
        })
    }

    /// Stops the command: the stop signal to its process group, then SIGKILL after the grace
    /// period. Returns how it ended.
    pub(super) async fn stop(&self, mut running: Running) -> ExitStatus {
        let _ = killpg(running.pid, self.stop_signal);
        let status = match tokio::time::timeout(self.stop_grace, running.process.wait()).await {
            Ok(status) => status,
            Err(_) => {
                eprintln!(
                    "zafe agent: the command did not stop within {}; killing it",
                    humantime::format_duration(self.stop_grace)
                );
                let _ = killpg(running.pid, Signal::SIGKILL);
                running.process.wait().await
            }
        };
        let status = status.unwrap_or_else(|_| ExitStatus::from_raw(1 << 8));
        running.finish().await;
        status
    }
}

/// The running command.
pub(super) struct Running {
    process: tokio::process::Child,
    pid: Pid,
    /// The fingerprint of the environment it was started with (or last signalled about).
    pub(super) fingerprint: [u8; 32],
    pub(super) started: Instant,
    pumps: Vec<std::thread::JoinHandle<()>>,
    done: Arc<AtomicBool>,
}

impl Running {
    pub(super) fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// Sends `sig` to the command (not its group: as a shell forwards a signal to its job's
    /// leader).
    pub(super) fn signal(&self, sig: Signal) {
        let _ = kill(self.pid, sig);
    }

    /// Waits until the command exits by itself. Cancel-safe.
    pub(super) async fn wait(&mut self) -> ExitStatus {
        self.process
            .wait()
            .await
            .unwrap_or_else(|_| ExitStatus::from_raw(1 << 8))
    }

    /// After the exit: lets the masker finish the output still in flight.
    pub(super) async fn finish(self) {
        self.done.store(true, Ordering::SeqCst);
        for pump in self.pumps {
            child::join(pump).await;
        }
    }
}

/// Waits for the command of `running`, if any (never completes when there is none).
pub(super) async fn exited(running: &mut Option<Running>) -> ExitStatus {
    match running {
        Some(running) => running.wait().await,
        None => std::future::pending().await,
    }
}

/// The signals the agent passes on to its command, as they arrive.
pub(super) fn forwarded_signals() -> tokio::sync::mpsc::Receiver<Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    for sig in child::FORWARDED {
        let Ok(mut stream) = signal(SignalKind::from_raw(sig as i32)) else {
            continue;
        };
        let sender = sender.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if sender.send(sig).await.is_err() {
                    return;
                }
            }
        });
    }
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> anyhow::Result<Spec> {
        Spec::new(toml::from_str(toml_text)?)
    }

    // Bad `[exec]` settings are refused at start with a message that says what to write,
    // instead of failing at the first restart in production.
    #[test]
    fn exec_settings_are_checked_at_start() {
        let ok =
            spec("command = [\"./server\"]\non_change = \"signal\"\ndebounce = \"500ms\"").unwrap();
        assert_eq!(ok.on_change, OnChange::Signal(Signal::SIGHUP));
        assert_eq!(ok.debounce, Duration::from_millis(500));
        assert_eq!(ok.restart, Restart::Never);
        let usr2 =
            spec("command = [\"x\"]\non_change = \"signal\"\nreload_signal = \"usr2\"").unwrap();
        assert_eq!(usr2.on_change, OnChange::Signal(Signal::SIGUSR2));
        for (bad, says) in [
            ("command = []", "command is empty"),
            (
                "command = [\"x\"]\non_change = \"reload\"",
                "\"restart\" or \"signal\"",
            ),
            (
                "command = [\"x\"]\non_change = \"signal\"\nreload_signal = \"SIGNOPE\"",
                "unknown signal",
            ),
            (
                "command = [\"x\"]\nreload_signal = \"SIGHUP\"",
                "with on_change = \"signal\"",
            ),
            ("command = [\"x\"]\ndebounce = \"soon\"", "like \"2s\""),
            (
                "command = [\"x\"]\nrestart = \"sometimes\"",
                "\"on-failure\"",
            ),
            (
                "command = [\"x\"]\nenv = { A = \"zafe://\" }",
                "invalid reference",
            ),
            (
                "command = [\"x\"]\nenv_file = \"/nonexistent/.env.zafe\"",
                "cannot read",
            ),
        ] {
            let error = format!("{:#}", spec(bad).unwrap_err());
            assert!(error.contains(says), "{bad}: {error}");
        }
        assert!(
            spec("command = [\"x\"]\ncolour = \"blue\"").is_err(),
            "unknown keys are refused"
        );
    }
}
