//! The names cluster DNS answers, decided from Services and EndpointSlices as the Kubernetes DNS
//! specification lays them out, and the lookup that tells the server what to do with a query. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use skiff_api::kinds::endpoint_slice::SERVICE_NAME_LABEL;
use skiff_api::kinds::{EndpointSlice, Service};

/// The cluster domain when none is configured, as in Kubernetes.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// Seconds a client may cache an answer: short, because endpoints come and go with pods.
pub const TTL: u32 = 5;

/// SRV priority and weight: every target is equal, as in Kubernetes.
const SRV_PRIORITY: u16 = 0;
const SRV_WEIGHT: u16 = 100;

/// Every cluster name and its records, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Records {
    /// The cluster domain, lowercase and without the trailing dot: the names under it are ours.
    domain: String,
    /// Each existing name (lowercase, no trailing dot) and its records. Names that exist only
    /// because names below them do (`<ns>.svc.<domain>`) have no records, so that a query for
    /// them gets NODATA rather than NXDOMAIN.
    names: BTreeMap<String, Vec<Record>>,
}

/// What the server does with one query.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The records of that name and type.
    Records(Vec<Record>),
    /// The name exists but has no records of that type: NOERROR with an empty answer.
    NoData,
    /// The name is under the cluster domain and does not exist.
    NxDomain,
    /// The name is not ours: ask the upstream resolvers.
    Forward,
}

impl Records {
    /// No Services: only the domain itself exists.
    pub fn empty(domain: &str) -> Records {
        let domain = normalize(domain);
        Records { names: BTreeMap::from([(domain.clone(), Vec::new())]), domain }
    }

    /// The names of `services` under `domain`, with the endpoints of headless ones from `slices`:
    /// those that are ready and not terminating, the ones the proxy sends new connections to.
    /// A Service without a cluster IP yet has no name until it gets one.
    pub fn build(services: &[&Service], slices: &[&EndpointSlice], domain: &str) -> Records {
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices {
            if let Some(service) = slice.metadata.labels.get(SERVICE_NAME_LABEL) {
                by_service.entry((slice.metadata.namespace.as_str(), service.as_str())).or_default().push(slice);
            }
        }
        let mut records = Records::empty(domain);
        // Sets first, so that an address in two slices or under two ports yields one record.
        let mut addresses: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        let mut targets: BTreeMap<String, BTreeSet<(u16, String)>> = BTreeMap::new();
        for service in services {
            let key = (service.metadata.namespace.as_str(), service.metadata.name.as_str());
            let service_name = format!("{}.{}.svc.{}", key.1, key.0, records.domain);
            let named_ports: Vec<_> = service.spec.ports.iter().filter_map(|p| Some((p.name.as_deref()?, p))).collect();
            if let Some(ip) = service.spec.cluster_ip() {
                addresses.entry(service_name.clone()).or_default().insert(ip);
                for (port_name, port) in named_ports {
                    let Ok(number) = u16::try_from(port.port) else { continue };
                    let name = srv_name(port_name, protocol(&port.protocol), &service_name);
                    targets.entry(name).or_default().insert((number, service_name.clone()));
                }
            } else if service.spec.is_headless() {
                for slice in by_service.get(&key).map(Vec::as_slice).unwrap_or(&[]) {
                    for (host, address) in ready_hosts(slice) {
                        let host_name = format!("{host}.{service_name}");
                        addresses.entry(service_name.clone()).or_default().insert(address);
                        addresses.entry(host_name.clone()).or_default().insert(address);
                        for &(port_name, port) in &named_ports {
                            let protocol = protocol(&port.protocol);
                            let Some(number) = slice_port(slice, port_name, protocol) else { continue };
                            let name = srv_name(port_name, protocol, &service_name);
                            targets.entry(name).or_default().insert((number, host_name.clone()));
                        }
                    }
                }
            }
        }
        for (name, ips) in addresses {
            records.add(&name, ips.into_iter().map(|ip| Some(RData::A(A(ip)))));
        }
        for (name, targets) in targets {
            let rdata = targets
                .into_iter()
                .map(|(port, target)| Some(RData::SRV(SRV::new(SRV_PRIORITY, SRV_WEIGHT, port, fqdn(&target)?))));
            records.add(&name, rdata);
        }
        records
    }

    /// The cluster domain, lowercase and without the trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Adds `name` with the records of `data`, and its parents up to the domain as existing
    /// names. A name that is not a valid DNS name (a hostname with an underscore, say) is left
    /// out, as is a record whose target is not.
    fn add(&mut self, name: &str, data: impl IntoIterator<Item = Option<RData>>) {
        let Some(owner) = fqdn(name) else { return };
        let records = data.into_iter().flatten().map(|d| Record::from_rdata(owner.clone(), TTL, d));
        self.names.entry(name.to_string()).or_default().extend(records);
        let mut rest = name;
        while let Some((_, parent)) = rest.split_once('.') {
            if parent.len() < self.domain.len() {
                break;
            }
            self.names.entry(parent.to_string()).or_default();
            rest = parent;
        }
    }
}

/// What to do with a query for `name` (any case, with or without the trailing dot) and
/// `record_type` (`ANY` gets every record of the name).
pub fn answer(records: &Records, name: &str, record_type: RecordType) -> Answer {
    let name = normalize(name);
    let under_domain = name == records.domain || name.ends_with(&format!(".{}", records.domain));
    if !under_domain {
        return Answer::Forward;
    }
    let Some(all) = records.names.get(&name) else { return Answer::NxDomain };
    let found: Vec<Record> =
        all.iter().filter(|r| record_type == RecordType::ANY || r.record_type() == record_type).cloned().collect();
    if found.is_empty() {
        Answer::NoData
    } else {
        Answer::Records(found)
    }
}

/// The ready, not terminating endpoints of `slice`, one per IPv4 address, each with the label it
/// gets under its Service's name: its hostname, or else its address with dashes (`10-0-0-5`).
fn ready_hosts(slice: &EndpointSlice) -> impl Iterator<Item = (String, Ipv4Addr)> + '_ {
    let ready = slice.endpoints.iter().filter(|e| e.conditions.is_ready() && !e.conditions.is_terminating());
    ready.flat_map(|endpoint| {
        endpoint.addresses.iter().filter_map(|a| a.parse::<Ipv4Addr>().ok()).map(|address| {
            let host = match &endpoint.hostname {
                Some(hostname) => hostname.to_ascii_lowercase(),
                None => address.to_string().replace('.', "-"),
            };
            (host, address)
        })
    })
}

/// The port on the pods of `slice` for the Service port `name` over `protocol`.
fn slice_port(slice: &EndpointSlice, name: &str, protocol: &str) -> Option<u16> {
    let port =
        slice.ports.iter().find(|p| p.name.as_deref() == Some(name) && self::protocol(&p.protocol) == protocol)?;
    port.port.and_then(|p| u16::try_from(p).ok())
}

/// A port's protocol, `TCP` when unset as in Kubernetes.
fn protocol(protocol: &Option<String>) -> &str {
    protocol.as_deref().unwrap_or("TCP")
}

/// `_<port>._<protocol>.<service name>`, the name of a named port's SRV records.
fn srv_name(port: &str, protocol: &str, service_name: &str) -> String {
    format!("_{}._{}.{service_name}", port.to_ascii_lowercase(), protocol.to_ascii_lowercase())
}

/// Lowercase, no trailing dot: the form names are kept and compared in.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `name` as an absolute DNS name, if it is a valid one.
fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::endpoint_slice::{Endpoint, EndpointConditions, EndpointPort};
    use skiff_api::kinds::service::ServicePort;

    fn service(name: &str, cluster_ip: &str) -> Service {
        let mut s = Service::default();
        s.metadata.name = name.into();
        s.metadata.namespace = "shop".into();
        s.spec.cluster_ip = Some(cluster_ip.into());
        s.spec.ports = vec![
            ServicePort { name: Some("http".into()), protocol: Some("TCP".into()), port: 80, ..Default::default() },
            ServicePort { name: Some("Dns".into()), protocol: Some("UDP".into()), port: 53, ..Default::default() },
        ];
        s
    }

    fn endpoint(ip: &str, hostname: Option<&str>, ready: bool) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            hostname: hostname.map(Into::into),
            conditions: EndpointConditions { ready: Some(ready), serving: Some(ready), terminating: Some(false) },
            ..Default::default()
        }
    }

    fn slice(service: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
        let port = |name: &str, protocol: &str, port| EndpointPort {
            name: Some(name.into()),
            protocol: Some(protocol.into()),
            port: Some(port),
            app_protocol: None,
        };
        let mut s = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: vec![port("http", "TCP", 8080), port("Dns", "UDP", 5353)],
            ..Default::default()
        };
        s.metadata.namespace = "shop".into();
        s.metadata.name = format!("{service}-abcde");
        s.metadata.labels.insert(SERVICE_NAME_LABEL.into(), service.into());
        s
    }

    fn a(ips: &[&str]) -> Vec<RData> {
        ips.iter().map(|ip| RData::A(A(ip.parse().expect("ip")))).collect()
    }

    fn srv(targets: &[(u16, &str)]) -> Vec<RData> {
        targets
            .iter()
            .map(|&(port, target)| RData::SRV(SRV::new(0, 100, port, Name::from_ascii(target).expect("name"))))
            .collect()
    }

    /// The data of the records found, or the non-record answer as is.
    fn lookup(records: &Records, name: &str, record_type: RecordType) -> Result<Vec<RData>, Answer> {
        match answer(records, name, record_type) {
            Answer::Records(found) => {
                assert!(found.iter().all(|r| r.ttl == TTL), "{found:?}");
                Ok(found.into_iter().map(|r| r.data).collect())
            }
            other => Err(other),
        }
    }

    fn shop() -> Records {
        let web = service("web", "10.96.0.10");
        let db = service("db", "None");
        let pending = service("pending", "");
        let db_endpoints = slice(
            "db",
            vec![
                endpoint("10.0.0.5", None, true),
                endpoint("10.0.0.6", Some("db-0"), true),
                endpoint("10.0.0.7", None, false),
            ],
        );
        let web_endpoints = slice("web", vec![endpoint("10.0.0.9", None, true)]);
        Records::build(&[&web, &db, &pending], &[&db_endpoints, &web_endpoints], "Cluster.Local.")
    }

    #[test]
    fn a_normal_service_answers_its_cluster_ip_and_one_srv_per_named_port() {
        let records = shop();
        assert_eq!(lookup(&records, "web.shop.svc.cluster.local", RecordType::A), Ok(a(&["10.96.0.10"])));
        assert_eq!(
            lookup(&records, "_http._tcp.web.shop.svc.cluster.local.", RecordType::SRV),
            Ok(srv(&[(80, "web.shop.svc.cluster.local.")]))
        );
        assert_eq!(
            lookup(&records, "_dns._udp.web.shop.svc.cluster.local", RecordType::SRV),
            Ok(srv(&[(53, "web.shop.svc.cluster.local.")]))
        );
        assert_eq!(lookup(&records, "10-0-0-9.web.shop.svc.cluster.local", RecordType::A), Err(Answer::NxDomain));
    }

    #[test]
    fn a_headless_service_answers_its_ready_endpoints_each_under_its_own_name() {
        let records = shop();
        assert_eq!(lookup(&records, "db.shop.svc.cluster.local", RecordType::A), Ok(a(&["10.0.0.5", "10.0.0.6"])));
        assert_eq!(lookup(&records, "10-0-0-5.db.shop.svc.cluster.local", RecordType::A), Ok(a(&["10.0.0.5"])));
        assert_eq!(lookup(&records, "db-0.db.shop.svc.cluster.local", RecordType::A), Ok(a(&["10.0.0.6"])));
        assert_eq!(lookup(&records, "10-0-0-7.db.shop.svc.cluster.local", RecordType::A), Err(Answer::NxDomain));
        assert_eq!(
            lookup(&records, "_http._tcp.db.shop.svc.cluster.local", RecordType::SRV),
            Ok(srv(&[(8080, "10-0-0-5.db.shop.svc.cluster.local."), (8080, "db-0.db.shop.svc.cluster.local.")]))
        );
        assert_eq!(
            lookup(&records, "_dns._udp.db.shop.svc.cluster.local", RecordType::SRV),
            Ok(srv(&[(5353, "10-0-0-5.db.shop.svc.cluster.local."), (5353, "db-0.db.shop.svc.cluster.local.")]))
        );
    }

    #[test]
    fn names_match_in_any_case_with_or_without_the_trailing_dot() {
        let records = shop();
        for name in ["WEB.Shop.svc.cluster.local", "web.shop.svc.CLUSTER.local.", "web.shop.svc.cluster.local"] {
            assert_eq!(lookup(&records, name, RecordType::A), Ok(a(&["10.96.0.10"])), "{name}");
        }
        assert_eq!(records.domain(), "cluster.local");
    }

    #[test]
    fn existing_names_without_that_type_are_nodata_unknown_ones_nxdomain_and_others_forwarded() {
        let records = shop();
        assert_eq!(answer(&records, "web.shop.svc.cluster.local", RecordType::AAAA), Answer::NoData);
        assert_eq!(answer(&records, "shop.svc.cluster.local", RecordType::A), Answer::NoData);
        assert_eq!(answer(&records, "_http._tcp.web.shop.svc.cluster.local", RecordType::A), Answer::NoData);
        assert_eq!(answer(&records, "cluster.local.", RecordType::A), Answer::NoData);
        assert_eq!(answer(&records, "pending.shop.svc.cluster.local", RecordType::A), Answer::NxDomain);
        assert_eq!(answer(&records, "nope.shop.svc.cluster.local", RecordType::A), Answer::NxDomain);
        assert_eq!(answer(&records, "_http._udp.web.shop.svc.cluster.local", RecordType::SRV), Answer::NxDomain);
        assert_eq!(answer(&records, "example.org", RecordType::A), Answer::Forward);
        assert_eq!(answer(&records, "notcluster.local", RecordType::A), Answer::Forward);
        assert_eq!(
            answer(&Records::empty(DEFAULT_DOMAIN), "web.shop.svc.cluster.local", RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn any_returns_every_record_of_the_name() {
        let records = shop();
        assert_eq!(lookup(&records, "db.shop.svc.cluster.local", RecordType::ANY), Ok(a(&["10.0.0.5", "10.0.0.6"])));
    }
}
