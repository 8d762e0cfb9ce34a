//! `zafe project|env|member|secret`: projects, their environments, their
//! members and their secrets (R-ACL-2, R-KV-2;
//! docs/design/people-and-workflow.md).
//!
//! Inside a repository with a `.zafe.toml`, the project and environment
//! come from that file, so `zafe env list` or `zafe secret get DB_URL`
//! need no flags; a project or environment given on the command line wins.
//!
//! Secrets of a project live one per key at
//! `<mount>/data/<project>/<env>/<KEY>` with data `{"value": ...}`, plain
//! KV v2 secrets that Vault clients see too. `env diff` and `env copy`
//! read values to compare or copy them, but never print one.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use zafe_client::path::{encode_path, encode_segment};
use zafe_client::project_file::{self, Found};
use zafe_client::{Client, Method};
use zeroize::Zeroizing;

use crate::ctx::Ctx as RunCtx;
use crate::output::{Out, outln};

pub(crate) const PROJECT_EXAMPLES: &str = "\
Examples:
  zafe project create myapp                          Environments dev, staging and prod
  zafe project create myapp --env dev --env prod --mount team-kv
  zafe project list
  zafe project show myapp
  zafe project delete myapp --purge                  With every secret in it

Inside a repository, `.zafe.toml` names the project and environment:
  project = \"myapp\"
  environment = \"dev\"
  server = \"https://zafe.example.com:8200\"          (optional)";

pub(crate) const ENV_EXAMPLES: &str = "\
Examples:
  zafe env list myapp
  zafe env create myapp qa
  zafe env delete myapp qa --purge
  zafe env diff myapp dev prod                       Names only: never a value
  zafe env copy myapp dev staging --keys DB_URL,API_KEY
  zafe env copy myapp dev staging --overwrite
  zafe env diff dev prod                             The project from .zafe.toml";

pub(crate) const MEMBER_EXAMPLES: &str = "\
Examples:
  zafe member list myapp
  zafe member add myapp alice@example.com --role member
  zafe member role myapp alice@example.com operator
  zafe member remove myapp alice@example.com

Roles, weakest first: readonly (read secrets), member (write them), operator (destroy
versions, manage environments), admin (manage members, delete the project).";

pub(crate) const SECRET_EXAMPLES: &str = "\
Examples:
  zafe secret set DB_URL                     Prompts for the value (hidden), or reads stdin
  printf %s \"$URL\" | zafe secret set DB_URL
  zafe secret set DB_URL --from-file url.txt
  zafe secret get DB_URL --env prod
  zafe secret list --project myapp --env dev
  zafe secret history DB_URL                 Who changed it, and when
  zafe secret delete DB_URL

The project and environment come from .zafe.toml unless --project / --env are given.";

/// `--project` / `--env` where a command takes them as flags.
#[derive(Debug, Args)]
pub(crate) struct Scope {
    /// The project (default: `project` in .zafe.toml)
    #[arg(long, short = 'p', global = true, value_name = "SLUG")]
    pub project: Option<String>,
    /// The environment (default: `environment` in .zafe.toml)
    #[arg(long, short = 'e', global = true, value_name = "ENV")]
    pub env: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProjectCmd {
    /// Create a project (you become its admin)
    #[command(after_help = "\
Examples:
  zafe project create myapp
  zafe project create payments --env dev --env prod --tag pci
  zafe project create myapp --mount team-kv --format json")]
    Create {
        slug: String,
        /// An environment (repeat; default: dev, staging, prod)
        #[arg(long = "env", value_name = "ENV")]
        environments: Vec<String>,
        /// The KV v2 mount its secrets live on (default: secret)
        #[arg(long)]
        mount: Option<String>,
        /// A tag (repeat), for service-account scopes such as tag:payments
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// List the projects you can see, with your role
    #[command(after_help = "\
Examples:
  zafe project list
  zafe project list --format json")]
    List,
    /// Show a project: id, mount, environments, your role
    #[command(after_help = "\
Examples:
  zafe project show myapp
  zafe project show            # the project in .zafe.toml")]
    Show {
        /// Default: the project in .zafe.toml
        project: Option<String>,
    },
    /// Delete a project and its memberships (refused while it holds secrets, unless --purge)
    #[command(after_help = "\
Examples:
  zafe project delete myapp
  zafe project delete myapp --purge   # its secrets too, for good")]
    Delete {
        project: String,
        /// Delete its secrets too, for good
        #[arg(long)]
        purge: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EnvCmd {
    /// List a project's environments
    #[command(after_help = "\
Examples:
  zafe env list myapp
  zafe env list                # the project in .zafe.toml")]
    List {
        /// Default: the project in .zafe.toml
        project: Option<String>,
    },
    /// Create an environment: [PROJECT] ENV
    #[command(after_help = "\
Examples:
  zafe env create myapp qa
  zafe env create qa           # the project in .zafe.toml")]
    Create {
        #[arg(num_args = 1..=2, value_name = "[PROJECT] ENV")]
        args: Vec<String>,
    },
    /// Delete an environment (refused while it holds secrets, unless --purge): [PROJECT] ENV
    #[command(after_help = "\
Examples:
  zafe env delete myapp qa
  zafe env delete myapp qa --purge")]
    Delete {
        #[arg(num_args = 1..=2, value_name = "[PROJECT] ENV")]
        args: Vec<String>,
        /// Delete its secrets too, for good
        #[arg(long)]
        purge: bool,
    },
    /// Compare two environments by name and value, printing names only: [PROJECT] FROM TO
    #[command(after_help = "\
Examples:
  zafe env diff myapp dev prod
  zafe env diff staging prod --exit-code     # project from .zafe.toml

Prints the keys only in FROM, only in TO, present in both with different values, and the
same in both. Values are compared in memory and never printed.
With --exit-code, exits 1 when the environments differ (like `git diff --exit-code`).")]
    Diff {
        #[arg(num_args = 2..=3, value_name = "[PROJECT] FROM TO")]
        args: Vec<String>,
        /// Exit with 1 when the environments differ
        #[arg(long)]
        exit_code: bool,
    },
    /// Copy secrets from one environment to another: [PROJECT] FROM TO
    #[command(after_help = "\
Examples:
  zafe env copy myapp dev staging
  zafe env copy myapp staging prod --keys API_URL,FEATURE_FLAGS --dry-run

Keys that already exist in TO are skipped unless --overwrite is given; a copy without
--overwrite uses check-and-set, so it never replaces a value written meanwhile.")]
    Copy {
        #[arg(num_args = 2..=3, value_name = "[PROJECT] FROM TO")]
        args: Vec<String>,
        /// Only these keys (comma-separated); each must exist in FROM
        #[arg(long, value_delimiter = ',', value_name = "KEY,...")]
        keys: Vec<String>,
        /// Replace keys that already exist in TO
        #[arg(long)]
        overwrite: bool,
        /// Say what would be copied, change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum MemberCmd {
    /// List a project's members and their roles
    #[command(after_help = "\
Examples:
  zafe member list myapp
  zafe member list --format json")]
    List {
        /// Default: the project in .zafe.toml
        project: Option<String>,
    },
    /// Add a person to a project: [PROJECT] EMAIL --role ROLE
    #[command(after_help = "\
Examples:
  zafe member add myapp dana@example.com --role operator
  zafe member add dana@example.com            # role member, project from .zafe.toml")]
    Add {
        #[arg(num_args = 1..=2, value_name = "[PROJECT] EMAIL")]
        args: Vec<String>,
        /// admin, operator, member or readonly
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Change a member's role: [PROJECT] EMAIL ROLE
    #[command(after_help = "\
Examples:
  zafe member role myapp dana@example.com readonly")]
    Role {
        #[arg(num_args = 2..=3, value_name = "[PROJECT] EMAIL ROLE")]
        args: Vec<String>,
    },
    /// Remove a member: [PROJECT] EMAIL
    #[command(after_help = "\
Examples:
  zafe member remove myapp dana@example.com")]
    Remove {
        #[arg(num_args = 1..=2, value_name = "[PROJECT] EMAIL")]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct SecretArgs {
    #[command(flatten)]
    pub scope: Scope,
    #[command(subcommand)]
    pub command: SecretCmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecretCmd {
    /// Set a secret's value (a new version); the value is prompted for or read from stdin
    #[command(after_help = "\
Examples:
  zafe secret set DATABASE_URL -p myapp -e dev
  printf %s \"$VALUE\" | zafe secret set API_KEY
  zafe secret set TLS_KEY --from-file key.pem")]
    Set {
        key: String,
        /// Read the value from this file
        #[arg(long, value_name = "FILE")]
        from_file: Option<std::path::PathBuf>,
    },
    /// Print a secret's value
    #[command(after_help = "\
Examples:
  zafe secret get DATABASE_URL -p myapp -e prod
  zafe secret get API_KEY --version 3")]
    Get {
        key: String,
        /// A version (default: the latest)
        #[arg(long)]
        version: Option<u64>,
    },
    /// List an environment's keys
    #[command(after_help = "\
Examples:
  zafe secret list -p myapp -e prod
  zafe secret list --format json")]
    List,
    /// Show who changed a secret and when (no values)
    #[command(after_help = "\
Examples:
  zafe secret history DATABASE_URL -p myapp -e prod")]
    History { key: String },
    /// Delete a secret: every version, for good
    #[command(after_help = "\
Examples:
  zafe secret delete OLD_TOKEN -p myapp -e dev")]
    Delete { key: String },
}

/// What a command runs against: the project, and where its secrets live.
struct Conn<'a> {
    client: &'a Client,
    out: Out<'a>,
}

/// A project as the server describes it.
struct ProjectInfo {
    slug: String,
    mount: String,
    environments: Vec<String>,
}

/// The project file of the working directory, if any (a malformed one is
/// an error even when flags name everything: it would mislead later).
pub(crate) fn project_file() -> anyhow::Result<Option<Found>> {
    Ok(project_file::find()?)
}

fn from_file(found: &Option<Found>, what: &str) -> anyhow::Result<String> {
    let value = match (found, what) {
        (Some(f), "project") => Some(f.file.project.clone()),
        (Some(f), _) => f.file.environment.clone(),
        (None, _) => None,
    };
    value.ok_or_else(|| {
        anyhow!(
            "no {what} given, and no .zafe.toml with a `{what}` above {}",
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_else(|_| ".".into())
        )
    })
}

/// Splits `[PROJECT] REST...` positionals: the project is the first one
/// when all `max` are given, else it comes from .zafe.toml.
fn with_project(
    args: &[String],
    max: usize,
    found: &Option<Found>,
) -> anyhow::Result<(String, Vec<String>)> {
    if args.len() == max {
        Ok((args[0].clone(), args[1..].to_vec()))
    } else {
        Ok((from_file(found, "project")?, args.to_vec()))
    }
}

fn check_name(name: &str, what: &str) -> anyhow::Result<()> {
    if project_file::is_valid_name(name) {
        Ok(())
    } else {
        bail!(
            "invalid {what} {name:?}: use lowercase letters, digits, '-' and '_', starting with a letter or digit"
        )
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Conn<'_> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        Ok(self
            .client
            .request_json(method, path, body)
            .await?
            .unwrap_or_default())
    }

    async fn project(&self, slug: &str) -> anyhow::Result<ProjectInfo> {
        check_name(slug, "project slug")?;
        let reply = self
            .call(
                Method::GET,
                &format!("/v1/sys/projects/{}", encode_segment(slug)),
                None,
            )
            .await
            .with_context(|| format!("project {slug}"))?;
        let data = &reply["data"];
        Ok(ProjectInfo {
            slug: slug.to_string(),
            mount: data["mount"].as_str().unwrap_or("secret").to_string(),
            environments: strings(&data["environments"]),
        })
    }

    /// The project, checked to have environment `env`.
    async fn project_with_env(&self, slug: &str, env: &str) -> anyhow::Result<ProjectInfo> {
        check_name(env, "environment name")?;
        let project = self.project(slug).await?;
        if !project.environments.iter().any(|e| e == env) {
            bail!(
                "project {slug} has no environment {env} (it has {}); create it with `zafe env create {slug} {env}`",
                project.environments.join(", ")
            );
        }
        Ok(project)
    }
}

impl ProjectInfo {
    fn api(&self, endpoint: &str, env: &str, key: &str) -> String {
        let mut path = format!(
            "/v1/{}/{endpoint}/{}/{}",
            encode_path(&self.mount),
            encode_segment(&self.slug),
            encode_segment(env)
        );
        if !key.is_empty() {
            path.push('/');
            path.push_str(&encode_path(key));
        }
        path
    }
}

/// A progress bar on a terminal (never in JSON output or pipes).
fn progress(out: Out<'_>, len: usize, what: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || out.json() || len < 20 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!("{what} {{bar:30}} {{pos}}/{{len}}"))
            .expect("valid template"),
    );
    Some(bar)
}

/// Every key of an environment (sub-folders included, as `folder/KEY`).
async fn env_keys(ctx: &Conn<'_>, project: &ProjectInfo, env: &str) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    let mut pending = vec![String::new()];
    while let Some(folder) = pending.pop() {
        let mut after = String::new();
        loop {
            let path = format!(
                "{}?list=true&after={}",
                project.api("metadata", env, &folder),
                encode_segment(&after)
            );
            let reply = match ctx.client.request_json(Method::GET, &path, None).await {
                Ok(r) => r.unwrap_or_default(),
                Err(zafe_client::Error::ServerError { status: 404, .. }) => Value::Null,
                Err(e) => return Err(e.into()),
            };
            let page = strings(&reply["data"]["keys"]);
            let Some(last) = page.last().cloned() else {
                break;
            };
            for key in page {
                let full = if folder.is_empty() {
                    key.clone()
                } else {
                    format!("{folder}/{key}")
                };
                match full.strip_suffix('/') {
                    Some(sub) => pending.push(sub.to_string()),
                    None => keys.push(full),
                }
            }
            after = last;
        }
    }
    keys.sort();
    Ok(keys)
}

/// A secret's latest data (the whole object), or `None` when it has none.
async fn read_data(
    ctx: &Conn<'_>,
    project: &ProjectInfo,
    env: &str,
    key: &str,
) -> anyhow::Result<Option<(Value, u64)>> {
    match ctx
        .client
        .request_json(Method::GET, &project.api("data", env, key), None)
        .await
    {
        Ok(reply) => {
            let reply = reply.unwrap_or_default();
            Ok(Some((
                reply["data"]["data"].clone(),
                reply["data"]["metadata"]["version"].as_u64().unwrap_or(0),
            )))
        }
        Err(zafe_client::Error::ServerError { status: 404, .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn project(ctx: &RunCtx<'_>, cmd: ProjectCmd) -> anyhow::Result<ExitCode> {
    let client = &ctx.project_client()?;
    let out = ctx.out();
    let ctx = Conn { client, out };
    let found = project_file()?;
    match cmd {
        ProjectCmd::Create {
            slug,
            environments,
            mount,
            tags,
        } => {
            check_name(&slug, "project slug")?;
            for env in &environments {
                check_name(env, "environment name")?;
            }
            let mut body = json!({ "slug": slug });
            if !environments.is_empty() {
                body["environments"] = json!(environments);
            }
            if let Some(m) = mount {
                body["mount"] = json!(m);
            }
            if !tags.is_empty() {
                body["tags"] = json!(tags);
            }
            let reply = ctx
                .call(Method::POST, "/v1/sys/projects", Some(&body))
                .await?;
            if out.json() {
                out.print_json(&reply["data"])?;
            } else {
                let data = &reply["data"];
                eprintln!(
                    "Success! Created project {slug} on {} with environments {}.",
                    data["mount"].as_str().unwrap_or_default(),
                    strings(&data["environments"]).join(", ")
                );
            }
        }
        ProjectCmd::List => {
            let reply = ctx
                .call(Method::GET, "/v1/sys/projects?list=true", None)
                .await?;
            let projects = reply["data"]["projects"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if out.json() {
                out.print_json(&projects)?;
            } else if projects.is_empty() {
                eprintln!("No projects.");
            } else {
                outln!(
                    out,
                    "{:24}  {:9}  {:12}  Environments",
                    "Project",
                    "Role",
                    "Mount"
                );
                for (slug, p) in &projects {
                    outln!(
                        out,
                        "{slug:24}  {:9}  {:12}  {}",
                        p["role"].as_str().unwrap_or("-"),
                        p["mount"].as_str().unwrap_or_default(),
                        strings(&p["environments"]).join(", ")
                    );
                }
            }
        }
        ProjectCmd::Show { project } => {
            let slug = match project {
                Some(p) => p,
                None => from_file(&found, "project")?,
            };
            check_name(&slug, "project slug")?;
            let reply = ctx
                .call(
                    Method::GET,
                    &format!("/v1/sys/projects/{}", encode_segment(&slug)),
                    None,
                )
                .await?;
            let d = &reply["data"];
            if out.json() {
                out.print_json(d)?;
            } else {
                let s = |k: &str| d[k].as_str().unwrap_or("-").to_string();
                out.print_table(&[
                    ("Project", s("slug")),
                    ("Id", s("id")),
                    ("Mount", s("mount")),
                    ("Environments", strings(&d["environments"]).join(", ")),
                    ("Tags", strings(&d["tags"]).join(", ")),
                    ("Your role", s("role")),
                    ("Created by", s("created_by")),
                    ("Created", s("created_time")),
                ]);
            }
        }
        ProjectCmd::Delete { project, purge } => {
            check_name(&project, "project slug")?;
            let query = if purge { "?purge=true" } else { "" };
            ctx.call(
                Method::DELETE,
                &format!("/v1/sys/projects/{}{query}", encode_segment(&project)),
                None,
            )
            .await?;
            eprintln!("Success! Deleted project {project}.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn env(ctx: &RunCtx<'_>, cmd: EnvCmd) -> anyhow::Result<ExitCode> {
    let client = &ctx.project_client()?;
    let out = ctx.out();
    let ctx = Conn { client, out };
    let found = project_file()?;
    match cmd {
        EnvCmd::List { project } => {
            let slug = match project {
                Some(p) => p,
                None => from_file(&found, "project")?,
            };
            let project = ctx.project(&slug).await?;
            if out.json() {
                out.print_json(&project.environments)?;
            } else {
                for env in &project.environments {
                    outln!(out, "{env}");
                }
            }
        }
        EnvCmd::Create { args } => {
            let (slug, rest) = with_project(&args, 2, &found)?;
            let env = &rest[0];
            check_name(&slug, "project slug")?;
            check_name(env, "environment name")?;
            ctx.call(
                Method::POST,
                &format!(
                    "/v1/sys/projects/{}/environments/{}",
                    encode_segment(&slug),
                    encode_segment(env)
                ),
                None,
            )
            .await?;
            eprintln!("Success! Created environment {env} of project {slug}.");
        }
        EnvCmd::Delete { args, purge } => {
            let (slug, rest) = with_project(&args, 2, &found)?;
            let env = &rest[0];
            check_name(&slug, "project slug")?;
            check_name(env, "environment name")?;
            let query = if purge { "?purge=true" } else { "" };
            ctx.call(
                Method::DELETE,
                &format!(
                    "/v1/sys/projects/{}/environments/{}{query}",
                    encode_segment(&slug),
                    encode_segment(env)
                ),
                None,
            )
            .await?;
            eprintln!("Success! Deleted environment {env} of project {slug}.");
        }
        EnvCmd::Diff { args, exit_code } => {
            let (slug, rest) = with_project(&args, 3, &found)?;
            return diff(&ctx, &slug, &rest[0], &rest[1], exit_code).await;
        }
        EnvCmd::Copy {
            args,
            keys,
            overwrite,
            dry_run,
        } => {
            let (slug, rest) = with_project(&args, 3, &found)?;
            copy(&ctx, &slug, &rest[0], &rest[1], &keys, overwrite, dry_run).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The result of comparing two environments: names only.
#[derive(Default, serde::Serialize)]
struct Diff {
    only_in_from: Vec<String>,
    only_in_to: Vec<String>,
    different: Vec<String>,
    same: Vec<String>,
}

async fn diff(
    ctx: &Conn<'_>,
    slug: &str,
    from: &str,
    to: &str,
    exit_code: bool,
) -> anyhow::Result<ExitCode> {
    let project = ctx.project_with_env(slug, from).await?;
    ctx.project_with_env(slug, to).await?;
    let from_keys = env_keys(ctx, &project, from).await?;
    let to_keys = env_keys(ctx, &project, to).await?;
    let mut result = Diff::default();
    let bar = progress(ctx.out, from_keys.len(), "comparing");
    for key in &from_keys {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        if to_keys.binary_search(key).is_err() {
            result.only_in_from.push(key.clone());
            continue;
        }
        // Compared here, dropped at once; a value is never printed.
        let a = read_data(ctx, &project, from, key).await?.map(|(d, _)| d);
        let b = read_data(ctx, &project, to, key).await?.map(|(d, _)| d);
        if a == b {
            result.same.push(key.clone());
        } else {
            result.different.push(key.clone());
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for key in &to_keys {
        if from_keys.binary_search(key).is_err() {
            result.only_in_to.push(key.clone());
        }
    }
    let differs = !(result.only_in_from.is_empty()
        && result.only_in_to.is_empty()
        && result.different.is_empty());
    let out = ctx.out;
    if out.json() {
        out.print_json(&json!({
            "project": slug, "from": from, "to": to,
            "only_in_from": result.only_in_from, "only_in_to": result.only_in_to,
            "different": result.different, "same": result.same,
        }))?;
    } else {
        let groups = [
            (format!("only in {from}"), &result.only_in_from, "-"),
            (format!("only in {to}"), &result.only_in_to, "+"),
            ("different".to_string(), &result.different, "~"),
            ("same".to_string(), &result.same, "="),
        ];
        for (title, keys, mark) in groups {
            if keys.is_empty() {
                continue;
            }
            outln!(out, "{} ({}):", out.bold(&title), keys.len());
            for key in keys {
                let line = format!("  {mark} {key}");
                outln!(
                    out,
                    "{}",
                    match mark {
                        "-" => out.red(&line),
                        "+" => out.green(&line),
                        "~" => out.yellow(&line),
                        _ => line,
                    }
                );
            }
        }
        if from_keys.is_empty() && to_keys.is_empty() {
            outln!(out, "Both environments are empty.");
        }
    }
    Ok(if exit_code && differs {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn copy(
    ctx: &Conn<'_>,
    slug: &str,
    from: &str,
    to: &str,
    only: &[String],
    overwrite: bool,
    dry_run: bool,
) -> anyhow::Result<()> {
    if from == to {
        bail!("FROM and TO are the same environment ({from})");
    }
    let project = ctx.project_with_env(slug, from).await?;
    ctx.project_with_env(slug, to).await?;
    let source = env_keys(ctx, &project, from).await?;
    let keys: Vec<String> = if only.is_empty() {
        source
    } else {
        // Every named key must exist before anything is written.
        let missing: Vec<&String> = only
            .iter()
            .filter(|k| source.binary_search(k).is_err())
            .collect();
        if !missing.is_empty() {
            bail!(
                "not in {slug}/{from}: {}; nothing was copied",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        only.to_vec()
    };
    let target_keys = env_keys(ctx, &project, to).await?;
    let mut report: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let bar = progress(ctx.out, keys.len(), "copying");
    for key in &keys {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
        let exists = target_keys.binary_search(key).is_ok();
        if exists && !overwrite {
            report.entry("skipped").or_default().push(key.clone());
            continue;
        }
        if dry_run {
            report.entry("would copy").or_default().push(key.clone());
            continue;
        }
        let Some((data, _)) = read_data(ctx, &project, from, key).await? else {
            report.entry("skipped").or_default().push(key.clone());
            continue;
        };
        let mut body = json!({ "data": data });
        if !overwrite {
            // Only if still absent: a value written meanwhile is not replaced.
            body["options"] = json!({ "cas": 0 });
        }
        match ctx
            .client
            .request_json(Method::POST, &project.api("data", to, key), Some(&body))
            .await
        {
            Ok(_) => report.entry("copied").or_default().push(key.clone()),
            Err(zafe_client::Error::ServerError {
                status: 400,
                errors,
            }) if errors.iter().any(|e| e.contains("check-and-set")) => {
                report.entry("skipped").or_default().push(key.clone())
            }
            Err(e) => {
                return Err(anyhow::Error::from(e).context(format!(
                    "copying {key} (keys before it were copied: {})",
                    report
                        .get("copied")
                        .map(|v| v.join(", "))
                        .unwrap_or_default()
                )));
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let out = ctx.out;
    if out.json() {
        out.print_json(&json!({
            "copied": report.get("copied").cloned().unwrap_or_default(),
            "skipped": report.get("skipped").cloned().unwrap_or_default(),
            "would_copy": report.get("would copy").cloned().unwrap_or_default(),
        }))?;
    } else {
        for (what, keys) in &report {
            outln!(out, "{what} ({}): {}", keys.len(), keys.join(", "));
        }
        if report.contains_key("skipped") && !overwrite {
            eprintln!("Keys that exist in {to} were skipped; use --overwrite to replace them.");
        }
        if keys.is_empty() {
            outln!(out, "Nothing to copy: {slug}/{from} is empty.");
        }
    }
    Ok(())
}

pub(crate) async fn member(ctx: &RunCtx<'_>, cmd: MemberCmd) -> anyhow::Result<ExitCode> {
    let client = &ctx.project_client()?;
    let out = ctx.out();
    let ctx = Conn { client, out };
    let found = project_file()?;
    let member_path = |slug: &str, who: &str| {
        format!(
            "/v1/sys/projects/{}/members/{}",
            encode_segment(slug),
            encode_segment(who)
        )
    };
    match cmd {
        MemberCmd::List { project } => {
            let slug = match project {
                Some(p) => p,
                None => from_file(&found, "project")?,
            };
            check_name(&slug, "project slug")?;
            let reply = ctx
                .call(
                    Method::GET,
                    &format!(
                        "/v1/sys/projects/{}/members?list=true",
                        encode_segment(&slug)
                    ),
                    None,
                )
                .await?;
            let members = reply["data"]["members"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if out.json() {
                out.print_json(&members)?;
            } else {
                outln!(out, "{:36}  {:9}  Added by", "Email", "Role");
                for m in &members {
                    outln!(
                        out,
                        "{:36}  {:9}  {}",
                        m["email"].as_str().unwrap_or_default(),
                        m["role"].as_str().unwrap_or_default(),
                        m["added_by"].as_str().unwrap_or_default()
                    );
                }
            }
        }
        MemberCmd::Add { args, role } => {
            let (slug, rest) = with_project(&args, 2, &found)?;
            check_name(&slug, "project slug")?;
            ctx.call(
                Method::POST,
                &member_path(&slug, &rest[0]),
                Some(&json!({ "role": role })),
            )
            .await?;
            eprintln!("Success! {} is {role} of project {slug}.", rest[0]);
        }
        MemberCmd::Role { args } => {
            let (slug, rest) = with_project(&args, 3, &found)?;
            check_name(&slug, "project slug")?;
            // Only an existing member's role changes: adding is `member add`.
            ctx.call(Method::GET, &member_path(&slug, &rest[0]), None)
                .await?;
            ctx.call(
                Method::POST,
                &member_path(&slug, &rest[0]),
                Some(&json!({ "role": rest[1] })),
            )
            .await?;
            eprintln!("Success! {} is now {} of project {slug}.", rest[0], rest[1]);
        }
        MemberCmd::Remove { args } => {
            let (slug, rest) = with_project(&args, 2, &found)?;
            check_name(&slug, "project slug")?;
            ctx.call(Method::DELETE, &member_path(&slug, &rest[0]), None)
                .await?;
            eprintln!("Success! Removed {} from project {slug}.", rest[0]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A value to store: from a file, a hidden prompt, or standard input.
fn read_value(from_file: Option<&std::path::Path>, key: &str) -> anyhow::Result<Zeroizing<String>> {
    let value = match from_file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None if std::io::stdin().is_terminal() => Zeroizing::new(rpassword::prompt_password(
            format!("Value for {key} (hidden): "),
        )?),
        None => {
            let mut text = Zeroizing::new(String::new());
            std::io::stdin().read_to_string(&mut text)?;
            text
        }
    };
    // One trailing newline (from `echo` or an editor) is not part of the value.
    let trimmed = value
        .strip_suffix("\r\n")
        .or_else(|| value.strip_suffix('\n'))
        .unwrap_or(&value);
    Ok(Zeroizing::new(trimmed.to_string()))
}

fn check_key(key: &str) -> anyhow::Result<()> {
    if key.is_empty()
        || key.len() > 256
        || key.starts_with('/')
        || key.ends_with('/')
        || key.chars().any(char::is_control)
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        bail!(
            "invalid key {key:?}: a name such as DB_URL (no control characters, empty, '.' or '..' segments)"
        );
    }
    Ok(())
}

pub(crate) async fn secret(ctx: &RunCtx<'_>, args: SecretArgs) -> anyhow::Result<ExitCode> {
    let client = &ctx.project_client()?;
    let out = ctx.out();
    let ctx = Conn { client, out };
    let found = project_file()?;
    let slug = match args.scope.project {
        Some(p) => p,
        None => from_file(&found, "project")?,
    };
    let env = match args.scope.env {
        Some(e) => e,
        None => from_file(&found, "environment")?,
    };
    let project = ctx.project_with_env(&slug, &env).await?;
    match args.command {
        SecretCmd::Set { key, from_file } => {
            check_key(&key)?;
            let value = read_value(from_file.as_deref(), &key)?;
            let body = json!({ "data": { "value": value.as_str() } });
            let reply = ctx
                .call(Method::POST, &project.api("data", &env, &key), Some(&body))
                .await?;
            eprintln!(
                "Success! Set {key} in {slug}/{env} (version {}).",
                reply["data"]["version"]
            );
        }
        SecretCmd::Get { key, version } => {
            check_key(&key)?;
            let mut path = project.api("data", &env, &key);
            if let Some(v) = version {
                path.push_str(&format!("?version={v}"));
            }
            let reply = match ctx.client.request_json(Method::GET, &path, None).await {
                Ok(r) => r.unwrap_or_default(),
                Err(zafe_client::Error::ServerError { status: 404, .. }) => {
                    eprintln!("No secret {key} in {slug}/{env}.");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => return Err(e.into()),
            };
            let value = &reply["data"]["data"]["value"];
            if out.json() {
                out.print_json(&reply["data"])?;
            } else if let Some(text) = value.as_str() {
                out.write_raw(text.as_bytes())?;
                if out.terminal() {
                    out.write_raw(b"\n")?;
                }
            } else {
                bail!(
                    "{slug}/{env}/{key} has no string field \"value\"; read it with `zafe kv get`"
                );
            }
        }
        SecretCmd::List => {
            let keys = env_keys(&ctx, &project, &env).await?;
            if out.json() {
                out.print_json(&keys)?;
            } else {
                for key in keys {
                    outln!(out, "{key}");
                }
            }
        }
        SecretCmd::History { key } => {
            check_key(&key)?;
            let reply = ctx
                .call(Method::GET, &project.api("metadata", &env, &key), None)
                .await?;
            let versions = reply["data"]["versions"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if out.json() {
                out.print_json(&versions)?;
            } else {
                let mut rows: Vec<(u64, &Value)> = versions
                    .iter()
                    .filter_map(|(n, v)| n.parse().ok().map(|n| (n, v)))
                    .collect();
                rows.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
                outln!(out, "{:7}  {:30}  {:12}  By", "Version", "Created", "State");
                for (n, v) in rows {
                    let state = if v["destroyed"].as_bool() == Some(true) {
                        "destroyed"
                    } else if v["deletion_time"].as_str().is_some_and(|t| !t.is_empty()) {
                        "deleted"
                    } else {
                        "live"
                    };
                    outln!(
                        out,
                        "{n:7}  {:30}  {state:12}  {}",
                        v["created_time"].as_str().unwrap_or_default(),
                        v["created_by"].as_str().unwrap_or("-")
                    );
                }
            }
        }
        SecretCmd::Delete { key } => {
            check_key(&key)?;
            ctx.call(Method::DELETE, &project.api("metadata", &env, &key), None)
                .await?;
            eprintln!("Success! Deleted {key} from {slug}/{env} (every version).");
        }
    }
    Ok(ExitCode::SUCCESS)
}
