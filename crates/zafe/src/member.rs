//! `zafe member list|add|role|remove`: a project's members and their roles.

use std::process::ExitCode;

use serde_json::json;
use zafe_client::Method;
use zafe_client::path::encode_segment;

use crate::ctx::Ctx;
use crate::output::outln;
use crate::project::{Conn, check_name, from_file, project_file, with_project};

pub(crate) const EXAMPLES: &str = "\
Examples:
  zafe member list myapp
  zafe member add myapp alice@example.com --role member
  zafe member role myapp alice@example.com operator
  zafe member remove myapp alice@example.com

Roles, weakest first: readonly (read secrets), member (write them), operator (destroy
versions, manage environments), admin (manage members, delete the project).";

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
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

pub(crate) async fn run(ctx: &Ctx<'_>, cmd: Args) -> anyhow::Result<ExitCode> {
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
        Args::List { project } => {
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
        Args::Add { args, role } => {
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
        Args::Role { args } => {
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
        Args::Remove { args } => {
            let (slug, rest) = with_project(&args, 2, &found)?;
            check_name(&slug, "project slug")?;
            ctx.call(Method::DELETE, &member_path(&slug, &rest[0]), None)
                .await?;
            eprintln!("Success! Removed {} from project {slug}.", rest[0]);
        }
    }
    Ok(ExitCode::SUCCESS)
}
