//! The kernel data path (`[services] mode = "nftables"`): the route table as nftables NAT rules,
//! so that connections to a cluster IP or a node port are rewritten to an endpoint by the kernel
//! instead of being copied through the proxy (what kube-proxy's iptables and nftables modes do).
//! One table of Skiff's own, replaced in one `nft -f` transaction on every change; established
//! connections keep their translation (it lives in conntrack, not in the rules). A new connection
//! picks an endpoint at random; the kernel cannot retry one that does not answer, which the
//! userspace proxy does. Connections the rules rewrite for others (a pod routing the service range
//! to this member) are masqueraded, so that answers come back through this member; this member's
//! own connections keep their source (answers come back to it anyway, and a source shared with
//! direct connections to the same pod would collide with the pod's TIME_WAIT sockets: measured,
//! new connections through the NAT fell to a twentieth).
//!
//! [`render`] is pure; [`apply`] and [`remove`] run `nft`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::table::Table;

/// The conntrack mark of connections the rules rewrote (masqueraded on the way out).
const MARK: &str = "0x534b";

/// The nftables script that replaces table `name` with the rules of `routes`. Frontends without
/// an endpoint get no rule (the userspace listener answers them: it closes the connection).
pub fn render(name: &str, routes: &Table) -> String {
    let mut services = String::new();
    let mut node_ports = String::new();
    for (frontend, route) in routes {
        let pool: Vec<SocketAddr> =
            route.candidates(0).into_iter().filter(|a| matches!(a.ip(), IpAddr::V4(_))).collect();
        if pool.is_empty() {
            continue;
        }
        let map: Vec<String> =
            pool.iter().enumerate().map(|(i, a)| format!("{i} : {} . {}", a.ip(), a.port())).collect();
        let target =
            format!("ct mark set {MARK} dnat ip to numgen random mod {} map {{ {} }}", pool.len(), map.join(", "));
        match frontend.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                let _ = writeln!(node_ports, "    tcp dport {} {target}", frontend.port());
            }
            IpAddr::V4(ip) => {
                let _ = writeln!(services, "    ip daddr {ip} tcp dport {} {target}", frontend.port());
            }
            IpAddr::V6(_) => {}
        }
    }
    format!(
        "table ip {name} {{}}
delete table ip {name}
table ip {name} {{
  chain services {{
{services}  }}
  chain node_ports {{
{node_ports}  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    jump services
    fib daddr type local jump node_ports
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    jump services
    fib daddr type local jump node_ports
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    ct mark {MARK} fib saddr type != local masquerade
  }}
}}
"
    )
}

/// Runs `script` with `nft -f -`; the error says what nft said and what is needed.
pub async fn apply(script: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `nft` (install nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await.map_err(|e| format!("cannot write to `nft`: {e}"))?;
    }
    let out = child.wait_with_output().await.map_err(|e| format!("`nft` did not finish: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`nft -f` refused the service rules: {}; the member needs NET_ADMIN in its network namespace",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Removes table `name` (when the member stops); failures are ignored.
pub fn remove(name: &str) {
    let _ = std::process::Command::new("nft").args(["delete", "table", "ip", name]).output();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Route;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("addr")
    }

    #[test]
    fn cluster_ips_and_node_ports_become_dnat_maps_over_their_endpoints() {
        let route = Route {
            service: "default/web:80".into(),
            ready: vec![addr("172.17.0.2:8080"), addr("172.17.0.3:8080")],
            fallback: vec![addr("172.17.0.9:8080")],
        };
        let draining = Route { service: "default/old:80".into(), ready: vec![], fallback: vec![addr("172.17.0.9:80")] };
        let empty = Route { service: "default/none:80".into(), ..Default::default() };
        let table = Table::from([
            (addr("10.96.0.7:80"), route.clone()),
            (addr("0.0.0.0:30080"), route),
            (addr("10.96.0.8:80"), draining),
            (addr("10.96.0.9:80"), empty),
        ]);
        let script = render("skiff_services", &table);
        let web =
            "ct mark set 0x534b dnat ip to numgen random mod 2 map { 0 : 172.17.0.2 . 8080, 1 : 172.17.0.3 . 8080 }";
        assert!(script.contains(&format!("ip daddr 10.96.0.7 tcp dport 80 {web}")), "{script}");
        assert!(script.contains(&format!("tcp dport 30080 {web}")), "{script}");
        assert!(script.contains("ip daddr 10.96.0.8 tcp dport 80 ct mark set 0x534b dnat ip to numgen random mod 1 map { 0 : 172.17.0.9 . 80 }"));
        assert!(!script.contains("10.96.0.9"), "no endpoint, no rule: {script}");
        assert!(script.starts_with("table ip skiff_services {}\ndelete table ip skiff_services\n"));
        assert!(script.contains("ct mark 0x534b fib saddr type != local masquerade"));
    }
}
