//! What the runtime is asked to create for a pod: a sandbox that holds the pod's network namespace
//! and one container per `spec.containers` entry joined to it. Pure: the caller supplies the
//! config maps and the pod's addresses.

use std::collections::BTreeMap;

use skiff_api::kinds::pod::{Container, EnvVarSource};
use skiff_api::kinds::{ConfigMap, Pod, Service};

use crate::runtime::ContainerSpec;

/// Labels on every container the agent creates: whose it is and what it runs.
pub const LABEL_CLUSTER: &str = "skiff.cluster";
pub const LABEL_NODE: &str = "skiff.node";
pub const LABEL_POD_UID: &str = "skiff.pod.uid";
pub const LABEL_POD_NAME: &str = "skiff.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "skiff.pod.namespace";
/// The container's name in the pod spec; [`SANDBOX`] for the sandbox.
pub const LABEL_CONTAINER: &str = "skiff.container";
/// Which start of the container this is (0 for the first), so restarts never reuse a name.
pub const LABEL_ATTEMPT: &str = "skiff.attempt";
pub const SANDBOX: &str = "_sandbox";

/// Where the pod runs and what it may read.
pub struct PodContext<'a> {
    pub cluster_id: &'a str,
    pub node: &'a str,
    /// Extra labels on every container (the node's config; tests put `skiff.test` here).
    pub extra_labels: &'a BTreeMap<String, String>,
    /// The image of the sandbox (built locally: it only sleeps).
    pub sandbox_image: &'a str,
    /// The engine network the sandbox joins (`None`: the default bridge).
    pub network: Option<&'a str>,
    /// The config maps of the pod's namespace, by name.
    pub config_maps: &'a BTreeMap<String, ConfigMap>,
    pub pod_ip: Option<&'a str>,
    pub host_ip: Option<&'a str>,
    /// How the pod reaches Services (`None`: it does not, e.g. no proxy on this member).
    pub service_access: Option<&'a ServiceAccess>,
    /// The Services of the pod's namespace when its container starts: their addresses become
    /// environment variables, as in Kubernetes.
    pub services: &'a [Service],
}

/// How pods on this node reach Services: the service range is routed to this member, whose proxy
/// listens on every cluster IP, and this member answers their DNS queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccess {
    /// The service range, `10.96.0.0/16`.
    pub range: String,
    /// This member's address on the pod network: the route's gateway and the pods' resolver.
    pub router: String,
    /// The cluster domain, `cluster.local`.
    pub domain: String,
}

/// Why a container cannot be configured (the kubelet's `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn base_labels(pod: &Pod, ctx: &PodContext<'_>, container: &str) -> BTreeMap<String, String> {
    let mut labels = ctx.extra_labels.clone();
    labels.insert(LABEL_CLUSTER.into(), ctx.cluster_id.into());
    labels.insert(LABEL_NODE.into(), ctx.node.into());
    labels.insert(LABEL_POD_UID.into(), pod.metadata.uid.clone());
    labels.insert(LABEL_POD_NAME.into(), pod.metadata.name.clone());
    labels.insert(LABEL_POD_NAMESPACE.into(), pod.metadata.namespace.clone());
    labels.insert(LABEL_CONTAINER.into(), container.into());
    labels
}

/// A runtime name that is unique per pod, container and attempt: `skiff_<ns>_<pod>_<container>_<uid8>_<n>`.
fn runtime_name(pod: &Pod, container: &str, attempt: u32) -> String {
    let uid: String = pod.metadata.uid.chars().filter(|c| *c != '-').take(8).collect();
    format!(
        "skiff_{}_{}_{}_{uid}_{attempt}",
        pod.metadata.namespace,
        pod.metadata.name,
        container.trim_start_matches('_')
    )
}

/// The pod's sandbox: it holds the network namespace (and so the pod IP) for the pod's lifetime.
pub fn sandbox_spec(pod: &Pod, ctx: &PodContext<'_>, attempt: u32) -> ContainerSpec {
    let mut labels = base_labels(pod, ctx, SANDBOX);
    labels.insert(LABEL_ATTEMPT.into(), attempt.to_string());
    ContainerSpec {
        name: runtime_name(pod, SANDBOX, attempt),
        image: ctx.sandbox_image.to_string(),
        labels,
        network: ctx.network.map(str::to_string),
        ..sandbox_networking(pod, ctx.service_access)
    }
}

/// What a sandbox needs to reach Services: `NET_ADMIN` in its own network namespace, which its
/// entrypoint uses to route the service range to this member (the app containers that join it get
/// no capability), and this member as its resolver with Kubernetes' search list and `ndots:5`.
fn sandbox_networking(pod: &Pod, access: Option<&ServiceAccess>) -> ContainerSpec {
    let Some(a) = access else { return ContainerSpec::default() };
    let ns = &pod.metadata.namespace;
    ContainerSpec {
        cap_add: vec!["NET_ADMIN".into()],
        env: vec![(SERVICE_ROUTE_ENV.into(), format!("{} via {}", a.range, a.router))],
        dns: vec![a.router.clone()],
        dns_search: vec![format!("{ns}.svc.{}", a.domain), format!("svc.{}", a.domain), a.domain.clone()],
        dns_options: vec!["ndots:5".into()],
        ..Default::default()
    }
}

/// The sandbox's entrypoint adds `ip route add $SKIFF_SERVICE_ROUTE` (docker/pause/Dockerfile).
pub const SERVICE_ROUTE_ENV: &str = "SKIFF_SERVICE_ROUTE";

/// Kubernetes' service environment variables for `services` (those with a cluster IP):
/// `MY_NGINX_SERVICE_HOST`, `MY_NGINX_SERVICE_PORT`, `MY_NGINX_PORT_80_TCP_ADDR`... (docker links).
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let mut sorted: Vec<&Service> = services.iter().filter(|s| s.spec.cluster_ip().is_some()).collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for s in sorted {
        let Some(ip) = s.spec.cluster_ip() else { continue };
        let prefix = s.metadata.name.to_ascii_uppercase().replace('-', "_");
        let Some(first) = s.spec.ports.first() else { continue };
        env.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        env.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in &s.spec.ports {
            if let Some(name) = &p.name {
                let name = name.to_ascii_uppercase().replace('-', "_");
                env.push((format!("{prefix}_SERVICE_PORT_{name}"), p.port.to_string()));
            }
        }
        let proto = |p: &skiff_api::kinds::service::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        env.push((format!("{prefix}_PORT"), format!("{}://{ip}:{}", proto(first).to_ascii_lowercase(), first.port)));
        for p in &s.spec.ports {
            let (upper, lower) = (proto(p), proto(p).to_ascii_lowercase());
            let base = format!("{prefix}_PORT_{}_{upper}", p.port);
            env.push((base.clone(), format!("{lower}://{ip}:{}", p.port)));
            env.push((format!("{base}_PROTO"), lower));
            env.push((format!("{base}_PORT"), p.port.to_string()));
            env.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    env
}

/// One of the pod's containers, joined to the sandbox `sandbox_id`.
pub fn container_spec(
    pod: &Pod,
    container: &Container,
    ctx: &PodContext<'_>,
    sandbox_id: &str,
    attempt: u32,
) -> Result<ContainerSpec, ConfigError> {
    let mut labels = base_labels(pod, ctx, &container.name);
    labels.insert(LABEL_ATTEMPT.into(), attempt.to_string());
    let limit = |name: &str| container.resources.limits.get(name);
    Ok(ContainerSpec {
        name: runtime_name(pod, &container.name, attempt),
        image: container.image.clone(),
        command: (!container.command.is_empty()).then(|| container.command.clone()),
        args: (!container.args.is_empty()).then(|| container.args.clone()),
        env: environment(pod, container, ctx)?,
        working_dir: container.working_dir.clone(),
        labels,
        network_of: Some(sandbox_id.to_string()),
        network: None,
        cpu_millis: limit("cpu").map(|q| i64::try_from(q.millis()).unwrap_or(i64::MAX)),
        memory_bytes: limit("memory").map(|q| i64::try_from(q.units_ceil()).unwrap_or(i64::MAX)),
        ..Default::default()
    })
}

/// The container's environment: `envFrom` first, then `env` (later entries win, as in Kubernetes).
fn environment(pod: &Pod, c: &Container, ctx: &PodContext<'_>) -> Result<Vec<(String, String)>, ConfigError> {
    // The Services' variables first: the container's own `env` overrides them.
    let mut env: Vec<(String, String)> = service_env(ctx.services);
    let mut set = |name: String, value: String| {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    };
    let namespace = &pod.metadata.namespace;
    for from in &c.env_from {
        let Some(r) = &from.config_map_ref else { continue };
        match ctx.config_maps.get(&r.name) {
            Some(cm) => {
                let prefix = from.prefix.clone().unwrap_or_default();
                for (k, v) in &cm.data {
                    set(format!("{prefix}{k}"), v.clone());
                }
            }
            None if r.optional == Some(true) => {}
            None => return Err(ConfigError(format!("configmap \"{}\" not found in namespace {namespace:?}", r.name))),
        }
    }
    for e in &c.env {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(EnvVarSource { config_map_key_ref: Some(r), .. })) => {
                match ctx.config_maps.get(&r.name).and_then(|cm| cm.data.get(&r.key)) {
                    Some(v) => v.clone(),
                    None if r.optional == Some(true) => continue,
                    None => {
                        let what = if ctx.config_maps.contains_key(&r.name) {
                            format!("key {:?} not found in configmap {:?}", r.key, r.name)
                        } else {
                            format!("configmap {:?} not found", r.name)
                        };
                        return Err(ConfigError(format!("{what} in namespace {namespace:?} (env {:?})", e.name)));
                    }
                }
            }
            (None, Some(EnvVarSource { field_ref: Some(f), .. })) => match f.field_path.as_str() {
                "metadata.name" => pod.metadata.name.clone(),
                "metadata.namespace" => namespace.clone(),
                "metadata.uid" => pod.metadata.uid.clone(),
                "spec.nodeName" => ctx.node.to_string(),
                "status.podIP" => ctx.pod_ip.unwrap_or_default().to_string(),
                "status.hostIP" => ctx.host_ip.unwrap_or_default().to_string(),
                other => return Err(ConfigError(format!("fieldRef {other:?} is not supported (env {:?})", e.name))),
            },
            (None, _) => String::new(),
        };
        set(e.name.clone(), value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::manifest::{load, UnknownFields};
    use skiff_api::Object;

    fn pod(yaml: &str) -> Pod {
        let loaded = load("pod.yaml", yaml, UnknownFields::Strict).unwrap_or_else(|e| panic!("{e:?}"));
        let Object::Pod(mut p) = loaded.manifests[0].object.clone() else { panic!("a pod") };
        p.metadata.uid = "0a1b2c3d-4e5f-6789-abcd-ef0123456789".into();
        p.metadata.namespace = "default".into();
        p
    }

    const POD: &str = "apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: app
    image: web:1
    command: [/bin/app]
    args: [--port, '80']
    env:
    - {name: MODE, value: fast}
    - name: LEVEL
      valueFrom: {configMapKeyRef: {name: settings, key: level}}
    - name: POD
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    envFrom:
    - {configMapRef: {name: settings}, prefix: CFG_}
    resources:
      limits: {cpu: 250m, memory: 128Mi}
";

    fn ctx<'a>(labels: &'a BTreeMap<String, String>, cms: &'a BTreeMap<String, ConfigMap>) -> PodContext<'a> {
        PodContext {
            cluster_id: "c1",
            node: "node2",
            extra_labels: labels,
            sandbox_image: "skiff-pause:1",
            network: Some("skiffnet"),
            config_maps: cms,
            pod_ip: Some("10.0.0.5"),
            host_ip: None,
            service_access: None,
            services: &[],
        }
    }

    #[test]
    fn containers_get_command_args_env_limits_and_labels() {
        let p = pod(POD);
        let extra = BTreeMap::from([("skiff.test".to_string(), "1".to_string())]);
        let mut cm = ConfigMap::default();
        cm.data.insert("level".into(), "3".into());
        cm.data.insert("color".into(), "blue".into());
        let cms = BTreeMap::from([("settings".to_string(), cm)]);
        let ctx = ctx(&extra, &cms);
        let spec = container_spec(&p, &p.spec.containers[0], &ctx, "sandbox-id", 2).expect("spec");
        assert_eq!(spec.name, "skiff_default_web_app_0a1b2c3d_2");
        assert_eq!(spec.command, Some(vec!["/bin/app".to_string()]));
        assert_eq!(spec.args, Some(vec!["--port".to_string(), "80".to_string()]));
        assert_eq!(spec.network_of.as_deref(), Some("sandbox-id"));
        assert_eq!((spec.cpu_millis, spec.memory_bytes), (Some(250), Some(128 << 20)));
        let env: BTreeMap<_, _> = spec.env.into_iter().collect();
        let expected: BTreeMap<String, String> = [
            ("CFG_color", "blue"),
            ("CFG_level", "3"),
            ("LEVEL", "3"),
            ("MODE", "fast"),
            ("NODE", "node2"),
            ("POD", "web"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, expected);
        for (k, v) in [
            (LABEL_CLUSTER, "c1"),
            (LABEL_NODE, "node2"),
            (LABEL_POD_UID, "0a1b2c3d-4e5f-6789-abcd-ef0123456789"),
            (LABEL_CONTAINER, "app"),
            (LABEL_ATTEMPT, "2"),
            ("skiff.test", "1"),
        ] {
            assert_eq!(spec.labels.get(k).map(String::as_str), Some(v), "label {k}");
        }
        let sandbox = sandbox_spec(&p, &ctx, 0);
        assert_eq!(sandbox.image, "skiff-pause:1");
        assert_eq!(sandbox.network.as_deref(), Some("skiffnet"));
        assert_eq!(sandbox.labels.get(LABEL_CONTAINER).map(String::as_str), Some(SANDBOX));
    }

    #[test]
    fn services_become_kubernetes_environment_variables_that_env_overrides() {
        let mut svc = Service::default();
        svc.metadata.name = "my-nginx".into();
        svc.spec.cluster_ip = Some("10.96.0.11".into());
        svc.spec.ports = vec![skiff_api::kinds::service::ServicePort {
            name: Some("http".into()),
            protocol: Some("TCP".into()),
            port: 80,
            ..Default::default()
        }];
        let mut headless = Service::default();
        headless.metadata.name = "db".into();
        headless.spec.cluster_ip = Some("None".into());
        headless.spec.ports = svc.spec.ports.clone();
        let env: BTreeMap<_, _> = service_env(&[svc.clone(), headless]).into_iter().collect();
        let expected: BTreeMap<String, String> = [
            ("MY_NGINX_SERVICE_HOST", "10.96.0.11"),
            ("MY_NGINX_SERVICE_PORT", "80"),
            ("MY_NGINX_SERVICE_PORT_HTTP", "80"),
            ("MY_NGINX_PORT", "tcp://10.96.0.11:80"),
            ("MY_NGINX_PORT_80_TCP", "tcp://10.96.0.11:80"),
            ("MY_NGINX_PORT_80_TCP_PROTO", "tcp"),
            ("MY_NGINX_PORT_80_TCP_PORT", "80"),
            ("MY_NGINX_PORT_80_TCP_ADDR", "10.96.0.11"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, expected);

        let p = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - name: app\n    image: web:1\n    env: [{name: MY_NGINX_SERVICE_PORT, value: '8080'}]\n");
        let (extra, cms) = (BTreeMap::new(), BTreeMap::new());
        let services = [svc];
        let access =
            ServiceAccess { range: "10.96.0.0/16".into(), router: "172.18.0.2".into(), domain: "cluster.local".into() };
        let mut c = ctx(&extra, &cms);
        c.services = &services;
        c.service_access = Some(&access);
        let spec = container_spec(&p, &p.spec.containers[0], &c, "s", 0).expect("spec");
        let env: BTreeMap<_, _> = spec.env.into_iter().collect();
        assert_eq!(env.get("MY_NGINX_SERVICE_PORT").map(String::as_str), Some("8080"));
        assert_eq!(env.get("MY_NGINX_SERVICE_HOST").map(String::as_str), Some("10.96.0.11"));
        assert!(spec.cap_add.is_empty(), "app containers get no capability");

        let sandbox = sandbox_spec(&p, &c, 0);
        assert_eq!(sandbox.cap_add, ["NET_ADMIN"]);
        assert_eq!(sandbox.env, [(SERVICE_ROUTE_ENV.to_string(), "10.96.0.0/16 via 172.18.0.2".to_string())]);
        assert_eq!(sandbox.dns, ["172.18.0.2"]);
        assert_eq!(sandbox.dns_search, ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]);
        assert_eq!(sandbox.dns_options, ["ndots:5"]);
    }

    #[test]
    fn a_missing_config_map_is_a_clear_config_error() {
        let p = pod(POD);
        let extra = BTreeMap::new();
        let cms = BTreeMap::new();
        let err = container_spec(&p, &p.spec.containers[0], &ctx(&extra, &cms), "s", 0).expect_err("no configmap");
        assert_eq!(err.0, "configmap \"settings\" not found in namespace \"default\"");
    }
}
