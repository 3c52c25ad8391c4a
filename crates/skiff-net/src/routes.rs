//! The one route that lets a member accept connections to any cluster IP: the service range is
//! made local (`ip route replace local 10.96.0.0/16 dev lo`), so a listener bound to one exact
//! address in it needs no address assigned to any interface. It needs `NET_ADMIN` in the member's
//! own network namespace (a container with that capability, or root on a host), nothing more.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Whether addresses of `range` are local already (all of 127.0.0.0/8 is): no route is needed.
pub fn is_loopback(range: &Ipv4Net) -> bool {
    Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).is_ok_and(|lo| lo.contains(range))
}

/// Makes `range` local to this network namespace. The error says what to do.
pub async fn make_local(range: &Ipv4Net) -> Result<(), String> {
    if is_loopback(range) {
        return Ok(());
    }
    let out = tokio::process::Command::new("ip")
        .args(["route", "replace", "local", &range.to_string(), "dev", "lo"])
        .output()
        .await
        .map_err(|e| format!("cannot run `ip` (install iproute2): {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "`ip route replace local {range} dev lo` failed: {}; the member needs NET_ADMIN in its network namespace (docker: --cap-add NET_ADMIN) or root on a host",
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// The address this member sends from to reach `peer`: on a pod network's gateway, the member's
/// own address on that network (a member container), or the gateway itself (a member on the host).
/// Pods route the service range and send DNS queries there. No packet is sent.
pub fn local_address_towards(peer: std::net::IpAddr) -> std::io::Result<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.connect((peer, 9))?;
    Ok(socket.local_addr()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ranges_need_no_route() {
        assert!(is_loopback(&"127.96.0.0/16".parse().expect("net")));
        assert!(!is_loopback(&"10.96.0.0/16".parse().expect("net")));
    }

    #[test]
    fn the_way_to_a_local_address_starts_at_it() {
        let lo: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(local_address_towards(lo).expect("route"), lo);
    }
}
