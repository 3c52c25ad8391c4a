//! The endpoints controller: keeps, for each Service with a selector, EndpointSlices that list the
//! address of every pod the selector matches, with Kubernetes' conditions:
//!
//! - `serving`: the pod is Ready;
//! - `terminating`: the pod is being deleted;
//! - `ready`: serving and not terminating (new connections go only to ready endpoints; a proxy
//!   falls back to serving-and-terminating ones when none is ready).
//!
//! A terminating pod stays listed until it is gone, so its agent can see that it left the ready
//! set before it stops its containers. Pods are grouped by the ports their Service's
//! `targetPort`s resolve to (a name may mean different numbers in different pods): one slice per
//! group, named from its ports, so deciding again gives the same names. A Service whose selector
//! matches nothing keeps one empty slice, as Kubernetes does. Pure: [`slices_for`] decides for one
//! Service from its pods.

use std::collections::{BTreeMap, HashMap};

use skiff_api::api::Filter;
use skiff_api::kinds::endpoint_slice::{
    Endpoint, EndpointConditions, EndpointPort, MANAGED_BY_LABEL, SERVICE_NAME_LABEL,
};
use skiff_api::kinds::event::ObjectReference;
use skiff_api::kinds::{EndpointSlice, Pod, Service};
use skiff_api::meta::{IntOrString, OwnerReference, Time};
use skiff_api::{Kind, Object};

use crate::names::{fnv1a, spell};
use crate::pods;
use crate::runner::{Action, Controller, Reconciled, State};

/// What the `managed-by` label of the slices this controller keeps says.
pub const MANAGED_BY: &str = "endpointslice-controller.skiff.dev";

/// The port on `pod` that `target` names: a number as it is, a name looked up among the pod's
/// container ports of the same protocol. `None` when the pod has no port of that name.
pub fn resolve_target_port(pod: &Pod, target: &IntOrString, protocol: &str) -> Option<i32> {
    match target {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => pod
            .spec
            .containers
            .iter()
            .flat_map(|c| c.ports_named(name))
            .find(|p| p.protocol.as_deref().unwrap_or("TCP") == protocol)
            .map(|p| p.container_port),
    }
}

/// Whether the Service's selector picks `pod` (matchLabels semantics; an empty selector picks
/// nothing: such a Service's endpoints are the user's to write).
fn selects(service: &Service, pod: &Pod) -> bool {
    pod.metadata.namespace == service.metadata.namespace
        && service.spec.selector.iter().all(|(k, v)| pod.metadata.labels.get(k) == Some(v))
}

fn endpoint(pod: &Pod, ip: &str) -> Endpoint {
    let serving = pods::is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: EndpointConditions {
            ready: Some(serving && !terminating),
            serving: Some(serving),
            terminating: Some(terminating),
        },
        hostname: None,
        node_name: pod.spec.node_name.clone(),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(pod.metadata.namespace.clone()),
            name: Some(pod.metadata.name.clone()),
            uid: Some(pod.metadata.uid.clone()),
            ..Default::default()
        }),
    }
}

/// The slice of `service` holding `endpoints` on `ports`.
fn slice(service: &Service, ports: Vec<EndpointPort>, endpoints: Vec<Endpoint>) -> EndpointSlice {
    let key: Vec<String> = ports.iter().map(|p| format!("{:?}/{:?}/{:?}", p.name, p.protocol, p.port)).collect();
    let name = format!("{}-{}", service.metadata.name, spell(fnv1a(&[key.join(",").as_bytes()]), 5));
    let mut s = EndpointSlice { address_type: "IPv4".into(), endpoints, ports, ..Default::default() };
    s.metadata.name = name;
    s.metadata.namespace = service.metadata.namespace.clone();
    s.metadata.labels = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_string(), service.metadata.name.clone()),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
    ]);
    s.metadata.owner_references = vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone(),
        uid: service.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    s
}

/// The slices `service` should have, given the pods of its namespace.
pub fn slices_for(service: &Service, pods: &[&Pod]) -> Vec<EndpointSlice> {
    let mut groups: BTreeMap<Vec<EndpointPort>, Vec<Endpoint>> = BTreeMap::new();
    let mut selected: Vec<&Pod> = pods.iter().copied().filter(|p| selects(service, p)).collect();
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in selected {
        if pods::is_terminal(pod) {
            continue;
        }
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).filter(|ip| !ip.is_empty()) else {
            continue;
        };
        let ports: Option<Vec<EndpointPort>> = service
            .spec
            .ports
            .iter()
            .map(|sp| {
                let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
                let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
                let port = resolve_target_port(pod, &target, &protocol)?;
                Some(EndpointPort {
                    name: sp.name.clone(),
                    protocol: Some(protocol),
                    port: Some(port),
                    app_protocol: None,
                })
            })
            .collect();
        // A pod without a port a Service names is no endpoint of it (Kubernetes lists it only
        // for the ports it has; Skiff's proxy forwards whole Services, so it leaves the pod out).
        let Some(ports) = ports else { continue };
        groups.entry(ports).or_default().push(endpoint(pod, ip));
    }
    if groups.is_empty() {
        return vec![slice(service, Vec::new(), Vec::new())];
    }
    groups.into_iter().map(|(ports, endpoints)| slice(service, ports, endpoints)).collect()
}

/// Whether a stored slice already says what `want` says.
fn same(have: &EndpointSlice, want: &EndpointSlice) -> bool {
    have.endpoints == want.endpoints
        && have.ports == want.ports
        && have.address_type == want.address_type
        && have.metadata.labels == want.metadata.labels
        && have.metadata.owner_references == want.metadata.owner_references
}

pub struct EndpointsController;

impl Controller for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    fn watches(&self) -> Vec<(Kind, Filter)> {
        vec![
            (Kind::Service, Filter::default()),
            (Kind::Pod, Filter::default()),
            (Kind::EndpointSlice, Filter::default()),
        ]
    }

    /// Pods turning ready or unready reach the proxies within this plus a replication.
    fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(50)
    }

    fn reconcile(&self, state: &State, _now: Time) -> Reconciled {
        let services: Vec<&Service> = state
            .of(Kind::Service)
            .iter()
            .filter_map(|o| match o.as_ref() {
                Object::Service(s) if !s.spec.selector.is_empty() && s.metadata.deletion_timestamp.is_none() => Some(s),
                _ => None,
            })
            .collect();
        let mut out = Reconciled::default();
        if services.is_empty() && state.of(Kind::EndpointSlice).is_empty() {
            return out;
        }
        let mut pods_by_namespace: HashMap<&str, Vec<&Pod>> = HashMap::new();
        for pod in pods::of(state.of(Kind::Pod)) {
            pods_by_namespace.entry(pod.metadata.namespace.as_str()).or_default().push(pod);
        }
        let mut have: HashMap<(&str, &str), &EndpointSlice> = HashMap::new();
        for o in state.of(Kind::EndpointSlice) {
            if let Object::EndpointSlice(s) = o.as_ref() {
                if s.metadata.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY) {
                    have.insert((s.metadata.namespace.as_str(), s.metadata.name.as_str()), s);
                }
            }
        }
        let mut wanted = std::collections::HashSet::new();
        for service in services {
            let pods = pods_by_namespace.get(service.metadata.namespace.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            for want in slices_for(service, pods) {
                let key = (want.metadata.namespace.clone(), want.metadata.name.clone());
                match have.get(&(key.0.as_str(), key.1.as_str())) {
                    Some(existing) if same(existing, &want) => {}
                    _ => out.actions.push(Action::Apply(Object::EndpointSlice(want))),
                }
                wanted.insert(key);
            }
        }
        for ((namespace, name), slice) in have {
            if !wanted.contains(&(namespace.to_string(), name.to_string())) {
                out.actions.push(Action::Delete(Object::EndpointSlice(slice.clone())));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::pod::{Container, ContainerPort, PodCondition, PodStatus};
    use skiff_api::kinds::service::ServicePort;

    fn service(target: IntOrString) -> Service {
        let mut s = Service::default();
        s.metadata.name = "hello".into();
        s.metadata.namespace = "default".into();
        s.metadata.uid = "svc-uid".into();
        s.spec.selector = BTreeMap::from([("app".to_string(), "hello".to_string())]);
        s.spec.ports = vec![ServicePort {
            port: 80,
            protocol: Some("TCP".into()),
            target_port: Some(target),
            ..Default::default()
        }];
        s
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool, http_port: i32) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = "default".into();
        p.metadata.uid = format!("uid-{name}");
        p.metadata.labels = BTreeMap::from([("app".to_string(), "hello".to_string())]);
        p.spec.node_name = Some("node1".into());
        p.spec.containers = vec![Container {
            name: "web".into(),
            ports: vec![ContainerPort { name: Some("http".into()), container_port: http_port, ..Default::default() }],
            ..Default::default()
        }];
        let mut status =
            PodStatus { phase: Some("Running".into()), pod_ip: ip.map(str::to_string), ..Default::default() };
        if ready {
            status.conditions.push(PodCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() });
        }
        p.status = Some(status);
        p
    }

    fn conditions(s: &EndpointSlice) -> Vec<(String, bool, bool, bool)> {
        s.endpoints
            .iter()
            .map(|e| {
                let c = e.conditions;
                (e.addresses[0].clone(), c.is_ready(), c.is_serving(), c.is_terminating())
            })
            .collect()
    }

    #[test]
    fn ready_unready_and_terminating_pods_carry_kubernetes_conditions() {
        let ready = pod("a", Some("10.0.0.1"), true, 8080);
        let unready = pod("b", Some("10.0.0.2"), false, 8080);
        let mut leaving = pod("c", Some("10.0.0.3"), true, 8080);
        leaving.metadata.deletion_timestamp = Some(Time::from_unix(100).expect("time"));
        let no_ip = pod("d", None, false, 8080);
        let mut other = pod("e", Some("10.0.0.5"), true, 8080);
        other.metadata.labels.clear();
        let slices = slices_for(&service(IntOrString::Int(8080)), &[&ready, &unready, &leaving, &no_ip, &other]);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(
            conditions(s),
            [
                ("10.0.0.1".into(), true, true, false),
                ("10.0.0.2".into(), false, false, false),
                ("10.0.0.3".into(), false, true, true),
            ]
        );
        assert_eq!(s.ports[0].port, Some(8080));
        assert_eq!(s.metadata.labels.get(SERVICE_NAME_LABEL).map(String::as_str), Some("hello"));
        assert_eq!(s.metadata.owner_references[0].uid, "svc-uid");
        let target = s.endpoints[0].target_ref.as_ref().expect("target");
        assert_eq!(target.name.as_deref(), Some("a"));
    }

    #[test]
    fn a_named_target_port_resolves_per_pod_into_one_slice_per_number() {
        let a = pod("a", Some("10.0.0.1"), true, 8080);
        let b = pod("b", Some("10.0.0.2"), true, 9090);
        let mut unnamed = pod("c", Some("10.0.0.3"), true, 8080);
        unnamed.spec.containers[0].ports[0].name = None;
        let slices = slices_for(&service(IntOrString::String("http".into())), &[&a, &b, &unnamed]);
        let mut by_port: Vec<(Option<i32>, Vec<String>)> = slices
            .iter()
            .map(|s| (s.ports[0].port, s.endpoints.iter().map(|e| e.addresses[0].clone()).collect()))
            .collect();
        by_port.sort();
        assert_eq!(by_port, [(Some(8080), vec!["10.0.0.1".to_string()]), (Some(9090), vec!["10.0.0.2".to_string()])]);
        assert_ne!(slices[0].metadata.name, slices[1].metadata.name);
    }

    #[test]
    fn a_selector_that_matches_nothing_keeps_one_empty_slice_and_stale_slices_go() {
        let svc = service(IntOrString::Int(80));
        let empty = slices_for(&svc, &[]);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].endpoints.is_empty());

        let mut state = State::default();
        state.insert(Kind::Service, [Object::Service(svc.clone())]);
        let mut stale = empty[0].clone();
        stale.metadata.name = "hello-old".into();
        state.insert(Kind::EndpointSlice, [Object::EndpointSlice(empty[0].clone()), Object::EndpointSlice(stale)]);
        let r = EndpointsController.reconcile(&state, Time::from_unix(0).expect("time"));
        let names: Vec<(bool, String)> = r
            .actions
            .iter()
            .map(|a| match a {
                Action::Apply(o) => (true, o.meta().name.clone()),
                Action::Delete(o) => (false, o.meta().name.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(names, [(false, "hello-old".to_string())]);
    }

    #[test]
    fn a_pod_turning_ready_updates_the_slice_and_nothing_changes_when_nothing_did() {
        let svc = service(IntOrString::Int(80));
        let unready = pod("a", Some("10.0.0.1"), false, 80);
        let mut state = State::default();
        state.insert(Kind::Service, [Object::Service(svc.clone())]);
        state.insert(Kind::EndpointSlice, slices_for(&svc, &[&unready]).into_iter().map(Object::EndpointSlice));
        let ready = pod("a", Some("10.0.0.1"), true, 80);
        state.insert(Kind::Pod, [Object::Pod(ready.clone())]);
        let r = EndpointsController.reconcile(&state, Time::from_unix(0).expect("time"));
        let [Action::Apply(Object::EndpointSlice(s))] = r.actions.as_slice() else { panic!("{:?}", r.actions) };
        assert_eq!(conditions(s), [("10.0.0.1".into(), true, true, false)]);

        let mut settled = State::default();
        settled.insert(Kind::Service, [Object::Service(svc.clone())]);
        settled.insert(Kind::Pod, [Object::Pod(ready.clone())]);
        settled.insert(Kind::EndpointSlice, slices_for(&svc, &[&ready]).into_iter().map(Object::EndpointSlice));
        assert!(EndpointsController.reconcile(&settled, Time::from_unix(0).expect("time")).actions.is_empty());
    }
}
