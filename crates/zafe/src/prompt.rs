//! Prompts: what the CLI asks a person for, on the terminal (hidden for
//! secrets) or from standard input. Prompts go to stderr, never to the
//! command's output.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Context as _, bail};
use zeroize::Zeroizing;

/// A secret from `env` if set, else a hidden prompt on a terminal, else one
/// line of standard input.
pub(crate) fn read_secret(prompt: &str, env: Option<&str>) -> anyhow::Result<Zeroizing<String>> {
    if let Some(name) = env
        && let Ok(value) = std::env::var(name)
        && !value.trim().is_empty()
    {
        return Ok(Zeroizing::new(value.trim().to_string()));
    }
    let value = if std::io::stdin().is_terminal() {
        Zeroizing::new(rpassword::prompt_password(prompt)?)
    } else {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        line
    };
    let trimmed = Zeroizing::new(value.trim().to_string());
    if trimmed.is_empty() {
        bail!("nothing was given");
    }
    Ok(trimmed)
}

/// Reads a password: a hidden prompt (twice for a new one) on a terminal,
/// else one line of standard input when `from_stdin`.
pub(crate) fn read_password(
    prompt: &str,
    confirm: bool,
    from_stdin: bool,
    lines: &mut dyn FnMut() -> anyhow::Result<Zeroizing<String>>,
) -> anyhow::Result<Zeroizing<String>> {
    let password = if from_stdin {
        lines()?
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(rpassword::prompt_password(prompt)?);
        if confirm {
            let again = Zeroizing::new(rpassword::prompt_password("Again, to confirm: ")?);
            if *again != *first {
                bail!("the two passwords differ");
            }
        }
        first
    } else {
        bail!("no terminal to ask for the password on: pass --password-stdin and pipe it in");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

/// The TOTP code (or a recovery code): a visible prompt on a terminal, else
/// the next line of standard input (after the password with --password-stdin).
pub(crate) fn read_code(
    from_stdin: bool,
    line: &mut dyn FnMut() -> anyhow::Result<Zeroizing<String>>,
) -> anyhow::Result<Zeroizing<String>> {
    use std::io::IsTerminal as _;
    if !from_stdin && std::io::stdin().is_terminal() {
        eprint!("TOTP code (or a recovery code): ");
        std::io::Write::flush(&mut std::io::stderr())?;
    }
    let code = Zeroizing::new(line()?.trim().to_string());
    if code.is_empty() {
        bail!("a TOTP code is required for this account");
    }
    Ok(code)
}

/// Asks for the TOTP code (or a recovery code) on the terminal or stdin.
pub(crate) fn prompt_totp_code() -> anyhow::Result<Zeroizing<String>> {
    read_code(false, &mut stdin_line)
}

/// One line of standard input, without its line break.
pub(crate) fn stdin_line() -> anyhow::Result<Zeroizing<String>> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_string(),
    ))
}

/// An unseal key: prompted for without echo on a terminal; otherwise one
/// line of standard input.
pub(crate) fn read_unseal_key() -> anyhow::Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password("Unseal Key (will be hidden): ")
            .map(Zeroizing::new)
            .context("reading the unseal key");
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the unseal key from standard input")?;
    Ok(line)
}

/// A visible prompt on a terminal, else one line of standard input.
pub(crate) fn read_visible(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
        std::io::stderr().flush()?;
    }
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    let trimmed = Zeroizing::new(line.trim().to_string());
    if trimmed.is_empty() {
        bail!("nothing was given");
    }
    Ok(trimmed)
}

/// Asks a yes/no question on stderr and reads the answer from standard
/// input: only `y` or `yes` (either case of the first letter) is a yes.
pub(crate) fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}
