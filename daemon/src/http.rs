//! The HTTP side: `GET /health` (JSON) and `GET /metrics` (Prometheus text), read-only, on
//! `--bind-host`:`--bind-port` (or `bind_host`/`bind_port` in the config file).
//!
//! hyper's HTTP/1.1 server on the daemon's runtime. Connections are capped, each has a deadline
//! for its request headers and for its whole life, so a slow or idle client costs one task and
//! a descriptor for a bounded time and never holds anything the scheduler or the control socket
//! needs. The answers are computed off the runtime's workers (they take the database mutex
//! briefly, like `silica-cron status`).

use std::convert::Infallible;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::metrics;
use crate::state::Shared;

/// Connections served at once; more are closed as soon as they are accepted. A scraper and a
/// health checker or two need a handful.
const MAX_CONNECTIONS: usize = 64;
/// A client must send a request's headers within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection (keep-alive included) is closed after this, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long a connection gets to finish its response when the daemon stops or its life ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Request line and headers; a GET needs far less. Bodies are never read.
const MAX_HEAD: usize = 16 * 1024;
/// An answer not ready within this is a 503: the database is held by something long (a
/// migration of a big table), and a health check must not hang with it.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    // Not `source`: the message carries the cause, and anyhow's chain would repeat it.
    #[error("cannot listen for HTTP on {addr}: cannot resolve the host: {cause}")]
    Resolve { addr: String, cause: std::io::Error },
    #[error("cannot listen for HTTP on {addr}: the host resolves to no address")]
    NoAddress { addr: String },
    #[error("cannot listen for HTTP on {addr}: {cause}")]
    Bind { addr: String, cause: std::io::Error },
}

/// `host:port` as a person writes it (an IPv6 literal in brackets).
pub fn show(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Binds the listener (port 0 picks a free port; the caller reports the real one). A host
/// name is resolved once, here, and the first address it resolves to is used.
pub async fn bind(host: &str, port: u16) -> Result<TcpListener, BindError> {
    let addr = show(host, port);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let first = (bare, port)
        .to_socket_addrs()
        .map_err(|cause| BindError::Resolve {
            addr: addr.clone(),
            cause,
        })?
        .next()
        .ok_or_else(|| BindError::NoAddress { addr: addr.clone() })?;
    TcpListener::bind(first)
        .await
        .map_err(|cause| BindError::Bind {
            addr: first.to_string(),
            cause,
        })
}

/// Accepts until `stop` turns true, then lets responses in flight finish (bounded).
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // One answer is computed at a time: while the database is held, waiting checks queue here
    // instead of each taking a blocking thread from the pool the runs need.
    let answering = Arc::new(Semaphore::new(1));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (shared, stop, answering) = (shared.clone(), stop.clone(), answering.clone());
                        conns.spawn(async move {
                            connection(tcp, shared, answering, stop).await;
                            drop(permit);
                        });
                    }
                    // Dropping the stream closes it.
                    Err(_) => debug!(%peer, limit = MAX_CONNECTIONS, "too many HTTP connections; closing one"),
                },
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT * 2, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        conns.shutdown().await;
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    shared: Arc<Shared>,
    answering: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let service = service_fn(move |req| {
        let (shared, answering) = (shared.clone(), answering.clone());
        async move { Ok::<_, Infallible>(route(req, shared, answering).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(CONNECTION_LIFETIME);
    tokio::pin!(deadline);
    let mut closing = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    debug!(error = %e, "HTTP connection ended");
                }
                return;
            }
            _ = stop.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
                deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
            _ = &mut deadline => {
                if closing {
                    return;
                }
                closing = true;
                conn.as_mut().graceful_shutdown();
                deadline.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
        }
    }
}

async fn route(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    answering: Arc<Semaphore>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/health" && path != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: /health and /metrics are served\n",
        );
    }
    // HEAD is answered like GET; hyper leaves the body out.
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {} not allowed on {path}: use GET\n", req.method()),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let is_health = path == "/health";
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, answering.acquire_owned()).await else {
        return busy(is_health);
    };
    let answer = tokio::task::spawn_blocking(move || {
        let _one_at_a_time = permit;
        if is_health {
            health(&shared)
        } else {
            metrics_text(&shared)
        }
    });
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("internal error: {e}\n"),
        ),
        Err(_) => busy(is_health),
    }
}

fn busy(is_health: bool) -> Response<Full<Bytes>> {
    let reason = format!(
        "no answer within {} s: the database is held by a long operation (a migration?)",
        ANSWER_TIMEOUT.as_secs()
    );
    if !is_health {
        return plain(StatusCode::SERVICE_UNAVAILABLE, &format!("{reason}\n"));
    }
    let body = serde_json::json!({
        "status": "unavailable",
        "version": proto::PRODUCT_VERSION,
        "revision": null,
        "heads": [],
        "at_head": null,
        "scheduler": null,
        "reason": reason,
    });
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        "application/json",
        format!("{body}\n"),
    )
}

fn plain(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    respond(code, "text/plain; charset=utf-8", text.to_string())
}

fn respond(code: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Healthy: the database is at head and the scheduler fires jobs (or was paused by an
/// operator, which is reported but is not a fault). Otherwise 503 with the reason.
fn health(shared: &Shared) -> Response<Full<Bytes>> {
    let verdict = match shared.status() {
        Ok(s) => {
            let healthy = s.at_head && !s.scheduler.starts_with("held");
            let reason = (!healthy).then(|| s.schema_note.clone().unwrap_or(s.scheduler.clone()));
            serde_json::json!({
                "status": if healthy { "ok" } else { "unavailable" },
                "version": s.version,
                "revision": (!s.revisions.is_empty()).then(|| s.revisions.join(",")),
                "heads": s.heads,
                "at_head": s.at_head,
                "scheduler": s.scheduler,
                "reason": reason,
            })
        }
        Err(e) => serde_json::json!({
            "status": "unavailable",
            "version": proto::PRODUCT_VERSION,
            "revision": null,
            "heads": [],
            "at_head": false,
            "scheduler": "unknown",
            "reason": e.message,
        }),
    };
    let code = if verdict["status"] == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(code, "application/json", format!("{verdict}\n"))
}

fn metrics_text(shared: &Shared) -> Response<Full<Bytes>> {
    let (at_head, running) = match shared.status() {
        Ok(s) => (s.at_head, s.scheduler == "running"),
        Err(_) => (false, false),
    };
    let uptime = shared.uptime();
    let start_time = SystemTime::now()
        .checked_sub(uptime)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let gauges = metrics::Gauges {
        version: proto::PRODUCT_VERSION.into(),
        uptime,
        start_time,
        resident_bytes: resident_bytes(),
        // Only a database at head has the jobs table in the shape this query expects.
        jobs: if at_head { count_jobs(shared) } else { None },
        runs_in_progress: shared.runs_in_progress(),
        at_head,
        scheduler_running: running,
    };
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        metrics::render(&gauges),
    )
}

/// (all jobs, active jobs), on a read-only connection of its own: a scrape never waits for,
/// or holds, the connection the scheduler and the control socket share.
fn count_jobs(shared: &Shared) -> Option<(u64, u64)> {
    use rusqlite::{Connection, OpenFlags};
    let path = shared.settings().db.clone();
    let counted = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| {
        c.busy_timeout(Duration::from_millis(500))?;
        c.query_row(
            "SELECT count(*), coalesce(sum(coalesce(is_active, 0) <> 0), 0) FROM scheduled_jobs",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
    });
    match counted {
        Ok(n) => Some(n),
        Err(e) => {
            debug!(error = %e, database = %path.display(), "metrics: cannot count jobs");
            None
        }
    }
}

/// From /proc/self/statm (pages); None where there is no procfs.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_shown_with_brackets_around_ipv6() {
        assert_eq!(show("127.0.0.1", 80), "127.0.0.1:80");
        assert_eq!(show("::1", 9), "[::1]:9");
        assert_eq!(show("[::1]", 9), "[::1]:9");
        assert_eq!(show("localhost", 9), "localhost:9");
    }

    #[tokio::test]
    async fn a_host_that_does_not_resolve_is_named_in_the_error() {
        let e = bind("no such host.invalid", 1).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("cannot listen for HTTP on no such host.invalid:1"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_port_in_use_is_named_in_the_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = bind("127.0.0.1", port).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cannot listen for HTTP on 127.0.0.1:{port}: ")),
            "{text}"
        );
        assert!(text.contains("in use"), "{text}");
    }
}
