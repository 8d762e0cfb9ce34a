//! `zafe run -- CMD` (R-DEV-3): resolve every `zafe://` reference the
//! command would see, in one request, and run it with the real values.
//!
//! Where references come from, later sources overriding earlier ones:
//! 1. Zafe's own environment: any variable whose value is a reference;
//! 2. `--project P --env E`: every key of that environment, as `KEY`;
//! 3. each `--env-file F`, in order: plain values are passed as they are,
//!    references are resolved.
//!
//! All references are resolved in one `POST sys/resolve`; if any is
//! missing or forbidden nothing runs (exit 121) and the error names the
//! references, never a value. The child never receives Zafe's own
//! credentials (`ZAFE_TOKEN`, `ZAFE_ADDR`, `VAULT_TOKEN`, `VAULT_ADDR`, ...)
//! nor its configuration directory (it gets an empty one) unless
//! `--pass-zafe-env` is given.
//!
//! Output is masked (see `zafe_client::mask` and `child`); `--no-mask`
//! replaces Zafe with the command (execvp), and so does a run that resolved
//! no secret (there is nothing to mask). `--files` puts each secret in a
//! file on a private tmpfs directory and passes its path instead.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{IsTerminal as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, LazyLock};

use rand_core::RngCore as _;
use zafe_client::Client;
use zafe_client::mask::{MIN_MASKED_LEN, MaskOptions, MaskSet};
use zafe_core::dotenv;
use zafe_core::reference::{DEFAULT_PROJECT_MOUNT, Reference};
use zafe_core::secret::SecretString;
use zeroize::Zeroizing;

use crate::child;
use crate::ctx::Ctx;

/// A reference could not be resolved (missing, forbidden or malformed);
/// the command did not run.
pub(crate) const EXIT_UNRESOLVED: u8 = 121;
/// Zafe failed before the command could start (an env file, the server,
/// the files directory).
pub(crate) const EXIT_ZAFE_FAILED: u8 = 125;

/// Zafe's own credentials: never passed to the child unless asked.
pub(crate) const ZAFE_CREDENTIALS: [&str; 7] = [
    "ZAFE_TOKEN",
    "ZAFE_AGENT_TOKEN",
    "ZAFE_ADDR",
    "VAULT_TOKEN",
    "VAULT_ADDR",
    "ZAFE_SECRET_ID",
    "ZAFE_SETUP_TOKEN",
];

pub(crate) const EXAMPLES: &str = "\
Examples:
  zafe run -- npm start                       References in the environment are resolved
  zafe run --env-file .env.zafe -- ./server   References from an env file
  zafe run --project myapp --env dev -- env   Every key of myapp/dev
  zafe run --project myapp --env dev --allow-env NODE_OPTIONS -- npm start
                                              Let the project set NODE_OPTIONS (keys that can run
                                              code, like LD_PRELOAD or PATH, are refused by default)
  zafe run --files --env-file .env.zafe -- ./app
                                              Each secret is a file; the variable holds its path
  zafe run --no-mask -- psql                  Run the command in Zafe's place, output unmasked

Output is masked by default: every secret value (and plain env-file value), and its base64,
base32, hex, URL-encoded and reversed forms, becomes *** (values shorter than 4 bytes are not masked). When stdout is a terminal the
command gets a pseudo-terminal, so colours and prompts work.

Exit codes: the command's own exit code (128+N when killed by signal N);
  121  a reference could not be resolved (missing or forbidden); the command did not run
  125  zafe failed before the command started (env file, server, files directory, a project
       key such as LD_PRELOAD or PATH that can make programs run other code: see --allow-env)
  126  the command could not be executed
  127  the command was not found";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A dotenv file whose values (plain or `zafe://` references) the command gets; repeatable,
    /// later files win
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_files: Vec<PathBuf>,

    /// Give the command every key of this project's environment (needs --env)
    #[arg(
        long,
        value_name = "SLUG",
        env = "ZAFE_PROJECT",
        requires = "environment"
    )]
    pub project: Option<String>,

    /// The project's environment (with --project)
    #[arg(
        long = "env",
        value_name = "ENV",
        env = "ZAFE_ENV",
        requires = "project"
    )]
    pub environment: Option<String>,

    /// Do not mask the command's output: Zafe replaces itself with the command
    #[arg(long, env = "ZAFE_RUN_NO_MASK", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_mask: bool,

    /// Pass each secret as a file on a private tmpfs directory (0700, files 0400); the variable
    /// holds the file's path. The directory is removed when the command exits.
    #[arg(long)]
    pub files: bool,

    /// Also pass Zafe's own ZAFE_TOKEN/ZAFE_ADDR/VAULT_TOKEN/VAULT_ADDR to the command
    #[arg(long)]
    pub pass_zafe_env: bool,

    /// Let --project/--env set this variable although it can make programs run other code
    /// (LD_PRELOAD, PATH, BASH_ENV, NODE_OPTIONS, ...); repeatable
    #[arg(long = "allow-env", value_name = "NAME")]
    pub allow_env: Vec<String>,

    /// The command and its arguments
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// One variable for the child: a plain value, or a reference to resolve.
#[derive(Clone)]
pub(crate) enum Source {
    Plain(OsString),
    Reference(String),
}

/// What went wrong before the command started, with the exit code.
pub(crate) struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub(crate) fn zafe(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_ZAFE_FAILED,
            message: message.into(),
        }
    }

    fn unresolved(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_UNRESOLVED,
            message: message.into(),
        }
    }
}

/// Variables collected without the server: references in Zafe's own
/// environment, and every assignment of the env files.
pub(crate) struct Local {
    inherited: BTreeMap<OsString, Source>,
    files: BTreeMap<OsString, Source>,
}

impl Local {
    pub(crate) fn collect(env_files: &[PathBuf]) -> Result<Self, Failure> {
        let mut inherited = BTreeMap::new();
        for (name, value) in std::env::vars_os() {
            if let Some(text) = value.to_str()
                && Reference::looks_like(text)
            {
                inherited.insert(name, Source::Reference(text.to_string()));
            }
        }
        let mut files = BTreeMap::new();
        for file in env_files {
            for (name, source) in read_env_file(file)? {
                files.insert(name.into(), source);
            }
        }
        Ok(Self { inherited, files })
    }

    /// The variables of `zafe agent run`'s `[exec]`: each env file's, in order, then the `env`
    /// table's (which wins). Unlike `zafe run`, the agent's own environment is not searched for
    /// references: what the command gets is what the configuration says.
    pub(crate) fn from_config(
        env_files: &[PathBuf],
        table: &BTreeMap<String, String>,
    ) -> Result<Self, Failure> {
        let mut files = BTreeMap::new();
        for file in env_files {
            for (name, source) in read_env_file(file)? {
                files.insert(name.into(), source);
            }
        }
        for (name, value) in table {
            let source = if Reference::looks_like(value) {
                Source::Reference(value.clone())
            } else {
                Source::Plain(value.into())
            };
            files.insert(name.into(), source);
        }
        Ok(Self {
            inherited: BTreeMap::new(),
            files,
        })
    }

    /// The references among the variables, as written.
    pub(crate) fn references(&self) -> impl Iterator<Item = &str> {
        self.inherited
            .values()
            .chain(self.files.values())
            .filter_map(|s| match s {
                Source::Reference(r) => Some(r.as_str()),
                Source::Plain(_) => None,
            })
    }

    pub(crate) fn has_references(&self) -> bool {
        self.inherited
            .values()
            .chain(self.files.values())
            .any(|s| matches!(s, Source::Reference(_)))
    }
}

/// Every variable the child gets, with every reference resolved.
pub(crate) struct Prepared {
    vars: BTreeMap<OsString, Source>,
    values: BTreeMap<String, SecretString>,
}

impl Prepared {
    /// Adds a project environment's keys (below the env files) and resolves
    /// every reference in one request. `client` may be `None` only when
    /// there is nothing to ask the server. A key named like a variable that
    /// makes programs run other code is refused unless it is in `allowed`
    /// or an env file sets that variable itself (see [`runs_code`]).
    pub(crate) async fn resolve(
        local: Local,
        project: Option<(&str, &str)>,
        client: Option<&Client>,
        allowed: &[String],
    ) -> Result<Self, Failure> {
        let mut vars = local.inherited;
        if let Some((project, environment)) = project {
            let client = client.ok_or_else(|| Failure::zafe("no client"))?;
            for key in list_keys(client, project, environment).await? {
                if runs_code(&key)
                    && !allowed.contains(&key)
                    && !local.files.contains_key(OsString::from(&key).as_os_str())
                {
                    return Err(Failure::zafe(format!(
                        "{project}/{environment} sets {key}, which can make programs run other code; \
                         refusing to start the command (pass --allow-env {key} if you trust everyone who \
                         can write to {project}/{environment})"
                    )));
                }
                let reference = Reference::project(project, environment, &key, None)
                    .map_err(|e| Failure::zafe(format!("key {key:?}: {e}")))?;
                vars.insert(key.into(), Source::Reference(reference.to_string()));
            }
        }
        vars.extend(local.files);

        let mut references: Vec<String> = vars
            .values()
            .filter_map(|s| match s {
                Source::Reference(r) => Some(r.clone()),
                Source::Plain(_) => None,
            })
            .collect();
        references.sort();
        references.dedup();
        for reference in &references {
            if let Err(e) = Reference::parse(reference) {
                let names = names_holding(&vars, reference);
                return Err(Failure::unresolved(format!(
                    "{names} holds an invalid reference: {e}"
                )));
            }
        }
        let values = if references.is_empty() {
            BTreeMap::new()
        } else {
            let client = client.ok_or_else(|| Failure::zafe("no client"))?;
            resolve(client, &references).await?
        };
        Ok(Self { vars, values })
    }

    /// The values `zafe run` masks: the resolved secrets. Plain values of an
    /// env file pass through unmasked: after `zafe import` every value there
    /// is a reference, so what stays plain was left plain on purpose
    /// (`LOG_LEVEL=debug`), and masking it would blank those words in all
    /// of the program's output.
    pub(crate) fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(|v| v.expose())
    }

    /// The plain (non-reference) values of the env files. `zafe mcp` masks
    /// these too: an assistant must not be able to read a plain `.env`
    /// through the run tool.
    pub(crate) fn plain_values(&self) -> impl Iterator<Item = &str> {
        self.vars.values().filter_map(|s| match s {
            Source::Plain(value) => value.to_str().filter(|v| !v.is_empty()),
            Source::Reference(_) => None,
        })
    }

    /// A digest of every variable and value the command would get: two preparations with the
    /// same fingerprint give the command the same environment. `zafe agent run` restarts its
    /// command only when this changes, without keeping a second copy of the values.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        for (name, source) in &self.vars {
            let value = match source {
                Source::Plain(value) => value.as_encoded_bytes(),
                Source::Reference(reference) => self.values[reference].expose().as_bytes(),
            };
            for part in [name.as_encoded_bytes(), value] {
                hash.update((part.len() as u64).to_be_bytes());
                hash.update(part);
            }
        }
        hash.finalize().into()
    }

    /// Whether the output has anything to be masked against.
    pub(crate) fn has_values(&self) -> bool {
        self.values().next().is_some()
    }

    pub(crate) fn mask_set(&self, options: MaskOptions) -> MaskSet {
        MaskSet::new(self.values().map(str::as_bytes), options)
    }

    /// Names of variables whose values are too short to mask.
    pub(crate) fn unmasked_short(&self) -> Vec<String> {
        self.vars
            .iter()
            .filter(|(_, s)| {
                matches!(s, Source::Reference(r)
                    if !self.values[r].expose().is_empty() && self.values[r].expose().len() < MIN_MASKED_LEN)
            })
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect()
    }

    /// The command with its environment: Zafe's own plus every variable,
    /// secrets as values or, with `secret_dir`, as paths of files holding
    /// them. With `isolated` (always, unless `--pass-zafe-env`) the child
    /// gets none of Zafe's credentials: they are removed from the
    /// environment and its configuration directory is an empty one, so a
    /// `zafe kv get` in the child cannot use this user's session and print
    /// values the masker never saw.
    pub(crate) fn command(
        &self,
        argv: &[OsString],
        isolated: Option<&IsolatedConfigDir>,
        secret_dir: Option<&SecretDir>,
    ) -> Result<Command, Failure> {
        let (program, rest) = argv
            .split_first()
            .ok_or_else(|| Failure::zafe("no command given"))?;
        let mut cmd = Command::new(program);
        cmd.args(rest);
        if let Some(dir) = isolated {
            for name in ZAFE_CREDENTIALS {
                cmd.env_remove(name);
            }
            cmd.env("ZAFE_CONFIG_DIR", &dir.path);
        }
        for (name, source) in &self.vars {
            match source {
                Source::Plain(value) => {
                    cmd.env(name, value);
                }
                Source::Reference(reference) => {
                    let value = &self.values[reference];
                    match secret_dir {
                        Some(dir) => {
                            cmd.env(
                                name,
                                dir.write(name, value.expose()).map_err(Failure::zafe)?,
                            );
                        }
                        None => {
                            cmd.env(name, value.expose());
                        }
                    }
                }
            }
        }
        Ok(cmd)
    }
}

/// Whether a variable can make the programs that see it load or run code
/// other than their own (the dynamic loader, shells, language runtimes,
/// git, iconv, the allocator). Anyone who may write to a project
/// environment (a `member`) could otherwise run code on every teammate's
/// machine that does `zafe run --project`, so such keys are refused there
/// unless allowed by name. The same names written by the user in their own
/// env file are the user's choice and are not checked.
pub(crate) fn runs_code(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "PATH",
        "HOME",
        "SHELL",
        "ENV",
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "PS4",
        "PROMPT_COMMAND",
        "IFS",
        "CDPATH",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "LESSOPEN",
        "LESSCLOSE",
        "BROWSER",
        "NODE_OPTIONS",
        "NODE_PATH",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "PYTHONHOME",
        "PYTHONUSERBASE",
        "PERL5LIB",
        "PERL5OPT",
        "PERLLIB",
        "RUBYOPT",
        "RUBYLIB",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "CLASSPATH",
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "HOSTALIASES",
        "SSH_ASKPASS",
        "SUDO_ASKPASS",
        "ZAFE_CONFIG_DIR",
    ];
    const PREFIXES: &[&str] = &["LD_", "DYLD_", "MALLOC_", "GLIBC_", "BASH_FUNC_", "GIT_"];
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

fn names_holding(vars: &BTreeMap<OsString, Source>, reference: &str) -> String {
    vars.iter()
        .filter(|(_, s)| matches!(s, Source::Reference(r) if r == reference))
        .map(|(n, _)| n.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    crate::harden::forbid_inspection();
    // The client only when a reference needs resolving.
    Ok(match prepare_and_run(args, || ctx.client()).await {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("zafe run: {}", failure.message);
            ExitCode::from(failure.code)
        }
    })
}

async fn prepare_and_run(
    args: Args,
    client: impl FnOnce() -> anyhow::Result<Client>,
) -> Result<u8, Failure> {
    let local = Local::collect(&args.env_files)?;
    let project = args.project.as_deref().zip(args.environment.as_deref());
    // The server is contacted only when there is something to ask it.
    let client = if project.is_some() || local.has_references() {
        Some(client().map_err(|e| Failure::zafe(format!("{e:#}")))?)
    } else {
        None
    };
    // The client holds the token now: the command must not find it in our
    // environment block (/proc/<ppid>/environ), unless it is given it.
    if !args.pass_zafe_env {
        crate::harden::scrub_environment(&crate::harden::CREDENTIAL_VARIABLES);
    }
    let prepared = Prepared::resolve(local, project, client.as_ref(), &args.allow_env).await?;

    // The secrets directory lives until this function returns, after the
    // child exited (also when it was killed by a forwarded signal).
    let secret_dir = if args.files && !prepared.values.is_empty() {
        Some(SecretDir::create().map_err(Failure::zafe)?)
    } else {
        None
    };
    let isolated = if args.pass_zafe_env {
        None
    } else {
        Some(IsolatedConfigDir::create().map_err(Failure::zafe)?)
    };
    let cmd = prepared.command(&args.command, isolated.as_ref(), secret_dir.as_ref())?;

    // With nothing to mask Zafe steps aside entirely.
    if args.no_mask || !prepared.has_values() {
        if secret_dir.is_none() {
            // Zafe is replaced and cannot remove the directory afterwards:
            // remove it now. Its random name then names nothing, which reads
            // as an empty configuration just the same.
            drop(isolated);
            let (code, message) = child::exec(cmd);
            return Err(Failure { code, message });
        }
        return child::run_inherited(cmd)
            .await
            .map_err(|(code, message)| Failure { code, message });
    }

    let short = prepared.unmasked_short();
    if !short.is_empty() {
        eprintln!(
            "zafe run: not masking values shorter than {MIN_MASKED_LEN} bytes: {}",
            short.join(", ")
        );
    }
    let mask_set: child::LazyMaskSet = Arc::new(LazyLock::new(Box::new(move || {
        Arc::new(prepared.mask_set(MaskOptions::default()))
    })));
    let pty = std::io::stdout().is_terminal();
    let result = child::run_masked(cmd, mask_set, pty).await;
    drop(secret_dir);
    drop(isolated);
    result.map_err(|(code, message)| Failure { code, message })
}

/// Reads one env file: plain values pass through, references are resolved.
fn read_env_file(path: &Path) -> Result<Vec<(String, Source)>, Failure> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| Failure::zafe(format!("cannot read {}: {e}", path.display())))?,
    );
    let document =
        dotenv::parse(&text).map_err(|e| Failure::zafe(format!("{}: {e}", path.display())))?;
    Ok(document
        .assignments()
        .map(|a| {
            let value = a.value().expose();
            let source = if Reference::looks_like(value) {
                Source::Reference(value.to_string())
            } else {
                Source::Plain(value.into())
            };
            (a.key().to_string(), source)
        })
        .collect())
}

/// The keys of a project environment (`LIST <mount>/metadata/<p>/<e>/`).
async fn list_keys(
    client: &Client,
    project: &str,
    environment: &str,
) -> Result<Vec<String>, Failure> {
    // The project's mount from the registry; the default mount for a
    // project that is not registered or that this token may not look up.
    let registry = format!(
        "/v1/sys/projects/{}",
        zafe_client::path::encode_segment(project)
    );
    let mount = match client
        .request_json(zafe_client::Method::GET, &registry, None)
        .await
    {
        Ok(Some(reply)) => reply["data"]["mount"]
            .as_str()
            .unwrap_or(DEFAULT_PROJECT_MOUNT)
            .trim_matches('/')
            .to_string(),
        _ => DEFAULT_PROJECT_MOUNT.to_string(),
    };
    let path = format!(
        "/v1/{}/metadata/{}/{}/?list=true",
        zafe_client::path::encode_path(&mount),
        zafe_client::path::encode_segment(project),
        zafe_client::path::encode_segment(environment)
    );
    let listed = client
        .request_json(zafe_client::Method::GET, &path, None)
        .await
        .map_err(|e| match e {
            zafe_client::Error::ServerError { status: 404, .. } => {
                Failure::unresolved(format!("no keys found in {project}/{environment}"))
            }
            e => Failure::zafe(e.to_string()),
        })?;
    let keys = listed
        .as_ref()
        .and_then(|v| v["data"]["keys"].as_array())
        .map(|keys| {
            keys.iter()
                .filter_map(|k| k.as_str())
                .filter(|k| !k.ends_with('/'))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(keys)
}

/// Resolves every reference in one request (the client batches beyond its
/// limit). A missing or forbidden reference fails the whole batch, naming
/// references only. The answer is keyed by the references as written.
async fn resolve(
    client: &Client,
    references: &[String],
) -> Result<BTreeMap<String, SecretString>, Failure> {
    let parsed: Vec<Reference> = references
        .iter()
        .map(|r| Reference::parse(r).map_err(|e| Failure::unresolved(e.to_string())))
        .collect::<Result<_, _>>()?;
    let mut resolved = client.resolve(&parsed).await.map_err(|e| match e {
        zafe_client::Error::ServerError {
            status: 400 | 403 | 404,
            ..
        } => Failure::unresolved(format!("cannot resolve the command's secrets: {e}")),
        e => Failure::zafe(e.to_string()),
    })?;
    let mut values = BTreeMap::new();
    for (text, reference) in references.iter().zip(&parsed) {
        let value = resolved
            .get(reference)
            .map(|v| SecretString::new(v.expose().to_string()))
            .ok_or_else(|| {
                Failure::unresolved(format!("the server returned no value for {text}"))
            })?;
        values.insert(text.clone(), value);
    }
    resolved.clear();
    Ok(values)
}

/// An empty directory (0700, random name, under the temporary directory)
/// the child gets as `ZAFE_CONFIG_DIR`: no token file, no session, no
/// credential store entry (those are keyed by the directory). Removed with
/// whatever the child put in it when dropped.
pub(crate) struct IsolatedConfigDir {
    path: PathBuf,
}

impl IsolatedConfigDir {
    pub(crate) fn create() -> Result<Self, String> {
        let mut random = [0u8; 12];
        rand_core::OsRng.fill_bytes(&mut random);
        let path = std::env::temp_dir().join(format!("zafe-child-config-{}", hex::encode(random)));
        // mkdir fails if anything (a planted symlink too) is already there.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for IsolatedConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A private directory on tmpfs holding one file per secret; removed on drop.
pub(crate) struct SecretDir {
    path: PathBuf,
}

impl SecretDir {
    /// `$XDG_RUNTIME_DIR` (per-user, tmpfs on systemd systems), else
    /// `/dev/shm`; either must be tmpfs, so secrets never reach a disk.
    pub(crate) fn create() -> Result<Self, String> {
        let candidates = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .into_iter()
            .chain([PathBuf::from("/dev/shm")]);
        for base in candidates {
            let on_tmpfs = nix::sys::statfs::statfs(&base)
                .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
            if !on_tmpfs {
                continue;
            }
            let mut random = [0u8; 12];
            rand_core::OsRng.fill_bytes(&mut random);
            let path = base.join(format!("zafe-run-{}", hex::encode(random)));
            // mkdir fails if anything (a planted symlink too) is already there.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            return Ok(Self { path });
        }
        Err(
            "--files needs a tmpfs for the secrets: neither $XDG_RUNTIME_DIR nor /dev/shm is one"
                .into(),
        )
    }

    /// Writes one secret (mode 0400) and returns its path.
    fn write(&self, name: &std::ffi::OsStr, value: &str) -> Result<PathBuf, String> {
        let file_name = name.to_string_lossy();
        if file_name.is_empty() || file_name.contains('/') || file_name.starts_with('.') {
            return Err(format!("{file_name:?} cannot be a file name"));
        }
        let path = self.path.join(file_name.as_ref());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        file.write_all(value.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }
}

impl Drop for SecretDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
