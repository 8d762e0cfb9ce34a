//! `zafe import [.env] --project P --env E` (R-DEV-2): stores every value of
//! an env file in Zafe and leaves references behind.
//!
//! 1. The file is parsed (`zafe_core::dotenv`); any error stops everything.
//! 2. The stored values of the same keys are read (one `LIST` of the
//!    environment, one batched `sys/resolve`) and every key is classified as
//!    added, changed or unchanged. Keys whose stored value differs are not
//!    overwritten unless `--force` is given: then nothing at all is written.
//! 3. One KV write per added or changed key, at `M/data/P/E/KEY` as
//!    `{"value": ...}` (new keys with `cas=0`, so a concurrent import cannot
//!    be overwritten silently). A progress bar is drawn on a terminal.
//! 4. Only when every write succeeded: the original is backed up, owner-only,
//!    outside the working tree (`<config dir>/backups/<project>/<env>/`), so
//!    neither git nor an AI tool reading the project finds it; `.env.zafe` is
//!    written with the same keys, order, comments and layout but references
//!    instead of values; the file's name is added to `.gitignore`; and the
//!    plaintext file is removed (unless `--keep-original`).
//!
//! If a write fails, the report says which keys were written and which were
//! not; the original file is untouched and running the command again
//! finishes the job (keys already written are then "unchanged").
//! Values that already are `zafe://` references are kept as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use zafe_client::path::{encode_path, encode_segment};
use zafe_client::{Client, Method};
use zafe_core::dotenv::{self, Assignment, Document};
use zafe_core::reference::{DEFAULT_PROJECT_MOUNT, Reference};
use zafe_core::secret::SecretString;
use zeroize::Zeroizing;

use crate::ctx::Ctx;
use crate::files;
use crate::output::{Out, outln};

/// The largest env file read, in bytes.
pub(crate) const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

pub(crate) const EXAMPLES: &str = "\
Examples:
  zafe import --project myapp --env dev                 Import ./.env
  zafe import                                           Project and environment from .zafe.toml
  zafe import config/.env.local --project myapp --env dev
  zafe import --project myapp --env dev --force         Overwrite keys whose stored value differs
  zafe import --project myapp --env dev --keep-original Leave the plaintext .env in place

What happens:
  every value is stored at <mount>/data/<project>/<env>/<KEY> as {\"value\": ...} (the
  project's mount, secret unless the project was created with another);
  .env.zafe is written beside the file: same keys, order and comments, zafe:// references
  instead of values (safe to commit; `zafe run` reads it);
  the original is backed up (mode 0600) under <config dir>/backups/<project>/<env>/, outside
  the repository, then removed (unless --keep-original), and its name is added to .gitignore.
Nothing is changed on disk until every value is stored. Re-running is safe: unchanged keys are
reported and not written again.

Exit codes: 0 success, 1 error (nothing on disk changed), 2 usage error or values that differ
from the stored ones without --force.";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The env file to import
    #[arg(default_value = ".env", value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub target: ProjectEnvArgs,

    /// Overwrite stored values that differ from the file's (older values stay in each key's history)
    #[arg(long)]
    pub force: bool,

    /// Leave the plaintext file where it is (it is still backed up and git-ignored)
    #[arg(long)]
    pub keep_original: bool,

    /// Where to write the references [default: FILE.zafe, e.g. .env.zafe]
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `--project` / `--env`: flags, else `ZAFE_PROJECT` / `ZAFE_ENV`, else the
/// `.zafe.toml` found from the working directory upward.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ProjectEnvArgs {
    /// Project (slug) [default: `project` in .zafe.toml]
    #[arg(long, short = 'p', env = "ZAFE_PROJECT", value_name = "PROJECT")]
    pub project: Option<String>,

    /// Environment (dev, staging, prod, ...) [default: `environment` in .zafe.toml]
    #[arg(long = "env", short = 'e', env = "ZAFE_ENV", value_name = "ENV")]
    pub environment: Option<String>,
}

impl ProjectEnvArgs {
    /// The project and environment, and the project's mount from the
    /// project registry (the default mount for a project that is not
    /// registered, or that this token may not look up).
    pub(crate) async fn resolve(&self, client: &Client) -> anyhow::Result<ProjectEnv> {
        let found = match (&self.project, &self.environment) {
            (Some(_), Some(_)) => None,
            _ => zafe_client::project_file::find()?,
        };
        let pick = |given: &Option<String>, from_file: Option<&String>, what: &str| {
            given.clone().or_else(|| from_file.cloned()).ok_or_else(|| {
                anyhow!(
                    "no {what}: give --{} or write it in a .zafe.toml at the repository's root",
                    if what == "project" { "project" } else { "env" }
                )
            })
        };
        let project = pick(
            &self.project,
            found.as_ref().map(|f| &f.file.project),
            "project",
        )?;
        let environment = pick(
            &self.environment,
            found.as_ref().and_then(|f| f.file.environment.as_ref()),
            "environment",
        )?;
        let path = format!("/v1/sys/projects/{}", encode_segment(&project));
        let mount = match client.request_json(Method::GET, &path, None).await {
            Ok(Some(reply)) => reply["data"]["mount"]
                .as_str()
                .unwrap_or(DEFAULT_PROJECT_MOUNT)
                .trim_matches('/')
                .to_string(),
            Ok(None)
            | Err(zafe_client::Error::ServerError {
                status: 403 | 404, ..
            }) => DEFAULT_PROJECT_MOUNT.to_string(),
            Err(e) => return Err(e.into()),
        };
        Ok(ProjectEnv {
            project,
            environment,
            mount,
        })
    }
}

/// The project and environment a command works on, and the KV mount the
/// project's secrets live on.
#[derive(Debug, Clone)]
pub(crate) struct ProjectEnv {
    pub project: String,
    pub environment: String,
    pub mount: String,
}

impl ProjectEnv {
    /// The mount the project's secrets live on.
    pub(crate) fn mount(&self) -> &str {
        &self.mount
    }

    /// The reference of one key, checked by the one parser's rules.
    pub(crate) fn reference(&self, key: &str) -> anyhow::Result<Reference> {
        Reference::project(&self.project, &self.environment, key, None).map_err(|e| {
            anyhow!(
                "{}/{}/{key} cannot be a reference: {e}",
                self.project,
                self.environment
            )
        })
    }

    /// `/v1/<mount>/<api>/<project>/<env>[/<key>]`, each segment encoded.
    pub(crate) fn api_path(&self, api: &str, key: Option<&str>) -> String {
        let mut path = format!(
            "/v1/{}/{api}/{}/{}",
            encode_path(self.mount()),
            encode_segment(&self.project),
            encode_segment(&self.environment)
        );
        if let Some(key) = key {
            path.push('/');
            path.push_str(&encode_segment(key));
        }
        path
    }

    pub(crate) fn display(&self) -> String {
        format!("{}/{}", self.project, self.environment)
    }

    /// The keys stored in the environment (secrets only, not sub-folders),
    /// paging through long listings.
    pub(crate) async fn stored_keys(&self, client: &Client) -> anyhow::Result<BTreeSet<String>> {
        let mut keys = BTreeSet::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("{}?list=true", self.api_path("metadata", None));
            if let Some(after) = &after {
                path.push_str(&format!("&after={}", encode_segment(after)));
            }
            let reply = match client.request_json(Method::GET, &path, None).await {
                Ok(reply) => reply.unwrap_or(Value::Null),
                Err(zafe_client::Error::ServerError { status: 404, .. }) => break,
                Err(e) => return Err(e.into()),
            };
            let page: Vec<String> = reply["data"]["keys"]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let full = page.len() >= 1000;
            after = page.last().cloned();
            keys.extend(page.into_iter().filter(|k| !k.ends_with('/')));
            if !full {
                break;
            }
        }
        Ok(keys)
    }
}

/// What import does with one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Changed,
    Unchanged,
    /// The file already holds a `zafe://` reference for it.
    Reference,
}

struct Planned<'d> {
    assignment: &'d Assignment,
    reference: Option<Reference>,
    change: Change,
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.project_client()?;
    let out = ctx.out();
    let file = &args.file;
    let bytes = read_env_file(file)?;
    let document = dotenv::parse_bytes(&bytes).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let target = &args.target.resolve(client).await?;
    let output = match &args.output {
        Some(path) => path.clone(),
        None => {
            let mut name = file.file_name().unwrap_or_default().to_os_string();
            name.push(".zafe");
            file.with_file_name(name)
        }
    };
    let output_dir = match output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !output_dir.is_dir() {
        bail!(
            "cannot write {}: {} is not a directory",
            output.display(),
            output_dir.display()
        );
    }
    if same_file(&output, file) {
        bail!("the references file would replace the file being imported; choose another --output");
    }

    // 1. What is in the file, and what would each key become.
    let mut planned = Vec::new();
    for assignment in document.assignments() {
        let value = assignment.value().expose();
        if Reference::looks_like(value) {
            Reference::parse(value).map_err(|e| {
                anyhow!(
                    "{}: line {}: {} holds an invalid reference: {e}",
                    file.display(),
                    assignment.line(),
                    assignment.key()
                )
            })?;
            planned.push(Planned {
                assignment,
                reference: None,
                change: Change::Reference,
            });
            continue;
        }
        if assignment.uses_interpolation() {
            eprintln!(
                "Warning: {} (line {}) contains $NAME or ${{...}}: Zafe stores it literally, without expanding it",
                assignment.key(),
                assignment.line()
            );
        }
        planned.push(Planned {
            assignment,
            reference: Some(target.reference(assignment.key())?),
            change: Change::Added,
        });
    }
    if planned.iter().all(|p| p.change == Change::Reference) {
        // An empty file, or a references file (.env.zafe) given by mistake:
        // there is nothing to store, and nothing on disk should move.
        outln!(
            out,
            "Nothing to import: {} holds no values, only {} reference(s). Nothing was changed.",
            file.display(),
            planned.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    check_existing_output(&output, &document, args.force)?;

    // 2. What is stored already.
    let stored_keys = target.stored_keys(client).await?;
    let to_compare: Vec<Reference> = planned
        .iter()
        .filter(|p| stored_keys.contains(p.assignment.key()))
        .filter_map(|p| p.reference.clone())
        .collect();
    let current = current_values(client, target, &to_compare).await?;
    for item in &mut planned {
        let Some(reference) = &item.reference else {
            continue;
        };
        item.change = match current.get(reference) {
            None => Change::Added,
            Some(value) if value.expose() == item.assignment.value().expose() => Change::Unchanged,
            Some(_) => Change::Changed,
        };
    }
    let changed: Vec<&str> = keys_with(&planned, Change::Changed);
    if !changed.is_empty() && !args.force {
        eprintln!(
            "Error: {} of the file's keys already hold different values in {}: {}\n\
             Nothing was written and {} is unchanged. Run again with --force to overwrite them \
             (the stored values stay in each key's version history).",
            changed.len(),
            target.display(),
            changed.join(", "),
            file.display()
        );
        return Ok(ExitCode::from(2));
    }

    // 3. Store the values.
    let writes: Vec<&Planned> = planned
        .iter()
        .filter(|p| matches!(p.change, Change::Added | Change::Changed))
        .collect();
    write_values(client, target, &writes, file).await?;

    // 4. Only now touch the files.
    let anything_new = !writes.is_empty();
    let backup = if anything_new || !args.keep_original {
        Some(backup_original(file, target, &bytes)?)
    } else {
        None
    };
    let references = document
        .render_with(|assignment| {
            planned
                .iter()
                .find(|p| std::ptr::eq(p.assignment, assignment))
                .and_then(|p| p.reference.as_ref())
                .map(|r| r.to_string())
        })
        .expect("references never contain NUL");
    files::write_atomic(&output, references.as_bytes(), files::PUBLIC)?;
    let gitignore_updated = add_to_gitignore(file)?;
    let tracked = tracked_by_git(file);
    let removed = !args.keep_original;
    if removed {
        std::fs::remove_file(file)
            .with_context(|| format!("cannot remove {} (it is backed up)", file.display()))?;
    }

    let report = json!({
        "file": file.display().to_string(),
        "project": target.project,
        "environment": target.environment,
        "added": keys_with(&planned, Change::Added),
        "changed": keys_with(&planned, Change::Changed),
        "unchanged": keys_with(&planned, Change::Unchanged),
        "references": keys_with(&planned, Change::Reference),
        "output": output.display().to_string(),
        "backup": backup.as_ref().map(|b| b.display().to_string()),
        "original_removed": removed,
        "gitignore_updated": gitignore_updated,
    });
    if out.json() {
        out.print_json(&report)?;
    } else {
        print_report(out, &report, &planned);
    }
    if tracked {
        eprintln!(
            "Warning: {} is tracked by git, so its values are in the repository's history. \
             Run `git rm --cached {}` and rotate the values.",
            file.display(),
            file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the env file (bounded), zeroized when dropped.
fn read_env_file(file: &Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let metadata =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if metadata.len() > MAX_FILE_BYTES {
        bail!(
            "{} is larger than {} MiB; is it really an env file?",
            file.display(),
            MAX_FILE_BYTES / 1024 / 1024
        );
    }
    Ok(Zeroizing::new(std::fs::read(file).with_context(|| {
        format!("cannot read {}", file.display())
    })?))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// An existing references file with keys the new one lacks would lose
/// them (references added by hand): refuse unless forced.
fn check_existing_output(output: &Path, document: &Document, force: bool) -> anyhow::Result<()> {
    let Ok(existing) = std::fs::read(output) else {
        return Ok(());
    };
    let Ok(existing) = dotenv::parse_bytes(&existing) else {
        if force {
            return Ok(());
        }
        bail!(
            "{} exists and is not a valid env file; move it away or use --force to replace it",
            output.display()
        );
    };
    let lost: Vec<&str> = existing
        .assignments()
        .map(Assignment::key)
        .filter(|key| document.get(key).is_none())
        .collect();
    if !lost.is_empty() && !force {
        bail!(
            "{} has keys the imported file does not: {}. Add them to the file, or use --force to \
             replace {} anyway",
            output.display(),
            lost.join(", "),
            output.display()
        );
    }
    Ok(())
}

/// The stored values of `references`: one batched resolve; if some were
/// deleted meanwhile (listed but without a live version), key by key.
async fn current_values(
    client: &Client,
    target: &ProjectEnv,
    references: &[Reference],
) -> anyhow::Result<BTreeMap<Reference, SecretString>> {
    if references.is_empty() {
        return Ok(BTreeMap::new());
    }
    match client.resolve(references).await {
        Ok(values) => Ok(values),
        Err(zafe_client::Error::ServerError { status: 404, .. }) => {
            let mut values = BTreeMap::new();
            for reference in references {
                let zafe_core::reference::Target::Project { key, .. } = reference.target() else {
                    continue;
                };
                let path = target.api_path("data", Some(key));
                match client.request_json(Method::GET, &path, None).await {
                    Ok(Some(reply)) => {
                        if let Some(value) = reply["data"]["data"]["value"].as_str() {
                            values.insert(reference.clone(), SecretString::from(value));
                        }
                    }
                    Ok(None) | Err(zafe_client::Error::ServerError { status: 404, .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(values)
        }
        Err(e) => Err(e.into()),
    }
}

async fn write_values(
    client: &Client,
    target: &ProjectEnv,
    writes: &[&Planned<'_>],
    file: &Path,
) -> anyhow::Result<()> {
    let progress = progress_bar(writes.len());
    let mut written: Vec<&str> = Vec::new();
    for (index, item) in writes.iter().enumerate() {
        let key = item.assignment.key();
        let mut body = json!({ "data": { "value": item.assignment.value().expose() } });
        if item.change == Change::Added {
            body["options"] = json!({ "cas": 0 });
        }
        let path = target.api_path("data", Some(key));
        let result = client.request_json(Method::POST, &path, Some(&body)).await;
        zeroize_json(&mut body);
        if let Err(error) = result {
            progress.finish_and_clear();
            let not_written: Vec<&str> =
                writes[index..].iter().map(|p| p.assignment.key()).collect();
            return Err(anyhow!(
                "storing {key} in {} failed: {error}\n  \
                 stored ({}): {}\n  \
                 not stored ({}): {}\n\
                 {} was not changed and no references file was written; run the same command \
                 again to finish (keys already stored will be reported unchanged).",
                target.display(),
                written.len(),
                if written.is_empty() {
                    "-".to_string()
                } else {
                    written.join(", ")
                },
                not_written.len(),
                not_written.join(", "),
                file.display()
            ));
        }
        written.push(key);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(())
}

/// Overwrites the strings of a request body that held a value.
fn zeroize_json(value: &mut Value) {
    use zeroize::Zeroize as _;
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_json),
        Value::Object(map) => map.values_mut().for_each(zeroize_json),
        _ => {}
    }
}

/// A progress bar on standard error, drawn only on a terminal and only
/// when there is enough work to watch.
pub(crate) fn progress_bar(total: usize) -> indicatif::ProgressBar {
    if total < 20 || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} keys stored")
            .expect("valid template"),
    );
    bar
}

/// `<config dir>/backups/<project>/<env>/<file name>.<UTC time>`, 0600 in
/// 0700 directories.
fn backup_original(file: &Path, target: &ProjectEnv, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    let config_dir = zafe_client::config::config_dir_from_env()?;
    let dir = config_dir
        .join("backups")
        .join(safe_name(&target.project))
        .join(safe_name(&target.environment));
    files::create_private_dir(&dir)?;
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".env".into());
    files::create_private_new(&dir.join(format!("{name}.{stamp}")), bytes)
}

/// A project or environment name as one directory name.
fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.chars().all(|c| c == '.') {
        format!("_{cleaned}")
    } else {
        cleaned
    }
}

/// Adds the file's name to the `.gitignore` beside it (created if needed),
/// unless a line already ignores exactly that name. Returns whether it
/// changed anything.
pub(crate) fn add_to_gitignore(file: &Path) -> anyhow::Result<bool> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("the env file has no name")?;
    let gitignore = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(".gitignore"),
        _ => PathBuf::from(".gitignore"),
    };
    let existing = match std::fs::read_to_string(&gitignore) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", gitignore.display())),
    };
    let already = existing.lines().any(|line| {
        let line = line.trim();
        line == name || line.strip_prefix('/') == Some(name.as_str())
    });
    if already {
        return Ok(false);
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&name);
    text.push('\n');
    files::write_atomic(&gitignore, text.as_bytes(), files::PUBLIC)?;
    Ok(true)
}

/// Whether git tracks `file` (its values are then in the history). False
/// when git is missing or this is not a repository.
fn tracked_by_git(file: &Path) -> bool {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let Some(name) = file.file_name() else {
        return false;
    };
    std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-files", "--error-unmatch", "--"])
        .arg(name)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn keys_with<'p>(planned: &'p [Planned<'_>], change: Change) -> Vec<&'p str> {
    planned
        .iter()
        .filter(|p| p.change == change)
        .map(|p| p.assignment.key())
        .collect()
}

fn print_report(out: Out<'_>, report: &Value, planned: &[Planned<'_>]) {
    outln!(
        out,
        "Imported {} into {}/{} ({} keys)",
        report["file"].as_str().unwrap_or_default(),
        report["project"].as_str().unwrap_or_default(),
        report["environment"].as_str().unwrap_or_default(),
        planned.len()
    );
    for (label, change) in [
        ("added", Change::Added),
        ("changed", Change::Changed),
        ("unchanged", Change::Unchanged),
        ("already references", Change::Reference),
    ] {
        let keys = keys_with(planned, change);
        if keys.is_empty() {
            continue;
        }
        let text = format!("  {label:<18} {:>4}  {}", keys.len(), keys.join(", "));
        outln!(
            out,
            "{}",
            match change {
                Change::Added => out.green(&text),
                Change::Changed => out.yellow(&text),
                _ => text,
            }
        );
    }
    outln!(
        out,
        "Wrote {} (references only: safe to commit)",
        report["output"].as_str().unwrap_or_default()
    );
    if let Some(backup) = report["backup"].as_str() {
        outln!(out, "Backed up the original to {backup} (mode 0600)");
    }
    if report["original_removed"] == true {
        outln!(
            out,
            "Removed {}: `zafe run` reads the references file",
            report["file"].as_str().unwrap_or_default()
        );
    }
    if report["gitignore_updated"] == true {
        outln!(out, "Added it to .gitignore");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_gets_the_name_once() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        assert!(add_to_gitignore(&env).unwrap());
        assert!(!add_to_gitignore(&env).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".gitignore")).unwrap(),
            ".env\n"
        );
        std::fs::write(dir.path().join(".gitignore"), "target\n/.env.local").unwrap();
        assert!(!add_to_gitignore(&dir.path().join(".env.local")).unwrap());
        assert!(add_to_gitignore(&env).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".gitignore")).unwrap(),
            "target\n/.env.local\n.env\n"
        );
    }

    #[test]
    fn backup_directory_names_stay_inside() {
        assert_eq!(safe_name("my app/../x"), "my_app_.._x");
        assert_eq!(safe_name(".."), "_..");
        assert_eq!(safe_name("dev"), "dev");
    }
}
