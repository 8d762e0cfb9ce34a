//! `zafe project create|list|show|delete`, and what the commands on a
//! project's parts ([`crate::env`], [`crate::member`], [`crate::secret`])
//! share: the project and environment they act on, and the calls to reach
//! them (R-ACL-2, R-KV-2; docs/design/people-and-workflow.md).
//!
//! Inside a repository with a `.zafe.toml`, the project and environment
//! come from that file, so `zafe env list` or `zafe secret get DB_URL`
//! need no flags; a project or environment given on the command line wins.
//!
//! Secrets of a project live one per key at
//! `<mount>/data/<project>/<env>/<KEY>` with data `{"value": ...}`, plain
//! KV v2 secrets that Vault clients see too. `env diff` and `env copy`
//! read values to compare or copy them, but never print one.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use zafe_client::path::{encode_path, encode_segment};
use zafe_client::project_file::{self, Found};
use zafe_client::{Client, Method};

use crate::ctx::Ctx;
use crate::output::{Out, outln};

pub(crate) const EXAMPLES: &str = "\
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

/// `--project` / `--env` where a command takes them as flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Scope {
    /// The project (default: `project` in .zafe.toml)
    #[arg(long, short = 'p', global = true, value_name = "SLUG")]
    pub project: Option<String>,
    /// The environment (default: `environment` in .zafe.toml)
    #[arg(long, short = 'e', global = true, value_name = "ENV")]
    pub env: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
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

/// What a command runs against: the project, and where its secrets live.
pub(crate) struct Conn<'a> {
    pub(crate) client: &'a Client,
    pub(crate) out: Out<'a>,
}

/// A project as the server describes it.
pub(crate) struct ProjectInfo {
    pub(crate) slug: String,
    pub(crate) mount: String,
    pub(crate) environments: Vec<String>,
}

/// The project file of the working directory, if any (a malformed one is
/// an error even when flags name everything: it would mislead later).
pub(crate) fn project_file() -> anyhow::Result<Option<Found>> {
    Ok(project_file::find()?)
}

pub(crate) fn from_file(found: &Option<Found>, what: &str) -> anyhow::Result<String> {
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
pub(crate) fn with_project(
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

pub(crate) fn check_name(name: &str, what: &str) -> anyhow::Result<()> {
    if project_file::is_valid_name(name) {
        Ok(())
    } else {
        bail!(
            "invalid {what} {name:?}: use lowercase letters, digits, '-' and '_', starting with a letter or digit"
        )
    }
}

pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Conn<'_> {
    pub(crate) async fn call(
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

    pub(crate) async fn project(&self, slug: &str) -> anyhow::Result<ProjectInfo> {
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
    pub(crate) async fn project_with_env(
        &self,
        slug: &str,
        env: &str,
    ) -> anyhow::Result<ProjectInfo> {
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
    pub(crate) fn api(&self, endpoint: &str, env: &str, key: &str) -> String {
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
pub(crate) fn progress(out: Out<'_>, len: usize, what: &str) -> Option<indicatif::ProgressBar> {
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
pub(crate) async fn env_keys(
    ctx: &Conn<'_>,
    project: &ProjectInfo,
    env: &str,
) -> anyhow::Result<Vec<String>> {
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
pub(crate) async fn read_data(
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

pub(crate) async fn run(ctx: &Ctx<'_>, cmd: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.project_client()?;
    let out = ctx.out();
    let ctx = Conn { client, out };
    let found = project_file()?;
    match cmd {
        Args::Create {
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
        Args::List => {
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
        Args::Show { project } => {
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
        Args::Delete { project, purge } => {
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
