//! The proxy: one listener per frontend (a cluster IP and port, or a node port on every address),
//! each connection forwarded to an endpoint of its route, round robin. An endpoint that cannot be
//! reached (refused, unreachable, too slow to accept) is skipped and the next one tried, so a pod
//! that died before the endpoints said so costs a retry, not a failed connection.
//!
//! Routes change in place: a listener keeps its socket while its endpoints change, and connections
//! already open stay with the endpoint they have (they drain; the proxy never cuts them).

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::ProxyMetrics;
use crate::table::{Route, Table};

/// How long a connection to one endpoint may take before the next is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// At most this many endpoints are tried for one connection.
pub const MAX_ATTEMPTS: usize = 3;

/// A listener serving one frontend.
struct Frontend {
    route: watch::Sender<Arc<Route>>,
    task: JoinHandle<()>,
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The listeners of one member.
#[derive(Default)]
pub struct Proxy {
    frontends: BTreeMap<SocketAddr, Frontend>,
    /// Frontends that could not be bound, with why (reported once, retried on every sync).
    failed: BTreeMap<SocketAddr, String>,
    metrics: ProxyMetrics,
}

impl Proxy {
    pub fn new(metrics: ProxyMetrics) -> Self {
        Proxy { metrics, ..Default::default() }
    }

    /// The frontends being served.
    pub fn serving(&self) -> Vec<SocketAddr> {
        self.frontends.keys().copied().collect()
    }

    /// Frontends that could not be bound, with the reason.
    pub fn failed(&self) -> &BTreeMap<SocketAddr, String> {
        &self.failed
    }

    /// Makes the listeners match `table`: new frontends bound, gone ones closed, the others' routes
    /// replaced. Once this returns, no new connection goes to an endpoint `table` does not list.
    pub fn sync(&mut self, table: Table) {
        self.frontends.retain(|addr, _| table.contains_key(addr));
        self.failed.retain(|addr, _| table.contains_key(addr));
        for (addr, route) in table {
            let route = Arc::new(route);
            if let Some(frontend) = self.frontends.get(&addr) {
                if **frontend.route.borrow() != *route {
                    frontend.route.send_replace(route);
                }
                continue;
            }
            match listen(addr) {
                Ok(listener) => {
                    if self.failed.remove(&addr).is_some() {
                        tracing::info!(%addr, service = %route.service, "serving the frontend now");
                    }
                    let (tx, rx) = watch::channel(route);
                    let task = tokio::spawn(serve(listener, rx, self.metrics.clone()));
                    self.frontends.insert(addr, Frontend { route: tx, task });
                }
                Err(e) => {
                    let why = e.to_string();
                    if self.failed.get(&addr) != Some(&why) {
                        tracing::warn!(%addr, service = %route.service, error = %why, "cannot listen on the frontend: connections to it are not served");
                    }
                    self.failed.insert(addr, why);
                }
            }
        }
    }
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn serve(listener: TcpListener, route: watch::Receiver<Arc<Route>>, metrics: ProxyMetrics) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let (client, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let route = route.borrow().clone();
        let start = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(forward(client, route, start, metrics.clone()));
    }
}

/// Connects `client` to the first endpoint of `route` that answers, from `start` on, and copies
/// both ways until either side closes.
async fn forward(client: TcpStream, route: Arc<Route>, start: usize, metrics: ProxyMetrics) {
    let mut upstream = None;
    for (attempt, endpoint) in route.candidates(start).into_iter().take(MAX_ATTEMPTS).enumerate() {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => {
                upstream = Some(stream);
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(%endpoint, service = %route.service, attempt, error = %e, "endpoint refused; trying the next")
            }
            Err(_) => {
                tracing::debug!(%endpoint, service = %route.service, attempt, "endpoint did not answer in time; trying the next")
            }
        }
        metrics.retried();
    }
    let Some(mut upstream) = upstream else {
        metrics.refused();
        tracing::debug!(service = %route.service, "no endpoint could take the connection");
        return;
    };
    metrics.forwarded();
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let mut client = client;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
