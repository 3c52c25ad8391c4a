//! Probing a container, as the kubelet does it.
//!
//! When ([`ProbeSchedule`], pure): nothing before `initialDelaySeconds`, then one probe every
//! `periodSeconds`, each allowed `timeoutSeconds`; the verdict flips to success after
//! `successThreshold` successes in a row and to failure after `failureThreshold` failures in a row.
//!
//! How ([`run`]): an exec probe runs its command through the container runtime; TCP and HTTP
//! probes go through a [`Prober`] to the pod IP (never elsewhere: a `host` is refused by the API and
//! ignored here). [`NetProber`] is the real
//! network; tests give a double that answers as they say.

use std::time::Duration;

use async_trait::async_trait;
use skiff_api::kinds::pod::{Container, HttpGetAction, Probe};
use skiff_api::meta::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::runtime::ContainerRuntime;

/// The verdict of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No verdict yet (before the first result).
    Unknown,
    Success,
    Failure,
}

/// The timing of one probe of one container run.
#[derive(Debug, Clone)]
pub struct ProbeSchedule {
    initial_delay: Duration,
    period: Duration,
    pub timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    started: Instant,
    next: Instant,
    successes: u32,
    failures: u32,
    verdict: Verdict,
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0))
}

impl ProbeSchedule {
    /// The schedule of `probe` for a container that started at `started`. `initial` is the verdict
    /// before any result (readiness: failure, liveness: success, as in Kubernetes).
    pub fn new(probe: &Probe, started: Instant, initial: Verdict) -> Self {
        let initial_delay = secs(probe.initial_delay_seconds, 0);
        Self {
            initial_delay,
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: u32::try_from(probe.success_threshold.unwrap_or(1).max(1)).unwrap_or(1),
            failure_threshold: u32::try_from(probe.failure_threshold.unwrap_or(3).max(1)).unwrap_or(3),
            started,
            next: started + initial_delay,
            successes: 0,
            failures: 0,
            verdict: initial,
        }
    }

    /// When the next probe is due.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// Whether a probe should run at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Records a probe's result at `now`; returns the verdict (which changes only at a threshold).
    pub fn record(&mut self, ok: bool, now: Instant) -> Verdict {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= self.success_threshold {
                self.verdict = Verdict::Success;
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= self.failure_threshold {
                self.verdict = Verdict::Failure;
            }
        }
        // The next probe comes a period after this one was due (not after it finished), so a slow
        // probe does not stretch the schedule; after a stall it comes at once, without a burst.
        self.next = (self.next + self.period).max(now);
        self.verdict
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// How long the container has been running at `now`.
    pub fn running_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// Still inside `initialDelaySeconds` at `now`.
    pub fn in_initial_delay(&self, now: Instant) -> bool {
        self.running_for(now) < self.initial_delay
    }
}

/// How TCP and HTTP probes reach a pod.
#[async_trait]
pub trait Prober: Send + Sync {
    /// Whether a TCP connection to `host:port` opens within `timeout`.
    async fn tcp(&self, host: &str, port: u16, timeout: Duration) -> bool;
    /// The status code of an HTTP GET of `get`'s path at `host:port`, if it answers within `timeout`.
    async fn http_get(&self, host: &str, port: u16, get: &HttpGetAction, timeout: Duration) -> Option<u16>;
}

/// Probes over the real network.
pub struct NetProber;

#[async_trait]
impl Prober for NetProber {
    async fn tcp(&self, host: &str, port: u16, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await, Ok(Ok(_)))
    }

    async fn http_get(&self, host: &str, port: u16, get: &HttpGetAction, timeout: Duration) -> Option<u16> {
        tokio::time::timeout(timeout, http_get(host, port, get)).await.ok()?.ok()
    }
}

/// The probe's request, one request whatever the object says: a path or header that would end a
/// line is refused here too (the API refuses them; an object stored before it did may hold one).
fn http_request(host: &str, port: u16, get: &HttpGetAction) -> Result<String, String> {
    use skiff_api::kinds::pod::{check_header_name, check_header_value, check_http_path};
    let path = get.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
    check_http_path(path)?;
    let mut request = format!("GET {path} HTTP/1.0\r\n");
    // The probe's own headers, unless the user set them (as the kubelet does).
    let set = |name: &str| get.http_headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    if !set("host") {
        request.push_str(&format!("Host: {host}:{port}\r\n"));
    }
    if !set("user-agent") {
        request.push_str("User-Agent: skiff-probe\r\n");
    }
    for h in &get.http_headers {
        check_header_name(&h.name)?;
        check_header_value(&h.value)?;
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("\r\n");
    Ok(request)
}

/// A minimal HTTP/1.0 GET (probes need the status code only).
async fn http_get(host: &str, port: u16, get: &HttpGetAction) -> std::io::Result<u16> {
    let request =
        http_request(host, port, get).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 32];
    let n = stream.read(&mut head).await?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

/// Runs one probe of container `c` (runtime id `id`): exec in the container, or TCP / HTTP to the
/// pod IP. A port may be named after one of the container's ports.
pub async fn run(
    runtime: &dyn ContainerRuntime,
    prober: &dyn Prober,
    probe: &Probe,
    c: &Container,
    id: &str,
    pod_ip: Option<&str>,
    timeout: Duration,
) -> bool {
    if let Some(exec) = &probe.exec {
        return matches!(runtime.exec(id, &exec.command, timeout).await, Ok(out) if out.exit_code == 0);
    }
    let Some(ip) = pod_ip else { return false };
    let port = |p: &IntOrString| match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c.ports_named(name).next().and_then(|cp| u16::try_from(cp.container_port).ok()),
    };
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port(&tcp.port) else { return false };
        // Always the pod's own IP: a `host` (refused by the API) would aim the member anywhere.
        return prober.tcp(ip, port, timeout).await;
    }
    if let Some(get) = &probe.http_get {
        let Some(port) = port(&get.port) else { return false };
        return prober.http_get(ip, port, get, timeout).await.is_some_and(|code| (200..400).contains(&code));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(delay: i32, period: i32, success: i32, failure: i32) -> Probe {
        Probe {
            initial_delay_seconds: Some(delay),
            period_seconds: Some(period),
            success_threshold: Some(success),
            failure_threshold: Some(failure),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_runs_before_the_initial_delay_then_every_period() {
        let start = Instant::now();
        let mut s = ProbeSchedule::new(&probe(15, 10, 1, 3), start, Verdict::Failure);
        assert!(!s.due(start + Duration::from_secs(14)));
        assert!(s.due(start + Duration::from_secs(15)));
        s.record(true, start + Duration::from_secs(15));
        assert_eq!(s.next_due(), start + Duration::from_secs(25));
        assert_eq!(s.verdict(), Verdict::Success);
    }

    #[tokio::test(start_paused = true)]
    async fn the_verdict_flips_only_at_the_thresholds() {
        let start = Instant::now();
        let mut s = ProbeSchedule::new(&probe(0, 5, 2, 3), start, Verdict::Success);
        let at = |n: u64| start + Duration::from_secs(5 * n);
        assert_eq!(s.record(false, at(0)), Verdict::Success);
        assert_eq!(s.record(false, at(1)), Verdict::Success);
        assert_eq!(s.record(true, at(2)), Verdict::Success, "a success resets the failure count");
        assert_eq!(s.record(false, at(3)), Verdict::Success);
        assert_eq!(s.record(false, at(4)), Verdict::Success);
        assert_eq!(s.record(false, at(5)), Verdict::Failure, "three failures in a row");
        assert_eq!(s.record(true, at(6)), Verdict::Failure, "one success is not enough with a threshold of 2");
        assert_eq!(s.record(true, at(7)), Verdict::Success);
    }

    /// liveness-exec from the Kubernetes documentation: healthy for 30 s, probed every 5 s after
    /// 5 s, failure threshold 3: the container is found dead between 35 s and 45 s.
    #[tokio::test(start_paused = true)]
    async fn the_documentation_liveness_exec_pod_fails_about_40_seconds_in() {
        let start = Instant::now();
        let mut s = ProbeSchedule::new(&probe(5, 5, 1, 3), start, Verdict::Success);
        let mut failed_at = None;
        for _ in 0..20 {
            let now = s.next_due();
            let healthy = now.duration_since(start) < Duration::from_secs(30);
            if s.record(healthy, now) == Verdict::Failure {
                failed_at = Some(now.duration_since(start));
                break;
            }
        }
        assert_eq!(failed_at, Some(Duration::from_secs(40)));
    }

    /// What one connection to a listener on loopback sent; the listener answers 200.
    async fn listener() -> (u16, tokio::task::JoinHandle<Vec<u8>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let Ok((mut conn, _)) = l.accept().await else { return Vec::new() };
            let mut seen = vec![0u8; 4096];
            let n = conn.read(&mut seen).await.unwrap_or(0);
            let _ = conn.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
            seen.truncate(n);
            seen
        });
        (port, task)
    }

    fn get(path: &str, headers: &[(&str, &str)]) -> HttpGetAction {
        HttpGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(0),
            host: None,
            scheme: None,
            http_headers: headers
                .iter()
                .map(|(n, v)| skiff_api::kinds::pod::HttpHeader { name: (*n).into(), value: (*v).into() })
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_path_or_header_with_a_line_break_sends_nothing() {
        let smuggled = "/healthz HTTP/1.0\r\n\r\nGET /admin";
        for action in [get(smuggled, &[]), get("/", &[("X-A", "1\r\nX-Injected: 1")]), get("/", &[("X A", "1")])] {
            let (port, seen) = listener().await;
            let answer = NetProber.http_get("127.0.0.1", port, &action, Duration::from_secs(2)).await;
            assert_eq!(answer, None, "{action:?} is not sent");
            seen.abort();
        }
        // A clean one is sent as one request, with the user's Host header instead of the probe's.
        let (port, seen) = listener().await;
        let answer =
            NetProber.http_get("127.0.0.1", port, &get("/ok", &[("Host", "web")]), Duration::from_secs(2)).await;
        assert_eq!(answer, Some(200));
        let seen = String::from_utf8(seen.await.expect("listener")).expect("text");
        assert_eq!(seen, "GET /ok HTTP/1.0\r\nUser-Agent: skiff-probe\r\nHost: web\r\n\r\n");
    }

    /// A prober that records where it was sent.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<String>>);

    #[async_trait]
    impl Prober for Recorder {
        async fn tcp(&self, host: &str, port: u16, _: Duration) -> bool {
            self.0.lock().expect("lock").push(format!("{host}:{port}"));
            true
        }
        async fn http_get(&self, host: &str, port: u16, _: &HttpGetAction, _: Duration) -> Option<u16> {
            self.0.lock().expect("lock").push(format!("{host}:{port}"));
            Some(200)
        }
    }

    #[tokio::test]
    async fn probes_reach_the_pod_ip_whatever_host_an_old_object_names() {
        let runtime = crate::memory::MemoryRuntime::default();
        let recorder = Recorder::default();
        let container = Container::default();
        let mut http = get("/", &[]);
        http.port = IntOrString::Int(8080);
        http.host = Some("10.0.0.1".into());
        let tcp =
            skiff_api::kinds::pod::TcpSocketAction { port: IntOrString::Int(9090), host: Some("10.0.0.1".into()) };
        for p in [
            Probe { http_get: Some(http), ..Default::default() },
            Probe { tcp_socket: Some(tcp), ..Default::default() },
        ] {
            assert!(run(&runtime, &recorder, &p, &container, "id", Some("172.17.0.5"), Duration::from_secs(1)).await);
        }
        assert_eq!(*recorder.0.lock().expect("lock"), ["172.17.0.5:8080", "172.17.0.5:9090"]);
    }
}
