//! `zafe server-id show | list | forget | migrate`: the client's pins.

use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;
use zafe_client::{Client, PinStore};

use crate::ctx::Ctx;

use crate::output::{Out, outln};
use crate::status::{identity_json, identity_rows};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
    /// Verify and show the identity of the server at --addr (pinning it on first use)
    #[command(after_help = "\
Examples:
  zafe server-id show
  zafe --addr https://zafe.example.com:8200 server-id show --format json")]
    Show,

    /// List every pinned server identity
    #[command(after_help = "\
Examples:
  zafe server-id list
  zafe server-id list --format json")]
    List,

    /// Forget the pinned identity of an address (after its identity key was deliberately replaced)
    #[command(after_help = "\
Examples:
  zafe server-id forget https://zafe.example.com:8200

The next connection to that address pins whatever identity the server there proves: check it.")]
    Forget {
        /// The server address whose pin to remove
        #[arg(value_name = "ADDR")]
        addr: String,
    },

    /// Move a pin to a new address, once the server there proves the same identity key
    #[command(after_help = "\
Examples:
  zafe server-id migrate https://old.example.com:8200 https://zafe.example.com:8200

The server at NEW must prove the key pinned for OLD; otherwise nothing changes.")]
    Migrate {
        /// The address the identity is pinned for now
        #[arg(value_name = "OLD")]
        old: String,
        /// The server's new address
        #[arg(value_name = "NEW")]
        new: String,
    },
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    let out = ctx.out();
    match args {
        Args::Show => show(&ctx.client()?, out).await?,
        Args::List => list(&ctx.pin_store()?, out)?,
        Args::Forget { addr } => forget(&ctx.pin_store()?, out, &addr)?,
        Args::Migrate { old, new } => migrate(&ctx.client_at(new)?, out, &old).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
    let checked = client.verify_identity().await?;
    if out.json() {
        let mut value = identity_json(&checked);
        value["addr"] = json!(client.addr());
        return out.print_json(&value);
    }
    let mut rows = vec![("Address", client.addr().to_string())];
    rows.extend(identity_rows(&checked, out));
    rows.push(("Public Key", checked.pin.public_key.clone()));
    rows.push(("Pin File", client.pins().path().display().to_string()));
    out.print_table(&rows);
    Ok(())
}

fn list(pins: &PinStore, out: Out<'_>) -> anyhow::Result<()> {
    let all = pins.list()?;
    if out.json() {
        return out.print_json(&all);
    }
    if all.is_empty() {
        outln!(
            out,
            "No server identity is pinned yet ({}).",
            pins.path().display()
        );
        return Ok(());
    }
    let width = all
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max("Address".len());
    outln!(
        out,
        "{:width$}    {:35}    {:9}    First Seen",
        "Address",
        "Server ID",
        "TLS-Bound"
    );
    outln!(
        out,
        "{:width$}    {:35}    {:9}    ----------",
        "-------",
        "---------",
        "---------"
    );
    for (addr, pin) in &all {
        outln!(
            out,
            "{addr:width$}    {:35}    {:9}    {}",
            pin.server_id,
            pin.tls_bound,
            pin.first_seen_rfc3339()
        );
    }
    Ok(())
}

fn forget(pins: &PinStore, out: Out<'_>, addr: &str) -> anyhow::Result<()> {
    let key = zafe_client::config::addr_key(addr)?;
    let Some(pin) = pins.forget(addr)? else {
        bail!("no identity is pinned for {key}");
    };
    if out.json() {
        return out.print_json(&json!({ "addr": key, "forgotten": pin }));
    }
    outln!(
        out,
        "Forgot the identity pinned for {key} ({}).",
        pin.server_id
    );
    outln!(
        out,
        "{}",
        out.yellow(
            "The next connection to this address pins whatever identity the server there proves: \
             check the new server id with the server's operator."
        )
    );
    Ok(())
}

/// `client` points at NEW.
async fn migrate(client: &Client, out: Out<'_>, old: &str) -> anyhow::Result<()> {
    let pin = client.migrate_pin_from(old).await?;
    let old = zafe_client::config::addr_key(old)?;
    if out.json() {
        return out.print_json(&json!({ "from": old, "to": client.addr(), "pin": pin }));
    }
    outln!(
        out,
        "Moved the pin for {} from {old} to {}: the server there proved the same identity key.",
        pin.server_id,
        client.addr()
    );
    Ok(())
}
