use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::SyslogConfig;
use crate::sinks::error::SinkError;
use crate::sinks::tls::tls_connector;
use crate::store::StoredEventRecord;

trait Io: tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One connection, opened on first use and again after a failed write.
pub(in crate::sinks) struct SyslogSink {
    cfg: SyslogConfig,
    conn: Option<Box<dyn Io>>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl SyslogSink {
    pub(in crate::sinks) fn new(cfg: &SyslogConfig) -> Result<SyslogSink, SinkError> {
        Ok(SyslogSink {
            cfg: cfg.clone(),
            conn: None,
            tls: if cfg.tls {
                Some(tls_connector(cfg.ca_file.as_deref())?)
            } else {
                None
            },
        })
    }

    async fn connect(&mut self) -> Result<(), SinkError> {
        let addr = self.cfg.address.clone();
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        .map_err(|_| SinkError::ConnectTimeoutTo(addr.clone()))?
        .map_err(|source| SinkError::Connect {
            addr: addr.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        self.conn =
            Some(match &self.tls {
                Some(tls) => {
                    let host = self.cfg.server_name.clone().unwrap_or_else(|| {
                        addr.rsplit_once(':')
                            .map_or(addr.clone(), |(h, _)| h.to_owned())
                    });
                    let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(
                        |source| SinkError::ServerName {
                            host: host.clone(),
                            source,
                        },
                    )?;
                    Box::new(tls.connect(name, tcp).await.map_err(|source| {
                        SinkError::HandshakeTo {
                            addr: addr.clone(),
                            source,
                        }
                    })?)
                }
                None => Box::new(tcp),
            });
        Ok(())
    }

    pub(in crate::sinks) async fn deliver(
        &mut self,
        events: &[StoredEventRecord],
    ) -> Result<(), SinkError> {
        if self.conn.is_none() {
            self.connect().await?;
        }
        let buf = super::encode::frames(events);
        let conn = self.conn.as_mut().expect("connected");
        let r = async {
            conn.write_all(&buf).await?;
            conn.flush().await
        }
        .await;
        if let Err(e) = r {
            self.conn = None;
            return Err(SinkError::SyslogWrite(e));
        }
        Ok(())
    }
}
