//! `zafe export` (R-DEV-4): a project environment's secrets written out on
//! purpose, as dotenv, JSON or shell `export` lines, for tools that need a
//! file.
//!
//! Output files are created owner-only (0600) from their first byte and
//! replaced atomically (`files::write_atomic`); an existing file's looser
//! mode is not kept. Values are held as `SecretString`s and the rendered
//! text is zeroized after writing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use zafe_core::dotenv;
use zafe_core::reference::Reference;
use zeroize::Zeroizing;

use crate::cli::Format;
use crate::ctx::Ctx;
use crate::files;
use crate::import::ProjectEnvArgs;

pub(crate) const EXAMPLES: &str = "\
Examples:
  zafe export --project myapp --env dev                       dotenv to standard output
  zafe export --project myapp --env dev -o .env.local         ... to a file (mode 0600)
  zafe export --project myapp --env prod --format json
  eval \"$(zafe export --project myapp --env dev --format shell)\"

Formats: dotenv (default; read back exactly by `zafe import` and common loaders), json (an
object of strings), shell (export KEY='value' lines, safe to eval for any value).";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub target: ProjectEnvArgs,

    /// Where to write the result (created 0600) [default: standard output]
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `zafe export`.
pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.project_client()?;
    let format = ctx.format();
    let format = match format {
        Format::Table | Format::Dotenv => ExportFormat::Dotenv,
        Format::Json => ExportFormat::Json,
        Format::Shell => ExportFormat::Shell,
        Format::Jsonl | Format::Csv => {
            eprintln!("Error: export writes --format dotenv, json or shell");
            return Ok(ExitCode::from(2));
        }
    };
    let target = &args.target.resolve(client).await?;
    let keys = target.stored_keys(client).await?;
    if keys.is_empty() {
        eprintln!("No keys found in {}", target.display());
        return Ok(ExitCode::from(2));
    }
    let references: Vec<(String, Reference)> = keys
        .into_iter()
        .map(|key| target.reference(&key).map(|r| (key, r)))
        .collect::<anyhow::Result<_>>()?;
    let list: Vec<Reference> = references.iter().map(|(_, r)| r.clone()).collect();
    let values = client.resolve(&list).await?;
    let entries: Vec<(&str, &str)> = references
        .iter()
        .map(|(key, reference)| (key.as_str(), values[reference].expose()))
        .collect();
    let rendered = Zeroizing::new(render(format, &entries)?);
    files::write_output(ctx.out(), args.output.as_deref(), rendered.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExportFormat {
    Dotenv,
    Json,
    Shell,
}

fn render(format: ExportFormat, entries: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut out = String::new();
    match format {
        ExportFormat::Dotenv => {
            for (key, value) in entries {
                if !dotenv::is_valid_key(key) {
                    bail!("{key} cannot be a key in an env file (letters, digits, _ . -)");
                }
                let line = dotenv::assignment_line(key, value)
                    .map_err(|e| anyhow!("cannot export {key}: {e}"))?;
                out.push_str(&line);
            }
        }
        ExportFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> = entries
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
                .collect();
            out = serde_json::to_string_pretty(&map)?;
            out.push('\n');
        }
        ExportFormat::Shell => {
            for (key, value) in entries {
                if !is_shell_name(key) {
                    bail!("{key} cannot be a shell variable name (letters, digits and _)");
                }
                if value.contains('\0') {
                    bail!("cannot export {key}: the value contains a NUL byte");
                }
                out.push_str(&format!("export {key}={}\n", shell_quote(value)));
            }
        }
    }
    Ok(out)
}

/// POSIX single quoting: everything between single quotes is literal; a
/// single quote is written as `'\''`. Safe for any value without NUL.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

fn is_shell_name(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn shell_quoting_is_literal_for_hostile_values() {
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert!(is_shell_name("DB_URL") && !is_shell_name("db.url") && !is_shell_name("1A"));
        assert!(render(ExportFormat::Shell, &[("a.b", "x")]).is_err());
    }

    /// The real shell reads back exactly what was exported.
    #[test]
    fn sh_evaluates_exports_to_the_exact_values() {
        let values = [
            "plain",
            "it's \"quoted\"",
            "$(touch /tmp/zafe-pwned) `id` $HOME ${X}",
            "line one\nline two\n",
            "back\\slash \\n ; & | < > * ? ~ # !",
            "",
            "'",
            "''\\''",
        ];
        let entries: Vec<(String, &str)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("K{i}"), *v))
            .collect();
        let borrowed: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let mut script = render(ExportFormat::Shell, &borrowed).unwrap();
        for (key, _) in &entries {
            // NUL-free separator so that trailing newlines survive.
            script.push_str(&format!("printf '%s\\036' \"${key}\"\n"));
        }
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(output.status.success());
        let printed = String::from_utf8(output.stdout).unwrap();
        let read: Vec<&str> = printed.split('\u{1e}').collect();
        assert_eq!(&read[..values.len()], &values[..]);
        assert!(!std::path::Path::new("/tmp/zafe-pwned").exists());
    }

    proptest! {
        /// Dotenv export reads back exactly through the one dotenv parser.
        #[test]
        fn dotenv_export_round_trips(
            entries in prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_.-]{0,8}", "[^\\x00]{0,30}", 0..10)
        ) {
            let borrowed: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let text = render(ExportFormat::Dotenv, &borrowed).unwrap();
            let document = dotenv::parse(&text).unwrap();
            let read: Vec<(&str, &str)> = document.assignments().map(|a| (a.key(), a.value().expose())).collect();
            prop_assert_eq!(read, borrowed);
        }

        /// JSON export is an object of exactly the values.
        #[test]
        fn json_export_round_trips(
            entries in prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", "\\PC{0,30}", 0..10)
        ) {
            let borrowed: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let text = render(ExportFormat::Json, &borrowed).unwrap();
            let read: std::collections::BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(read, entries);
        }
    }
}
