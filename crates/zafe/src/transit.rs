//! `zafe transit ...`: encryption as a service with named keys kept by the
//! server (the transit engine, R-KV-3).
//!
//! Plaintext is never taken from the command line, where it would land in
//! shell history and in `ps`: it comes from standard input or a file named
//! `@FILE`. Decrypted plaintext goes to standard output as raw bytes, so it
//! can be piped on without an extra decoding step.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{ArgGroup, Subcommand};
use serde_json::{Map, Value, json};
use zafe_client::path::{encode_path, encode_segment};
use zafe_client::{Client, Method};
use zeroize::Zeroizing;

use crate::ctx::Ctx;
use crate::output::{Out, outln};

pub(crate) const EXAMPLES: &str = "\
Examples:
  zafe secrets enable transit                     Enable the engine at transit/ (once)
  zafe transit create payments
  echo -n '4111 1111 1111 1111' | zafe transit encrypt payments
  zafe transit decrypt payments vault:v1:8SDd3WHD...   > card.txt
  zafe transit rotate payments
  zafe transit rewrap payments vault:v1:8SDd3WHD...
  zafe transit create release-signer --type ed25519
  zafe transit sign release-signer @release.tar.gz
  zafe transit list --mount team-transit          A transit engine mounted elsewhere

Plaintext is read from standard input or @FILE, never from the command line.";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the transit engine is mounted
    #[arg(long, global = true, default_value = "transit", value_name = "PATH")]
    pub mount: String,

    #[command(subcommand)]
    pub command: TransitCmd,
}

/// Where input bytes come from: standard input (`-`) or a file (`@FILE`).
#[derive(Debug, Clone)]
pub(crate) enum Input {
    Stdin,
    File(PathBuf),
}

fn parse_input(raw: &str) -> Result<Input, String> {
    match raw.strip_prefix('@') {
        _ if raw == "-" => Ok(Input::Stdin),
        Some(path) if !path.is_empty() => Ok(Input::File(PathBuf::from(path))),
        _ => Err(
            "input is never taken from the command line, where it would land in shell history; \
                  pipe it on standard input (-) or name a file as @FILE"
                .into(),
        ),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum TransitCmd {
    /// Create a named key (the server generates it; it never leaves unless exportable)
    #[command(after_help = "\
Examples:
  zafe transit create payments
  zafe transit create payments --type chacha20-poly1305
  zafe transit create release-signer --type ed25519
  zafe transit create backup-key --exportable      Allows `export` of the key material later")]
    Create {
        /// Key name: letters, digits, '_', '-', '.' and '@'
        name: String,
        /// Key type
        #[arg(long = "type", value_name = "TYPE", default_value = "aes256-gcm96",
              value_parser = ["aes256-gcm96", "chacha20-poly1305", "ed25519"])]
        key_type: String,
        /// Allow the key material to be exported (cannot be undone)
        #[arg(long)]
        exportable: bool,
    },

    /// List the names of the keys
    #[command(after_help = "\
Examples:
  zafe transit list
  zafe transit list --format json")]
    List,

    /// Show a key's versions and settings (never its material)
    #[command(after_help = "\
Examples:
  zafe transit read payments
  zafe transit read payments --format json")]
    Read {
        /// Key name
        name: String,
    },

    /// Add a new version of a key; new ciphertexts use it, older ones still decrypt
    #[command(after_help = "\
Examples:
  zafe transit rotate payments
  zafe transit rewrap payments vault:v1:...     Then move old ciphertexts to the new version")]
    Rotate {
        /// Key name
        name: String,
    },

    /// Encrypt standard input (or @FILE); prints a vault:vN:... ciphertext
    #[command(after_help = "\
Examples:
  echo -n 'secret value' | zafe transit encrypt payments
  zafe transit encrypt payments @card.txt
  zafe transit encrypt payments @card.txt --associated-data order-1234
  zafe transit encrypt payments < card.txt --format json")]
    Encrypt {
        /// Key name (created as aes256-gcm96 if missing and your policy allows `create`)
        name: String,
        /// `-` for standard input (the default) or @FILE
        #[arg(value_name = "INPUT", default_value = "-", value_parser = parse_input)]
        input: Input,
        /// Encrypt with this key version instead of the latest
        #[arg(long, value_name = "N")]
        key_version: Option<u32>,
        /// Text that decryption must repeat exactly (authenticated, not encrypted)
        #[arg(long, value_name = "TEXT")]
        associated_data: Option<String>,
    },

    /// Decrypt a ciphertext; writes the raw plaintext to standard output
    #[command(after_help = "\
Examples:
  zafe transit decrypt payments vault:v1:8SDd3WHD...
  zafe transit decrypt payments vault:v1:8SDd3WHD... > card.txt
  cat ciphertext.txt | zafe transit decrypt payments -
  zafe transit decrypt payments vault:v1:... --format json     Plaintext in base64, in JSON")]
    Decrypt {
        /// Key name
        name: String,
        /// The vault:vN:... ciphertext, or `-` to read it from standard input
        ciphertext: String,
        /// The associated data given at encryption
        #[arg(long, value_name = "TEXT")]
        associated_data: Option<String>,
    },

    /// Re-encrypt a ciphertext with the latest key version, without revealing it
    #[command(after_help = "\
Examples:
  zafe transit rewrap payments vault:v1:8SDd3WHD...
  zafe transit rewrap payments vault:v1:8SDd3WHD... --key-version 3")]
    Rewrap {
        /// Key name
        name: String,
        /// The vault:vN:... ciphertext, or `-` to read it from standard input
        ciphertext: String,
        /// Re-encrypt with this key version instead of the latest
        #[arg(long, value_name = "N")]
        key_version: Option<u32>,
        /// The associated data given at encryption
        #[arg(long, value_name = "TEXT")]
        associated_data: Option<String>,
    },

    /// Change a key's settings: minimum versions, deletion, exportability
    #[command(
        group(ArgGroup::new("change").required(true).multiple(true)
            .args(["min_decryption_version", "min_encryption_version", "deletion_allowed", "exportable"])),
        after_help = "\
Examples:
  zafe transit config payments --min-decryption-version 3     Refuse ciphertexts older than v3
  zafe transit config payments --min-encryption-version 3
  zafe transit config payments --deletion-allowed true
  zafe transit config payments --exportable                   One-way: cannot be undone")]
    Config {
        /// Key name
        name: String,
        /// Oldest version that may still decrypt (or verify)
        #[arg(long, value_name = "N")]
        min_decryption_version: Option<u32>,
        /// Oldest version that may still encrypt (0: always the latest)
        #[arg(long, value_name = "N")]
        min_encryption_version: Option<u32>,
        /// Whether `delete` may remove the key
        #[arg(long, value_name = "BOOL")]
        deletion_allowed: Option<bool>,
        /// Make the key material exportable (cannot be undone)
        #[arg(long)]
        exportable: bool,
    },

    /// Delete a key for good (needs `config --deletion-allowed true` first)
    #[command(after_help = "\
Examples:
  zafe transit config old-key --deletion-allowed true
  zafe transit delete old-key

Everything encrypted with the key becomes undecryptable.")]
    Delete {
        /// Key name
        name: String,
    },

    /// Sign standard input (or @FILE) with an ed25519 key
    #[command(after_help = "\
Examples:
  zafe transit sign release-signer @release.tar.gz
  sha256sum release.tar.gz | zafe transit sign release-signer")]
    Sign {
        /// Key name
        name: String,
        /// `-` for standard input (the default) or @FILE
        #[arg(value_name = "INPUT", default_value = "-", value_parser = parse_input)]
        input: Input,
        /// Sign with this key version instead of the latest
        #[arg(long, value_name = "N")]
        key_version: Option<u32>,
    },

    /// Verify a signature over standard input (or @FILE); exit code 1 when it is not valid
    #[command(after_help = "\
Examples:
  zafe transit verify release-signer vault:v1:MEUCIQ... @release.tar.gz
  zafe transit verify release-signer vault:v1:MEUCIQ... < release.tar.gz && echo genuine")]
    Verify {
        /// Key name
        name: String,
        /// The vault:vN:... signature
        signature: String,
        /// `-` for standard input (the default) or @FILE
        #[arg(value_name = "INPUT", default_value = "-", value_parser = parse_input)]
        input: Input,
    },
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.client()?;
    let out = ctx.out();
    let mount = encode_path(args.mount.trim_matches('/'));
    if mount.is_empty() {
        bail!("--mount cannot be empty");
    }
    let t = Transit { client, out, mount };
    match args.command {
        TransitCmd::Create {
            name,
            key_type,
            exportable,
        } => {
            let body = json!({ "type": key_type, "exportable": exportable });
            let data = t
                .write(&format!("keys/{}", encode_segment(&name)), &body)
                .await?;
            t.print_key(&data)?;
        }
        TransitCmd::List => t.list().await?,
        TransitCmd::Read { name } => {
            let reply = t
                .client
                .request_json(
                    Method::GET,
                    &t.path(&format!("keys/{}", encode_segment(&name))),
                    None,
                )
                .await?;
            t.print_key(&data_of(reply))?;
        }
        TransitCmd::Rotate { name } => {
            let data = t
                .write(
                    &format!("keys/{}/rotate", encode_segment(&name)),
                    &json!({}),
                )
                .await?;
            t.print_key(&data)?;
        }
        TransitCmd::Encrypt {
            name,
            input,
            key_version,
            associated_data,
        } => {
            let plaintext = read_input(&input)?;
            let mut body =
                json!({ "plaintext": Zeroizing::new(B64.encode(&plaintext[..])).as_str() });
            add_options(&mut body, key_version, associated_data.as_deref());
            let data = t
                .write(&format!("encrypt/{}", encode_segment(&name)), &body)
                .await?;
            t.print_rows(&data, &["ciphertext", "key_version"])?;
        }
        TransitCmd::Decrypt {
            name,
            ciphertext,
            associated_data,
        } => {
            let ciphertext = read_ciphertext(&ciphertext)?;
            let mut body = json!({ "ciphertext": ciphertext });
            add_options(&mut body, None, associated_data.as_deref());
            let data = t
                .write(&format!("decrypt/{}", encode_segment(&name)), &body)
                .await?;
            if out.json() {
                out.print_json(&data)?;
            } else {
                let plaintext = Zeroizing::new(
                    B64.decode(data["plaintext"].as_str().unwrap_or_default())
                        .context("the server's plaintext is not valid base64")?,
                );
                out.write_raw(&plaintext)?;
            }
        }
        TransitCmd::Rewrap {
            name,
            ciphertext,
            key_version,
            associated_data,
        } => {
            let ciphertext = read_ciphertext(&ciphertext)?;
            let mut body = json!({ "ciphertext": ciphertext });
            add_options(&mut body, key_version, associated_data.as_deref());
            let data = t
                .write(&format!("rewrap/{}", encode_segment(&name)), &body)
                .await?;
            t.print_rows(&data, &["ciphertext", "key_version"])?;
        }
        TransitCmd::Config {
            name,
            min_decryption_version,
            min_encryption_version,
            deletion_allowed,
            exportable,
        } => {
            let mut body = Map::new();
            if let Some(v) = min_decryption_version {
                body.insert("min_decryption_version".into(), json!(v));
            }
            if let Some(v) = min_encryption_version {
                body.insert("min_encryption_version".into(), json!(v));
            }
            if let Some(v) = deletion_allowed {
                body.insert("deletion_allowed".into(), json!(v));
            }
            if exportable {
                body.insert("exportable".into(), json!(true));
            }
            let data = t
                .write(
                    &format!("keys/{}/config", encode_segment(&name)),
                    &Value::Object(body),
                )
                .await?;
            t.print_key(&data)?;
        }
        TransitCmd::Delete { name } => {
            t.client
                .request_json(
                    Method::DELETE,
                    &t.path(&format!("keys/{}", encode_segment(&name))),
                    None,
                )
                .await?;
            if out.json() {
                out.print_json(&json!({ "name": name, "deleted": true }))?;
            } else {
                eprintln!(
                    "Success! Deleted key {name} at {}/keys/{name}",
                    args.mount.trim_matches('/')
                );
            }
        }
        TransitCmd::Sign {
            name,
            input,
            key_version,
        } => {
            let message = read_input(&input)?;
            let mut body = json!({ "input": B64.encode(&message[..]) });
            add_options(&mut body, key_version, None);
            let data = t
                .write(&format!("sign/{}", encode_segment(&name)), &body)
                .await?;
            t.print_rows(&data, &["signature", "key_version"])?;
        }
        TransitCmd::Verify {
            name,
            signature,
            input,
        } => {
            let message = read_input(&input)?;
            let body = json!({ "input": B64.encode(&message[..]), "signature": signature.trim() });
            let data = t
                .write(&format!("verify/{}", encode_segment(&name)), &body)
                .await?;
            t.print_rows(&data, &["valid"])?;
            if data["valid"] != json!(true) {
                if !out.json() {
                    eprintln!(
                        "{}",
                        out.red("The signature is NOT valid for this input and key.")
                    );
                }
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Transit<'a> {
    client: &'a Client,
    out: Out<'a>,
    /// Already percent-encoded, without slashes at either end.
    mount: String,
}

impl Transit<'_> {
    fn path(&self, rel: &str) -> String {
        format!("/v1/{}/{rel}", self.mount)
    }

    /// A POST whose answer's `data` is returned; server warnings go to stderr.
    async fn write(&self, rel: &str, body: &Value) -> anyhow::Result<Value> {
        let reply = self
            .client
            .request_json(Method::POST, &self.path(rel), Some(body))
            .await?;
        Ok(data_of(reply))
    }

    async fn list(&self) -> anyhow::Result<()> {
        let reply = match self
            .client
            .request_json(
                Method::GET,
                &format!("{}?list=true", self.path("keys")),
                None,
            )
            .await
        {
            Ok(reply) => reply,
            // Vault (and Zafe) answer an empty listing with 404.
            Err(zafe_client::Error::ServerError {
                status: 404,
                errors,
            }) if errors.is_empty() => None,
            Err(e) => return Err(e.into()),
        };
        let names: Vec<Value> = data_of(reply)["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if self.out.json() {
            return self.out.print_json(&names);
        }
        if names.is_empty() {
            eprintln!("No keys under {}/", self.mount);
            return Ok(());
        }
        outln!(self.out, "Keys\n----");
        for name in names {
            outln!(self.out, "{}", name.as_str().unwrap_or_default());
        }
        Ok(())
    }

    fn print_rows(&self, data: &Value, fields: &[&str]) -> anyhow::Result<()> {
        if self.out.json() {
            return self.out.print_json(data);
        }
        let rows: Vec<(&str, String)> = fields.iter().map(|f| (*f, show(&data[*f]))).collect();
        self.out.print_table(&rows);
        Ok(())
    }

    /// A key's settings and versions, as `vault read transit/keys/NAME` shows them.
    fn print_key(&self, data: &Value) -> anyhow::Result<()> {
        if self.out.json() {
            return self.out.print_json(data);
        }
        let versions = data["keys"]
            .as_object()
            .map(|keys| {
                let mut v: Vec<u64> = keys.keys().filter_map(|k| k.parse().ok()).collect();
                v.sort_unstable();
                v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
            })
            .unwrap_or_default();
        let mut rows: Vec<(&str, String)> = [
            "name",
            "type",
            "latest_version",
            "min_decryption_version",
            "min_encryption_version",
            "min_available_version",
            "deletion_allowed",
            "exportable",
            "supports_encryption",
            "supports_decryption",
            "supports_signing",
        ]
        .iter()
        .map(|f| (*f, show(&data[*f])))
        .collect();
        rows.push(("versions", versions));
        self.out.print_table(&rows);
        Ok(())
    }
}

/// The `data` of a Vault response, printing its warnings to stderr.
fn data_of(reply: Option<Value>) -> Value {
    let reply = reply.unwrap_or_default();
    if let Some(warnings) = reply["warnings"].as_array() {
        for w in warnings {
            eprintln!("WARNING: {}", w.as_str().unwrap_or_default());
        }
    }
    reply["data"].clone()
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn add_options(body: &mut Value, key_version: Option<u32>, associated_data: Option<&str>) {
    if let Some(v) = key_version {
        body["key_version"] = json!(v);
    }
    if let Some(ad) = associated_data {
        body["associated_data"] = json!(B64.encode(ad));
    }
}

fn read_input(input: &Input) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(Vec::new());
    match input {
        Input::Stdin => {
            let mut stdin = std::io::stdin().lock();
            if stdin.is_terminal() {
                eprintln!("Reading input from the terminal; end it with Ctrl-D.");
            }
            stdin
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
        }
        Input::File(path) => {
            let mut file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            file.read_to_end(&mut bytes)
                .with_context(|| format!("cannot read {}", path.display()))?;
        }
    }
    Ok(bytes)
}

/// A ciphertext argument, or `-` to read one from standard input.
fn read_ciphertext(arg: &str) -> anyhow::Result<String> {
    let text = if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        text
    } else {
        arg.to_string()
    };
    let text = text.trim().to_string();
    if !text.starts_with("vault:v") {
        bail!("not a transit ciphertext: it should look like vault:v1:...");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_is_never_taken_from_argv() {
        assert!(matches!(parse_input("-"), Ok(Input::Stdin)));
        assert!(
            matches!(parse_input("@secret.txt"), Ok(Input::File(p)) if p == std::path::Path::new("secret.txt"))
        );
        for literal in ["hunter2", "@", "", "secret@x"] {
            assert!(parse_input(literal).is_err(), "{literal:?}");
        }
    }
}
