//! Manifest parsing, defaults and validation against real files: the Kubernetes documentation's
//! examples (copied into `tests/data/k8s-examples`) and broken variants of them.

use std::path::PathBuf;

use skiff_api::defaults::apply_defaults;
use skiff_api::kinds::Object;
use skiff_api::manifest::{load, Loaded, ManifestError, UnknownFields};
use skiff_api::validate::validate;
use skiff_api::Kind;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/k8s-examples")
}

fn load_ok(name: &str, text: &str) -> Loaded {
    match load(name, text, UnknownFields::Strict) {
        Ok(l) => l,
        Err(errors) => {
            panic!("{name} should load: {}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))
        }
    }
}

fn load_err(text: &str) -> Vec<ManifestError> {
    match load("app.yaml", text, UnknownFields::Strict) {
        Ok(l) => panic!("expected an error, loaded {} object(s)", l.manifests.len()),
        Err(e) => e,
    }
}

#[test]
fn every_kubernetes_documentation_example_parses_and_validates() {
    let mut count = 0;
    let top = std::fs::read_dir(examples_dir()).expect("examples dir");
    let graceful = std::fs::read_dir(examples_dir().join("graceful")).expect("examples/graceful");
    for entry in top.chain(graceful) {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read example");
        let loaded = load_ok(&path.display().to_string(), &text);
        assert!(!loaded.manifests.is_empty(), "{} has objects", path.display());
        assert!(loaded.warnings.is_empty(), "{}: {:?}", path.display(), loaded.warnings);
        for m in loaded.manifests {
            // What the server stores: defaults filled in, still valid, and the JSON round trip is exact.
            let mut object = m.object.clone();
            apply_defaults(&mut object);
            assert_eq!(validate(&object), vec![], "{} after defaults", path.display());
            let back = Object::from_json(&object.to_json()).expect("round trip");
            assert_eq!(back, object);
            count += 1;
        }
    }
    assert_eq!(count, 10, "nine files, one of them with two documents");
}

#[test]
fn flow_style_example_keeps_probe_settings() {
    let text = std::fs::read_to_string(examples_dir().join("http-liveness.yaml")).expect("read");
    let loaded = load_ok("http-liveness.yaml", &text);
    let Object::Pod(pod) = &loaded.manifests[0].object else { panic!("a pod") };
    let probe = pod.spec.containers[0].liveness_probe.as_ref().expect("liveness probe");
    let get = probe.http_get.as_ref().expect("httpGet");
    assert_eq!(get.path.as_deref(), Some("/healthz"));
    assert_eq!(get.http_headers[0].name, "Custom-Header");
    assert_eq!(probe.initial_delay_seconds, Some(3));
    assert_eq!(loaded.manifests[0].location.line, 2);
}

#[test]
fn objects_serialize_in_kubernetes_json_shape() {
    let text = std::fs::read_to_string(examples_dir().join("backend-service.yaml")).expect("read");
    let mut object = load_ok("svc", &text).manifests.remove(0).object;
    apply_defaults(&mut object);
    object.meta_mut().creation_timestamp = skiff_api::meta::Time::from_unix(1_795_000_000);
    let json = object.to_value();
    assert_eq!(json["apiVersion"], "v1");
    assert_eq!(json["kind"], "Service");
    assert_eq!(json["metadata"]["namespace"], "default");
    assert_eq!(json["metadata"]["creationTimestamp"], "2026-11-18T11:06:40Z");
    assert_eq!(json["spec"]["type"], "ClusterIP");
    assert_eq!(json["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(json["spec"]["ports"][0]["protocol"], "TCP");
    assert!(json.get("status").is_none());
}

#[test]
fn deployment_defaults_are_kubernetes_defaults() {
    let text = std::fs::read_to_string(examples_dir().join("nginx-deployment.yaml")).expect("read");
    let mut object = load_ok("d", &text).manifests.remove(0).object;
    apply_defaults(&mut object);
    let json = object.to_value();
    let spec = &json["spec"];
    assert_eq!(spec["replicas"], 3);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(spec["template"]["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["template"]["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
}

#[test]
fn document_markers_comments_json_and_lists_all_parse() {
    let text = r#"# leading comment
--- # first
apiVersion: v1
kind: ConfigMap
metadata: {name: one}   # flow mapping inside block style
data:
  key: "value"
...
---
{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata:
    name: two
    namespace: prod
---
# an empty document is skipped
"#;
    let loaded = load_ok("multi.yaml", text);
    let kinds: Vec<Kind> = loaded.manifests.iter().map(|m| m.object.kind()).collect();
    assert_eq!(kinds, vec![Kind::ConfigMap, Kind::Namespace, Kind::ConfigMap]);
    assert_eq!(loaded.manifests[2].object.meta().namespace, "prod");
    assert_eq!(loaded.manifests[2].location.line, 15);
}

#[test]
fn malformed_yaml_names_file_line_and_column() {
    let errors = load_err("apiVersion: v1\nkind: Pod\nmetadata:\n  name: [web\n  labels: {}\n");
    assert_eq!(errors.len(), 1);
    let e = &errors[0];
    assert_eq!(e.file, "app.yaml");
    let loc = e.location.expect("a location");
    assert!(loc.line >= 4, "{e}");
    assert!(e.to_string().starts_with(&format!("app.yaml:{}:{}: invalid YAML", loc.line, loc.column)), "{e}");
}

#[test]
fn unknown_kind_lists_the_kinds() {
    let errors = load_err("apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n");
    let msg = errors[0].to_string();
    assert!(msg.starts_with("app.yaml:2:7: unknown kind \"Secret\""), "{msg}");
    assert!(msg.contains("Pod") && msg.contains("Deployment") && msg.contains("ConfigMap"), "{msg}");
    let errors = load_err("apiVersion: v1\nkind: Deployment\nmetadata:\n  name: s\n");
    assert!(errors[0].to_string().contains("apiVersion \"apps/v1\""), "{}", errors[0]);
}

const POD_WITH_UNKNOWN: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: web
    image: nginx:1.14.2
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
";

#[test]
fn unknown_fields_are_errors_warnings_or_ignored_as_asked() {
    let errors = load_err(POD_WITH_UNKNOWN);
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        messages,
        vec![
            "app.yaml:9:5: Pod \"web\": unknown field \"spec.containers[0].volumeMounts\": Skiff does not support it",
            "app.yaml:12:3: Pod \"web\": unknown field \"spec.volumes\": Skiff does not support it",
        ]
    );
    let warned = load("app.yaml", POD_WITH_UNKNOWN, UnknownFields::Warn).expect("warn mode loads");
    assert_eq!(warned.manifests.len(), 1);
    assert_eq!(warned.warnings.len(), 2);
    assert!(warned.warnings[0].to_string().ends_with("(ignored)"));
    let ignored = load("app.yaml", POD_WITH_UNKNOWN, UnknownFields::Ignore).expect("ignore mode loads");
    assert!(ignored.warnings.is_empty());
    // The dropped fields are gone from what would be sent.
    assert!(ignored.manifests[0].object.to_value()["spec"].get("volumes").is_none());
}

#[test]
fn type_errors_point_at_the_field() {
    let errors = load_err("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: three\n");
    let msg = errors[0].to_string();
    assert!(msg.starts_with("app.yaml:6:13: Deployment \"web\": spec.replicas: invalid type"), "{msg}");
}

#[test]
fn one_bad_document_fails_the_whole_file() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: good\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: also-good\n";
    let errors = load_err(text);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().starts_with("app.yaml:9:9: ConfigMap \"Bad_Name\": metadata.name:"), "{}", errors[0]);
}

fn errors_of(text: &str) -> Vec<String> {
    load_err(text).iter().map(|e| e.to_string()).collect()
}

#[test]
fn validation_messages_name_object_and_field() {
    let deploy = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: -1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
      - name: web
        image: web:1
        ports:
        - containerPort: 70000
          name: Http_Port
        resources:
          requests: {cpu: 500m, memory: 2Gi}
          limits: {cpu: 250m, memory: 1Gi}
        readinessProbe:
          httpGet: {port: metrics}
          periodSeconds: 0
        livenessProbe:
          exec: {command: [cat, /tmp/x]}
          tcpSocket: {port: 80}
";
    let errors = errors_of(deploy);
    let expect = [
        "app.yaml:6:13: Deployment \"web\": spec.replicas: -1 must be >= 0",
        "spec.template.metadata.labels: the labels do not match the selector app=web",
        "spec.template.spec.containers[0].ports[0].containerPort: 70000 must be between 1 and 65535",
        "spec.template.spec.containers[0].ports[0].name: \"Http_Port\" must be 1-15 lowercase",
        "spec.template.spec.containers[0].resources.requests.cpu: 500m must be at most the limit 250m",
        "spec.template.spec.containers[0].resources.requests.memory: 2Gi must be at most the limit 1Gi",
        "spec.template.spec.containers[0].livenessProbe: set exactly one of exec, httpGet and tcpSocket (found 2)",
        "spec.template.spec.containers[0].readinessProbe.httpGet.port: \"metrics\" is not the name of a port",
        "spec.template.spec.containers[0].readinessProbe.periodSeconds: 0 must be >= 1",
    ];
    for e in expect {
        assert!(errors.iter().any(|m| m.contains(e)), "missing {e:?} in {errors:#?}");
    }
}

/// Issue 12, defect 10: a probe could be aimed at any host, and a path or header with a line break
/// wrote a second request on the probe's connection.
#[test]
fn probes_and_hooks_reach_only_the_pod_and_send_one_clean_request() {
    let pod = r#"apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: c
    image: web:1
    readinessProbe:
      httpGet:
        port: 80
        host: 10.0.0.1
        path: "/healthz HTTP/1.0\r\n\r\nGET /admin"
        httpHeaders: [{name: "X A", value: "1"}, {name: X-B, value: "1\r\nX-Injected: 1"}]
    livenessProbe:
      tcpSocket: {port: 80, host: 169.254.169.254}
    lifecycle:
      preStop:
        httpGet: {port: 80, path: relative}
"#;
    let errors = errors_of(pod);
    let expect = [
        "spec.containers[0].readinessProbe.httpGet.host: not supported: probes and hooks reach the pod's own IP",
        "spec.containers[0].readinessProbe.httpGet.path: \"/healthz HTTP/1.0\\r\\n\\r\\nGET /admin\" contains ' '",
        "spec.containers[0].readinessProbe.httpGet.httpHeaders[0].name: \"X A\" is not an HTTP header name",
        "spec.containers[0].readinessProbe.httpGet.httpHeaders[1].value: \"1\\r\\nX-Injected: 1\" contains a control character",
        "spec.containers[0].livenessProbe.tcpSocket.host: not supported",
        "spec.containers[0].lifecycle.preStop.httpGet.path: \"relative\" must start with '/'",
    ];
    for e in expect {
        assert!(errors.iter().any(|m| m.contains(e)), "missing {e:?} in {errors:#?}");
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn quantities_and_labels_are_checked_when_read() {
    let errors = errors_of("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: web\n    image: web:1\n    resources:\n      limits:\n        cpu: lots\n");
    assert!(errors[0].contains("spec.containers[0].resources.limits.cpu: \"lots\" is not a quantity"), "{errors:?}");
    let errors = errors_of("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    \"bad key!\": x\nspec:\n  containers:\n  - name: web\n    image: web:1\n");
    assert!(errors[0].starts_with("app.yaml:6:17: Pod \"web\": metadata.labels[bad key!]"), "{errors:?}");
}

#[test]
fn services_check_ports_and_types() {
    let errors = errors_of("apiVersion: v1\nkind: Service\nmetadata:\n  name: 1web\nspec:\n  type: LoadBalancer\n  ports:\n  - port: 0\n  - port: 80\n    nodePort: 31000\n");
    for e in [
        "metadata.name: \"1web\" must start with a lowercase letter",
        "spec.type: \"LoadBalancer\" must be one of ClusterIP, NodePort",
        "spec.ports[0].port: 0 must be between 1 and 65535",
        "spec.ports[0].name: required when a service has more than one port",
        "spec.ports[1].nodePort: may only be set when type is NodePort",
    ] {
        assert!(errors.iter().any(|m| m.contains(e)), "missing {e:?} in {errors:#?}");
    }
}

#[test]
fn oversized_objects_are_refused() {
    let big = "x".repeat(1024 * 1024 + 1);
    let text = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  blob: {big}\n");
    let errors = errors_of(&text);
    assert!(errors[0].contains("more than the limit of 1048576 bytes"), "{errors:?}");
}

#[test]
fn duplicate_keys_are_refused() {
    let errors = errors_of("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n");
    assert_eq!(errors, vec!["app.yaml:5:3: invalid YAML: duplicate mapping key: name"]);
}

#[test]
fn host_ports_are_refused_rather_than_ignored() {
    let errors = errors_of("apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: web\n    image: web:1\n    ports:\n    - {containerPort: 80, hostPort: 8080}\n");
    assert!(
        errors[0].contains("spec.containers[0].ports[0].hostPort: Skiff does not publish host ports"),
        "{errors:?}"
    );
}
