//! The resolvers that names outside the cluster domain go to: which they are, and asking them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query};
use tokio::net::UdpSocket;

/// How long one upstream gets to answer before the next one is asked.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The UDP payload we offer upstreams (EDNS), so that most answers need no TCP retry.
const PAYLOAD: u16 = 4096;

/// The `nameserver` addresses of a resolv.conf, on port 53, in order. Lines that are not
/// `nameserver <IP>` (comments, `search`, `options`, scoped IPv6 addresses) are skipped.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(address)) => address.parse::<IpAddr>().ok(),
                _ => None,
            }
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Whether asking `upstream` would reach the server listening on `local` itself: the same
/// address, or the same port on a loopback address while `local` listens on every address.
pub fn is_self(upstream: SocketAddr, local: SocketAddr) -> bool {
    upstream == local || (local.ip().is_unspecified() && upstream.port() == local.port() && upstream.ip().is_loopback())
}

/// Asks `upstreams` in order for `query`, each for up to [`UPSTREAM_TIMEOUT`], and returns the
/// first answer, or `None` when none answers.
pub async fn forward(upstreams: &[SocketAddr], query: &Query, recursion_desired: bool) -> Option<Message> {
    let mut request = Message::query();
    request.metadata.recursion_desired = recursion_desired;
    request.add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(PAYLOAD);
    request.set_edns(edns);
    let bytes = match request.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!("cluster DNS cannot encode a query for {}: {e}", query.name());
            return None;
        }
    };
    for &upstream in upstreams {
        match tokio::time::timeout(UPSTREAM_TIMEOUT, exchange(upstream, &bytes, &request)).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(e)) => tracing::debug!("upstream resolver {upstream} failed for {}: {e}", query.name()),
            Err(_) => tracing::debug!("upstream resolver {upstream} did not answer {} in time", query.name()),
        }
    }
    None
}

/// Sends `bytes` to `upstream` and waits for the reply to `request`. Datagrams that are not that
/// reply (a late answer to an earlier query, a spoof) are ignored.
async fn exchange(upstream: SocketAddr, bytes: &[u8], request: &Message) -> std::io::Result<Message> {
    let any: IpAddr = if upstream.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let socket = UdpSocket::bind(SocketAddr::new(any, 0)).await?;
    // Connected: only the upstream's datagrams arrive, and a closed port fails fast.
    socket.connect(upstream).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0; usize::from(PAYLOAD)];
    loop {
        let n = socket.recv(&mut buf).await?;
        let Ok(reply) = Message::from_vec(&buf[..n]) else { continue };
        if reply.metadata.id == request.metadata.id
            && reply.metadata.message_type == MessageType::Response
            && reply.queries == request.queries
        {
            return Ok(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("addr")
    }

    #[test]
    fn nameserver_lines_become_upstreams_on_port_53() {
        let text = "# generated\nsearch shop.svc.cluster.local\nnameserver 10.0.0.2\n  nameserver\t2001:db8::1 \n\
                    nameserver fe80::1%eth0\nnameserver\noptions ndots:5\n;nameserver 10.0.0.3\n";
        assert_eq!(upstreams_from_resolv_conf(text), [addr("10.0.0.2:53"), addr("[2001:db8::1]:53")]);
        assert_eq!(upstreams_from_resolv_conf(""), []);
    }

    #[test]
    fn an_upstream_that_is_the_server_itself_is_recognised() {
        assert!(is_self(addr("10.0.0.2:53"), addr("10.0.0.2:53")));
        assert!(is_self(addr("127.0.0.1:53"), addr("0.0.0.0:53")));
        assert!(!is_self(addr("127.0.0.53:53"), addr("10.0.0.2:53")));
        assert!(!is_self(addr("10.0.0.2:53"), addr("0.0.0.0:53")));
        assert!(!is_self(addr("127.0.0.1:5353"), addr("0.0.0.0:53")));
    }
}
