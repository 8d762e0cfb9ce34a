//! `zafe env list|create|delete|diff|copy`: a project's environments.
//! `diff` and `copy` read values to compare or copy them, but never print one.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;
use zafe_client::Method;
use zafe_client::path::encode_segment;

use crate::ctx::Ctx;
use crate::output::outln;
use crate::project::{
    Conn, check_name, env_keys, from_file, progress, project_file, read_data, with_project,
};

pub(crate) const EXAMPLES: &str = "\
Examples:
  zafe env list myapp
  zafe env create myapp qa
  zafe env delete myapp qa --purge
  zafe env diff myapp dev prod                       Names only: never a value
  zafe env copy myapp dev staging --keys DB_URL,API_KEY
  zafe env copy myapp dev staging --overwrite
  zafe env diff dev prod                             The project from .zafe.toml";

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
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

pub(crate) async fn run(ctx: &Ctx<'_>, cmd: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.project_client()?;
    let out = ctx.out();
    let ctx = Conn { client, out };
    let found = project_file()?;
    match cmd {
        Args::List { project } => {
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
        Args::Create { args } => {
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
        Args::Delete { args, purge } => {
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
        Args::Diff { args, exit_code } => {
            let (slug, rest) = with_project(&args, 3, &found)?;
            return diff(&ctx, &slug, &rest[0], &rest[1], exit_code).await;
        }
        Args::Copy {
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
