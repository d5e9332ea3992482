//! The accept loop and the HTTP/1.1 connections (over TLS when configured), with a graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::gateway::{self, Ctx};
use super::state::State;

/// How long connections may take to finish their requests once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long to pause after an accept error that is about the listener rather than one client (such as running
/// out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `listener` until `shutdown` completes, then lets open connections finish for a while. With `tls`,
/// every connection starts with a TLS handshake.
pub(crate) async fn run(
    state: Arc<State>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future,
) {
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.as_mut() => break,
            // Reap finished connections so the set does not grow with every client.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    state.count_connection();
                    let ctx = Ctx {
                        state: Arc::clone(&state),
                        shutdown: stopped.clone(),
                    };
                    connections.spawn(serve_connection(stream, peer, tls.clone(), ctx));
                }
                Err(error) if is_per_connection(&error) => {
                    tracing::debug!(%error, "gateway simulator: a connection failed while being accepted");
                }
                Err(error) => {
                    tracing::warn!(%error, "gateway simulator: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }

    // Closing the listener first makes new clients fail fast instead of queueing behind a server that is leaving.
    drop(listener);
    stop.send_replace(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            remaining = connections.len(),
            "gateway simulator: aborting connections that outlived the shutdown grace period"
        );
        connections.shutdown().await;
    }
    tracing::debug!("gateway simulator stopped");
}

fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, ctx: Ctx) {
    // Small JSON answers should leave at once rather than wait for Nagle.
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve_http(stream, peer, ctx).await;
    };
    // No handshake timeout of its own: tests run this on tokio's paused clock, which jumps to the next timer
    // whenever every task waits on the network, and would cut handshakes short. A client that never finishes
    // its handshake holds only this task, which shutdown ends.
    let handshake = tokio::select! {
        handshake = acceptor.accept(stream) => handshake,
        () = ctx.stopped() => return,
    };
    match handshake {
        Ok(stream) => {
            ctx.state.count_tls_handshake(true);
            serve_http(stream, peer, ctx).await;
        }
        Err(error) => {
            ctx.state.count_tls_handshake(false);
            tracing::debug!(%peer, %error, "gateway simulator: TLS handshake failed, connection dropped");
        }
    }
}

async fn serve_http<S>(stream: S, peer: SocketAddr, ctx: Ctx)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stopping = ctx.clone();
    let service = service_fn(move |request| gateway::handle(ctx.clone(), request));
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping.stopped() => {
            // Idle keep-alive connections close now; one with a request in flight answers it first.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "gateway simulator: connection ended with an error");
    }
}
