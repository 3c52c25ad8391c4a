//! The cluster DNS server: UDP and TCP on one address, cluster names answered from the current
//! [`Records`], every other name forwarded upstream.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::dns::records::{answer, Answer, Records};
use crate::dns::upstream;

/// How long a TCP client may stay idle before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection (hickory's own default, which it does not export).
const TCP_RESPONSE_BUFFER: usize = 32;
/// How many ports to try when asked for any port: the UDP one may be taken for TCP.
const PORT_ATTEMPTS: usize = 10;

/// Why cluster DNS could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(
        "cluster DNS cannot listen on {addr} ({protocol}): {source}. Stop what uses that port or configure \
         another DNS address; port 53 needs root or CAP_NET_BIND_SERVICE"
    )]
    Bind { addr: SocketAddr, protocol: &'static str, source: io::Error },
}

/// A running cluster DNS server. Dropping it stops it; [`DnsServer::stop`] also waits until it
/// has stopped.
pub struct DnsServer {
    /// The hickory server that owns the sockets and the tasks serving them.
    server: Server<Handler>,
    /// Where it listens, with the port chosen when it was started on port 0.
    local_addr: SocketAddr,
}

impl DnsServer {
    /// Listens on `bind` over UDP and TCP, answering cluster names from whatever `records` holds
    /// at each query and forwarding the rest to `upstreams` in order. An upstream that is this
    /// server itself is dropped, so that a resolv.conf pointing at it does not make a loop.
    pub async fn start(
        bind: SocketAddr,
        upstreams: Vec<SocketAddr>,
        records: watch::Receiver<Arc<Records>>,
    ) -> Result<DnsServer, DnsError> {
        let (udp, tcp) = bind_both(bind).await?;
        let local_addr = udp.local_addr().map_err(|source| DnsError::Bind { addr: bind, protocol: "UDP", source })?;
        let (upstreams, loops): (Vec<_>, Vec<_>) =
            upstreams.into_iter().partition(|u| !upstream::is_self(*u, local_addr));
        if !loops.is_empty() {
            tracing::warn!("cluster DNS on {local_addr} does not forward to {loops:?}: that is itself");
        }
        if upstreams.is_empty() {
            tracing::warn!(
                "cluster DNS on {local_addr} has no upstream resolver: names outside the cluster get SERVFAIL"
            );
        }
        let mut server = Server::new(Handler { records, upstreams });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
        Ok(DnsServer { server, local_addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits until the sockets are closed.
    pub async fn stop(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!("cluster DNS on {} stopped with: {e}", self.local_addr);
        }
    }
}

/// Binds UDP and TCP on the same address; for port 0, on the same port chosen for UDP, trying
/// again on another port when TCP finds that one taken.
async fn bind_both(bind: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut attempt = 1;
    loop {
        let udp =
            UdpSocket::bind(bind).await.map_err(|source| DnsError::Bind { addr: bind, protocol: "UDP", source })?;
        let addr = udp.local_addr().map_err(|source| DnsError::Bind { addr: bind, protocol: "UDP", source })?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(_) if bind.port() == 0 && attempt < PORT_ATTEMPTS => attempt += 1,
            Err(source) => return Err(DnsError::Bind { addr, protocol: "TCP", source }),
        }
    }
}

/// Answers one request: what the server does between decoding and encoding.
struct Handler {
    /// The current cluster names; the caller swaps them when Services or endpoints change.
    records: watch::Receiver<Arc<Records>>,
    /// Where other names go, in order, without this server itself.
    upstreams: Vec<SocketAddr>,
}

/// The sections of one response, decided before it is encoded.
#[derive(Debug, Default)]
struct Reply {
    code: ResponseCode,
    /// Set for cluster names, which this server is the source of.
    authoritative: bool,
    /// Relayed from an upstream whose answer did not fit its UDP reply.
    truncated: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Reply {
        Reply { code, ..Reply::default() }
    }
}

impl Handler {
    async fn reply(&self, request: &Request) -> Reply {
        let Ok(info) = request.request_info() else { return Reply::code(ResponseCode::FormErr) };
        if request.metadata.op_code != OpCode::Query || request.metadata.message_type != MessageType::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let records = self.records.borrow().clone();
        match answer(&records, &info.query.name().to_string(), info.query.query_type()) {
            Answer::Records(answers) => Reply { authoritative: true, answers, ..Reply::default() },
            Answer::NoData => Reply { authoritative: true, ..Reply::code(ResponseCode::NoError) },
            Answer::NxDomain => Reply { authoritative: true, ..Reply::code(ResponseCode::NXDomain) },
            Answer::Forward => {
                let recursion_desired = request.metadata.recursion_desired;
                match upstream::forward(&self.upstreams, info.query.original(), recursion_desired).await {
                    Some(upstream) => Reply {
                        code: upstream.metadata.response_code,
                        authoritative: false,
                        truncated: upstream.metadata.truncation,
                        answers: upstream.answers,
                        authorities: upstream.authorities,
                        additionals: upstream.additionals,
                    },
                    None => Reply::code(ResponseCode::ServFail),
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let reply = self.reply(request).await;
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.truncation = reply.truncated;
        metadata.recursion_available = !self.upstreams.is_empty();
        // EDNS in, EDNS out (RFC 6891); it also lets a UDP answer grow to what the client takes.
        let edns = request.edns.as_ref().map(|theirs| {
            let mut ours = Edns::new();
            ours.set_max_payload(theirs.max_payload().max(512));
            ours
        });
        let built = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            &reply.answers,
            &reply.authorities,
            &[],
            &reply.additionals,
        );
        match response.send_response(built).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("cluster DNS could not answer {}: {e}", request.src());
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::{Name, RData, RecordType};
    use skiff_api::kinds::endpoint_slice::{Endpoint, EndpointPort, SERVICE_NAME_LABEL};
    use skiff_api::kinds::service::ServicePort;
    use skiff_api::kinds::{EndpointSlice, Service};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::timeout;

    /// The longest any one exchange in these tests may take; the upstream timeout fits in it.
    const WAIT: Duration = Duration::from_secs(5);

    fn name(text: &str) -> Name {
        Name::from_ascii(text).expect("name")
    }

    /// A resolver that knows one name, `example.org A 192.0.2.1`; every other name is NXDOMAIN.
    async fn fake_upstream() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind the fake upstream");
        let addr = socket.local_addr().expect("fake upstream address");
        tokio::spawn(async move {
            let mut buf = vec![0; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.add_queries(query.queries.clone());
                match query.queries.first() {
                    Some(q) if *q.name() == name("example.org.") && q.query_type() == RecordType::A => {
                        reply.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A::new(192, 0, 2, 1))));
                    }
                    _ => reply.metadata.response_code = ResponseCode::NXDomain,
                }
                let _ = socket.send_to(&reply.to_vec().expect("encode reply"), from).await;
            }
        });
        addr
    }

    /// An address nothing listens on: asking it fails at once, so the next upstream is asked.
    async fn dead_upstream() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        socket.local_addr().expect("address")
    }

    /// `web` at 10.96.0.10 with port `http` 80, and headless `db` on 10.0.0.5 with port `pg`.
    fn records(web_ip: &str) -> Records {
        let service = |name: &str, ip: &str, port: &str, number| {
            let mut s = Service::default();
            s.metadata.name = name.into();
            s.metadata.namespace = "shop".into();
            s.spec.cluster_ip = Some(ip.into());
            s.spec.ports = vec![ServicePort { name: Some(port.into()), port: number, ..Default::default() }];
            s
        };
        let mut slice = EndpointSlice {
            endpoints: vec![Endpoint { addresses: vec!["10.0.0.5".into()], ..Default::default() }],
            ports: vec![EndpointPort { name: Some("pg".into()), port: Some(5432), ..Default::default() }],
            ..Default::default()
        };
        slice.metadata.namespace = "shop".into();
        slice.metadata.labels.insert(SERVICE_NAME_LABEL.into(), "db".into());
        let (web, db) = (service("web", web_ip, "http", 80), service("db", "None", "pg", 5432));
        Records::build(&[&web, &db], &[&slice], "cluster.local")
    }

    fn query(text: &str, record_type: RecordType) -> Message {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(name(text), record_type));
        message
    }

    async fn ask_udp(server: SocketAddr, text: &str, record_type: RecordType) -> Message {
        let request = query(text, record_type);
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
        socket.connect(server).await.expect("connect");
        socket.send(&request.to_vec().expect("encode")).await.expect("send");
        let mut buf = vec![0; 4096];
        let n = timeout(WAIT, socket.recv(&mut buf)).await.expect("an answer in time").expect("recv");
        let reply = Message::from_vec(&buf[..n]).expect("decode");
        assert_eq!(reply.metadata.id, request.metadata.id);
        reply
    }

    async fn ask_tcp(server: SocketAddr, text: &str, record_type: RecordType) -> Message {
        let request = query(text, record_type).to_vec().expect("encode");
        let exchange = async {
            let mut stream = TcpStream::connect(server).await?;
            let length = u16::try_from(request.len()).expect("short query");
            stream.write_all(&[&length.to_be_bytes()[..], &request].concat()).await?;
            let mut reply = vec![0; usize::from(stream.read_u16().await?)];
            stream.read_exact(&mut reply).await?;
            io::Result::Ok(reply)
        };
        let reply = timeout(WAIT, exchange).await.expect("an answer in time").expect("TCP exchange");
        Message::from_vec(&reply).expect("decode")
    }

    fn data(reply: &Message) -> Vec<RData> {
        reply.answers.iter().map(|r| r.data.clone()).collect()
    }

    #[tokio::test]
    async fn cluster_names_are_answered_from_the_current_records_and_other_names_forwarded() {
        let (tx, rx) = watch::channel(Arc::new(records("10.96.0.10")));
        let upstreams = vec![dead_upstream().await, fake_upstream().await];
        let server = DnsServer::start("127.0.0.1:0".parse().expect("addr"), upstreams, rx).await.expect("start");
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let web = ask_udp(addr, "web.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!((web.metadata.response_code, web.metadata.authoritative), (ResponseCode::NoError, true));
        assert_eq!(data(&web), [RData::A(A::new(10, 96, 0, 10))]);
        assert_eq!(web.answers[0].ttl, 5);

        let db = ask_udp(addr, "DB.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!(data(&db), [RData::A(A::new(10, 0, 0, 5))]);
        let pod = ask_tcp(addr, "10-0-0-5.db.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!((pod.metadata.authoritative, data(&pod)), (true, vec![RData::A(A::new(10, 0, 0, 5))]));

        let srv = ask_udp(addr, "_http._tcp.web.shop.svc.cluster.local.", RecordType::SRV).await;
        assert_eq!(data(&srv), [RData::SRV(SRV::new(0, 100, 80, name("web.shop.svc.cluster.local.")))]);
        let srv = ask_tcp(addr, "_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV).await;
        assert_eq!(data(&srv), [RData::SRV(SRV::new(0, 100, 5432, name("10-0-0-5.db.shop.svc.cluster.local.")))]);

        let missing = ask_udp(addr, "nope.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!((missing.metadata.response_code, missing.metadata.authoritative), (ResponseCode::NXDomain, true));
        let nodata = ask_udp(addr, "web.shop.svc.cluster.local.", RecordType::AAAA).await;
        assert_eq!((nodata.metadata.response_code, nodata.answers.len()), (ResponseCode::NoError, 0));

        let outside = ask_udp(addr, "example.org.", RecordType::A).await;
        assert_eq!((outside.metadata.response_code, outside.metadata.authoritative), (ResponseCode::NoError, false));
        assert_eq!(data(&outside), [RData::A(A::new(192, 0, 2, 1))]);
        let unknown = ask_tcp(addr, "nowhere.example.", RecordType::A).await;
        assert_eq!((unknown.metadata.response_code, unknown.answers.len()), (ResponseCode::NXDomain, 0));

        tx.send_replace(Arc::new(records("10.96.0.99")));
        let moved = ask_udp(addr, "web.shop.svc.cluster.local.", RecordType::A).await;
        assert_eq!(data(&moved), [RData::A(A::new(10, 96, 0, 99))]);

        server.stop().await;
        assert!(TcpStream::connect(addr).await.is_err(), "a stopped server still accepts TCP on {addr}");
    }

    #[tokio::test]
    async fn outside_names_get_servfail_when_no_upstream_answers() {
        let (_tx, rx) = watch::channel(Arc::new(Records::empty("cluster.local")));
        let server = DnsServer::start("127.0.0.1:0".parse().expect("addr"), vec![dead_upstream().await], rx)
            .await
            .expect("start");
        let reply = ask_udp(server.local_addr(), "example.org.", RecordType::A).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    }
}
