//! Printing results: Vault-style key/value tables or JSON, with colour only
//! for a person at a terminal.
//!
//! Everything a command prints as its result goes through [`Out`], which
//! writes to any [`Write`]: standard output in the binary, a `Vec<u8>` in
//! tests, so that what a command prints can be tested without spawning the
//! binary. Errors, warnings and prompts go to standard error instead
//! (`eprintln!`, [`crate::prompt`]).

use std::io::{IsTerminal as _, Write};
use std::sync::{LazyLock, Mutex};

use serde_json::Value;

use crate::cli::Format;

/// The writer of the binary's output: standard output.
static STDOUT: LazyLock<Mutex<std::io::Stdout>> = LazyLock::new(|| Mutex::new(std::io::stdout()));

/// Where a command's output goes, in which format, and whether to colour it.
/// Cheap to copy: it holds a reference to its writer.
#[derive(Clone, Copy)]
pub(crate) struct Out<'w> {
    pub format: Format,
    color: bool,
    /// Whether the writer is a terminal (a person reads it).
    terminal: bool,
    sink: &'w Mutex<dyn Write + Send>,
}

impl std::fmt::Debug for Out<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out")
            .field("format", &self.format)
            .field("color", &self.color)
            .field("terminal", &self.terminal)
            .finish_non_exhaustive()
    }
}

impl Out<'static> {
    /// Output to standard output.
    pub(crate) fn stdout(format: Format, no_color: bool) -> Self {
        // https://no-color.org: any non-empty NO_COLOR disables colour.
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let terminal = std::io::stdout().is_terminal();
        let sink: &'static Mutex<dyn Write + Send> = &*STDOUT;
        Self {
            format,
            color: !no_color && !no_color_env && terminal,
            terminal,
            sink,
        }
    }
}

impl<'w> Out<'w> {
    /// Output to `sink`, uncoloured, as to a file or a pipe.
    #[cfg(test)]
    pub(crate) fn to(format: Format, sink: &'w Mutex<dyn Write + Send>) -> Self {
        Self {
            format,
            color: false,
            terminal: false,
            sink,
        }
    }

    pub(crate) fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Whether a person reads the output at a terminal.
    pub(crate) fn terminal(&self) -> bool {
        self.terminal
    }

    pub(crate) fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }

    pub(crate) fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }

    pub(crate) fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }

    pub(crate) fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// Writes bytes as they are (a secret's value for `$(...)`), flushed.
    pub(crate) fn write_raw(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        sink.write_all(bytes)?;
        sink.flush()
    }

    /// Prints one line. Like `println!`, a writer that fails (a closed
    /// pipe) ends the program with a panic message on stderr.
    pub(crate) fn line(&self, args: std::fmt::Arguments<'_>) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writeln!(sink, "{args}") {
            drop(sink);
            panic!("failed printing to stdout: {e}");
        }
    }

    /// Flushes the writer.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        self.sink.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }

    /// Prints a value as indented JSON.
    pub(crate) fn print_json(&self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        self.line(format_args!("{}", serde_json::to_string_pretty(value)?));
        Ok(())
    }

    /// Prints rows as Vault does: a `Key`/`Value` header and aligned columns.
    pub(crate) fn print_table(&self, rows: &[(&str, String)]) {
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0).max(3);
        self.line(format_args!("{:width$}    Value", "Key"));
        self.line(format_args!("{:width$}    -----", "---"));
        for (key, value) in rows {
            self.line(format_args!("{key:width$}    {value}"));
        }
    }
}

/// Prints a token that was just created: alone on stdout (so it can be redirected into a
/// secret store or a token file), with a notice on stderr that it is shown only this once;
/// `--format json` prints the whole object, `token` field included.
pub(crate) fn print_new_token(out: Out<'_>, data: &Value, notice: &str) -> anyhow::Result<()> {
    if out.json() {
        return out.print_json(data);
    }
    outln!(out, "{}", data["token"].as_str().unwrap_or_default());
    eprintln!("{}", out.yellow(notice));
    Ok(())
}

/// A value as Vault's table shows it: strings bare, lists as `[a b]`,
/// maps as `map[k:v]`, nothing as `n/a`.
pub(crate) fn display(v: &Value) -> String {
    match v {
        Value::Null => "n/a".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(display).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", display(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

/// Key/value rows of an object, sorted by key.
pub(crate) fn print_object(out: Out<'_>, data: &Value) {
    let mut rows: Vec<(&str, String)> = data
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), display(v)))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    out.print_table(&rows);
}

/// Key/value rows of an object, in its order.
pub(crate) fn print_fields(out: Out<'_>, info: &Value) {
    let rows: Vec<(&str, String)> = info
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), display(v)))
        .collect();
    out.print_table(&rows);
}

/// `println!` for [`Out`]: `outln!(out)` prints an empty line,
/// `outln!(out, "{x}")` a formatted one.
macro_rules! outln {
    ($out:expr) => {
        $out.line(format_args!(""))
    };
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// A writer in memory for tests, and what was written to it.
#[cfg(test)]
pub(crate) struct Captured(Mutex<Vec<u8>>);

#[cfg(test)]
impl Captured {
    pub(crate) fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    /// An [`Out`] that writes here.
    pub(crate) fn out(&self, format: Format) -> Out<'_> {
        Out::to(format, &self.0)
    }

    /// Everything written so far, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_aligned_as_vault_aligns_it() {
        let captured = Captured::new();
        let out = captured.out(Format::Table);
        out.print_table(&[("ttl", "1h".into()), ("display_name", "ci".into())]);
        assert_eq!(
            captured.text(),
            "Key             Value\n\
             ---             -----\n\
             ttl             1h\n\
             display_name    ci\n"
        );
    }

    #[test]
    fn json_is_indented_and_ends_with_a_newline() {
        let captured = Captured::new();
        let out = captured.out(Format::Json);
        out.print_json(&serde_json::json!({"a": [1]})).unwrap();
        outln!(out);
        outln!(out, "{}-{}", 1, 2);
        assert_eq!(captured.text(), "{\n  \"a\": [\n    1\n  ]\n}\n\n1-2\n");
        assert!(!out.terminal() && out.red("x") == "x");
    }
}
