//! The member's HTTP listener: Prometheus metrics at `/metrics`. It is an axum router so that the
//! Kubernetes REST front door can later be served on the same listener.
//!
//! A scrape reads the Raft figures (term, leader, last log and applied index) and the pods of this
//! node by phase from the member itself, and adds the counters the store (proposals, batch sizes),
//! the API server (calls by name and outcome, latency, open watches) and the agent (actions) keep.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use skiff_agent::metrics::AgentMetrics;
use skiff_api::{Kind, Object};
use skiff_apiserver::keys::{decode, kind_prefix};
use skiff_apiserver::ApiServer;
use skiff_store::ReadConsistency;

/// What `/metrics` reads.
#[derive(Clone)]
pub struct Sources {
    pub api: Arc<ApiServer>,
    /// This member's node (its pods are counted by phase).
    pub node: String,
    /// The agent's counters, when the member runs pods.
    pub agent: Option<AgentMetrics>,
    /// The service proxy's counters, when the member runs one.
    pub proxy: Option<skiff_net::metrics::ProxyMetrics>,
}

/// The HTTP routes of a member.
pub fn router(sources: Sources) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(sources)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

async fn metrics(State(sources): State<Sources>) -> impl IntoResponse {
    let mut registry = Registry::default();
    let store = sources.api.store();
    let status = store.status();
    gauge(&mut registry, "skiff_raft_term", "The Raft term this member is in", status.term as i64);
    gauge(
        &mut registry,
        "skiff_raft_leader",
        "The id of the leader this member knows (0: none)",
        status.leader.unwrap_or(0) as i64,
    );
    gauge(
        &mut registry,
        "skiff_raft_is_leader",
        "1 when this member leads",
        i64::from(status.leader == Some(status.id)),
    );
    gauge(
        &mut registry,
        "skiff_raft_last_log_index",
        "The last index of this member's Raft log",
        status.last_log_index as i64,
    );
    gauge(&mut registry, "skiff_raft_applied_index", "The last index this member applied", status.applied_index as i64);
    store.metrics().register(&mut registry);
    sources.api.metrics().register(&mut registry);
    if let Some(proxy) = &sources.proxy {
        proxy.register(&mut registry);
    }
    if let Some(agent) = &sources.agent {
        agent.register(&mut registry);
        let pods = Family::<PhaseLabel, Gauge>::default();
        for (phase, n) in pods_by_phase(sources.api.as_ref(), &sources.node).await {
            pods.get_or_create(&PhaseLabel { phase }).set(n);
        }
        registry.register("skiff_node_pods", "Pods bound to this member's node, by phase", pods);
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {e}\n")).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

/// The pods bound to `node` by phase (every phase, 0 included), from this member's replica.
async fn pods_by_phase(api: &ApiServer, node: &str) -> BTreeMap<String, i64> {
    let mut counts: BTreeMap<String, i64> =
        ["Pending", "Running", "Succeeded", "Failed", "Unknown"].iter().map(|p| (p.to_string(), 0)).collect();
    let Ok((kvs, _)) = api.store().list(&kind_prefix(Kind::Pod, None), ReadConsistency::Stale).await else {
        return counts;
    };
    for kv in kvs {
        if let Ok(Object::Pod(p)) = decode(&kv) {
            if p.spec.node_name.as_deref() == Some(node) {
                let phase = p.status.and_then(|s| s.phase).unwrap_or_else(|| "Pending".into());
                *counts.entry(phase).or_default() += 1;
            }
        }
    }
    counts
}
