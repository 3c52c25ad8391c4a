//! Skiff's service data plane, on every member: the proxy that forwards each Service's cluster IP
//! and node ports to its ready pods, and cluster DNS. Both read Services and EndpointSlices from
//! the member's own replica through the `ResourceApi` they are given.
//!
//! # Layout
//!
//! - [`table`]: the frontends and their endpoints, decided from Services and EndpointSlices (pure).
//! - [`proxy`]: the listeners and the forwarding, with retry on another endpoint.
//! - [`routes`]: the local route that lets a member listen on cluster IPs.
//! - [`nat`]: the kernel data path: the same table as nftables NAT rules (opt-in).
//! - [`metrics`]: what the proxy counts.
//! - [`dns`]: cluster DNS for Services, forwarding other names upstream.

pub mod dns;
pub mod metrics;
pub mod nat;
pub mod proxy;
pub mod routes;
pub mod table;

use std::sync::Arc;
use std::time::Duration;

use skiff_api::api::{Filter, ResourceApi};
use skiff_api::kinds::{EndpointSlice, Service};
use skiff_api::network::ServiceNetwork;
use skiff_api::{Kind, Object};
use skiff_control::reflector::Reflector;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::ProxyMetrics;
use crate::proxy::Proxy;

/// How often frontends that could not be bound are tried again when nothing changes.
const RETRY_BIND: Duration = Duration::from_secs(5);

/// How connections to Services reach their endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPath {
    /// Through the proxy's listeners: a connection that cannot reach an endpoint is retried on
    /// another.
    #[default]
    Userspace,
    /// Rewritten by the kernel (nftables NAT, [`nat`]); the listeners stay for what the rules do not
    /// cover (a Service without endpoints) and as the fallback when the rules cannot be installed.
    Nftables,
}

/// The nftables table of the kernel data path.
pub const NAT_TABLE: &str = "skiff_services";

/// The running data plane of one member. Dropping it stops it.
pub struct ServiceProxy {
    task: JoinHandle<()>,
    data_path: DataPath,
    records: watch::Receiver<Arc<dns::Records>>,
    metrics: ProxyMetrics,
}

impl Drop for ServiceProxy {
    fn drop(&mut self) {
        self.task.abort();
        if self.data_path == DataPath::Nftables {
            nat::remove(NAT_TABLE);
        }
    }
}

impl ServiceProxy {
    /// Starts serving the Services that `api` shows, with cluster IPs from `network`, counting
    /// into `metrics`, and keeps their DNS records under `domain` for [`ServiceProxy::records`].
    pub fn start(
        api: Arc<dyn ResourceApi>,
        network: ServiceNetwork,
        domain: &str,
        data_path: DataPath,
        metrics: ProxyMetrics,
    ) -> ServiceProxy {
        let (records_tx, records) = watch::channel(Arc::new(dns::Records::empty(domain)));
        let outputs = Outputs { records: records_tx, domain: domain.to_string(), data_path };
        let task = tokio::spawn(run(api, network, Proxy::new(metrics.clone()), outputs));
        ServiceProxy { task, data_path, records, metrics }
    }

    /// The cluster DNS records of the Services as the proxy last saw them (for a [`dns::DnsServer`]).
    pub fn records(&self) -> watch::Receiver<Arc<dns::Records>> {
        self.records.clone()
    }

    pub fn metrics(&self) -> &ProxyMetrics {
        &self.metrics
    }
}

/// What the data plane publishes each time it catches up with the Services.
struct Outputs {
    records: watch::Sender<Arc<dns::Records>>,
    domain: String,
    data_path: DataPath,
}

async fn run(api: Arc<dyn ResourceApi>, network: ServiceNetwork, mut proxy: Proxy, out: Outputs) {
    if let Err(e) = routes::make_local(&network.cluster_ips).await {
        tracing::warn!(
            "cluster IPs are not served on this member: {e}. Node ports still work on every address of this member"
        );
    }
    let services = Reflector::start(api.clone(), Kind::Service, Filter::default());
    let slices = Reflector::start(api, Kind::EndpointSlice, Filter::default());
    let (mut service_changes, mut slice_changes) = (services.changes(), slices.changes());
    services.synced().await;
    slices.synced().await;
    // The rules last installed, and the error last reported (each said once).
    let (mut installed, mut nat_error) = (String::new(), String::new());
    loop {
        let (service_objects, slice_objects) = (services.list(), slices.list());
        let services: Vec<&Service> = service_objects
            .iter()
            .filter_map(|o| match o.as_ref() {
                Object::Service(s) => Some(s),
                _ => None,
            })
            .collect();
        let slices_now: Vec<&EndpointSlice> = slice_objects
            .iter()
            .filter_map(|o| match o.as_ref() {
                Object::EndpointSlice(s) => Some(s),
                _ => None,
            })
            .collect();
        let routes = table::build(&services, &slices_now);
        if out.data_path == DataPath::Nftables {
            let script = nat::render(NAT_TABLE, &routes);
            if script != installed {
                match nat::apply(&script).await {
                    Ok(()) => installed = script,
                    Err(e) if e != nat_error => {
                        tracing::warn!("Services are served by the proxy's listeners, not the kernel: {e}");
                        nat_error = e;
                    }
                    Err(_) => {}
                }
            }
        }
        proxy.sync(routes);
        let records = dns::Records::build(&services, &slices_now, &out.domain);
        if **out.records.borrow() != records {
            out.records.send_replace(Arc::new(records));
        }
        let retry = !proxy.failed().is_empty();
        tokio::select! {
            changed = service_changes.changed() => if changed.is_err() { return },
            changed = slice_changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RETRY_BIND), if retry => {}
        }
    }
}
