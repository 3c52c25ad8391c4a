//! `v1/Service`: a stable port in front of the ready pods a selector picks.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::kinds::{Kind, Resource};
use crate::meta::{IntOrString, ObjectMeta};
use crate::name::check_dns1123_label;
use crate::path::FieldPath;
use crate::validate::{check_port, check_port_name, check_protocol, labels, one_of, Errors};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Pods with all these labels back the service (`matchLabels` semantics only, as in Kubernetes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// `ClusterIP` (default) or `NodePort`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Set by the server from the cluster's service range unless the user sets it; `None` makes
    /// a headless Service (DNS answers its pods' addresses, no proxy).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// Kubernetes' list form of `clusterIP` (one address: Skiff is IPv4 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
}

/// The `clusterIP` of a headless Service.
pub const HEADLESS: &str = "None";

impl ServiceSpec {
    pub fn is_headless(&self) -> bool {
        self.cluster_ip.as_deref() == Some(HEADLESS)
    }

    pub fn is_node_port(&self) -> bool {
        self.type_.as_deref() == Some("NodePort")
    }

    /// The cluster IP, once one is set (not for a headless Service).
    pub fn cluster_ip(&self) -> Option<std::net::Ipv4Addr> {
        self.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Required when the service has more than one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub port: i32,
    /// A number or the name of a container port; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    /// For `NodePort` services: 30000-32767, allocated when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<serde_json::Map<String, serde_json::Value>>,
}

fn validate_spec(errs: &mut Errors, path: &FieldPath, spec: &ServiceSpec) {
    errs.check(&path.at("type"), one_of(&spec.type_, &["ClusterIP", "NodePort"]));
    match spec.cluster_ip.as_deref() {
        None | Some("") => {}
        Some(HEADLESS) if spec.is_node_port() => {
            errs.add(path.at("clusterIP"), "may not be \"None\" for a NodePort service: a node port needs a cluster IP")
        }
        Some(HEADLESS) => {}
        Some(ip) if ip.parse::<std::net::Ipv4Addr>().is_err() => {
            errs.add(path.at("clusterIP"), format!("{ip:?} must be an IPv4 address, \"None\" (headless) or unset"))
        }
        Some(_) => {}
    }
    match spec.cluster_ips.as_slice() {
        [] => {}
        [one] if Some(one) == spec.cluster_ip.as_ref() => {}
        [_] => errs.add(path.at("clusterIPs"), "must be [clusterIP] when both are set"),
        _ => errs.add(path.at("clusterIPs"), "Skiff is IPv4 only: at most one address"),
    }
    labels(errs, &path.at("selector"), &spec.selector);
    if spec.ports.is_empty() {
        errs.add(path.at("ports"), "required: a service needs at least one port");
    }
    let mut names = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let pp = path.at("ports").index(i);
        errs.check(&pp.at("port"), check_port(port.port));
        errs.check(&pp.at("protocol"), check_protocol(&port.protocol));
        match &port.name {
            Some(name) => {
                errs.check(&pp.at("name"), check_dns1123_label(name));
                if !names.insert(name.as_str()) {
                    errs.add(pp.at("name"), format!("{name:?} names another port of this service"));
                }
            }
            None if spec.ports.len() > 1 => errs.add(pp.at("name"), "required when a service has more than one port"),
            None => {}
        }
        match &port.target_port {
            Some(IntOrString::Int(n)) => errs.check(&pp.at("targetPort"), check_port(*n)),
            Some(IntOrString::String(name)) => errs.check(&pp.at("targetPort"), check_port_name(name)),
            None => {}
        }
        if let Some(np) = port.node_port {
            if spec.type_.as_deref() != Some("NodePort") {
                errs.add(pp.at("nodePort"), "may only be set when type is NodePort");
            } else if !(30000..=32767).contains(&np) {
                errs.add(pp.at("nodePort"), format!("{np} must be between 30000 and 32767"));
            } else if !node_ports.insert(np) {
                errs.add(pp.at("nodePort"), format!("{np} is used by another port of this service"));
            }
        }
    }
}

impl Resource for Service {
    const KIND: Kind = Kind::Service;
    const HAS_STATUS: bool = true;

    metadata_field!();

    fn same_desired_state(&self, other: &Self) -> bool {
        self.spec == other.spec
    }

    fn copy_status_from(&mut self, other: &Self) {
        self.status = other.status.clone();
    }

    fn apply_defaults(&mut self) {
        self.spec.type_.get_or_insert_with(|| "ClusterIP".to_string());
        if self.spec.cluster_ip.as_deref().is_none_or(str::is_empty) {
            self.spec.cluster_ip = self.spec.cluster_ips.first().cloned();
        }
        for port in &mut self.spec.ports {
            port.protocol.get_or_insert_with(|| "TCP".to_string());
            if port.target_port.is_none() {
                port.target_port = Some(IntOrString::Int(port.port));
            }
        }
    }

    fn validate(&self, errs: &mut Errors, root: &FieldPath) {
        validate_spec(errs, &root.at("spec"), &self.spec);
    }
}
