//! `zafe inject` (R-DEV-4): a secret value written out on purpose, for
//! tools that need a file: renders a template in which `{{ zafe://... }}`
//! stands for a value (`zafe_core::template`), with every reference
//! resolved in one batched request. (`zafe export` is its sibling,
//! [`crate::export`].)
//!
//! Output files are created owner-only (0600) from their first byte and
//! replaced atomically (`files::write_atomic`); an existing file's looser
//! mode is not kept. Values are held as `SecretString`s and the rendered
//! text is zeroized after writing.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use zafe_core::reference::Reference;
use zafe_core::template::Template;
use zeroize::Zeroizing;

use crate::ctx::Ctx;
use crate::files;

pub(crate) const EXAMPLES: &str = "\
Examples:
  zafe inject -i config.yml.tpl -o config.yml
  zafe inject < app.conf.tpl > app.conf       From standard input to standard output

In the template, {{ zafe://myapp/prod/DB_URL }} or {{ zafe:///secret/infra/db#password }}
is replaced by the value; other {{ ... }} (Helm, Jinja) are left alone. All references are
resolved in one request, and nothing is written unless every one resolves.
The output file is created with mode 0600.";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The template [default: standard input]
    #[arg(long, short = 'i', value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Where to write the result (created 0600) [default: standard output]
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The largest template read, in bytes.
const MAX_TEMPLATE_BYTES: u64 = 16 * 1024 * 1024;

/// `zafe inject`.
pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.project_client()?;
    let text = Zeroizing::new(read_input(args.input.as_ref())?);
    let source = args
        .input
        .as_ref()
        .map_or("standard input".to_string(), |p| p.display().to_string());
    let rendered = render(client, &text, &source).await?;
    files::write_output(ctx.out(), args.output.as_deref(), rendered.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Renders a template (`source` names it in errors), with every reference resolved in one
/// batched request. `zafe inject` and `zafe agent run` both render through here.
pub(crate) async fn render(
    client: &zafe_client::Client,
    text: &str,
    source: &str,
) -> anyhow::Result<Zeroizing<String>> {
    let template = Template::parse(text).map_err(|e| anyhow!("{source}: {e}"))?;
    let references: Vec<Reference> = template.references().into_iter().cloned().collect();
    let values = if references.is_empty() {
        Default::default()
    } else {
        client.resolve(&references).await?
    };
    Ok(Zeroizing::new(template.render(|reference| {
        values
            .get(reference)
            .map(|value| value.expose())
            .expect("every reference was resolved")
    })))
}

fn read_input(input: Option<&PathBuf>) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    match input {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            file.take(MAX_TEMPLATE_BYTES + 1)
                .read_to_end(&mut bytes)
                .with_context(|| format!("cannot read {}", path.display()))?;
        }
        None => {
            std::io::stdin()
                .lock()
                .take(MAX_TEMPLATE_BYTES + 1)
                .read_to_end(&mut bytes)
                .context("cannot read standard input")?;
        }
    }
    if bytes.len() as u64 > MAX_TEMPLATE_BYTES {
        bail!(
            "the template is larger than {} MiB",
            MAX_TEMPLATE_BYTES / 1024 / 1024
        );
    }
    String::from_utf8(bytes).map_err(|_| anyhow!("the template is not UTF-8 text"))
}
