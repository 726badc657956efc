//! The HTTP endpoint of `--metrics-listen`, on `hyper`: `/metrics` (Prometheus text),
//! `/health` (the process is up: 200 from the start) and `/ready` (200 once every stored
//! object is restored and clients are served, 503 before).

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::engine::Engine;

/// The engine, once it is open (before that, only `/health` answers 200).
pub type ReadyEngine = Arc<OnceLock<Arc<Engine>>>;

/// Serves the endpoint on `listener` until the process ends.
pub async fn serve_metrics(listener: TcpListener, engine: ReadyEngine) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("metrics endpoint: cannot accept a connection: {error}");
                continue;
            }
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, engine.clone()));
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("metrics endpoint: connection ended: {error}");
            }
        });
    }
}

async fn answer(
    request: Request<Incoming>,
    engine: ReadyEngine,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        Ok(response)
    };
    if request.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match (request.uri().path(), engine.get()) {
        ("/health", _) => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        ("/ready", Some(_)) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        ("/ready" | "/metrics", None) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "restoring\n".into(),
        ),
        ("/metrics", Some(engine)) => {
            let shared = &engine.shared;
            match shared.metrics.render(shared).await {
                Ok(text) => reply(StatusCode::OK, prometheus::TEXT_FORMAT, text),
                Err(error) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("{error}\n"),
                ),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
