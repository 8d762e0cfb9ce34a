//! `zafe operator init | unseal | seal`.

use anyhow::bail;
use zafe_client::Client;
use zeroize::Zeroizing;

use crate::output::Out;
use crate::output::outln;
use crate::status::seal_rows;

pub(crate) async fn init(
    client: &Client,
    out: Out<'_>,
    shares: u8,
    threshold: u8,
) -> anyhow::Result<()> {
    if threshold > shares {
        bail!("the key threshold ({threshold}) cannot exceed the number of key shares ({shares})");
    }
    let init = client.init(shares, threshold).await?;
    if out.json() {
        return out.print_json(&init);
    }
    for (i, key) in init.keys_base64.iter().enumerate() {
        outln!(out, "Unseal Key {}: {key}", i + 1);
    }
    outln!(out);
    outln!(out, "Initial Root Token: {}", init.root_token);
    outln!(out);
    outln!(
        out,
        "Zafe initialized with {shares} key shares and a key threshold of {threshold}."
    );
    outln!(out);
    outln!(
        out,
        "{}",
        out.yellow(&format!(
            "WARNING: the unseal keys and the root token are shown only this once. Store each key \
             separately and securely (with different people or in different places): whoever holds \
             {threshold} of them can unseal the server, and lost keys cannot be recovered.\n\
             Each time the server starts it is sealed; unseal it with `zafe operator unseal`, \
             {threshold} times with different keys."
        ))
    );
    Ok(())
}

pub(crate) async fn unseal(
    client: &Client,
    out: Out<'_>,
    key: Option<zafe_core::secret::SecretString>,
    reset: bool,
) -> anyhow::Result<()> {
    let status = if reset {
        client.unseal_reset().await?
    } else {
        let key = match key {
            Some(key) => Zeroizing::new(key.expose().to_string()),
            None => crate::prompt::read_unseal_key()?,
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("no unseal key given");
        }
        client.unseal(key).await?
    };
    if out.json() {
        out.print_json(&status)
    } else {
        out.print_table(&seal_rows(&status, out));
        Ok(())
    }
}

pub(crate) async fn seal(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
    client.seal().await?;
    if out.json() {
        out.print_json(&serde_json::json!({ "sealed": true }))
    } else {
        outln!(out, "Success! Zafe is sealed.");
        Ok(())
    }
}
