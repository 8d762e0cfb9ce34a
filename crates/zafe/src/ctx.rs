//! What every command runs with: the global flags (address, CA, expected
//! server id, format) and where its output goes. Commands get their client
//! from here, so that each builds it at the same point as before: first,
//! or only when it needs one (`audit verify --from-export`, `run` without
//! references).

use zafe_client::{Client, ClientConfig, Flags, PinStore, Token};

use crate::cli::{Format, Global};
use crate::output::Out;

/// The context a command runs in.
pub(crate) struct Ctx<'w> {
    global: Global,
    out: Out<'w>,
}

impl<'w> Ctx<'w> {
    pub(crate) fn new(global: Global, out: Out<'w>) -> Self {
        Self { global, out }
    }

    /// Where the command's output goes, and in which format.
    pub(crate) fn out(&self) -> Out<'w> {
        self.out
    }

    /// `--format`.
    pub(crate) fn format(&self) -> Format {
        self.global.format
    }

    /// `--server-id`: the server id the user expects.
    pub(crate) fn server_id(&self) -> Option<&str> {
        self.global.server_id.as_deref()
    }

    /// The server address from `--addr`, else ZAFE_ADDR or VAULT_ADDR, if any.
    pub(crate) fn addr(&self) -> Option<String> {
        self.global.addr.clone().or_else(|| {
            ["ZAFE_ADDR", "VAULT_ADDR"]
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
        })
    }

    /// A client from the global flags and the environment.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        self.client_for(None)
    }

    /// A client for another address than the flags and the environment say
    /// (for `server-id migrate`, which talks to the new address).
    pub(crate) fn client_at(&self, addr: String) -> anyhow::Result<Client> {
        self.client_for(Some(addr))
    }

    fn client_for(&self, addr: Option<String>) -> anyhow::Result<Client> {
        let flags = Flags {
            addr: addr.or_else(|| self.global.addr.clone()),
            ca_cert: self.global.ca_cert.clone(),
            server_id: self.global.server_id.clone(),
        };
        Ok(Client::new(ClientConfig::from_env_and_flags(&flags)?)?)
    }

    /// A client for project commands: inside a repository whose `.zafe.toml`
    /// names a `server`, that address is used unless `--addr`, `ZAFE_ADDR` or
    /// `VAULT_ADDR` says otherwise.
    pub(crate) fn project_client(&self) -> anyhow::Result<Client> {
        let from_env = ["ZAFE_ADDR", "VAULT_ADDR"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|a| !a.is_empty()));
        if self.global.addr.is_none()
            && !from_env
            && let Some(server) = crate::project::project_file()?.and_then(|f| f.file.server)
        {
            return self.client_at(server);
        }
        self.client()
    }

    /// The pin store alone: listing and forgetting pins needs neither a
    /// server nor a token.
    pub(crate) fn pin_store(&self) -> anyhow::Result<PinStore> {
        Ok(PinStore::new(&zafe_client::config::config_dir_from_env()?))
    }
}

/// The same client settings with another token (or none).
pub(crate) fn with_token(client: &Client, token: Option<Token>) -> anyhow::Result<Client> {
    let mut config = client.config().clone();
    config.token = token;
    Ok(Client::new(config)?)
}
