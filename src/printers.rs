//! How objects are shown: kubectl's tables (`NAME READY STATUS RESTARTS AGE` for pods), `-o wide`,
//! and the yaml, json and name formats.

use std::collections::BTreeMap;

use comfy_table::{presets::NOTHING, CellAlignment, Table};
use skiff_api::kinds::pod::PodTemplateSpec;
use skiff_api::kinds::{ConfigMap, Deployment, EndpointSlice, Event, Namespace, Node, Pod, ReplicaSet, Service};
use skiff_api::meta::Time;
use skiff_api::selector::LabelSelector;
use skiff_api::{Kind, Object};

use crate::api_client::resource_name;

/// `-o` of `get`, `apply` and `delete`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Wide,
    Yaml,
    Json,
    Name,
}

/// Options of a table.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableOptions {
    pub wide: bool,
    /// A NAMESPACE column first (`-A`).
    pub namespace_column: bool,
    pub show_labels: bool,
    pub no_headers: bool,
}

/// Renders rows as kubectl does: no borders, columns three spaces apart, no trailing spaces.
pub fn render(header: &[&str], rows: Vec<Vec<String>>, no_headers: bool) -> String {
    let mut table = Table::new();
    table.load_preset(NOTHING);
    if !no_headers {
        table.set_header(header.to_vec());
    }
    for row in rows {
        table.add_row(row);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 3));
        column.set_cell_alignment(CellAlignment::Left);
    }
    let text = table.to_string();
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table of `objects` (all of one kind).
pub fn table(kind: Kind, objects: &[Object], opts: TableOptions) -> String {
    let now = jiff::Timestamp::now().as_second();
    let (mut header, wide_header) = columns(kind);
    if opts.wide {
        header.extend(wide_header);
    }
    let mut rows = Vec::new();
    for object in objects {
        let (mut row, wide) = cells(object, now);
        if opts.wide {
            row.extend(wide);
        }
        if opts.namespace_column && kind.namespaced() {
            row.insert(0, object.meta().namespace.clone());
        }
        if opts.show_labels {
            row.push(labels_text(&object.meta().labels));
        }
        rows.push(row);
    }
    if opts.namespace_column && kind.namespaced() {
        header.insert(0, "NAMESPACE");
    }
    if opts.show_labels {
        header.push("LABELS");
    }
    render(&header, rows, opts.no_headers)
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".into();
    }
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

fn columns(kind: Kind) -> (Vec<&'static str>, Vec<&'static str>) {
    match kind {
        Kind::Pod => (vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"], vec!["IP", "NODE"]),
        Kind::Deployment => {
            (vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], vec!["CONTAINERS", "IMAGES", "SELECTOR"])
        }
        Kind::ReplicaSet => {
            (vec!["NAME", "DESIRED", "CURRENT", "READY", "AGE"], vec!["CONTAINERS", "IMAGES", "SELECTOR"])
        }
        Kind::Service => (vec!["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], vec!["SELECTOR"]),
        Kind::ConfigMap => (vec!["NAME", "DATA", "AGE"], vec![]),
        Kind::Namespace => (vec!["NAME", "STATUS", "AGE"], vec![]),
        Kind::Node => (
            vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            vec!["INTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"],
        ),
        Kind::Event => (vec!["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], vec![]),
        Kind::EndpointSlice => (vec!["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], vec![]),
    }
}

/// The cells of one row and its wide extra cells.
fn cells(object: &Object, now: i64) -> (Vec<String>, Vec<String>) {
    let age = age(object.meta().creation_timestamp, now);
    let name = object.meta().name.clone();
    match object {
        Object::Pod(p) => pod_cells(p, name, age),
        Object::Deployment(d) => deployment_cells(d, name, age),
        Object::ReplicaSet(rs) => replica_set_cells(rs, name, age),
        Object::Service(s) => service_cells(s, name, age),
        Object::ConfigMap(c) => (vec![name, config_map_entries(c).to_string(), age], vec![]),
        Object::Namespace(n) => (vec![name, namespace_phase(n), age], vec![]),
        Object::Node(n) => node_cells(n, name, age),
        Object::Event(e) => event_cells(e, now),
        Object::EndpointSlice(e) => {
            (vec![name, e.address_type.clone(), endpoint_slice_ports(e), endpoint_slice_addresses(e), age], vec![])
        }
    }
}

fn config_map_entries(c: &ConfigMap) -> usize {
    c.data.len() + c.binary_data.len()
}

fn namespace_phase(n: &Namespace) -> String {
    if n.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    n.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Active".into())
}

/// READY, STATUS and RESTARTS of a pod, as kubectl computes them.
pub fn pod_summary(p: &Pod) -> (String, String, i32) {
    let statuses = p.status.as_ref().map(|s| s.container_statuses.as_slice()).unwrap_or_default();
    let ready = statuses.iter().filter(|c| c.ready).count();
    let restarts = statuses.iter().map(|c| c.restart_count).sum();
    let mut reason = p
        .status
        .as_ref()
        .and_then(|s| s.reason.clone().or_else(|| s.phase.clone()))
        .unwrap_or_else(|| "Pending".into());
    for c in statuses.iter().rev() {
        let Some(state) = &c.state else { continue };
        if let Some(w) = state.waiting.as_ref().and_then(|w| w.reason.clone()) {
            reason = w;
        } else if let Some(t) = &state.terminated {
            reason = t.reason.clone().unwrap_or_else(|| match t.signal {
                Some(sig) if sig != 0 => format!("Signal:{sig}"),
                _ => format!("ExitCode:{}", t.exit_code),
            });
        }
    }
    if p.metadata.deletion_timestamp.is_some() {
        reason = "Terminating".into();
    }
    (format!("{ready}/{}", p.spec.containers.len()), reason, restarts)
}

fn pod_cells(p: &Pod, name: String, age: String) -> (Vec<String>, Vec<String>) {
    let (ready, status, restarts) = pod_summary(p);
    let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_else(|| "<none>".into());
    let node = p.spec.node_name.clone().unwrap_or_else(|| "<none>".into());
    (vec![name, ready, status, restarts.to_string(), age], vec![ip, node])
}

fn deployment_cells(d: &Deployment, name: String, age: String) -> (Vec<String>, Vec<String>) {
    let status = d.status.clone().unwrap_or_default();
    let desired = d.spec.replicas.unwrap_or(1);
    (
        vec![
            name,
            format!("{}/{desired}", status.ready_replicas.unwrap_or(0)),
            status.updated_replicas.unwrap_or(0).to_string(),
            status.available_replicas.unwrap_or(0).to_string(),
            age,
        ],
        template_cells(&d.spec.template, &d.spec.selector),
    )
}

fn template_cells(template: &PodTemplateSpec, selector: &LabelSelector) -> Vec<String> {
    let containers = template.spec.containers.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(",");
    let images = template.spec.containers.iter().map(|c| c.image.clone()).collect::<Vec<_>>().join(",");
    let selector = selector.to_selector("spec.selector").map(|s| s.to_string()).unwrap_or_default();
    vec![containers, images, selector]
}

fn replica_set_cells(rs: &ReplicaSet, name: String, age: String) -> (Vec<String>, Vec<String>) {
    let status = rs.status.clone().unwrap_or_default();
    (
        vec![
            name,
            rs.replicas().to_string(),
            status.replicas.to_string(),
            status.ready_replicas.unwrap_or(0).to_string(),
            age,
        ],
        template_cells(&rs.spec.template, &rs.spec.selector),
    )
}

fn service_ports(s: &Service) -> String {
    let ports: Vec<String> = s
        .spec
        .ports
        .iter()
        .map(|p| {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            match p.node_port {
                Some(np) => format!("{}:{np}/{protocol}", p.port),
                None => format!("{}/{protocol}", p.port),
            }
        })
        .collect();
    if ports.is_empty() {
        "<none>".into()
    } else {
        ports.join(",")
    }
}

fn service_cells(s: &Service, name: String, age: String) -> (Vec<String>, Vec<String>) {
    let selector = if s.spec.selector.is_empty() { "<none>".into() } else { labels_text(&s.spec.selector) };
    (
        vec![
            name,
            s.spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()),
            s.spec.cluster_ip.clone().unwrap_or_else(|| "<none>".into()),
            "<none>".into(),
            service_ports(s),
            age,
        ],
        vec![selector],
    )
}

/// `80,443`, as kubectl shows a slice's ports (`<unset>` for a port without a number).
fn endpoint_slice_ports(e: &EndpointSlice) -> String {
    if e.ports.is_empty() {
        return "<unset>".into();
    }
    e.ports.iter().map(|p| p.port.map_or_else(|| "<unset>".into(), |n| n.to_string())).collect::<Vec<_>>().join(",")
}

/// The first three addresses and how many more, as kubectl shows them.
fn endpoint_slice_addresses(e: &EndpointSlice) -> String {
    let all: Vec<&str> = e.endpoints.iter().flat_map(|ep| ep.addresses.iter().map(String::as_str)).collect();
    match all.len() {
        0 => "<unset>".into(),
        n if n <= 3 => all.join(","),
        n => format!("{} + {} more...", all[..3].join(","), n - 3),
    }
}

pub fn node_status(n: &Node) -> String {
    let ready = n.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let mut status = match ready.map(|c| c.status.as_str()) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if n.spec.unschedulable == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn node_cells(n: &Node, name: String, age: String) -> (Vec<String>, Vec<String>) {
    let roles: Vec<&str> =
        n.metadata.labels.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).collect();
    let roles = if roles.is_empty() { "<none>".to_string() } else { roles.join(",") };
    let info = n.status.as_ref().and_then(|s| s.node_info.clone()).unwrap_or_default();
    let ip = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.iter().find(|a| a.type_ == "InternalIP").map(|a| a.address.clone()))
        .unwrap_or_else(|| "<none>".into());
    (
        vec![name, node_status(n), roles, age, info.kubelet_version],
        vec![ip, info.os_image, info.kernel_version, info.container_runtime_version],
    )
}

fn event_cells(e: &Event, now: i64) -> (Vec<String>, Vec<String>) {
    let seen = e.last_timestamp.or(e.first_timestamp).or(e.metadata.creation_timestamp);
    let object = format!(
        "{}/{}",
        e.involved_object.kind.clone().unwrap_or_default().to_ascii_lowercase(),
        e.involved_object.name.clone().unwrap_or_default()
    );
    (
        vec![
            age(seen, now),
            e.type_.clone().unwrap_or_else(|| "Normal".into()),
            e.reason.clone().unwrap_or_default(),
            object,
            e.message.clone().unwrap_or_default(),
        ],
        vec![],
    )
}

/// kubectl's short age: `45s`, `3m12s`, `17m`, `5h3m`, `20h`, `3d4h`, `120d`, `2y`.
pub fn age(since: Option<Time>, now: i64) -> String {
    let Some(since) = since else { return "<unknown>".into() };
    let s = (now - since.unix_seconds()).max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        },
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 => match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        },
        _ if d < 365 * 2 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

/// One object in `-o yaml`, `-o json` or `-o name`.
pub fn format_one(object: &Object, output: Output) -> anyhow::Result<String> {
    match output {
        Output::Json => Ok(format!("{}\n", serde_json::to_string_pretty(object)?)),
        Output::Yaml => yaml(&object.to_value()),
        Output::Name => Ok(format!("{}\n", resource_name(object))),
        Output::Wide => anyhow::bail!("-o wide is a table format"),
    }
}

/// Several objects: a `List` for yaml and json (as kubectl prints them), one name per line for name.
pub fn format_list(objects: &[Object], resource_version: u64, output: Output) -> anyhow::Result<String> {
    match output {
        Output::Name => Ok(objects.iter().map(|o| format!("{}\n", resource_name(o))).collect()),
        Output::Json | Output::Yaml => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": objects.iter().map(Object::to_value).collect::<Vec<_>>(),
                "metadata": { "resourceVersion": resource_version.to_string() },
            });
            if output == Output::Json {
                Ok(format!("{}\n", serde_json::to_string_pretty(&list)?))
            } else {
                yaml(&list)
            }
        }
        Output::Wide => anyhow::bail!("-o wide is a table format"),
    }
}

pub fn yaml(value: &serde_json::Value) -> anyhow::Result<String> {
    let text = serde_saphyr::to_string(value).map_err(|e| anyhow::anyhow!("cannot write YAML: {e}"))?;
    Ok(if text.ends_with('\n') { text } else { format!("{text}\n") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let at = |s: i64| Time::from_unix(1_000_000 - s);
        let now = 1_000_000;
        assert_eq!(age(at(45), now), "45s");
        assert_eq!(age(at(192), now), "3m12s");
        assert_eq!(age(at(17 * 60 + 5), now), "17m");
        assert_eq!(age(at(5 * 3600 + 180), now), "5h3m");
        assert_eq!(age(at(20 * 3600), now), "20h");
        assert_eq!(age(at(3 * 86400 + 4 * 3600), now), "3d4h");
        assert_eq!(age(at(120 * 86400), now), "120d");
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn tables_have_kubectl_columns_and_no_trailing_spaces() {
        let text = render(&["NAME", "READY"], vec![vec!["web".into(), "1/1".into()]], false);
        assert_eq!(text, "NAME   READY\nweb    1/1\n");
    }
}
