//! `skiff describe KIND NAME`: an object in readable form, with its recent events.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use skiff_api::kinds::endpoint_slice::SERVICE_NAME_LABEL;
use skiff_api::kinds::pod::{Container, Probe};
use skiff_api::kinds::{Deployment, EndpointSlice, Event, Node, Pod, Service};
use skiff_api::{Kind, Object};
use skiff_proto::api::ListObjectsRequest;

use crate::api_client;
use crate::get_cmd::parse_what;
use crate::members::MembersArgs;
use crate::printers::{age, node_status, pod_summary, render, yaml};

#[derive(clap::Args, Debug)]
pub struct DescribeArgs {
    /// A kind and a name (`pod web`) or `KIND/NAME`.
    pub what: String,
    pub names: Vec<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
}

pub async fn run(args: DescribeArgs, members: &MembersArgs) -> anyhow::Result<()> {
    let client = members.client()?;
    let namespace = args.namespace.clone().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    for (kind, names) in parse_what(&args.what, &args.names)? {
        // No name: every object of the kind, as kubectl does.
        let names = if names.is_empty() {
            let req =
                ListObjectsRequest { kind: kind.name().into(), namespace: namespace.clone(), ..Default::default() };
            api_client::list(&client, req).await?.0.iter().map(|o| o.meta().name.clone()).collect()
        } else {
            names
        };
        for (i, name) in names.iter().enumerate() {
            let object = api_client::get(&client, kind, &namespace, name, false).await?;
            let events = match events_of(&client, &object).await {
                Ok(events) => events,
                Err(e) => {
                    eprintln!("warning: the events of {} could not be read: {e:#}", object.describe());
                    Vec::new()
                }
            };
            let slices = match &object {
                Object::Service(s) => slices_of(&client, s).await?,
                _ => Vec::new(),
            };
            if i > 0 {
                writeln!(out)?;
            }
            out.write_all(describe(&object, &events, &slices).as_bytes())?;
        }
    }
    Ok(())
}

/// The EndpointSlices of Service `s`.
async fn slices_of(client: &skiff_client::Client, s: &Service) -> anyhow::Result<Vec<EndpointSlice>> {
    let req = ListObjectsRequest {
        kind: Kind::EndpointSlice.name().into(),
        namespace: s.metadata.namespace.clone(),
        label_selector: format!("{SERVICE_NAME_LABEL}={}", s.metadata.name),
        ..Default::default()
    };
    let (objects, _) = api_client::list(client, req).await?;
    Ok(objects.into_iter().filter_map(|o| if let Object::EndpointSlice(e) = o { Some(e) } else { None }).collect())
}

/// The events about `object`, oldest first.
async fn events_of(client: &skiff_client::Client, object: &Object) -> anyhow::Result<Vec<Event>> {
    let m = object.meta();
    let req = ListObjectsRequest {
        kind: Kind::Event.name().into(),
        namespace: if object.kind().namespaced() { m.namespace.clone() } else { "default".into() },
        field_selector: format!("involvedObject.uid={}", m.uid),
        ..Default::default()
    };
    let (objects, _) = api_client::list(client, req).await?;
    let mut events: Vec<Event> =
        objects.into_iter().filter_map(|o| if let Object::Event(e) = o { Some(e) } else { None }).collect();
    events.sort_by_key(|e| e.last_timestamp.or(e.first_timestamp).or(e.metadata.creation_timestamp));
    Ok(events)
}

fn map_lines(out: &mut String, title: &str, map: &BTreeMap<String, String>) {
    if map.is_empty() {
        let _ = writeln!(out, "{:<24}<none>", format!("{title}:"));
        return;
    }
    for (i, (k, v)) in map.iter().enumerate() {
        let label = if i == 0 { format!("{title}:") } else { String::new() };
        let _ = writeln!(out, "{label:<24}{k}={v}");
    }
}

fn field(out: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{:<24}{value}", format!("{name}:"));
}

/// `object` as `describe` shows it; a Service with its EndpointSlices `slices`.
pub fn describe(object: &Object, events: &[Event], slices: &[EndpointSlice]) -> String {
    let mut out = String::new();
    let m = object.meta();
    field(&mut out, "Name", &m.name);
    if object.kind().namespaced() {
        field(&mut out, "Namespace", &m.namespace);
    }
    map_lines(&mut out, "Labels", &m.labels);
    map_lines(&mut out, "Annotations", &m.annotations);
    if let Some(t) = m.creation_timestamp {
        field(&mut out, "CreationTimestamp", t);
    }
    if let Some(t) = m.deletion_timestamp {
        field(&mut out, "Terminating", format!("since the deletion started; gone by {t}"));
    }
    for r in &m.owner_references {
        field(&mut out, "Controlled By", format!("{}/{}", r.kind, r.name));
    }
    match object {
        Object::Pod(p) => pod(&mut out, p),
        Object::Deployment(d) => deployment(&mut out, d),
        Object::Service(s) => service(&mut out, s, slices),
        Object::Node(n) => node(&mut out, n),
        other => {
            let mut value = other.to_value();
            if let Some(map) = value.as_object_mut() {
                for k in ["apiVersion", "kind", "metadata"] {
                    map.remove(k);
                }
            }
            if value.as_object().is_some_and(|m| !m.is_empty()) {
                let text = yaml(&value).unwrap_or_default();
                out.push_str(&text);
            }
        }
    }
    out.push_str("Events:");
    if events.is_empty() {
        out.push_str("            <none>\n");
    } else {
        out.push('\n');
        let now = jiff::Timestamp::now().as_second();
        let rows = events
            .iter()
            .map(|e| {
                let source = e.source.as_ref().and_then(|s| s.component.clone()).unwrap_or_default();
                vec![
                    format!("  {}", e.type_.clone().unwrap_or_else(|| "Normal".into())),
                    e.reason.clone().unwrap_or_default(),
                    age(e.last_timestamp.or(e.first_timestamp).or(e.metadata.creation_timestamp), now),
                    source,
                    e.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&render(&["  Type", "Reason", "Age", "From", "Message"], rows, false));
    }
    out
}

fn probe_text(p: &Probe) -> String {
    let action = if let Some(e) = &p.exec {
        format!("exec {:?}", e.command)
    } else if let Some(g) = &p.http_get {
        format!(
            "http-get {}://:{}{}",
            g.scheme.clone().unwrap_or_else(|| "HTTP".into()).to_lowercase(),
            g.port,
            g.path.clone().unwrap_or_default()
        )
    } else if let Some(t) = &p.tcp_socket {
        format!("tcp-socket :{}", t.port)
    } else {
        "none".into()
    };
    format!(
        "{action} delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds.unwrap_or(0),
        p.timeout_seconds.unwrap_or(1),
        p.period_seconds.unwrap_or(10),
        p.success_threshold.unwrap_or(1),
        p.failure_threshold.unwrap_or(3)
    )
}

fn container_lines(out: &mut String, c: &Container, status: Option<&skiff_api::kinds::pod::ContainerStatus>) {
    let _ = writeln!(out, "  {}:", c.name);
    let _ = writeln!(out, "    Image:          {}", c.image);
    if !c.ports.is_empty() {
        let ports: Vec<String> = c
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.container_port, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
            .collect();
        let _ = writeln!(out, "    Ports:          {}", ports.join(", "));
    }
    if !c.command.is_empty() {
        let _ = writeln!(out, "    Command:        {}", c.command.join(" "));
    }
    if !c.args.is_empty() {
        let _ = writeln!(out, "    Args:           {}", c.args.join(" "));
    }
    if let Some(s) = status {
        let state = s.state.as_ref().map_or("Waiting".to_string(), |st| {
            if st.running.is_some() {
                "Running".into()
            } else if let Some(t) = &st.terminated {
                format!("Terminated ({}, exit code {})", t.reason.clone().unwrap_or_default(), t.exit_code)
            } else if let Some(w) = &st.waiting {
                format!("Waiting ({})", w.reason.clone().unwrap_or_default())
            } else {
                "Waiting".into()
            }
        });
        let _ = writeln!(out, "    State:          {state}");
        let _ = writeln!(out, "    Ready:          {}", s.ready);
        let _ = writeln!(out, "    Restart Count:  {}", s.restart_count);
    }
    for (kind, map) in [("Limits", &c.resources.limits), ("Requests", &c.resources.requests)] {
        if !map.is_empty() {
            let _ = writeln!(out, "    {kind}:");
            for (k, v) in map {
                let _ = writeln!(out, "      {k}: {v}");
            }
        }
    }
    for (name, probe) in
        [("Liveness", &c.liveness_probe), ("Readiness", &c.readiness_probe), ("Startup", &c.startup_probe)]
    {
        if let Some(p) = probe {
            let _ = writeln!(out, "    {:<16}{}", format!("{name}:"), probe_text(p));
        }
    }
    if !c.env.is_empty() {
        let _ = writeln!(out, "    Environment:");
        for e in &c.env {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) => match (&f.config_map_key_ref, &f.field_ref) {
                    (Some(r), _) => format!("<set to the key '{}' of config map '{}'>", r.key, r.name),
                    (_, Some(r)) => format!("({})", r.field_path),
                    _ => String::new(),
                },
                _ => String::new(),
            };
            let _ = writeln!(out, "      {}:  {value}", e.name);
        }
    }
}

fn pod(out: &mut String, p: &Pod) {
    let (_, status, _) = pod_summary(p);
    field(out, "Node", p.spec.node_name.clone().unwrap_or_else(|| "<none>".into()));
    field(out, "Status", status);
    let st = p.status.clone().unwrap_or_default();
    field(out, "IP", st.pod_ip.clone().unwrap_or_default());
    if let Some(t) = st.start_time {
        field(out, "Start Time", t);
    }
    out.push_str("Containers:\n");
    for c in &p.spec.containers {
        container_lines(out, c, st.container_statuses.iter().find(|s| s.name == c.name));
    }
    if !st.conditions.is_empty() {
        out.push_str("Conditions:\n");
        let rows = st.conditions.iter().map(|c| vec![format!("  {}", c.type_), c.status.clone()]).collect();
        out.push_str(&render(&["  Type", "Status"], rows, false));
    }
    field(out, "Restart Policy", p.spec.restart_policy.clone().unwrap_or_default());
    map_lines(out, "Node-Selectors", &p.spec.node_selector);
}

fn deployment(out: &mut String, d: &Deployment) {
    let s = d.status.clone().unwrap_or_default();
    let selector = d.spec.selector.to_selector("spec.selector").map(|s| s.to_string()).unwrap_or_default();
    field(out, "Selector", selector);
    field(
        out,
        "Replicas",
        format!(
            "{} desired | {} updated | {} total | {} available | {} unavailable",
            d.spec.replicas.unwrap_or(1),
            s.updated_replicas.unwrap_or(0),
            s.replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
            s.unavailable_replicas.unwrap_or(0)
        ),
    );
    let strategy = d.spec.strategy.clone().unwrap_or_default();
    field(out, "StrategyType", strategy.type_.clone().unwrap_or_default());
    field(out, "MinReadySeconds", d.spec.min_ready_seconds.unwrap_or(0));
    if let Some(ru) = strategy.rolling_update {
        field(
            out,
            "RollingUpdateStrategy",
            format!(
                "{} max unavailable, {} max surge",
                ru.max_unavailable.map(|v| v.to_string()).unwrap_or_default(),
                ru.max_surge.map(|v| v.to_string()).unwrap_or_default()
            ),
        );
    }
    out.push_str("Pod Template:\n");
    map_lines(out, "  Labels", &d.spec.template.metadata.labels);
    out.push_str("  Containers:\n");
    for c in &d.spec.template.spec.containers {
        let mut inner = String::new();
        container_lines(&mut inner, c, None);
        for line in inner.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    if !s.conditions.is_empty() {
        out.push_str("Conditions:\n");
        let rows = s
            .conditions
            .iter()
            .map(|c| vec![format!("  {}", c.type_), c.status.clone(), c.reason.clone().unwrap_or_default()])
            .collect();
        out.push_str(&render(&["  Type", "Status", "Reason"], rows, false));
    }
}

fn service(out: &mut String, s: &Service, slices: &[EndpointSlice]) {
    map_lines(out, "Selector", &s.spec.selector);
    field(out, "Type", s.spec.type_.clone().unwrap_or_else(|| "ClusterIP".into()));
    field(out, "IP", s.spec.cluster_ip.clone().unwrap_or_else(|| "<none>".into()));
    for p in &s.spec.ports {
        let name = p.name.clone().unwrap_or_else(|| "<unset>".into());
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        field(out, "Port", format!("{name}  {}/{protocol}", p.port));
        let target = p.target_port.clone().map(|t| t.to_string()).unwrap_or_default();
        field(out, "TargetPort", format!("{target}/{protocol}"));
        if let Some(node_port) = p.node_port {
            field(out, "NodePort", format!("{name}  {node_port}/{protocol}"));
        }
    }
    let endpoints: Vec<(&skiff_api::kinds::endpoint_slice::Endpoint, Option<i32>)> = slices
        .iter()
        .flat_map(|sl| sl.endpoints.iter().map(move |e| (e, sl.ports.first().and_then(|p| p.port))))
        .collect();
    let ready: Vec<String> = endpoints
        .iter()
        .filter(|(e, _)| e.conditions.is_ready())
        .flat_map(|(e, port)| e.addresses.iter().map(move |a| format!("{a}:{}", port.unwrap_or_default())))
        .collect();
    let shown = match (ready.is_empty(), endpoints.is_empty(), s.spec.selector.is_empty()) {
        (false, _, _) => ready.join(","),
        (true, _, true) => "<none> (no selector: the Service's endpoints are written by hand)".into(),
        (true, true, false) => "<none> (no pod matches the selector)".into(),
        (true, false, false) => format!("<none> ({} pods match the selector, none is ready)", endpoints.len()),
    };
    field(out, "Endpoints", shown);
    if !endpoints.is_empty() {
        let yes_no = |b: bool| if b { "true" } else { "false" }.to_string();
        let rows = endpoints
            .iter()
            .map(|(e, port)| {
                let c = e.conditions;
                vec![
                    format!("  {}", e.addresses.join(",")),
                    port.map(|p| p.to_string()).unwrap_or_else(|| "<unset>".into()),
                    yes_no(c.is_ready()),
                    yes_no(c.is_serving()),
                    yes_no(c.is_terminating()),
                    e.node_name.clone().unwrap_or_else(|| "<none>".into()),
                    e.target_ref.as_ref().and_then(|t| t.name.clone()).unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str("Endpoint Conditions:\n");
        let header = ["  Address", "Port", "Ready", "Serving", "Terminating", "Node", "Pod"];
        out.push_str(&render(&header, rows, false));
    }
}

fn node(out: &mut String, n: &Node) {
    field(out, "Status", node_status(n));
    let st = n.status.clone().unwrap_or_default();
    for (title, map) in [("Capacity", &st.capacity), ("Allocatable", &st.allocatable)] {
        let _ = writeln!(out, "{title}:");
        for (k, v) in map {
            let _ = writeln!(out, "  {k}: {v}");
        }
    }
    if !st.conditions.is_empty() {
        out.push_str("Conditions:\n");
        let rows = st
            .conditions
            .iter()
            .map(|c| {
                vec![
                    format!("  {}", c.type_),
                    c.status.clone(),
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default(),
                ]
            })
            .collect();
        out.push_str(&render(&["  Type", "Status", "Reason", "Message"], rows, false));
    }
    for a in &st.addresses {
        field(out, &format!("Address {}", a.type_), &a.address);
    }
}
