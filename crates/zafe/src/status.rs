//! `zafe status`: seal status, health and the server's verified identity.

use std::process::ExitCode;

use serde_json::json;
use zafe_client::{Checked, SealStatus};

use crate::ctx::Ctx;
use crate::output::Out;

pub(crate) async fn run(ctx: &Ctx<'_>) -> anyhow::Result<ExitCode> {
    let client = &ctx.client()?;
    let out = ctx.out();
    // Identity first: nothing the server says is worth showing if it is not
    // the server that was pinned.
    let checked = client.verify_identity().await?;
    let seal = client.seal_status().await?;
    let health = client.health().await?;

    let proven = &checked.identity.server_id;
    if let Some(claimed) = seal.server_id.as_deref().filter(|c| c != proven) {
        eprintln!(
            "zafe: warning: seal-status names {claimed}, but the identity proof was {proven}; \
             are several servers behind this address?"
        );
    }

    if out.json() {
        let mut value = serde_json::to_value(&seal)?;
        value["health"] = serde_json::to_value(&health)?;
        value["identity"] = identity_json(&checked);
        out.print_json(&value)?;
    } else {
        let mut rows = seal_rows(&seal, out);
        rows.push(("Standby", health.standby.to_string()));
        if let Some(time) = time::OffsetDateTime::from_unix_timestamp(health.server_time_utc)
            .ok()
            .filter(|_| health.server_time_utc > 0)
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
        {
            rows.push(("Server Time", time));
        }
        rows.extend(identity_rows(&checked, out));
        // Key rotation progress, for callers whose token may read it.
        if !seal.sealed
            && client.config().token.is_some()
            && let Ok(Some(keys)) = client
                .request_json(zafe_client::Method::GET, "/v1/sys/key-status", None)
                .await
        {
            rows.extend(crate::operator::key_rows(&keys["data"]));
        }
        out.print_table(&rows);
    }
    // Like `vault status`: 2 when sealed (which includes not initialised).
    Ok(if seal.sealed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The rows `vault status` and `vault operator unseal` show.
pub(crate) fn seal_rows(seal: &SealStatus, out: Out<'_>) -> Vec<(&'static str, String)> {
    let sealed = if seal.sealed {
        out.red("true")
    } else {
        out.green("false")
    };
    let mut rows = vec![
        ("Seal Type", seal.seal_type.clone()),
        ("Initialized", seal.initialized.to_string()),
        ("Sealed", sealed),
        ("Total Shares", seal.n.to_string()),
        ("Threshold", seal.t.to_string()),
    ];
    if seal.sealed && seal.initialized {
        rows.push(("Unseal Progress", format!("{}/{}", seal.progress, seal.t)));
        if !seal.nonce.is_empty() {
            rows.push(("Unseal Nonce", seal.nonce.clone()));
        }
    }
    rows.push(("Version", seal.version.clone()));
    for (key, value) in [
        ("Storage Type", &seal.storage_type),
        ("Cluster Name", &seal.cluster_name),
        ("Cluster ID", &seal.cluster_id),
    ] {
        if let Some(value) = value {
            rows.push((key, value.clone()));
        }
    }
    rows
}

pub(crate) fn identity_rows(checked: &Checked, out: Out<'_>) -> Vec<(&'static str, String)> {
    let binding = if checked.identity.tls_bound {
        out.green("verified, bound to the TLS certificate")
    } else if checked.pin.tls_bound {
        // Cannot happen (refused as a downgrade), but never claim more than we know.
        out.red("verified, NOT bound to TLS")
    } else {
        out.yellow("verified, not bound to TLS (plain HTTP, or TLS ends at a proxy)")
    };
    vec![
        ("Server ID", out.bold(&checked.identity.server_id)),
        ("Identity", binding),
        ("Pinned Since", checked.pin.first_seen_rfc3339()),
    ]
}

pub(crate) fn identity_json(checked: &Checked) -> serde_json::Value {
    json!({
        "server_id": checked.identity.server_id,
        "public_key": checked.pin.public_key,
        "tls_bound": checked.identity.tls_bound,
        "pinned_since": checked.pin.first_seen_rfc3339(),
    })
}
