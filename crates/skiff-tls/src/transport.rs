//! TLS under tonic: the listener's handshakes (each in its own task, bounded in time, so a slow
//! client cannot hold up the others) and a [`Connector`] whose channels speak TLS to members. tonic
//! sees finished TLS streams, so `Request::peer_certs` names the caller.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use skiff_proto::transport::{Connector, NotSent, Redirect};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::identity::{IdentityStore, Resolver};
use crate::subject::MEMBER_SERVER_NAME;
use crate::TlsError;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs ring as rustls' process-wide crypto (once; later calls do nothing).
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The listener's TLS: the member's certificate, and client certificates checked against the
/// cluster CA when one is sent (a caller without one reaches only what needs none: joining).
pub fn server_config(identity: Arc<IdentityStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    install_crypto();
    let verifier = rustls::server::WebPkiClientVerifier::builder(identity.roots())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Invalid(format!("the cluster CA cannot check clients: {e}")))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Resolver(identity)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepted connections after their TLS handshake; ends when the stream is dropped (the listener
/// closes then).
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl tokio_stream::Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Whom a client trusts and how it proves who it is.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
    pub connect_timeout: Duration,
    redirect: Option<Arc<dyn Redirect>>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").field("connect_timeout", &self.connect_timeout).finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// Trusts the cluster CA and presents `identity` (a member's or a client's certificate).
    pub fn new(identity: Arc<IdentityStore>) -> TlsConnector {
        install_crypto();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(identity.roots())
            .with_client_cert_resolver(Arc::new(Resolver(identity)));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self::with_config(config)
    }

    /// Trusts `ca_pem` and presents no certificate.
    pub fn anonymous(ca_pem: &str) -> Result<TlsConnector, TlsError> {
        install_crypto();
        let roots = crate::identity::roots(ca_pem)?;
        let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self::with_config(config))
    }

    /// Trusts any server and presents no certificate: only for a join, whose answer carries its
    /// own proof (see [`crate::token`]).
    pub fn unverified() -> TlsConnector {
        install_crypto();
        let mut config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(rustls::crypto::ring::default_provider())))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Self::with_config(config)
    }

    fn with_config(config: rustls::ClientConfig) -> TlsConnector {
        TlsConnector { config: Arc::new(config), connect_timeout: Duration::from_secs(2), redirect: None }
    }

    /// Sends every connection where `redirect` says (the certificate checks stay the same).
    pub fn with_redirect(mut self, redirect: Option<Arc<dyn Redirect>>) -> TlsConnector {
        self.redirect = redirect;
        self
    }
}

impl Connector for TlsConnector {
    fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let addr = match &self.redirect {
            Some(r) => r.redirect(addr),
            None => addr.to_string(),
        };
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(endpoint.connect_with_connector_lazy(Dial { config: self.config.clone() }))
    }
}

/// Dials a member: TCP, then TLS naming [`MEMBER_SERVER_NAME`].
#[derive(Clone)]
struct Dial {
    config: Arc<rustls::ClientConfig>,
}

type DialFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, NotSent>> + Send>>;

impl tower_service::Service<Uri> for Dial {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = NotSent;
    type Future = DialFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| NotSent(format!("tcp connect error: {host}:{port}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(MEMBER_SERVER_NAME).map_err(|e| NotSent(e.to_string()))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| NotSent(format!("TLS handshake with {host}:{port} failed: {e}")))?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Accepts any server certificate but still checks the handshake's signatures with it.
#[derive(Debug)]
struct AnyServer(rustls::crypto::CryptoProvider);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
