//! Running a command for `zafe run`: a pseudo-terminal or pipes between the
//! child and Zafe's own stdio, its output streamed through the masker,
//! signals forwarded, and its exit status turned into Zafe's exit code.
//!
//! Why `nix` rather than `portable-pty`: Zafe runs on Unix only, and needs
//! exactly `openpty`, termios raw mode, `TIOCSCTTY`/`TIOCSWINSZ`, `poll` and
//! `kill`. `nix` gives safe wrappers over those system calls and nothing
//! else; `portable-pty` is a cross-platform layer (ConPTY, threads, boxed
//! readers) that would hide the file descriptors this code must control.
//!
//! Two ways to run a masked child:
//! - **pty** (Zafe's stdout is a terminal): the child gets a new session
//!   whose controlling terminal is a pseudo-terminal with the same window
//!   size and settings as ours, so colours, prompts and line editing work.
//!   Zafe's terminal is put in raw mode and every keystroke is forwarded, so
//!   Ctrl-C reaches the child through its own terminal; the pty merges the
//!   child's stdout and stderr into one stream (as a terminal does).
//! - **pipes** (output redirected): stdout and stderr each go through their
//!   own masker to Zafe's stdout and stderr. The child runs in its own
//!   process group so that a terminal's Ctrl-C reaches only Zafe, which
//!   forwards it once (never twice). When Zafe's stdin is a terminal it is
//!   forwarded through a pipe too, since a background process group may not
//!   read the terminal; otherwise the child inherits it.
//!
//! `unsafe` (denied in the rest of the crate, bar `harden.rs`) is allowed on
//! three small functions only: `new_session_on_pty` (the `pre_exec` hook)
//! and the two window-size `ioctl`s; each says why it is sound.

use std::io::{self, IsTerminal as _, Read as _, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::termios::{self, SetArg, Termios};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use zafe_client::mask::{IDLE_FLUSH, MaskSet, Masker};

/// The command was found but could not be run (as in shells).
pub(crate) const EXIT_CANNOT_EXECUTE: u8 = 126;
/// The command was not found (as in shells).
pub(crate) const EXIT_NOT_FOUND: u8 = 127;

/// Signals Zafe passes on to the child. SIGWINCH is handled apart: in pty
/// mode it resizes the child's terminal (the kernel then signals the child).
pub(crate) const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// After the child exits, output still in flight is read until the stream
/// is quiet this long (a grandchild may hold it open forever)...
const DRAIN_QUIET: Duration = Duration::from_millis(100);
/// ...but no longer than this.
const DRAIN_MAX: Duration = Duration::from_secs(2);

/// The exit code a shell would report: the child's own code, or 128 + the
/// signal that killed it.
pub(crate) fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signo)) => (128 + signo) as u8,
        (None, None) => 1,
    }
}

/// Why a command could not be started, and the exit code shells use for it.
pub(crate) fn spawn_failure(program: &std::ffi::OsStr, err: &io::Error) -> (u8, String) {
    let name = program.to_string_lossy();
    match err.kind() {
        io::ErrorKind::NotFound => (EXIT_NOT_FOUND, format!("{name}: command not found")),
        _ => (EXIT_CANNOT_EXECUTE, format!("{name}: cannot run it: {err}")),
    }
}

/// Replaces Zafe with the command (`--no-mask`): only returns on failure.
pub(crate) fn exec(mut cmd: Command) -> (u8, String) {
    let err = cmd.exec();
    spawn_failure(cmd.get_program(), &err)
}

/// Runs the command with Zafe's stdio inherited (`--no-mask --files`, where
/// Zafe must stay to remove the files), forwarding signals.
pub(crate) async fn run_inherited(mut cmd: Command) -> Result<u8, (u8, String)> {
    let signals = Signals::install();
    let child = cmd
        .spawn()
        .map_err(|e| spawn_failure(cmd.get_program(), &e))?;
    let status = supervise(child, signals, None).await;
    Ok(exit_code(status))
}

/// The masker's forms, compiled on first use: the output threads build
/// them while the child is already starting (compiling the forms of 50
/// values takes milliseconds; the exec need not wait for it, the output
/// does).
pub(crate) type LazyMaskSet = Arc<LazyLock<Arc<MaskSet>, Box<dyn FnOnce() -> Arc<MaskSet> + Send>>>;

/// Runs the command with its output masked: through a pseudo-terminal when
/// `pty` is set, else through pipes. Returns Zafe's exit code.
pub(crate) async fn run_masked(
    mut cmd: Command,
    set: LazyMaskSet,
    pty: bool,
) -> Result<u8, (u8, String)> {
    let program = cmd.get_program().to_os_string();
    let fail = |e: io::Error| spawn_failure(&program, &e);
    // Handlers first: a signal that arrives while the child starts is
    // forwarded once it runs, instead of killing Zafe.
    let signals = Signals::install();
    if pty {
        run_pty(cmd, set, signals).await.map_err(fail)
    } else {
        let stdin_tty = io::stdin().is_terminal();
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin_tty {
            cmd.stdin(Stdio::piped());
        }
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(fail)?;
        let done = Arc::new(AtomicBool::new(false));
        let out = pump_thread(
            child.stdout.take().expect("piped").into(),
            Box::new(io::stdout()),
            set.clone(),
            done.clone(),
        );
        let err = pump_thread(
            child.stderr.take().expect("piped").into(),
            Box::new(io::stderr()),
            set,
            done.clone(),
        );
        if let Some(stdin) = child.stdin.take() {
            forward_stdin(stdin.into());
        }
        let status = supervise(child, signals, None).await;
        done.store(true, Ordering::SeqCst);
        join(out).await;
        join(err).await;
        Ok(exit_code(status))
    }
}

async fn run_pty(mut cmd: Command, set: LazyMaskSet, signals: Signals) -> io::Result<u8> {
    let stdin_tty = io::stdin().is_terminal();
    let winsize = window_size(&io::stdout());
    let saved = if stdin_tty {
        termios::tcgetattr(io::stdin()).ok()
    } else {
        None
    };
    let pty = nix::pty::openpty(winsize.as_ref(), saved.as_ref()).map_err(io::Error::from)?;
    // A terminal stdin is forwarded keystroke by keystroke through the pty;
    // any other stdin (a file, a pipe) the child reads directly, with its
    // real end.
    if stdin_tty {
        cmd.stdin(Stdio::from(pty.slave.try_clone()?));
    }
    cmd.stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave));
    new_session_on_pty(&mut cmd);
    let child = cmd.spawn();
    // The parent's copies of the slave must close, or the master never
    // sees the end of the child's output.
    drop(cmd);
    let child = child?;

    // Raw mode from here on; restored when `_raw` drops, whatever happens.
    let _raw = match saved {
        Some(saved) => RawMode::enable(saved),
        None => None,
    };
    let master = pty.master;
    let done = Arc::new(AtomicBool::new(false));
    let out = pump_thread(
        master.try_clone()?,
        Box::new(io::stdout()),
        set,
        done.clone(),
    );
    if stdin_tty {
        forward_stdin(master.try_clone()?);
    }
    let status = supervise(child, signals, Some(master)).await;
    done.store(true, Ordering::SeqCst);
    join(out).await;
    Ok(exit_code(status))
}

/// Zafe's handlers for the signals it forwards (and SIGWINCH). Installed
/// before the child is spawned; tokio keeps a signal that arrives before
/// anyone waits for it.
struct Signals {
    forwarded: Vec<(Signal, tokio::signal::unix::Signal)>,
    winch: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        Self {
            forwarded: FORWARDED
                .iter()
                .filter_map(|&sig| {
                    signal(SignalKind::from_raw(sig as i32))
                        .ok()
                        .map(|s| (sig, s))
                })
                .collect(),
            winch: signal(SignalKind::window_change()).ok(),
        }
    }
}

/// Waits for the child, forwarding signals to it meanwhile; with a pty
/// master, SIGWINCH copies Zafe's window size to the child's terminal.
async fn supervise(
    child: std::process::Child,
    signals: Signals,
    master: Option<OwnedFd>,
) -> ExitStatus {
    let pid = Pid::from_raw(child.id() as i32);
    let exited = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (sig, mut stream) in signals.forwarded {
        let exited = exited.clone();
        tasks.push(tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if !exited.load(Ordering::SeqCst) {
                    let _ = kill(pid, sig);
                }
            }
        }));
    }
    if let (Some(master), Some(mut stream)) = (master, signals.winch) {
        tasks.push(tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if let Some(size) = window_size(&io::stdout()) {
                    set_window_size(&master, &size);
                }
            }
        }));
    }
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("the wait thread does not panic")
        .unwrap_or_else(|_| ExitStatus::from_raw(1 << 8));
    exited.store(true, Ordering::SeqCst);
    for task in tasks {
        task.abort();
    }
    status
}

/// Reads `src` until its end, masking, and writes to `dst`. Flushes held
/// output when the stream has been quiet for [`IDLE_FLUSH`]. After `done`
/// (the child exited), stops once the stream is quiet.
pub(crate) fn pump_thread(
    src: OwnedFd,
    mut dst: Box<dyn io::Write + Send>,
    set: LazyMaskSet,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut masker = Masker::new(LazyLock::force(&set).clone());
        let mut file = std::fs::File::from(src);
        let mut buf = vec![0u8; 16 * 1024];
        let mut out = Vec::with_capacity(buf.len());
        let mut exited_at: Option<Instant> = None;
        loop {
            let finished = done.load(Ordering::SeqCst);
            if finished && exited_at.is_none() {
                exited_at = Some(Instant::now());
            }
            if exited_at.is_some_and(|t| t.elapsed() > DRAIN_MAX) {
                break;
            }
            let wait = if masker.holding() {
                IDLE_FLUSH
            } else if finished {
                DRAIN_QUIET
            } else {
                Duration::from_millis(200)
            };
            let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
            match poll(
                &mut fds,
                PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) => {
                    if masker.holding() {
                        masker.flush_idle(&mut out);
                    } else if finished {
                        break;
                    }
                }
                Ok(_) => match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => masker.push(&buf[..n], &mut out),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // EIO: the pty's last slave closed; the end of output.
                    Err(_) => break,
                },
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            if !out.is_empty() {
                if dst.write_all(&out).and_then(|()| dst.flush()).is_err() {
                    // Our reader went away: close the child's end so that it
                    // gets EPIPE/SIGPIPE as if it wrote to the reader itself.
                    return;
                }
                out.clear();
            }
        }
        masker.finish(&mut out);
        let _ = dst.write_all(&out);
        let _ = dst.flush();
    })
}

pub(crate) async fn join(handle: std::thread::JoinHandle<()>) {
    let _ = tokio::task::spawn_blocking(move || handle.join()).await;
}

/// Copies Zafe's stdin to `dst` on a thread of its own (it may block
/// forever on a terminal; the process exits without waiting for it).
fn forward_stdin(dst: OwnedFd) {
    std::thread::spawn(move || {
        let mut dst = std::fs::File::from(dst);
        let mut stdin = io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if dst.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
}

/// Makes the child, between fork and exec, lead a new session whose
/// controlling terminal is the pty slave, already its fd 1.
#[allow(unsafe_code)]
fn new_session_on_pty(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and
    // exec, and the hook captures nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(1, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The window size of a terminal, if `fd` is one.
#[allow(unsafe_code)]
fn window_size(fd: &impl std::os::fd::AsRawFd) -> Option<nix::pty::Winsize> {
    let mut size = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer.
    let ok = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0).then_some(size)
}

#[allow(unsafe_code)]
fn set_window_size(master: &OwnedFd, size: &nix::pty::Winsize) {
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer.
    unsafe {
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, size);
    }
}

/// Zafe's terminal in raw mode, restored on drop.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enable(saved: Termios) -> Option<Self> {
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(io::stdin(), SetArg::TCSANOW, &raw).ok()?;
        Some(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin(), SetArg::TCSADRAIN, &self.saved);
    }
}
