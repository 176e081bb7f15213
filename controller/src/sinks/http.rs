//! The HTTP POST the `splunk_hec` and `webhook` sinks share: one request per delivery, over TLS
//! when the URL is https (trusting `ca_file`).

use std::path::Path;
use std::time::Duration;

use super::error::SinkError;
use super::tls::tls_connector;

/// Where a sink posts.
pub(crate) struct HttpTarget {
    url: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl HttpTarget {
    pub(crate) fn new(url: &str, ca_file: Option<&Path>) -> Result<HttpTarget, SinkError> {
        Ok(HttpTarget {
            url: url.to_owned(),
            tls: if url.starts_with("https://") {
                Some(tls_connector(ca_file)?)
            } else {
                None
            },
        })
    }

    /// POSTs a JSON `body` with extra `headers`; an answer other than 2xx is an error.
    pub(crate) async fn post(
        &self,
        body: Vec<u8>,
        headers: Vec<(&str, String)>,
    ) -> Result<(), SinkError> {
        let url = &self.url;
        let uri: hyper::Uri = url.parse().map_err(|source| SinkError::Url {
            url: url.clone(),
            source,
        })?;
        let host = uri.host().ok_or(SinkError::NoHost)?.to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| SinkError::ConnectTimeout)?
        .map_err(|source| SinkError::Connect {
            addr: format!("{host}:{port}"),
            source,
        })?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut req = hyper::Request::post(path)
            .header("host", format!("{host}:{port}"))
            .header("content-type", "application/json")
            .header("user-agent", "thoth-controller");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let req = req
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
            .map_err(SinkError::Request)?;
        let status = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(SinkError::DnsName)?;
                let io = tls.connect(name, tcp).await.map_err(SinkError::Handshake)?;
                send(hyper_util::rt::TokioIo::new(io), req).await?
            }
            None => send(hyper_util::rt::TokioIo::new(tcp), req).await?,
        };
        if !status.is_success() {
            return Err(SinkError::Status {
                url: url.clone(),
                status,
            });
        }
        Ok(())
    }
}

async fn send<T>(
    io: T,
    req: hyper::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> Result<hyper::StatusCode, SinkError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(SinkError::Http)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| SinkError::RequestTimeout)?
        .map_err(SinkError::Http)?;
    Ok(resp.status())
}
