//! A Service's cluster IP and node ports: chosen (or checked, when the user names them) from the
//! cluster's [`ServiceNetwork`], claimed in the same write that stores the Service and released in
//! the write that removes it. A claim is a store key per address (`/allocations/clusterips/10.96.0.7`)
//! written only if absent, so two Services racing for one address cannot both commit.
//!
//! Pure: what is taken is an input, the decision is the Service as stored and the keys to claim
//! and release.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use skiff_api::kinds::service::HEADLESS;
use skiff_api::kinds::Service;
use skiff_api::network::ServiceNetwork;
use skiff_api::path::FieldPath;
use skiff_api::validate::FieldError;
use skiff_api::{ApiError, Object};

/// The store prefix of cluster IP claims; each key's value is the owner's `namespace/name`.
pub const CLUSTER_IP_CLAIMS: &str = "/allocations/clusterips/";
/// The store prefix of node port claims.
pub const NODE_PORT_CLAIMS: &str = "/allocations/nodeports/";

/// The claim key of a cluster IP.
pub fn cluster_ip_key(ip: Ipv4Addr) -> String {
    format!("{CLUSTER_IP_CLAIMS}{ip}")
}

/// The claim key of a node port.
pub fn node_port_key(port: u16) -> String {
    format!("{NODE_PORT_CLAIMS}{port}")
}

/// Who holds each claimed address: what the store's claim keys say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    pub cluster_ips: BTreeMap<Ipv4Addr, String>,
    pub node_ports: BTreeMap<u16, String>,
}

/// The name a claim records for its Service.
pub fn owner(service: &Service) -> String {
    format!("{}/{}", service.metadata.namespace, service.metadata.name)
}

/// The claim keys a Service holds.
pub fn held(service: &Service) -> Vec<String> {
    let ip = service.spec.cluster_ip().map(cluster_ip_key);
    let ports =
        service.spec.ports.iter().filter_map(|p| p.node_port.and_then(|n| u16::try_from(n).ok())).map(node_port_key);
    ip.into_iter().chain(ports).collect()
}

/// What a create or update does to the claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// Keys to write (they must not exist).
    pub claim: Vec<String>,
    /// Keys to delete.
    pub release: Vec<String>,
}

fn invalid(service: &Service, field: FieldPath, message: String) -> ApiError {
    ApiError::invalid(&Object::Service(service.clone()), &[FieldError { path: field, message }])
}

/// Fills in `next`'s cluster IP and node ports and says which claims change. `current` is the
/// stored Service when this is an update: its addresses stay unless the update names others (a
/// cluster IP never changes; kubectl apply of a manifest without one keeps it). `seed` spreads
/// allocations over the range (the new object's uid).
pub fn allocate(
    current: Option<&Service>,
    next: &mut Service,
    taken: &Taken,
    network: &ServiceNetwork,
    seed: u64,
) -> Result<Claims, ApiError> {
    let me = owner(next);
    let spec_path = FieldPath::root().at("spec");
    let free_ip = |ip: &Ipv4Addr| taken.cluster_ips.get(ip).is_none_or(|o| *o == me);
    let free_port = |port: &u16| taken.node_ports.get(port).is_none_or(|o| *o == me);

    // The cluster IP.
    let asked = next.spec.cluster_ip.clone().filter(|ip| !ip.is_empty());
    let kept = current.and_then(|c| c.spec.cluster_ip.clone());
    match (&kept, &asked) {
        (Some(kept), Some(asked)) if kept != asked => {
            return Err(invalid(
                next,
                spec_path.at("clusterIP"),
                format!("is {kept} and cannot change (asked {asked}); delete and recreate the Service"),
            ))
        }
        (Some(kept), None) => next.spec.cluster_ip = Some(kept.clone()),
        (None, Some(asked)) if asked != HEADLESS => {
            let ip: Ipv4Addr = asked
                .parse()
                .map_err(|_| invalid(next, spec_path.at("clusterIP"), format!("{asked:?} is not an IPv4 address")))?;
            network.check_cluster_ip(ip).map_err(|m| invalid(next, spec_path.at("clusterIP"), m))?;
            if !free_ip(&ip) {
                let holder = taken.cluster_ips.get(&ip).cloned().unwrap_or_default();
                return Err(invalid(
                    next,
                    spec_path.at("clusterIP"),
                    format!("{ip} is already allocated to Service {holder}; choose another or leave it unset"),
                ));
            }
        }
        (None, None) => {
            let ip = network.pick_cluster_ip(seed, |ip| !free_ip(&ip)).ok_or_else(|| {
                invalid(next, spec_path.at("clusterIP"), format!("the service range {} is full", network.cluster_ips))
            })?;
            next.spec.cluster_ip = Some(ip.to_string());
        }
        _ => {}
    }
    if let Some(ip) = &next.spec.cluster_ip {
        next.spec.cluster_ips = vec![ip.clone()];
    }

    // Node ports: kept by port number and protocol across updates, checked or chosen otherwise.
    let mut used: Vec<u16> = Vec::new();
    if next.spec.is_node_port() {
        let before: Vec<_> =
            current.filter(|c| c.spec.is_node_port()).map(|c| c.spec.ports.clone()).unwrap_or_default();
        for i in 0..next.spec.ports.len() {
            let path = spec_path.at("ports").index(i).at("nodePort");
            let port = &next.spec.ports[i];
            let asked = port.node_port;
            let previous = before
                .iter()
                .find(|p| p.port == port.port && p.protocol == port.protocol)
                .and_then(|p| p.node_port)
                .and_then(|n| u16::try_from(n).ok());
            let chosen = match asked {
                Some(n) => {
                    network.check_node_port(n).map_err(|m| invalid(next, path.clone(), m))?;
                    let n = n as u16;
                    if !free_port(&n) {
                        let holder = taken.node_ports.get(&n).cloned().unwrap_or_default();
                        return Err(invalid(
                            next,
                            path,
                            format!("{n} is already allocated to Service {holder}; choose another or leave it unset"),
                        ));
                    }
                    n
                }
                None => match previous.filter(|p| !used.contains(p)) {
                    Some(p) => p,
                    None => network
                        .pick_node_port(seed.wrapping_add(i as u64), |p| !free_port(&p) || used.contains(&p))
                        .ok_or_else(|| {
                            let r = &network.node_ports;
                            invalid(next, path, format!("the node port range {}-{} is full", r.start(), r.end()))
                        })?,
                },
            };
            used.push(chosen);
            next.spec.ports[i].node_port = Some(i32::from(chosen));
        }
    }

    let now = held(next);
    let before = current.map(held).unwrap_or_default();
    Ok(Claims {
        claim: now.iter().filter(|k| !before.contains(k)).cloned().collect(),
        release: before.into_iter().filter(|k| !now.contains(k)).collect(),
    })
}

/// A seed from a uid: allocations of different Services start their search at different places.
pub fn seed(uid: &str) -> u64 {
    uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::service::ServicePort;

    fn service(name: &str, cluster_ip: Option<&str>, node_port: Option<Option<i32>>) -> Service {
        let mut s = Service::default();
        s.metadata.name = name.into();
        s.metadata.namespace = "default".into();
        s.spec.cluster_ip = cluster_ip.map(str::to_string);
        s.spec.type_ = Some(if node_port.is_some() { "NodePort" } else { "ClusterIP" }.into());
        s.spec.ports = vec![ServicePort {
            port: 80,
            protocol: Some("TCP".into()),
            node_port: node_port.flatten(),
            ..Default::default()
        }];
        s
    }

    fn small() -> ServiceNetwork {
        ServiceNetwork::parse("10.96.0.0/28", "30000-30002").expect("network")
    }

    #[test]
    fn a_new_service_gets_a_free_address_and_claims_it() {
        let mut taken = Taken::default();
        taken.cluster_ips.insert("10.96.0.1".parse().expect("ip"), "default/other".into());
        let mut s = service("web", None, None);
        let claims = allocate(None, &mut s, &taken, &small(), 0).expect("allocate");
        assert_eq!(s.spec.cluster_ip.as_deref(), Some("10.96.0.2"));
        assert_eq!(s.spec.cluster_ips, vec!["10.96.0.2".to_string()]);
        assert_eq!(claims, Claims { claim: vec!["/allocations/clusterips/10.96.0.2".into()], release: vec![] });
    }

    #[test]
    fn a_chosen_address_is_honoured_if_free_and_refused_if_taken_or_outside() {
        let mut taken = Taken::default();
        taken.cluster_ips.insert("10.96.0.5".parse().expect("ip"), "default/other".into());
        let mut free = service("web", Some("10.96.0.6"), None);
        allocate(None, &mut free, &taken, &small(), 0).expect("free");
        assert_eq!(free.spec.cluster_ip.as_deref(), Some("10.96.0.6"));

        let mut clash = service("web", Some("10.96.0.5"), None);
        let e = allocate(None, &mut clash, &taken, &small(), 0).expect_err("taken");
        assert!(e.message.contains("spec.clusterIP") && e.message.contains("default/other"), "{e}");

        let mut outside = service("web", Some("10.97.0.5"), None);
        let e = allocate(None, &mut outside, &taken, &small(), 0).expect_err("outside");
        assert!(e.message.contains("not in the cluster's service range 10.96.0.0/28"), "{e}");
    }

    #[test]
    fn headless_services_claim_nothing() {
        let mut s = service("db", Some("None"), None);
        let claims = allocate(None, &mut s, &Taken::default(), &small(), 0).expect("allocate");
        assert_eq!(s.spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(claims, Claims::default());
    }

    #[test]
    fn an_update_keeps_the_address_and_node_port_and_may_not_change_the_address() {
        let mut first = service("web", None, Some(None));
        let claims = allocate(None, &mut first, &Taken::default(), &small(), 7).expect("create");
        assert_eq!(claims.claim.len(), 2);
        let mut taken = Taken::default();
        for key in &claims.claim {
            if let Some(ip) = key.strip_prefix(CLUSTER_IP_CLAIMS) {
                taken.cluster_ips.insert(ip.parse().expect("ip"), "default/web".into());
            } else if let Some(port) = key.strip_prefix(NODE_PORT_CLAIMS) {
                taken.node_ports.insert(port.parse().expect("port"), "default/web".into());
            }
        }
        let mut again = service("web", None, Some(None));
        let claims = allocate(Some(&first), &mut again, &taken, &small(), 99).expect("update");
        assert_eq!(claims, Claims::default());
        assert_eq!(again.spec, first.spec);

        let mut moved = service("web", Some("10.96.0.9"), None);
        let e = allocate(Some(&first), &mut moved, &taken, &small(), 0).expect_err("immutable");
        assert!(e.message.contains("cannot change"), "{e}");

        // NodePort to ClusterIP releases the node port.
        let mut plain = service("web", None, None);
        let claims = allocate(Some(&first), &mut plain, &taken, &small(), 0).expect("to ClusterIP");
        assert!(claims.claim.is_empty());
        assert_eq!(claims.release.len(), 1);
        assert!(claims.release[0].starts_with(NODE_PORT_CLAIMS));
    }

    #[test]
    fn node_ports_are_checked_and_never_handed_out_twice() {
        let mut taken = Taken::default();
        taken.node_ports.insert(30001, "default/other".into());
        let mut clash = service("web", None, Some(Some(30001)));
        let e = allocate(None, &mut clash, &taken, &small(), 0).expect_err("taken");
        assert!(e.message.contains("30001 is already allocated to Service default/other"), "{e}");
        let mut outside = service("web", None, Some(Some(31000)));
        let e = allocate(None, &mut outside, &taken, &small(), 0).expect_err("outside");
        assert!(e.message.contains("node port range 30000-30002"), "{e}");
        let mut auto = service("web", None, Some(None));
        auto.spec.ports.push(ServicePort { port: 81, name: Some("b".into()), ..Default::default() });
        auto.spec.ports[0].name = Some("a".into());
        allocate(None, &mut auto, &taken, &small(), 1).expect("auto");
        let ports: Vec<_> = auto.spec.ports.iter().map(|p| p.node_port).collect();
        assert_eq!(ports, vec![Some(30002), Some(30000)]);
        let mut full = service("more", None, Some(None));
        taken.node_ports.extend([(30000, "x".into()), (30002, "y".into())]);
        let e = allocate(None, &mut full, &taken, &small(), 0).expect_err("full");
        assert!(e.message.contains("is full"), "{e}");
    }
}
