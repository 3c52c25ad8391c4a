//! `skiff cluster status | add-member | remove-member | join-token | credentials`.

use std::io::Write;

use comfy_table::{presets::NOTHING, Table};
use skiff_client::CallKind;
use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::security_client::SecurityClient;
use skiff_proto::api::{
    AddMemberRequest, ClusterStatus, IssueCredentialRequest, JoinTokenRequest, RemoveMemberRequest, StatusRequest,
};

use crate::members::MembersArgs;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members, their role, the leader, the term, and each member's last log and applied index.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Add a member. Start it with `skiff node` (no `initial_members`) before or after.
    AddMember {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        name: String,
        /// host:port the other members reach it at.
        #[arg(long)]
        addr: String,
    },
    /// Remove a member; voters are rebalanced to stay odd. Its certificate is refused from then on.
    RemoveMember { id: u64 },
    /// Print the token a new member joins with (`skiff node --join ADDR` with SKIFF_JOIN_TOKEN).
    JoinToken {
        /// Replace the token's secret: the old token stops working.
        #[arg(long)]
        rotate: bool,
    },
    /// Make a client credentials file: a certificate for `--name` with `--role`, signed by the
    /// cluster (its key is made here and never sent).
    Credentials {
        #[arg(long)]
        name: String,
        /// admin or read-only (get, list, watch, logs, status).
        #[arg(long, default_value = "read-only")]
        role: String,
        /// Where to write it (mode 0600).
        #[arg(long, short)]
        output: std::path::PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

pub async fn run(cmd: ClusterCommand, members: &MembersArgs) -> anyhow::Result<()> {
    let client = members.client()?;
    match cmd {
        ClusterCommand::Status { output } => {
            let status = client
                .call(CallKind::Read, |ch| async move {
                    ClusterClient::new(ch).status(StatusRequest {}).await.map(|r| r.into_inner())
                })
                .await?;
            match output {
                Format::Json => {
                    writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&status_json(&status))?)?
                }
                Format::Table => print_status(&status)?,
            }
        }
        ClusterCommand::AddMember { id, name, addr } => {
            let req = AddMemberRequest { id, name: name.clone(), addr };
            let resp = client
                .call(CallKind::Write, |ch| {
                    let req = req.clone();
                    async move { ClusterClient::new(ch).add_member(req).await.map(|r| r.into_inner()) }
                })
                .await?;
            writeln!(
                std::io::stdout(),
                "member {id} ({name}) added; voters {:?}, learners {:?}",
                resp.voters,
                resp.learners
            )?;
        }
        ClusterCommand::RemoveMember { id } => {
            let resp = client
                .call(CallKind::Write, |ch| async move {
                    ClusterClient::new(ch).remove_member(RemoveMemberRequest { id }).await.map(|r| r.into_inner())
                })
                .await?;
            writeln!(std::io::stdout(), "member {id} removed; voters {:?}, learners {:?}", resp.voters, resp.learners)?;
        }
        ClusterCommand::JoinToken { rotate } => {
            let kind = if rotate { CallKind::Write } else { CallKind::Read };
            let resp = client
                .call(kind, |ch| async move {
                    SecurityClient::new(ch).join_token(JoinTokenRequest { rotate }).await.map(|r| r.into_inner())
                })
                .await?;
            writeln!(std::io::stdout(), "{}", resp.token)?;
        }
        ClusterCommand::Credentials { name, role, output } => {
            let (key_pem, csr_pem) = skiff_tls::ca::new_key_and_csr()?;
            let req = IssueCredentialRequest { name: name.clone(), role: role.clone(), csr_pem };
            let resp = client
                .call(CallKind::Read, |ch| {
                    let req = req.clone();
                    async move { SecurityClient::new(ch).issue_credential(req).await.map(|r| r.into_inner()) }
                })
                .await?;
            let creds = skiff_tls::Credentials {
                members: client.addrs().to_vec(),
                ca: resp.ca_pem,
                cert: resp.cert_pem,
                key: key_pem,
            };
            creds.save(&output)?;
            writeln!(std::io::stdout(), "wrote {role} credentials for {name} to {}", output.display())?;
        }
    }
    Ok(())
}

fn print_status(s: &ClusterStatus) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "cluster {}  leader {}  term {}", or_dash(&s.cluster_id), s.leader_id, s.term)?;
    let mut table = Table::new();
    table.load_preset(NOTHING);
    table.set_header(["ID", "NAME", "ADDRESS", "ROLE", "VOTER", "TERM", "LAST-LOG", "APPLIED"]);
    for m in &s.members {
        let role = if m.error.is_empty() { m.role.clone() } else { format!("{} ({})", m.role, m.error) };
        table.add_row([
            m.id.to_string(),
            m.name.clone(),
            m.addr.clone(),
            role,
            if m.voter { "yes".into() } else { "no".into() },
            m.term.to_string(),
            m.last_log_index.to_string(),
            m.applied_index.to_string(),
        ]);
    }
    writeln!(out, "{table}")
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn status_json(s: &ClusterStatus) -> serde_json::Value {
    serde_json::json!({
        "clusterId": s.cluster_id,
        "leaderId": s.leader_id,
        "term": s.term,
        "members": s.members.iter().map(|m| serde_json::json!({
            "id": m.id, "name": m.name, "addr": m.addr, "role": m.role, "voter": m.voter, "term": m.term,
            "lastLogIndex": m.last_log_index, "appliedIndex": m.applied_index, "leaderId": m.leader_id,
            "clusterId": m.cluster_id, "error": m.error,
        })).collect::<Vec<_>>(),
    })
}
