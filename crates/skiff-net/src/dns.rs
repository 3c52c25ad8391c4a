//! Cluster DNS: every member answers `<service>.<namespace>.svc.<domain>` from the Services and
//! EndpointSlices it sees, and forwards other names to the resolvers it was given, so that pods
//! can use it as their only nameserver.
//!
//! - [`records`]: the names and their records, and what to do with a query (pure).
//! - [`upstream`]: the resolvers other names go to, and asking them.
//! - [`server`]: the UDP and TCP server.

pub mod records;
pub mod server;
pub mod upstream;

pub use records::{answer, Answer, Records, DEFAULT_DOMAIN, TTL};
pub use server::{DnsError, DnsServer};
pub use upstream::upstreams_from_resolv_conf;
