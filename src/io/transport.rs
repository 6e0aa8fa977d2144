//! Opening the byte stream a connection runs on: TCP, and TLS over it for `amqps://`.
//!
//! Both end as a read half and a write half for the driver task. An `amqps://` configuration only ever
//! yields a TLS stream or an error; nothing here falls back to plain TCP.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
    time::Instant,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

use crate::{client::tls, config::ConnectionConfig, error::Error};

/// A connected stream, split for the driver.
pub(crate) enum Transport {
    /// `amqp://`.
    Tcp(OwnedReadHalf, OwnedWriteHalf),
    /// `amqps://`, after a completed TLS handshake.
    Tls(TlsReader, TlsWriter),
}

/// Connects to `config.host:config.port` and, for `amqps://`, runs the TLS handshake, all before
/// `deadline`.
///
/// TLS settings and PEM files are checked before the TCP connect, so a bad file fails without network
/// traffic. Errors: [`Error::Connect`], [`Error::Timeout`], [`Error::Tls`], [`Error::Io`].
pub(crate) async fn connect(
    config: &ConnectionConfig,
    deadline: Instant,
) -> Result<Transport, Error> {
    // `host` may have been set to a bracketed IPv6 literal: connect to (and verify) the address.
    let host = crate::config::bare_host(&config.host);
    let tls = if config.tls {
        Some(config.effective_tls_config()?.prepare(host)?)
    } else {
        if config.tls_params != Default::default() {
            tracing::warn!("ignoring the TLS parameters of an amqp:// URI (use amqps:// for TLS)");
        }
        None
    };
    // An IPv6 literal is shown in brackets; the connect takes host and port apart, so a literal
    // address needs no lookup.
    let addr = if host.contains(':') {
        format!("[{host}]:{}", config.port)
    } else {
        format!("{host}:{}", config.port)
    };
    let connect = TcpStream::connect((host, config.port));
    let stream = match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return Err(Error::Connect {
                addr,
                source: Arc::new(e),
            })
        }
        Err(_) => {
            return Err(Error::Timeout {
                what: "TCP connect",
                after: config.connection_timeout,
            })
        }
    };
    let _ = stream.set_nodelay(true);
    let Some((client_config, server_name)) = tls else {
        let (reader, writer) = stream.into_split();
        return Ok(Transport::Tcp(reader, writer));
    };
    let handshake = TlsConnector::from(client_config).connect(server_name, stream);
    let stream = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(tls::handshake_io_error(e)),
        Err(_) => {
            return Err(Error::Timeout {
                what: "the TLS handshake",
                after: config.connection_timeout,
            })
        }
    };
    let shared = Arc::new(Mutex::new(stream));
    Ok(Transport::Tls(TlsReader(shared.clone()), TlsWriter(shared)))
}

/// The read half of a TLS stream.
///
/// (A TLS write may accept plaintext while the socket is full and keep the encrypted records; the driver
/// flushes its writer after every write until the flush completes, so nothing is left behind.)
pub(crate) struct TlsReader(Arc<Mutex<TlsStream<TcpStream>>>);

/// The write half of a TLS stream.
pub(crate) struct TlsWriter(Arc<Mutex<TlsStream<TcpStream>>>);

/// Both halves are used by the one driver task, so the lock is never contended; it is there because
/// each half must own its access to the stream.
fn lock(stream: &Mutex<TlsStream<TcpStream>>) -> MutexGuard<'_, TlsStream<TcpStream>> {
    stream.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AsyncRead for TlsReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        lock(&self.0).is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_flush(cx)
    }

    /// Sends TLS close_notify, then shuts the TCP write side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_shutdown(cx)
    }
}
