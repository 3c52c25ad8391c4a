//! Which members the client talks to: `--members`, else `SKIFF_MEMBERS`, else the client config
//! file (`--client-config`, `SKIFF_CLIENT_CONFIG`, or `~/.config/skiff/client.toml` with
//! `members = ["host:port", ...]`), else the credentials file's `members`, else the single-member
//! default `127.0.0.1:7420`.
//!
//! Which credentials it shows: `--credentials`, else `SKIFF_CREDENTIALS`, else `./skiff-data/admin.conf`
//! (what a default single member, started here with `skiff node`, writes at bootstrap, as k3s
//! writes its kubeconfig), else `~/.config/skiff/credentials.conf`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use skiff_client::Client;
use skiff_server::config::DEFAULT_ADDR;

#[derive(clap::Args, Debug, Clone)]
pub struct MembersArgs {
    /// Member addresses (host:port), comma-separated; tried in order, moving on when one is down.
    #[arg(long, global = true, env = "SKIFF_MEMBERS", value_delimiter = ',')]
    pub members: Vec<String>,
    /// Client config file with `members = [...]`.
    #[arg(long, global = true, env = "SKIFF_CLIENT_CONFIG")]
    pub client_config: Option<PathBuf>,
    /// Credentials file (CA, client certificate and key), as bootstrap writes to
    /// `<data_dir>/admin.conf` and `skiff cluster credentials` makes.
    #[arg(long, global = true, env = "SKIFF_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// How long to keep trying members before giving up, in seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    pub timeout: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    members: Vec<String>,
}

impl MembersArgs {
    /// The addresses to use, from the first source that has some.
    pub fn addrs(&self) -> anyhow::Result<Vec<String>> {
        let members: Vec<String> =
            self.members.iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect();
        if !members.is_empty() {
            return Ok(members);
        }
        let path = match &self.client_config {
            Some(p) => Some(p.clone()),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".config/skiff/client.toml"))
                .filter(|p| p.exists()),
        };
        if let Some(path) = path {
            let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
            let config: ClientConfig = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
            if config.members.is_empty() {
                anyhow::bail!("{}: field `members`: list at least one member address", path.display());
            }
            return Ok(config.members);
        }
        if let Some(creds) = self.load_credentials()? {
            if !creds.members.is_empty() {
                return Ok(creds.members);
            }
        }
        Ok(vec![DEFAULT_ADDR.to_string()])
    }

    /// The credentials file to use, if one is found (see the module docs).
    pub fn credentials_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.credentials {
            return Some(p.clone());
        }
        let local = PathBuf::from("./skiff-data/admin.conf");
        if local.exists() {
            return Some(local);
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/skiff/credentials.conf")).filter(|p| p.exists())
    }

    pub fn load_credentials(&self) -> anyhow::Result<Option<skiff_tls::Credentials>> {
        match self.credentials_path() {
            Some(path) => Ok(Some(skiff_tls::Credentials::load(&path)?)),
            None => Ok(None),
        }
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        let Some(creds) = self.load_credentials()? else {
            anyhow::bail!(
                "no credentials: pass --credentials FILE or set SKIFF_CREDENTIALS (bootstrap writes <data_dir>/admin.conf; scripts/cluster-up.sh copies the compose cluster's to ./skiff-credentials.conf)"
            );
        };
        let connector = skiff_tls::credentials::connector(&creds)?;
        let mut client = Client::with_connector(&self.addrs()?, connector).map_err(anyhow::Error::msg)?;
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            anyhow::bail!("--timeout: must be a positive number of seconds, got {}", self.timeout);
        }
        client.deadline = Duration::from_secs_f64(self.timeout);
        Ok(client)
    }
}
