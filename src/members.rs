//! Which members the client talks to: `--members`, else `SKIFF_MEMBERS`, else the client config
//! file (`--client-config`, `SKIFF_CLIENT_CONFIG`, or `~/.config/skiff/client.toml` with
//! `members = ["host:port", ...]`), else the single-member default `127.0.0.1:7420`.

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
        Ok(vec![DEFAULT_ADDR.to_string()])
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        let mut client = Client::new(&self.addrs()?).map_err(anyhow::Error::msg)?;
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            anyhow::bail!("--timeout: must be a positive number of seconds, got {}", self.timeout);
        }
        client.deadline = Duration::from_secs_f64(self.timeout);
        Ok(client)
    }
}
