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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ranges_need_no_route() {
        assert!(is_loopback(&"127.96.0.0/16".parse().expect("net")));
        assert!(!is_loopback(&"10.96.0.0/16".parse().expect("net")));
    }
}
