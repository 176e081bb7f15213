//! The request layer: tells each connection's state about its requests (in progress, authorising)
//! and keeps the endless health stream for authorised clients.

use std::sync::Arc;

use super::accept::{Active, ConnAuth, Registry};
use super::limits::lock;

/// Whether a request on `path` is one that authorises its connection when its certificate is
/// allowed (an agent's or admin's call; not health checks, nor enrollment, which anyone may
/// make).
fn authorising(path: &str) -> bool {
    path.starts_with("/thoth.fleet.v1.") && path != "/thoth.fleet.v1.Enrollment/Enroll"
}

/// The layer that tells each connection's [`ConnState`] about its requests.
#[derive(Clone)]
pub(super) struct ActivityLayer(pub(super) Registry);

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = Activity<S>;

    fn layer(&self, inner: S) -> Activity<S> {
        Activity {
            inner,
            registry: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub(super) struct Activity<S> {
    inner: S,
    registry: Registry,
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;

/// The streaming health method.
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S> tower::Service<HttpRequest> for Activity<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<HttpResponse, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        let state = req
            .extensions()
            .get::<tonic::transport::server::TlsConnectInfo<tonic::transport::server::TcpConnectInfo>>()
            .and_then(|i| i.get_ref().remote_addr())
            .and_then(|peer| lock(&self.registry).get(&peer).cloned());
        // An endless health stream is for authorised clients: anyone else gets Check only.
        if req.uri().path() == HEALTH_WATCH && !state.as_ref().is_some_and(|s| s.exempt()) {
            let resp = tonic::Status::permission_denied(
                "Health/Watch needs an authorised client certificate; use Health/Check",
            )
            .into_http();
            return Box::pin(async move { Ok(resp) });
        }
        if let Some(s) = &state {
            let auth = ConnAuth(Arc::clone(s));
            // Authorised from memory when the request starts (a verified certificate the deny
            // list does not refuse), not after the store read the service does next: a slow
            // store cannot make a legitimate first request outlive the unauthorised lifetime.
            if authorising(req.uri().path()) {
                auth.authorise();
            }
            req.extensions_mut()
                .insert(crate::grpc::Conn(Arc::new(auth)));
        }
        let active = state.map(Active::new);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(match active {
                // Streaming responses count as in progress until their body ends.
                Some(active) => resp.map(|body| {
                    tonic::body::Body::new(ActiveBody {
                        inner: body,
                        _active: active,
                    })
                }),
                None => resp,
            })
        })
    }
}

struct ActiveBody {
    inner: tonic::body::Body,
    _active: Active,
}

impl hyper::body::Body for ActiveBody {
    type Data = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
