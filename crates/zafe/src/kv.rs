//! `zafe kv ...`: versioned key/value secrets (the KV v2 engine, R-KV-1),
//! like `vault kv`.
//!
//! The mount is the first segment of PATH (`secret/app/db`), or given with
//! `--mount` (then PATH is inside it). Vault's single-dash flags
//! (`-version=2`, `-field=password`, `-versions=1,2`, `-mount=secret`,
//! `-cas=0`) are accepted too: [`vault_style_args`] rewrites them before
//! clap sees them.
//!
//! Secret values need not be on the command line, where they would land in
//! shell history and in `ps`: `key=@FILE` reads a value from a file,
//! `key=-` from standard input, and a lone `-` or `@FILE.json` reads a whole
//! JSON object.
//!
//! Exit codes: 0 success, 1 error, 2 usage error or nothing found at PATH
//! (or no such field), so that scripts can tell "missing" from "broken".

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use serde_json::{Map, Value, json};
use zafe_client::path::encode_path;
use zafe_client::{Client, Method};
use zafe_core::secret::SecretString;
use zeroize::Zeroizing;

use crate::ctx::Ctx;
use crate::output::{Out, outln};

pub(crate) const EXAMPLES: &str = "\
Examples:
  zafe kv put secret/app/db user=app password=@db-password.txt
  printf %s \"$TOKEN\" | zafe kv put secret/ci/token value=-
  zafe kv get secret/app/db
  zafe kv get --field password secret/app/db
  zafe kv get -version=1 secret/app/db          Vault's single-dash flags work too
  zafe kv patch secret/app/db password=@new.txt
  zafe kv list secret/app
  zafe kv history secret/app/db
  zafe kv rollback --version 1 secret/app/db
  zafe kv delete secret/app/db                  Soft delete of the latest version
  zafe kv undelete --versions 2 secret/app/db
  zafe kv destroy --versions 1,2 secret/app/db  For good
  zafe kv metadata put --max-versions 5 --custom-metadata owner=team-a secret/app/db
  zafe kv get --mount team/kv app/db            A mount whose path has several segments

The mount is the first segment of PATH unless --mount is given.
Exit codes: 0 success, 1 error, 2 usage error or nothing at PATH.";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where the KV engine is mounted; without it, the first segment of PATH is the mount
    #[arg(long, global = true, value_name = "MOUNT")]
    pub mount: Option<String>,

    #[command(subcommand)]
    pub command: KvCmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KvCmd {
    /// Read a secret (the latest version, or --version N)
    #[command(after_help = "\
Examples:
  zafe kv get secret/app/db
  zafe kv get --version 2 secret/app/db
  zafe kv get --field password secret/app/db     Just the value, for scripts
  zafe kv get --format json secret/app/db        Vault's JSON response

Exit code 2 when there is no such secret, version or field (or the version is deleted).")]
    Get {
        /// Version to read (default: the latest)
        #[arg(long, value_name = "N")]
        version: Option<u64>,
        /// Print only this field's value
        #[arg(long, value_name = "FIELD")]
        field: Option<String>,
        /// MOUNT/PATH, or PATH with --mount
        path: String,
    },

    /// Write a new version of a secret (replacing all of its keys)
    #[command(after_help = "\
Examples:
  zafe kv put secret/app/db user=app password=@password.txt   A value from a file
  printf %s \"$PW\" | zafe kv put secret/app/db password=-       A value from standard input
  zafe kv put secret/app/db - < secret.json                    A whole JSON object from stdin
  zafe kv put secret/app/db @secret.json                       ... or from a file
  zafe kv put --cas 0 secret/app/db user=app                   Only if it does not exist yet

Values given as key=value end up in your shell history; prefer @FILE or -.
A value that really starts with '@' is written as key=\\@value.")]
    Put {
        /// Check-and-set: write only if the current version is N (0: only if new)
        #[arg(long, value_name = "N")]
        cas: Option<i64>,
        /// MOUNT/PATH, or PATH with --mount
        path: String,
        /// key=value, key=@FILE, key=- (stdin), or one - / @FILE.json holding a JSON object
        #[arg(required = true, value_name = "DATA")]
        data: Vec<SecretString>,
    },

    /// Change some keys of the latest version (a new version; other keys stay)
    #[command(after_help = "\
Examples:
  zafe kv patch secret/app/db password=@new-password.txt
  zafe kv patch --cas 3 secret/app/db port=5433")]
    Patch {
        /// Check-and-set: patch only if the current version is N
        #[arg(long, value_name = "N")]
        cas: Option<i64>,
        /// MOUNT/PATH, or PATH with --mount
        path: String,
        /// key=value, key=@FILE, key=- (stdin), or one - / @FILE.json holding a JSON object
        #[arg(required = true, value_name = "DATA")]
        data: Vec<SecretString>,
    },

    /// List the secrets and folders (ending in /) under a path
    #[command(after_help = "\
Examples:
  zafe kv list secret
  zafe kv list secret/app
  zafe kv list --format json secret/app

At most 1000 keys are listed per call; a longer folder says where to continue (--after).")]
    List {
        /// MOUNT/FOLDER, or FOLDER with --mount
        #[arg(default_value = "")]
        path: String,
        /// List only keys after this one (to continue a long listing)
        #[arg(long, value_name = "KEY")]
        after: Option<String>,
    },

    /// Soft-delete the latest version, or the given versions (undelete can restore them)
    #[command(after_help = "\
Examples:
  zafe kv delete secret/app/db
  zafe kv delete --versions 1,2 secret/app/db")]
    Delete {
        /// Versions to delete (default: the latest)
        #[arg(long, value_delimiter = ',', value_name = "N,...")]
        versions: Vec<u64>,
        /// MOUNT/PATH, or PATH with --mount
        path: String,
    },

    /// Restore soft-deleted versions
    #[command(after_help = "\
Examples:
  zafe kv undelete --versions 3 secret/app/db")]
    Undelete {
        /// Versions to restore
        #[arg(long, value_delimiter = ',', required = true, value_name = "N,...")]
        versions: Vec<u64>,
        /// MOUNT/PATH, or PATH with --mount
        path: String,
    },

    /// Remove versions' data for good (their metadata stays, marked destroyed)
    #[command(after_help = "\
Examples:
  zafe kv destroy --versions 1,2 secret/app/db")]
    Destroy {
        /// Versions to destroy
        #[arg(long, value_delimiter = ',', required = true, value_name = "N,...")]
        versions: Vec<u64>,
        /// MOUNT/PATH, or PATH with --mount
        path: String,
    },

    /// Read or change a secret's metadata and settings, or delete the secret entirely
    #[command(
        subcommand,
        after_help = "\
Examples:
  zafe kv metadata get secret/app/db
  zafe kv metadata put --max-versions 5 --cas-required true secret/app/db
  zafe kv metadata patch --custom-metadata owner=team-b secret/app/db
  zafe kv metadata delete secret/app/db      Every version and the metadata, for good"
    )]
    Metadata(MetadataCmd),

    /// Show every kept version of a secret with its times and state (no values)
    #[command(after_help = "\
Examples:
  zafe kv history secret/app/db
  zafe kv history --format json secret/app/db")]
    History {
        /// MOUNT/PATH, or PATH with --mount
        path: String,
    },

    /// Write an older version's data again as a new version
    #[command(after_help = "\
Examples:
  zafe kv rollback --version 2 secret/app/db

The write uses check-and-set: if someone writes the secret meanwhile, nothing changes
and the command fails, so no update is lost.")]
    Rollback {
        /// The version whose data to restore
        #[arg(long, value_name = "N")]
        version: u64,
        /// MOUNT/PATH, or PATH with --mount
        path: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum MetadataCmd {
    /// Show a secret's metadata and the state of each version
    #[command(after_help = "\
Examples:
  zafe kv metadata get secret/app/db
  zafe kv metadata get --format json secret/app/db")]
    Get {
        /// MOUNT/PATH, or PATH with --mount
        path: String,
    },

    /// Create or replace a secret's settings (fields not given keep their value,
    /// custom metadata is replaced as a whole)
    #[command(after_help = "\
Examples:
  zafe kv metadata put --max-versions 5 secret/app/db
  zafe kv metadata put --cas-required true --delete-version-after 720h secret/app/db
  zafe kv metadata put --custom-metadata owner=team-a --custom-metadata tier=1 secret/app/db")]
    Put(MetadataFields),

    /// Change some settings; --custom-metadata key= removes a key
    #[command(after_help = "\
Examples:
  zafe kv metadata patch --custom-metadata owner=team-b secret/app/db
  zafe kv metadata patch --custom-metadata tier= secret/app/db     Removes the key tier")]
    Patch(MetadataFields),

    /// Delete every version and the metadata of a secret, for good
    #[command(after_help = "\
Examples:
  zafe kv metadata delete secret/app/db")]
    Delete {
        /// MOUNT/PATH, or PATH with --mount
        path: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct MetadataFields {
    /// Versions to keep (0: the mount's setting, or 10)
    #[arg(long, value_name = "N")]
    max_versions: Option<u32>,
    /// Require check-and-set on every write
    #[arg(long, value_name = "BOOL")]
    cas_required: Option<bool>,
    /// Delete versions this long after they are written (e.g. 30m, 24h; 0s: never)
    #[arg(long, value_name = "DURATION")]
    delete_version_after: Option<String>,
    /// key=value (repeatable); not for secrets: metadata is shown to anyone who may read it
    #[arg(long, value_name = "KEY=VALUE")]
    custom_metadata: Vec<String>,
    /// MOUNT/PATH, or PATH with --mount
    path: String,
}

/// Vault's single-dash long flags for `zafe kv`, rewritten to clap's
/// double dash: `-version=2` → `--version=2`. Only after the `kv`
/// subcommand, only these names, and never after `--`.
pub(crate) fn vault_style_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    const NAMES: &[&str] = &[
        "version", "versions", "field", "mount", "cas", "format", "after",
    ];
    let mut in_kv = false;
    let mut out = Vec::new();
    for arg in args {
        let rewritten = match arg.to_str() {
            Some("--") => {
                in_kv = false;
                None
            }
            Some("kv") if !in_kv => {
                in_kv = true;
                None
            }
            Some(s) if in_kv => s
                .strip_prefix('-')
                .filter(|rest| !rest.starts_with('-'))
                .filter(|rest| NAMES.contains(&rest.split('=').next().unwrap_or_default()))
                .map(|rest| OsString::from(format!("--{rest}"))),
            _ => None,
        };
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.client()?;
    let out = ctx.out();
    let kv = Kv {
        client,
        out,
        mount: args.mount,
    };
    let result = match args.command {
        KvCmd::Get {
            version,
            field,
            path,
        } => kv.get(&path, version, field.as_deref()).await,
        KvCmd::Put { cas, path, data } => kv.write(&path, cas, &data, false).await,
        KvCmd::Patch { cas, path, data } => kv.write(&path, cas, &data, true).await,
        KvCmd::List { path, after } => kv.list(&path, after.as_deref()).await,
        KvCmd::Delete { versions, path } => kv.delete(&path, &versions).await,
        KvCmd::Undelete { versions, path } => kv.versions_op(&path, "undelete", &versions).await,
        KvCmd::Destroy { versions, path } => kv.versions_op(&path, "destroy", &versions).await,
        KvCmd::Metadata(MetadataCmd::Get { path }) => kv.metadata_get(&path).await,
        KvCmd::Metadata(MetadataCmd::Put(fields)) => kv.metadata_write(fields, false).await,
        KvCmd::Metadata(MetadataCmd::Patch(fields)) => kv.metadata_write(fields, true).await,
        KvCmd::Metadata(MetadataCmd::Delete { path }) => kv.metadata_delete(&path).await,
        KvCmd::History { path } => kv.history(&path).await,
        KvCmd::Rollback { version, path } => kv.rollback(&path, version).await,
    };
    match result {
        Err(e) if e.is::<Usage>() => Ok(exit2(format!("Error: {e}"))),
        other => other,
    }
}

/// A mistake in how the command was called: exit code 2, like clap's own.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

const NOT_FOUND: u8 = 2;

/// Prints a usage or not-found message and gives exit code 2.
fn exit2(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(NOT_FOUND)
}

struct Kv<'a> {
    client: &'a Client,
    out: Out<'a>,
    mount: Option<String>,
}

/// A secret's place: the mount and the path inside it.
struct Target {
    mount: String,
    path: String,
}

impl Target {
    /// The API path of one of the engine's endpoints (`data`, `metadata`...)
    /// for this secret, percent-encoded.
    fn api(&self, endpoint: &str) -> String {
        let rest = if self.path.is_empty() {
            String::new()
        } else {
            format!("/{}", encode_path(&self.path))
        };
        format!("/v1/{}/{endpoint}{rest}", encode_path(&self.mount))
    }

    /// As people write it: `secret/app/db`.
    fn display(&self) -> String {
        if self.path.is_empty() {
            format!("{}/", self.mount)
        } else {
            format!("{}/{}", self.mount, self.path)
        }
    }

    fn display_api(&self, endpoint: &str) -> String {
        format!("{}/{endpoint}/{}", self.mount, self.path)
    }
}

/// Splits PATH into mount and secret path (the mount is `--mount`, or
/// PATH's first segment); `folder` allows an empty path (for listing).
fn split_target(mount: Option<&str>, raw: &str, folder: bool) -> anyhow::Result<Target> {
    let raw = raw.trim_matches('/');
    let (mount, path) = match mount {
        Some(m) => (m.trim_matches('/').to_string(), raw.to_string()),
        None => match raw.split_once('/') {
            Some((m, p)) => (m.to_string(), p.to_string()),
            None => (raw.to_string(), String::new()),
        },
    };
    if mount.is_empty() {
        return Err(usage(
            "no mount: write PATH as MOUNT/PATH (secret/app/db), or give --mount",
        ));
    }
    if path.is_empty() && !folder {
        return Err(usage(format!(
            "no secret path after the mount {mount:?}: write MOUNT/PATH (secret/app/db), or give --mount"
        )));
    }
    Ok(Target { mount, path })
}

impl Kv<'_> {
    fn target(&self, raw: &str, folder: bool) -> anyhow::Result<Target> {
        split_target(self.mount.as_deref(), raw, folder)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, zafe_client::Error> {
        self.client.request_json(method, path, body).await
    }

    async fn get(
        &self,
        raw: &str,
        version: Option<u64>,
        field: Option<&str>,
    ) -> anyhow::Result<ExitCode> {
        let t = self.target(raw, false)?;
        let query = version.map(|v| format!("?version={v}")).unwrap_or_default();
        let reply = match self
            .call(Method::GET, &format!("{}{query}", t.api("data")), None)
            .await
        {
            Ok(reply) => reply.unwrap_or(Value::Null),
            Err(e) if is_not_found(&e) => return self.explain_missing(&t, version).await,
            Err(e) => return Err(e.into()),
        };
        show_secret(self.out, &t, &reply, field)
    }

    /// After a 404 on a read: say whether the version is deleted or
    /// destroyed (from the metadata), or that nothing is there. Exit 2.
    async fn explain_missing(&self, t: &Target, version: Option<u64>) -> anyhow::Result<ExitCode> {
        let meta = match self.call(Method::GET, &t.api("metadata"), None).await {
            Ok(reply) => reply.unwrap_or(Value::Null),
            Err(e) if is_not_found(&e) => {
                return Ok(exit2(format!(
                    "No value found at {}",
                    t.display_api("data")
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let m = &meta["data"];
        let n = version
            .filter(|v| *v > 0)
            .or_else(|| m["current_version"].as_u64())
            .unwrap_or(0);
        let v = &m["versions"][n.to_string()];
        let message = if v["destroyed"] == true {
            format!(
                "Version {n} of {} was destroyed; its data is gone for good",
                t.display()
            )
        } else if v["deletion_time"].as_str().is_some_and(|s| !s.is_empty()) {
            format!(
                "Version {n} of {} was deleted at {}; `zafe kv undelete --versions {n} {}` restores it",
                t.display(),
                v["deletion_time"].as_str().unwrap_or_default(),
                t.display()
            )
        } else {
            format!("No value found at {} (version {n})", t.display_api("data"))
        };
        Ok(exit2(message))
    }

    async fn write(
        &self,
        raw: &str,
        cas: Option<i64>,
        items: &[SecretString],
        patch: bool,
    ) -> anyhow::Result<ExitCode> {
        let t = self.target(raw, false)?;
        let items: Vec<&str> = items.iter().map(SecretString::expose).collect();
        let data = parse_data(&items)?;
        let mut body = json!({ "data": Value::Object(data) });
        if let Some(cas) = cas {
            body["options"] = json!({ "cas": cas });
        }
        let method = if patch { Method::PATCH } else { Method::POST };
        let reply = match self.call(method, &t.api("data"), Some(&body)).await {
            Ok(reply) => reply.unwrap_or(Value::Null),
            Err(e) if patch && is_not_found(&e) => {
                return Ok(exit2(format!(
                    "No value found at {}: patch changes an existing, undeleted secret; use `zafe kv put` to create one",
                    t.display_api("data")
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if self.out.json() {
            self.out.print_json(&reply)?;
        } else {
            section(self.out, "Secret Path", &t.display_api("data"));
            outln!(self.out);
            section_title(self.out, "Metadata");
            print_map(self.out, &reply["data"]);
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn list(&self, raw: &str, after: Option<&str>) -> anyhow::Result<ExitCode> {
        let t = self.target(raw, true)?;
        let mut query = "?list=true".to_string();
        if let Some(after) = after {
            query.push_str(&format!(
                "&after={}",
                zafe_client::path::encode_segment(after)
            ));
        }
        let reply = match self
            .call(Method::GET, &format!("{}{query}", t.api("metadata")), None)
            .await
        {
            Ok(reply) => reply.unwrap_or(Value::Null),
            Err(e) if is_not_found(&e) => {
                return Ok(exit2(format!(
                    "No value found at {}",
                    t.display_api("metadata")
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let keys = reply["data"]["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(warnings) = reply["warnings"].as_array() {
            for w in warnings.iter().filter_map(Value::as_str) {
                eprintln!("WARNING: {w}");
            }
        }
        if self.out.json() {
            self.out.print_json(&keys)?;
        } else {
            outln!(self.out, "Keys");
            outln!(self.out, "----");
            for k in keys.iter().filter_map(Value::as_str) {
                outln!(self.out, "{k}");
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn delete(&self, raw: &str, versions: &[u64]) -> anyhow::Result<ExitCode> {
        if !versions.is_empty() {
            return self.versions_op(raw, "delete", versions).await;
        }
        let t = self.target(raw, false)?;
        self.call(Method::DELETE, &t.api("data"), None).await?;
        self.done(
            &format!(
                "Success! Data deleted (if it existed) at: {}",
                t.display_api("data")
            ),
            &t,
            "data",
        )
    }

    async fn versions_op(&self, raw: &str, op: &str, versions: &[u64]) -> anyhow::Result<ExitCode> {
        let t = self.target(raw, false)?;
        self.call(
            Method::POST,
            &t.api(op),
            Some(&json!({ "versions": versions })),
        )
        .await?;
        let what = match op {
            "delete" => "deleted",
            "undelete" => "restored",
            _ => "destroyed",
        };
        let list = versions
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        self.done(
            &format!(
                "Success! Version(s) {list} of {} {what} (those that existed)",
                t.display()
            ),
            &t,
            op,
        )
    }

    async fn metadata_get(&self, raw: &str) -> anyhow::Result<ExitCode> {
        let t = self.target(raw, false)?;
        let reply = match self.call(Method::GET, &t.api("metadata"), None).await {
            Ok(reply) => reply.unwrap_or(Value::Null),
            Err(e) if is_not_found(&e) => {
                return Ok(exit2(format!(
                    "No value found at {}",
                    t.display_api("metadata")
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if self.out.json() {
            self.out.print_json(&reply)?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut m = reply["data"].clone();
        let versions = m
            .as_object_mut()
            .and_then(|o| o.remove("versions"))
            .unwrap_or(Value::Null);
        section(self.out, "Metadata Path", &t.display_api("metadata"));
        outln!(self.out);
        section_title(self.out, "Metadata");
        print_map(self.out, &m);
        let mut numbered: Vec<(u64, &Value)> = versions
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                    .collect()
            })
            .unwrap_or_default();
        numbered.sort_by_key(|(n, _)| *n);
        for (n, v) in numbered {
            outln!(self.out);
            section_title(self.out, &format!("Version {n}"));
            print_map(self.out, v);
        }
        Ok(ExitCode::SUCCESS)
    }

    async fn metadata_write(&self, f: MetadataFields, patch: bool) -> anyhow::Result<ExitCode> {
        let t = self.target(&f.path, false)?;
        let mut body = Map::new();
        if let Some(n) = f.max_versions {
            body.insert("max_versions".into(), json!(n));
        }
        if let Some(b) = f.cas_required {
            body.insert("cas_required".into(), json!(b));
        }
        if let Some(d) = &f.delete_version_after {
            body.insert("delete_version_after".into(), json!(d));
        }
        if !f.custom_metadata.is_empty() {
            let mut custom = Map::new();
            for item in &f.custom_metadata {
                let Some((k, v)) = item.split_once('=') else {
                    return Err(usage(format!(
                        "--custom-metadata takes KEY=VALUE, not {item:?}"
                    )));
                };
                // In a patch, an empty value removes the key.
                let value = if patch && v.is_empty() {
                    Value::Null
                } else {
                    json!(v)
                };
                custom.insert(k.to_string(), value);
            }
            body.insert("custom_metadata".into(), Value::Object(custom));
        }
        if body.is_empty() && patch {
            return Err(usage("nothing to change: give at least one of the options"));
        }
        let method = if patch { Method::PATCH } else { Method::POST };
        match self
            .call(method, &t.api("metadata"), Some(&Value::Object(body)))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                return Ok(exit2(format!(
                    "No value found at {}",
                    t.display_api("metadata")
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.done(
            &format!("Success! Data written to: {}", t.display_api("metadata")),
            &t,
            "metadata",
        )
    }

    async fn metadata_delete(&self, raw: &str) -> anyhow::Result<ExitCode> {
        let t = self.target(raw, false)?;
        self.call(Method::DELETE, &t.api("metadata"), None).await?;
        self.done(
            &format!(
                "Success! Data deleted (if it existed) at: {}",
                t.display_api("metadata")
            ),
            &t,
            "metadata",
        )
    }

    async fn history(&self, raw: &str) -> anyhow::Result<ExitCode> {
        let t = self.target(raw, false)?;
        let reply = match self.call(Method::GET, &t.api("metadata"), None).await {
            Ok(reply) => reply.unwrap_or(Value::Null),
            Err(e) if is_not_found(&e) => {
                return Ok(exit2(format!(
                    "No value found at {}",
                    t.display_api("metadata")
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let m = &reply["data"];
        let current = m["current_version"].as_u64().unwrap_or(0);
        let now = time::OffsetDateTime::now_utc();
        let mut rows: Vec<(u64, Value)> = m["versions"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v.clone())))
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        let entries: Vec<Value> = rows
            .iter()
            .map(|(n, v)| {
                json!({
                    "version": n,
                    "current": *n == current,
                    "state": version_state(v, now),
                    "created_time": v["created_time"],
                    "deletion_time": v["deletion_time"],
                    "destroyed": v["destroyed"],
                })
            })
            .collect();
        if self.out.json() {
            self.out.print_json(
                &json!({ "path": t.display(), "current_version": current, "versions": entries }),
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        let table: Vec<[String; 4]> = entries
            .iter()
            .map(|e| {
                let mark = if e["current"] == true {
                    " (current)"
                } else {
                    ""
                };
                [
                    format!("{}{mark}", e["version"]),
                    e["created_time"].as_str().unwrap_or_default().to_string(),
                    e["state"].as_str().unwrap_or_default().to_string(),
                    e["deletion_time"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .unwrap_or("-")
                        .to_string(),
                ]
            })
            .collect();
        print_columns(
            self.out,
            ["Version", "Created", "State", "Deletion Time"],
            &table,
        );
        if m["oldest_version"].as_u64().unwrap_or(0) > 0 {
            outln!(
                self.out,
                "\nVersions before {} were pruned (max_versions).",
                m["oldest_version"]
            );
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Reads version N and writes its data as a new version, with
    /// check-and-set on the version that was current when we looked.
    async fn rollback(&self, raw: &str, version: u64) -> anyhow::Result<ExitCode> {
        let t = self.target(raw, false)?;
        let meta = match self.call(Method::GET, &t.api("metadata"), None).await {
            Ok(reply) => reply.unwrap_or(Value::Null),
            Err(e) if is_not_found(&e) => {
                return Ok(exit2(format!(
                    "No value found at {}",
                    t.display_api("metadata")
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let current = meta["data"]["current_version"].as_u64().unwrap_or(0);
        let v = &meta["data"]["versions"][version.to_string()];
        if v.is_null() {
            return Ok(exit2(format!(
                "{} has no version {version} (the current version is {current})",
                t.display()
            )));
        }
        if v["destroyed"] == true {
            bail!(
                "version {version} of {} was destroyed; it cannot be restored",
                t.display()
            );
        }
        if version_state(v, time::OffsetDateTime::now_utc()) == "deleted" {
            bail!(
                "version {version} of {} is deleted; restore it first with `zafe kv undelete --versions {version} {}`",
                t.display(),
                t.display()
            );
        }
        let old = self
            .call(
                Method::GET,
                &format!("{}?version={version}", t.api("data")),
                None,
            )
            .await
            .with_context(|| format!("reading version {version}"))?
            .unwrap_or(Value::Null);
        let data = old["data"]["data"].clone();
        if !data.is_object() {
            return Err(anyhow!("version {version} of {} has no data", t.display()));
        }
        let body = json!({ "data": data, "options": { "cas": current } });
        let reply = self
            .call(Method::POST, &t.api("data"), Some(&body))
            .await
            .with_context(|| format!("writing version {version}'s data as version {} (someone may have written meanwhile)", current + 1))?
            .unwrap_or(Value::Null);
        if self.out.json() {
            self.out.print_json(&reply)?;
        } else {
            outln!(
                self.out,
                "Restored version {version} of {} as version {}.",
                t.display(),
                reply["data"]["version"]
            );
            outln!(self.out);
            section_title(self.out, "Metadata");
            print_map(self.out, &reply["data"]);
        }
        Ok(ExitCode::SUCCESS)
    }

    /// The answer to a command that changes something and returns no body.
    fn done(&self, message: &str, t: &Target, endpoint: &str) -> anyhow::Result<ExitCode> {
        if self.out.json() {
            self.out
                .print_json(&json!({ "success": true, "path": t.display_api(endpoint) }))?;
        } else {
            outln!(self.out, "{message}");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// What `kv get` prints of a secret read from the server (`reply`): one
/// field raw, or the whole reply as JSON, or Vault's sections as tables.
fn show_secret(
    out: Out<'_>,
    t: &Target,
    reply: &Value,
    field: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let data = &reply["data"]["data"];
    if let Some(field) = field {
        let Some(value) = data.get(field) else {
            return Ok(exit2(format!(
                "Field {field:?} not present in secret {}",
                t.display()
            )));
        };
        if out.json() {
            return out.print_json(value).map(|()| ExitCode::SUCCESS);
        }
        // Raw, for `$(zafe kv get --field ...)`; a newline only for a person.
        out.write_raw(plain(value).as_bytes())?;
        if out.terminal() {
            out.write_raw(b"\n")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if out.json() {
        out.print_json(reply)?;
        return Ok(ExitCode::SUCCESS);
    }
    section(out, "Secret Path", &t.display_api("data"));
    outln!(out);
    section_title(out, "Metadata");
    print_map(out, &reply["data"]["metadata"]);
    outln!(out);
    section_title(out, "Data");
    print_map(out, data);
    Ok(ExitCode::SUCCESS)
}

/// A JSON object as a Key/Value table, keys sorted, as Vault prints it.
fn print_map(out: Out<'_>, v: &Value) {
    let map: BTreeMap<&String, &Value> = v
        .as_object()
        .map(|o| o.iter().collect())
        .unwrap_or_default();
    let rows: Vec<(&str, String)> = map
        .iter()
        .map(|(k, v)| {
            let shown = match v {
                Value::Null => "<nil>".to_string(),
                Value::String(s) if s.is_empty() && k.ends_with("_time") => "n/a".to_string(),
                other => plain(other),
            };
            (k.as_str(), shown)
        })
        .collect();
    out.print_table(&rows);
}

/// A value for a person or a script: strings as they are, the rest as JSON.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn version_state(v: &Value, now: time::OffsetDateTime) -> &'static str {
    if v["destroyed"] == true {
        return "destroyed";
    }
    let deletion = v["deletion_time"]
        .as_str()
        .filter(|s| !s.is_empty())
        .and_then(|s| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        });
    match deletion {
        Some(t) if t <= now => "deleted",
        Some(_) => "live (deletion scheduled)",
        None => "live",
    }
}

fn section(out: Out<'_>, title: &str, body: &str) {
    section_title(out, title);
    outln!(out, "{body}");
}

fn section_title(out: Out<'_>, title: &str) {
    let bar = "=".repeat(6);
    outln!(out, "{bar} {title} {bar}");
}

fn print_columns<const N: usize>(out: Out<'_>, headers: [&str; N], rows: &[[String; N]]) {
    let mut widths = headers.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        outln!(out, "{}", parts.join("    ").trim_end());
    };
    line(headers.to_vec());
    line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn is_not_found(e: &zafe_client::Error) -> bool {
    matches!(e, zafe_client::Error::ServerError { status: 404, .. })
}

/// The secret's data from the command line: `key=value`, `key=@FILE`,
/// `key=-` (stdin), `key=\@literal`; or a single `-` / `@FILE` holding a
/// JSON object. Values read from files and stdin are taken as they are.
fn parse_data<S: AsRef<str>>(items: &[S]) -> anyhow::Result<Map<String, Value>> {
    if let [only] = items
        && !only.as_ref().contains('=')
    {
        let only = only.as_ref();
        let text = match only {
            "-" => read_stdin()?,
            s if s.starts_with('@') => read_file(&s[1..])?,
            _ => {
                return Err(usage(format!(
                    "expected KEY=VALUE, - or @FILE, not {only:?}"
                )));
            }
        };
        return match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(map),
            // The parser's message could quote the input: say where only.
            Ok(_) => bail!("the JSON given is not an object of keys and values"),
            Err(e) => bail!(
                "the JSON given does not parse (line {}, column {})",
                e.line(),
                e.column()
            ),
        };
    }
    let mut data = Map::new();
    let mut stdin_used = false;
    for item in items {
        let item = item.as_ref();
        let Some((key, raw)) = item.split_once('=') else {
            return Err(usage(format!(
                "expected KEY=VALUE, not {item:?} (a single - or @FILE reads a whole JSON object)"
            )));
        };
        if key.is_empty() {
            return Err(usage(
                "a key name is missing in an argument of the form KEY=VALUE",
            ));
        }
        let value = if raw == "-" {
            if stdin_used {
                return Err(usage("only one value can come from standard input"));
            }
            stdin_used = true;
            read_stdin()?
        } else if let Some(file) = raw.strip_prefix('@') {
            read_file(file).with_context(|| format!("the value of {key}"))?
        } else if let Some(literal) = raw.strip_prefix('\\').filter(|r| r.starts_with('@')) {
            Zeroizing::new(literal.to_string())
        } else {
            Zeroizing::new(raw.to_string())
        };
        data.insert(key.to_string(), Value::String(value.to_string()));
    }
    Ok(data)
}

fn read_stdin() -> anyhow::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading standard input (it must be UTF-8 text)")?;
    Ok(text)
}

fn read_file(path: &str) -> anyhow::Result<Zeroizing<String>> {
    if path.is_empty() {
        bail!("@ must be followed by a file name");
    }
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .with_context(|| format!("reading {path} (it must be UTF-8 text)"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        vault_style_args(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn vault_single_dash_flags_are_rewritten_after_kv_only() {
        assert_eq!(
            rewrite(&[
                "zafe",
                "kv",
                "get",
                "-version=2",
                "-field",
                "pw",
                "secret/a"
            ]),
            [
                "zafe",
                "kv",
                "get",
                "--version=2",
                "--field",
                "pw",
                "secret/a"
            ]
        );
        assert_eq!(
            rewrite(&["zafe", "kv", "destroy", "-versions=1,2", "s/a"])[3],
            "--versions=1,2"
        );
        // Not before kv, not unknown names, not values, not after `--`.
        assert_eq!(
            rewrite(&["zafe", "-version", "kv", "put", "s/a", "k=-version", "-x"]),
            ["zafe", "-version", "kv", "put", "s/a", "k=-version", "-x"]
        );
        assert_eq!(
            rewrite(&["zafe", "kv", "put", "s/a", "--", "-cas"])[5],
            "-cas"
        );
        assert_eq!(rewrite(&["zafe", "status"]), ["zafe", "status"]);
    }

    #[test]
    fn data_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw.txt");
        std::fs::write(&file, "from-file\n").unwrap();
        let items = vec![
            "user=app".to_string(),
            format!("pw=@{}", file.display()),
            "lit=\\@home".into(),
            "eq=a=b".into(),
        ];
        let data = parse_data(&items).unwrap();
        assert_eq!(
            Value::Object(data),
            json!({"user": "app", "pw": "from-file\n", "lit": "@home", "eq": "a=b"})
        );
        let json_file = dir.path().join("s.json");
        std::fs::write(&json_file, r#"{"a": "1", "n": 2}"#).unwrap();
        let data = parse_data(&[format!("@{}", json_file.display())]).unwrap();
        assert_eq!(Value::Object(data), json!({"a": "1", "n": 2}));
        for bad in [
            vec!["novalue".to_string()],
            vec!["=v".into()],
            vec!["k=@".into()],
            vec![format!("@{}", file.display())],
        ] {
            assert!(parse_data(&bad).is_err(), "{bad:?}");
        }
        // Error messages never repeat a value read from a file.
        let err = parse_data(&[format!("@{}", file.display())])
            .unwrap_err()
            .to_string();
        assert!(!err.contains("from-file"), "{err}");
    }

    #[test]
    fn targets() {
        let t = |mount: Option<&str>, raw: &str, folder: bool| {
            split_target(mount, raw, folder).map(|t| {
                let api = t.api("data");
                (t.mount, t.path, api)
            })
        };
        assert_eq!(
            t(None, "secret/app/db", false).unwrap(),
            (
                "secret".into(),
                "app/db".into(),
                "/v1/secret/data/app/db".into()
            )
        );
        assert_eq!(
            t(Some("team/kv"), "app db?x", false).unwrap().2,
            "/v1/team/kv/data/app%20db%3Fx"
        );
        assert_eq!(t(None, "/secret/app/", false).unwrap().1, "app");
        assert!(t(None, "secret", false).is_err());
        assert_eq!(t(None, "secret/", true).unwrap().2, "/v1/secret/data");
        assert!(t(None, "", true).is_err());
    }
}

/// What `kv get` prints, rendered in-process (no server, no binary).
#[cfg(test)]
mod output_tests {
    use super::*;
    use crate::cli::Format;
    use crate::output::Captured;

    fn reply() -> Value {
        json!({
            "request_id": "r1",
            "data": {
                "data": { "password": "hunter2", "user": "app", "port": 5432 },
                "metadata": {
                    "created_time": "2024-05-01T10:00:00Z",
                    "custom_metadata": null,
                    "deletion_time": "",
                    "destroyed": false,
                    "version": 3
                }
            }
        })
    }

    fn target() -> Target {
        split_target(None, "secret/app/db", false).unwrap()
    }

    #[test]
    fn kv_get_prints_vault_sections_as_tables() {
        let captured = Captured::new();
        let code = show_secret(captured.out(Format::Table), &target(), &reply(), None).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(
            captured.text(),
            "\
====== Secret Path ======
secret/data/app/db

====== Metadata ======
Key                Value
---                -----
created_time       2024-05-01T10:00:00Z
custom_metadata    <nil>
deletion_time      n/a
destroyed          false
version            3

====== Data ======
Key         Value
---         -----
password    hunter2
port        5432
user        app
"
        );
    }

    #[test]
    fn kv_get_prints_the_reply_as_json_and_one_field_raw() {
        let captured = Captured::new();
        show_secret(captured.out(Format::Json), &target(), &reply(), None).unwrap();
        let printed: Value = serde_json::from_str(&captured.text()).unwrap();
        assert_eq!(printed, reply());
        assert!(captured.text().starts_with("{\n  \""), "indented");

        // One field: the bare value, no newline when not at a terminal.
        let captured = Captured::new();
        let out = captured.out(Format::Table);
        show_secret(out, &target(), &reply(), Some("password")).unwrap();
        show_secret(out, &target(), &reply(), Some("port")).unwrap();
        assert_eq!(captured.text(), "hunter25432");
        let captured = Captured::new();
        show_secret(
            captured.out(Format::Json),
            &target(),
            &reply(),
            Some("user"),
        )
        .unwrap();
        assert_eq!(captured.text(), "\"app\"\n");

        // A missing field prints nothing and exits 2.
        let captured = Captured::new();
        let code = show_secret(
            captured.out(Format::Table),
            &target(),
            &reply(),
            Some("nope"),
        );
        assert_eq!(code.unwrap(), ExitCode::from(2));
        assert_eq!(captured.text(), "");
    }
}
