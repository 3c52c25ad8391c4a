//! How a member's address becomes a gRPC channel, shared by the Raft network, forwarding between
//! members and the client: a [`Connector`] is passed in, so tests (and later TLS) plug in without
//! touching the code that uses it.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Turns a member's address into a gRPC channel.
pub trait Connector: Send + Sync + 'static {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error>;
}

/// Plain TCP (HTTP/2 without TLS), lazily connected.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub connect_timeout: Duration,
}

impl Default for TcpConnector {
    fn default() -> Self {
        Self { connect_timeout: Duration::from_millis(500) }
    }
}

impl Connector for TcpConnector {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_lazy())
    }
}

/// True when `status` says the call never reached the other side: connecting failed. A call whose
/// connection broke later ("connection reset", "connection closed") may have been delivered.
pub fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable) {
                return true;
            }
        }
        // hyper-util's connector errors, recognised by their display (their types are private).
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("tcp connect error") || text.contains("dns error") || text.contains("failed to lookup address")
        {
            return true;
        }
        source = e.source();
    }
    false
}
