//! What the proxy serves, decided from Services and EndpointSlices: for every frontend (a cluster
//! IP and port, or a node port on every address) the endpoints to send new connections to. Pure.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use skiff_api::kinds::endpoint_slice::SERVICE_NAME_LABEL;
use skiff_api::kinds::{EndpointSlice, Service};

/// Where one Service port sends connections.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// `namespace/name:port`, for logs and metrics.
    pub service: String,
    /// Ready endpoints: new connections go here.
    pub ready: Vec<SocketAddr>,
    /// Serving but terminating endpoints: used only when no endpoint is ready, so that a Service
    /// whose every pod is on its way out still answers while they drain.
    pub fallback: Vec<SocketAddr>,
}

impl Route {
    /// The endpoints a new connection may use, in the order to try them from `start` on.
    pub fn candidates(&self, start: usize) -> Vec<SocketAddr> {
        let pool = if self.ready.is_empty() { &self.fallback } else { &self.ready };
        if pool.is_empty() {
            return Vec::new();
        }
        let first = start % pool.len();
        pool[first..].iter().chain(&pool[..first]).copied().collect()
    }
}

/// Every frontend this member serves and its route.
pub type Table = BTreeMap<SocketAddr, Route>;

/// The frontends of `services` and their endpoints from `slices`. Headless Services, Services
/// without a cluster IP yet and non-TCP ports get none.
pub fn build(services: &[&Service], slices: &[&EndpointSlice]) -> Table {
    let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        if let Some(service) = slice.metadata.labels.get(SERVICE_NAME_LABEL) {
            by_service.entry((slice.metadata.namespace.as_str(), service.as_str())).or_default().push(slice);
        }
    }
    let mut table = Table::new();
    for service in services {
        let Some(ip) = service.spec.cluster_ip() else { continue };
        let key = (service.metadata.namespace.as_str(), service.metadata.name.as_str());
        let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]);
        for port in &service.spec.ports {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            if protocol != "TCP" {
                continue;
            }
            let mut route = Route {
                service: format!("{}/{}:{}", key.0, key.1, port.name.as_deref().unwrap_or(&port.port.to_string())),
                ..Default::default()
            };
            for slice in slices {
                let Some(target) = slice
                    .ports
                    .iter()
                    .find(|p| p.name == port.name && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                    .and_then(|p| p.port)
                    .and_then(|p| u16::try_from(p).ok())
                else {
                    continue;
                };
                for endpoint in &slice.endpoints {
                    let c = endpoint.conditions;
                    let Some(address) = endpoint.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                        continue;
                    };
                    let addr = SocketAddr::new(address, target);
                    if c.is_ready() && !c.is_terminating() {
                        route.ready.push(addr);
                    } else if c.is_serving() && c.is_terminating() {
                        route.fallback.push(addr);
                    }
                }
            }
            route.ready.sort();
            route.fallback.sort();
            if let Ok(p) = u16::try_from(port.port) {
                table.insert(SocketAddr::new(IpAddr::V4(ip), p), route.clone());
            }
            if let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
                table.insert(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), node_port), route);
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::endpoint_slice::{Endpoint, EndpointConditions, EndpointPort};
    use skiff_api::kinds::service::ServicePort;

    fn service(cluster_ip: &str, node_port: Option<i32>) -> Service {
        let mut s = Service::default();
        s.metadata.name = "web".into();
        s.metadata.namespace = "default".into();
        s.spec.cluster_ip = Some(cluster_ip.into());
        s.spec.ports = vec![ServicePort { port: 80, protocol: Some("TCP".into()), node_port, ..Default::default() }];
        s
    }

    fn endpoint(ip: &str, ready: bool, serving: bool, terminating: bool) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            },
            ..Default::default()
        }
    }

    fn slice(endpoints: Vec<Endpoint>) -> EndpointSlice {
        let mut s = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: vec![EndpointPort {
                name: None,
                protocol: Some("TCP".into()),
                port: Some(8080),
                app_protocol: None,
            }],
            ..Default::default()
        };
        s.metadata.namespace = "default".into();
        s.metadata.name = "web-abcde".into();
        s.metadata.labels.insert(SERVICE_NAME_LABEL.into(), "web".into());
        s
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("addr")
    }

    #[test]
    fn ready_endpoints_take_new_connections_terminating_ones_only_when_none_is_ready() {
        let svc = service("10.96.0.7", Some(30080));
        let s = slice(vec![
            endpoint("10.0.0.2", true, true, false),
            endpoint("10.0.0.1", true, true, false),
            endpoint("10.0.0.3", false, true, true),
            endpoint("10.0.0.4", false, false, false),
            endpoint("10.0.0.5", false, false, true),
        ]);
        let table = build(&[&svc], &[&s]);
        let route = &table[&addr("10.96.0.7:80")];
        assert_eq!(route.ready, [addr("10.0.0.1:8080"), addr("10.0.0.2:8080")]);
        assert_eq!(route.fallback, [addr("10.0.0.3:8080")]);
        assert_eq!(table[&addr("0.0.0.0:30080")], *route);
        assert_eq!(route.candidates(1), [addr("10.0.0.2:8080"), addr("10.0.0.1:8080")]);

        let draining = slice(vec![endpoint("10.0.0.3", false, true, true)]);
        let table = build(&[&svc], &[&draining]);
        assert_eq!(table[&addr("10.96.0.7:80")].candidates(5), [addr("10.0.0.3:8080")]);
    }

    #[test]
    fn headless_services_and_other_services_slices_get_no_route() {
        let headless = service("None", None);
        let mut other = slice(vec![endpoint("10.0.0.9", true, true, false)]);
        other.metadata.labels.insert(SERVICE_NAME_LABEL.into(), "other".into());
        assert!(build(&[&headless], &[&other]).is_empty());
        let table = build(&[&service("10.96.0.7", None)], &[&other]);
        assert_eq!(table[&addr("10.96.0.7:80")].candidates(0), []);
    }
}
