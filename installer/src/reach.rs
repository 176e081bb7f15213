//! Is the controller reachable and the one the settings pin? A TLS 1.3 handshake with the
//! pinned CA, as the agent will do (no client certificate: enrollment comes later).

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use thoth_endpoint::config::parse_fingerprint;

/// The outcome of probing the controller.
#[derive(Debug, PartialEq)]
pub(crate) enum Reach {
    /// Handshake completed and the controller's CA is the pinned one.
    Trusted,
    /// No connection (DNS, refused, timeout): the agent will keep trying.
    Unreachable(String),
    /// Something answered but is not the pinned controller (wrong fingerprint, not TLS).
    Untrusted(String),
}

/// Probes `url` with the pinned `ca_fingerprint`, waiting at most `timeout` per step.
pub(crate) fn probe(url: &str, ca_fingerprint: &str, timeout: Duration) -> Reach {
    let fp = match parse_fingerprint(ca_fingerprint) {
        Ok(f) => f,
        Err(e) => return Reach::Untrusted(e.to_string()),
    };
    let Some(rest) = url.strip_prefix("https://") else {
        return Reach::Untrusted(format!("{url} is not an https:// URL"));
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').unwrap_or((v6, ""));
        (h, after.strip_prefix(':').unwrap_or("443"))
    } else {
        authority.rsplit_once(':').unwrap_or((authority, "443"))
    };
    let host = host.to_owned();
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let addrs: Vec<_> = match addr.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return Reach::Unreachable(format!("{addr}: {e}")),
    };
    let mut last = format!("{addr}: no address");
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    let Some(mut tcp) = tcp else {
        return Reach::Unreachable(last);
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let config = match thoth_endpoint::tls::client_config(fp, None) {
        Ok(c) => c,
        Err(e) => return Reach::Untrusted(e.to_string()),
    };
    let name = match rustls::pki_types::ServerName::try_from(host.clone()) {
        Ok(n) => n,
        Err(e) => return Reach::Untrusted(format!("{host}: {e}")),
    };
    let mut conn = match rustls::ClientConnection::new(Arc::new(config), name) {
        Ok(c) => c,
        Err(e) => return Reach::Untrusted(e.to_string()),
    };
    while conn.is_handshaking() {
        match conn.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Reach::Untrusted(e.to_string());
            }
            Err(e) => return Reach::Unreachable(format!("{addr}: {e}")),
        }
    }
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    let _ = tcp.flush();
    Reach::Trusted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_listening_is_unreachable_and_a_non_tls_peer_is_untrusted() {
        let fp = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let r = probe(
            &format!("https://127.0.0.1:{port}"),
            fp,
            Duration::from_secs(2),
        );
        assert!(matches!(r, Reach::Unreachable(_)), "{r:?}");
        // Something that is not a TLS server answers.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        let r = probe(
            &format!("https://127.0.0.1:{port}"),
            fp,
            Duration::from_secs(2),
        );
        assert!(matches!(r, Reach::Untrusted(_)), "{r:?}");
        t.join().unwrap();
        assert!(matches!(
            probe("https://127.0.0.1:1", "sha256:zz", Duration::from_secs(1)),
            Reach::Untrusted(_)
        ));
    }
}
