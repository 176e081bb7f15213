//! Why a sink cannot be set up or a delivery failed (the sink retries with backoff).

use std::path::PathBuf;

/// Why a sink cannot be set up or a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The sink's name is empty or too long.
    #[error("every sink needs a name of 1-64 characters")]
    Name,
    /// TLS is on but no CA file is given.
    #[error("TLS needs ca_file (the CA certificate to trust, PEM)")]
    NoCaFile,
    /// The CA file cannot be read.
    #[error("{}: {source}", path.display())]
    CaFile {
        /// The CA file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file is not PEM.
    #[error("{}: {source}", path.display())]
    CaPem {
        /// The CA file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refuses the CA or the protocol settings.
    #[error("{0}")]
    Tls(rustls::Error),
    /// The URL does not parse.
    #[error("url {url:?}: {source}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        source: hyper::http::uri::InvalidUri,
    },
    /// The URL names no host.
    #[error("the url has no host")]
    NoHost,
    /// The TCP connection did not open in time (http sinks).
    #[error("connect timed out")]
    ConnectTimeout,
    /// The TCP connection did not open in time (syslog).
    #[error("connecting to {0} timed out")]
    ConnectTimeoutTo(String),
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The host is not a valid TLS server name (http sinks).
    #[error("{0}")]
    DnsName(rustls::pki_types::InvalidDnsNameError),
    /// The configured or derived TLS server name is not valid (syslog).
    #[error("server name {host:?}: {source}")]
    ServerName {
        /// The name.
        host: String,
        /// Why.
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// The TLS handshake failed (http sinks).
    #[error("TLS: {0}")]
    Handshake(std::io::Error),
    /// The TLS handshake failed (syslog).
    #[error("TLS to {addr}: {source}")]
    HandshakeTo {
        /// `host:port`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The request cannot be built.
    #[error("{0}")]
    Request(hyper::http::Error),
    /// The HTTP exchange failed.
    #[error("{0}")]
    Http(hyper::Error),
    /// No answer in time.
    #[error("the request timed out")]
    RequestTimeout,
    /// An answer other than 2xx.
    #[error("{url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The answer.
        status: hyper::StatusCode,
    },
    /// Writing to the syslog server failed (the connection is reopened next time).
    #[error("syslog write: {0}")]
    SyslogWrite(std::io::Error),
    /// Writing the JSON lines file (or rotating it) failed.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The blocking file write did not finish.
    #[error("{0}")]
    Task(tokio::task::JoinError),
}
