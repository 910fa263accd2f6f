//! Where Redis is: the topology (one server, a Sentinel-watched master, or
//! a Cluster), the credentials of its data nodes, and TLS.
//!
//! # What it owns
//!
//! The parsed, checked description of the deployment, built once at start
//! from the configuration ([`crate::config::Config::redis_target`]). A
//! misconfiguration (two topologies at once, a CA file that does not
//! parse, TLS settings without TLS) is an error here, at start, never a
//! failure on every request.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One Redis server's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// How the Redis deployment is laid out.
#[derive(Debug, Clone)]
pub enum Topology {
    /// One server (`--redis-url`, `--redis-host`).
    Single(Endpoint),
    /// A master found through Sentinel, followed across failovers.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master_name: String,
        /// The sentinels' own password (`requirepass` of the sentinels).
        password: Option<String>,
    },
    /// A Redis Cluster, reached through these seed nodes.
    Cluster { nodes: Vec<(String, u16)> },
}

impl Topology {
    /// `single`, `sentinel` or `cluster`: what logs and `HEALTH` say.
    pub fn name(&self) -> &'static str {
        match self {
            Topology::Single(_) => "single",
            Topology::Sentinel { .. } => "sentinel",
            Topology::Cluster { .. } => "cluster",
        }
    }
}

/// TLS towards Redis (and towards the sentinels): rustls with the ring
/// provider.
pub struct TlsSettings {
    /// For seqd's own connections ([`super::pipe`]).
    pub client: Arc<rustls::ClientConfig>,
    /// The same files, for the redis crate's Sentinel and cluster clients.
    pub certificates: redis::TlsCertificates,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSettings")
    }
}

/// The files TLS is configured from.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// CA certificates (PEM) that sign Redis's certificate; the system's
    /// trust store when absent.
    pub ca: Option<PathBuf>,
    /// Client certificate chain and key (PEM), for `tls-auth-clients`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsSettings {
    /// Reads and checks the files; every problem is named with its file.
    pub fn load(files: &TlsFiles) -> Result<TlsSettings, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        // rustls needs a process-wide crypto provider before its first
        // handshake; the redis crate's own TLS (Sentinel, cluster) uses it
        // too. Installing twice is harmless (the first one stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |p: &Path, what: &str| {
            std::fs::read(p).map_err(|e| format!("cannot read the {what} {}: {e}", p.display()))
        };
        let mut roots = rustls::RootCertStore::empty();
        let root_pem = match &files.ca {
            Some(ca) => {
                let pem = read(ca, "CA file (--redis-ca-file)")?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{}: not PEM certificates: {e}", ca.display()))?;
                if certs.is_empty() {
                    return Err(format!("{}: no certificate in the CA file", ca.display()));
                }
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| format!("{}: unusable CA certificate: {e}", ca.display()))?;
                }
                Some(pem)
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    let _ = roots.add(c);
                }
                None
            }
        };
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let (client, client_tls) = match (&files.cert, &files.key) {
            (None, None) => (builder.with_no_client_auth(), None),
            (Some(cert), Some(key)) => {
                let cert_pem = read(cert, "client certificate (--redis-cert-file)")?;
                let key_pem = read(key, "client key (--redis-key-file)")?;
                let chain = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("{}: not PEM certificates: {e}", cert.display()))?;
                let private = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| format!("{}: no usable private key: {e}", key.display()))?;
                let config = builder
                    .with_client_auth_cert(chain, private)
                    .map_err(|e| format!("client certificate and key do not fit: {e}"))?;
                let pair = redis::ClientTlsConfig {
                    client_cert: cert_pem,
                    client_key: key_pem,
                };
                (config, Some(pair))
            }
            _ => {
                return Err(
                    "--redis-cert-file and --redis-key-file go together: give both or neither"
                        .into(),
                )
            }
        };
        Ok(TlsSettings {
            client: Arc::new(client),
            certificates: redis::TlsCertificates {
                client_tls,
                root_cert: root_pem,
            },
        })
    }
}

/// Where Redis is and how seqd logs in.
#[derive(Debug, Clone)]
pub struct RedisTarget {
    pub topology: Topology,
    /// ACL user and password of the data nodes (not of the sentinels).
    pub username: Option<String>,
    pub password: Option<String>,
    /// Database number (single and Sentinel; a cluster has only 0).
    pub db: i64,
    pub tls: Option<Arc<TlsSettings>>,
    /// Replicas that must acknowledge an increment before it is answered
    /// (`WAIT`); 0 = no fencing.
    pub wait_replicas: u32,
}

impl RedisTarget {
    /// The deployment for logs, without passwords.
    pub fn display(&self) -> String {
        let tls = if self.tls.is_some() { " (TLS)" } else { "" };
        match &self.topology {
            Topology::Single(e) => format!("{e}/{}{tls}", self.db),
            Topology::Sentinel {
                sentinels,
                master_name,
                ..
            } => format!(
                "master {master_name:?} via sentinels {}/{}{tls}",
                list(sentinels),
                self.db
            ),
            Topology::Cluster { nodes } => format!("cluster seeded by {}{tls}", list(nodes)),
        }
    }
}

fn list(nodes: &[(String, u16)]) -> String {
    nodes
        .iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses `HOST:PORT[,HOST:PORT…]` (IPv6 as `[::1]:26379`).
pub fn parse_nodes(flag: &str, s: &str) -> Result<Vec<(String, u16)>, String> {
    let nodes = s
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            let (host, port) = n
                .rsplit_once(':')
                .ok_or_else(|| format!("{flag}: {n:?} is not HOST:PORT"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{flag}: {n:?} has no valid port"))?;
            if host.is_empty() || port == 0 {
                return Err(format!("{flag}: {n:?} is not HOST:PORT"));
            }
            Ok((host.to_string(), port))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.is_empty() {
        return Err(format!("{flag}: no HOST:PORT given"));
    }
    Ok(nodes)
}

/// What a URL (`redis://`, `rediss://`, `unix://`, `redis+unix://`) says.
pub struct ParsedUrl {
    pub endpoint: Endpoint,
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

/// Parses a Redis URL with the redis crate's rules.
pub fn parse_url(url: &str) -> Result<ParsedUrl, String> {
    use redis::{ConnectionAddr, IntoConnectionInfo};
    let info = url
        .into_connection_info()
        .map_err(|e| format!("invalid Redis URL: {e}"))?;
    let (endpoint, tls) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => (
            Endpoint::Tcp {
                host: host.clone(),
                port: *port,
            },
            false,
        ),
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            ..
        } => {
            if *insecure {
                return Err(
                    "rediss:// URLs with #insecure are refused: seqd always verifies \
                            Redis's certificate (give its CA with --redis-ca-file)"
                        .into(),
                );
            }
            (
                Endpoint::Tcp {
                    host: host.clone(),
                    port: *port,
                },
                true,
            )
        }
        ConnectionAddr::Unix(path) => (Endpoint::Unix(path.clone()), false),
        other => return Err(format!("unsupported Redis address {other}")),
    };
    let settings = info.redis_settings();
    Ok(ParsedUrl {
        endpoint,
        tls,
        username: settings.username().map(str::to_string),
        password: settings.password().map(str::to_string),
        db: settings.db(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse_and_bad_ones_name_the_flag() {
        assert_eq!(
            parse_nodes("--redis-sentinels", "a:1, b:26379,[::1]:7").unwrap(),
            vec![
                ("a".to_string(), 1),
                ("b".to_string(), 26379),
                ("::1".to_string(), 7)
            ]
        );
        let e = parse_nodes("--redis-cluster", "a").unwrap_err();
        assert!(
            e.contains("--redis-cluster") && e.contains("HOST:PORT"),
            "{e}"
        );
        assert!(parse_nodes("--redis-cluster", "a:0").is_err());
        assert!(parse_nodes("--redis-cluster", "a:x").is_err());
        assert!(parse_nodes("--redis-cluster", " , ").is_err());
    }

    #[test]
    fn urls_say_tls_and_credentials() {
        let u = parse_url("rediss://bob:pw@h:7000/2").unwrap();
        assert!(u.tls);
        assert_eq!(
            u.endpoint,
            Endpoint::Tcp {
                host: "h".into(),
                port: 7000
            }
        );
        assert_eq!(
            (u.username.as_deref(), u.password.as_deref(), u.db),
            (Some("bob"), Some("pw"), 2)
        );
        assert!(!parse_url("redis://h:1").unwrap().tls);
        assert!(parse_url("rediss://h:1/#insecure").is_err());
        assert!(parse_url("http://h").is_err());
    }
}
