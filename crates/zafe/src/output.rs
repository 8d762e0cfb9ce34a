//! Printing results: Vault-style key/value tables or JSON, with colour only
//! for a person at a terminal.

use std::io::IsTerminal as _;

use crate::cli::Format;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    pub format: Format,
    color: bool,
}

impl Out {
    pub(crate) fn new(format: Format, no_color: bool) -> Self {
        // https://no-color.org: any non-empty NO_COLOR disables colour.
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            format,
            color: !no_color && !no_color_env && std::io::stdout().is_terminal(),
        }
    }

    pub(crate) fn json(&self) -> bool {
        self.format == Format::Json
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

    /// Prints a value as indented JSON.
    pub(crate) fn print_json(&self, value: &impl serde::Serialize) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }

    /// Prints rows as Vault does: a `Key`/`Value` header and aligned columns.
    pub(crate) fn print_table(&self, rows: &[(&str, String)]) {
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0).max(3);
        println!("{:width$}    Value", "Key");
        println!("{:width$}    -----", "---");
        for (key, value) in rows {
            println!("{key:width$}    {value}");
        }
    }
}
