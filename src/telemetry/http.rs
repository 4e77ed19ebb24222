//! The operator's HTTP endpoints (plain HTTP/1.1, meant for the kubelet and Prometheus):
//!
//! - `GET /metrics`: every metric, OpenMetrics text format;
//! - `GET /healthz`: 200 `ok` while the process runs;
//! - `GET /readyz`: 200 when ready, 503 with the reason otherwise (see [`super::health`]).
//!
//! Anything else is 404 (405 for another method on a known path).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use super::health::Health;
use super::metrics::Metrics;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// Binds the endpoints' address (fails early on a taken port or a bad address).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the endpoints on `listener` until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Health,
    stop: impl Future<Output = ()>,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: try again shortly.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&req, &metrics, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    debug!("HTTP endpoints stopped");
}

/// The answer to one request.
pub fn respond(
    req: &Request<Incoming>,
    metrics: &Metrics,
    health: &Health,
) -> Response<Full<Bytes>> {
    route(req.method(), req.uri().path(), metrics, health)
}

fn route(method: &Method, path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if known && method != Method::GET && method != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
    }
    match path {
        "/metrics" => {
            metrics.set_role(health.role());
            let mut r = Response::new(Full::new(Bytes::from(metrics.encode())));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match health.readiness() {
            Ok(what) => text(StatusCode::OK, format!("{what}\n")),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT));
    r
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::telemetry::health::Role;

    async fn body(r: Response<Full<Bytes>>) -> String {
        let bytes = r.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn routes() {
        let metrics = Metrics::new();
        let health = Health::default();
        let get = |path| route(&Method::GET, path, &metrics, &health);

        assert_eq!(get("/healthz").status(), StatusCode::OK);
        let r = get("/readyz");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(r).await, "caches not synced yet\n");
        health.set_synced(true);
        assert_eq!(get("/readyz").status(), StatusCode::OK);
        health.set_role(Role::Standby {
            lease_reachable: false,
        });
        assert_eq!(get("/readyz").status(), StatusCode::SERVICE_UNAVAILABLE);

        let r = get("/metrics");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], OPENMETRICS);
        assert!(
            body(r)
                .await
                .contains("# TYPE secure_qdrant_reconciles counter")
        );

        assert_eq!(get("/").status(), StatusCode::NOT_FOUND);
        assert_eq!(
            route(&Method::POST, "/metrics", &metrics, &health).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn metrics_tell_whether_this_replica_leads() {
        let metrics = Metrics::new();
        let health = Health::default();
        let leader = |health: &Health| {
            let r = route(&Method::GET, "/metrics", &metrics, health);
            async move {
                body(r)
                    .await
                    .lines()
                    .find_map(|l| l.strip_prefix("secure_qdrant_leader ").map(str::to_owned))
            }
        };
        // No leader election: this replica runs the controllers.
        assert_eq!(leader(&health).await.as_deref(), Some("1"));
        health.set_role(Role::Standby {
            lease_reachable: true,
        });
        assert_eq!(leader(&health).await.as_deref(), Some("0"));
        health.set_role(Role::Leader);
        assert_eq!(leader(&health).await.as_deref(), Some("1"));
    }
}
