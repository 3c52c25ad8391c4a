//! The cluster's service network: the range cluster IPs come from, the range of node ports, and
//! the address of the cluster DNS inside the range. One setting for the whole cluster; the leader
//! allocates from it and every member's proxy and DNS serve it.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use ipnet::Ipv4Net;

/// Where Services get their addresses and node ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNetwork {
    /// Cluster IPs (Kubernetes' `--service-cluster-ip-range`).
    pub cluster_ips: Ipv4Net,
    /// Node ports (Kubernetes' `--service-node-port-range`).
    pub node_ports: RangeInclusive<u16>,
}

/// Kubernetes' defaults: `10.96.0.0/16` and 30000-32767.
pub const DEFAULT_CLUSTER_IP_RANGE: &str = "10.96.0.0/16";
pub const DEFAULT_NODE_PORTS: RangeInclusive<u16> = 30000..=32767;

impl Default for ServiceNetwork {
    fn default() -> Self {
        ServiceNetwork {
            cluster_ips: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 16).unwrap_or_default(),
            node_ports: DEFAULT_NODE_PORTS,
        }
    }
}

impl ServiceNetwork {
    /// Parses `10.96.0.0/16` and `30000-32767`; the message says what is wrong.
    pub fn parse(cluster_ips: &str, node_ports: &str) -> Result<ServiceNetwork, String> {
        let net: Ipv4Net =
            cluster_ips.parse().map_err(|_| format!("{cluster_ips:?} is not an IPv4 range such as 10.96.0.0/16"))?;
        if net.network() != net.addr() {
            return Err(format!("{cluster_ips:?} has host bits set: write {}", net.trunc()));
        }
        if net.prefix_len() > 28 {
            return Err(format!("{cluster_ips:?} is too small: the range needs at least 16 addresses (/28)"));
        }
        let (low, high) = node_ports
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
            .ok_or_else(|| format!("{node_ports:?} is not a port range such as 30000-32767"))?;
        if low == 0 || low > high {
            return Err(format!("{node_ports:?}: the first port must be at least 1 and not above the last"));
        }
        Ok(ServiceNetwork { cluster_ips: net, node_ports: low..=high })
    }

    /// The cluster DNS's address: the tenth of the range (10.96.0.10), as in Kubernetes.
    pub fn dns_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.cluster_ips.network()) + 10)
    }

    /// Whether `ip` may be a Service's cluster IP: in the range, not its network or broadcast
    /// address, not the DNS address.
    pub fn check_cluster_ip(&self, ip: Ipv4Addr) -> Result<(), String> {
        if !self.cluster_ips.contains(&ip) {
            return Err(format!("{ip} is not in the cluster's service range {}", self.cluster_ips));
        }
        if ip == self.cluster_ips.network() || ip == self.cluster_ips.broadcast() || ip == self.dns_ip() {
            return Err(format!("{ip} is reserved in the service range {}", self.cluster_ips));
        }
        Ok(())
    }

    pub fn check_node_port(&self, port: i32) -> Result<(), String> {
        match u16::try_from(port) {
            Ok(p) if self.node_ports.contains(&p) => Ok(()),
            _ => Err(format!(
                "{port} is not in the cluster's node port range {}-{}",
                self.node_ports.start(),
                self.node_ports.end()
            )),
        }
    }

    /// A free cluster IP, searching from a point that `seed` picks so that allocations spread over
    /// the range; `None` when every address is taken.
    pub fn pick_cluster_ip(&self, seed: u64, taken: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
        let first = u32::from(self.cluster_ips.network()) + 1;
        let count = u32::from(self.cluster_ips.broadcast()) - first;
        let start = (seed % u64::from(count)) as u32;
        (0..count)
            .map(|i| Ipv4Addr::from(first + (start + i) % count))
            .find(|ip| self.check_cluster_ip(*ip).is_ok() && !taken(*ip))
    }

    /// A free node port, searching from a point that `seed` picks.
    pub fn pick_node_port(&self, seed: u64, taken: impl Fn(u16) -> bool) -> Option<u16> {
        let first = u32::from(*self.node_ports.start());
        let count = u32::from(*self.node_ports.end()) - first + 1;
        let start = (seed % u64::from(count)) as u32;
        (0..count).map(|i| (first + (start + i) % count) as u16).find(|p| !taken(*p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_says_what_is_wrong() {
        let net = ServiceNetwork::parse("10.96.0.0/16", "30000-32767").expect("defaults");
        assert_eq!(net, ServiceNetwork::default());
        assert_eq!(net.dns_ip(), Ipv4Addr::new(10, 96, 0, 10));
        assert!(ServiceNetwork::parse("10.96.0.1/16", "30000-32767").expect_err("host bits").contains("10.96.0.0/16"));
        assert!(ServiceNetwork::parse("10.96.0.0/30", "30000-32767").expect_err("tiny").contains("too small"));
        assert!(ServiceNetwork::parse("banana", "30000-32767").is_err());
        assert!(ServiceNetwork::parse("10.96.0.0/16", "32767-30000").is_err());
        assert!(ServiceNetwork::parse("10.96.0.0/16", "30000").is_err());
    }

    #[test]
    fn cluster_ips_skip_reserved_and_taken_addresses() {
        let net = ServiceNetwork::parse("10.0.0.0/28", "30000-30001").expect("parse");
        let mut taken = std::collections::BTreeSet::new();
        for seed in 0..20u64 {
            match net.pick_cluster_ip(seed * 7919, |ip| taken.contains(&ip)) {
                Some(ip) => {
                    assert!(net.check_cluster_ip(ip).is_ok(), "{ip}");
                    assert!(taken.insert(ip), "{ip} handed out twice");
                }
                None => break,
            }
        }
        // 16 addresses less network, broadcast and DNS.
        assert_eq!(taken.len(), 13);
        assert!(net.check_cluster_ip(Ipv4Addr::new(10, 0, 0, 10)).is_err());
        assert!(net.check_cluster_ip(Ipv4Addr::new(10, 0, 1, 1)).expect_err("outside").contains("10.0.0.0/28"));
    }

    #[test]
    fn node_ports_run_out_after_the_range() {
        let net = ServiceNetwork::parse("10.96.0.0/16", "30000-30001").expect("parse");
        assert_eq!(net.pick_node_port(5, |p| p == 30001), Some(30000));
        assert_eq!(net.pick_node_port(5, |_| true), None);
        assert!(net.check_node_port(29999).expect_err("low").contains("30000-30001"));
    }
}
