//! `discovery.k8s.io/v1/EndpointSlice`: the addresses and ports of the pods behind a Service, with
//! whether each is ready, serving and terminating. The leader's endpoints controller writes them;
//! every member's proxy and DNS read them.

use serde::{Deserialize, Serialize};

use crate::kinds::event::ObjectReference;
use crate::kinds::{Kind, Resource};
use crate::meta::ObjectMeta;
use crate::path::FieldPath;
use crate::validate::{check_port, check_protocol, one_of, Errors};

/// The label that names the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label that names the controller that keeps a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `IPv4` (the only family Skiff's pods have), `IPv6` or `FQDN`.
    #[serde(default)]
    pub address_type: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub ports: Vec<EndpointPort>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub addresses: Vec<String>,
    #[serde(default)]
    pub conditions: EndpointConditions,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<ObjectReference>,
}

/// Kubernetes' three conditions: `ready` (send new traffic: serving and not terminating),
/// `serving` (the pod's readiness, whether or not it is terminating) and `terminating`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
}

impl EndpointConditions {
    /// Unset `ready` means ready, as Kubernetes reads it.
    pub fn is_ready(&self) -> bool {
        self.ready.unwrap_or(true)
    }

    /// Unset `serving` means what `ready` says.
    pub fn is_serving(&self) -> bool {
        self.serving.unwrap_or_else(|| self.is_ready())
    }

    pub fn is_terminating(&self) -> bool {
        self.terminating.unwrap_or(false)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    /// The Service port's name (empty for a Service's only, unnamed port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The port on the pods: the Service's `targetPort` resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

impl Resource for EndpointSlice {
    const KIND: Kind = Kind::EndpointSlice;
    const HAS_STATUS: bool = false;

    metadata_field!();

    fn same_desired_state(&self, other: &Self) -> bool {
        self.address_type == other.address_type && self.endpoints == other.endpoints && self.ports == other.ports
    }

    fn apply_defaults(&mut self) {
        if self.address_type.is_empty() {
            self.address_type = "IPv4".into();
        }
        for port in &mut self.ports {
            port.protocol.get_or_insert_with(|| "TCP".to_string());
        }
    }

    fn validate(&self, errs: &mut Errors, root: &FieldPath) {
        errs.check(&root.at("addressType"), one_of(&Some(self.address_type.clone()), &["IPv4", "IPv6", "FQDN"]));
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let path = root.at("endpoints").index(i).at("addresses");
            if endpoint.addresses.is_empty() {
                errs.add(path.clone(), "required: an endpoint needs an address");
            }
            if self.address_type == "IPv4" {
                for (j, address) in endpoint.addresses.iter().enumerate() {
                    if address.parse::<std::net::Ipv4Addr>().is_err() {
                        errs.add(path.index(j), format!("{address:?} is not an IPv4 address"));
                    }
                }
            }
        }
        for (i, port) in self.ports.iter().enumerate() {
            let path = root.at("ports").index(i);
            if let Some(n) = port.port {
                errs.check(&path.at("port"), check_port(n));
            }
            errs.check(&path.at("protocol"), check_protocol(&port.protocol));
        }
    }
}
