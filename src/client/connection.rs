//! The connection handle and how it is established.

use std::{
    io::ErrorKind,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use bytes::BytesMut;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tracing::{debug, info, Instrument};

use crate::{
    client::{tls, Channel, Deadline},
    codec::{FieldTable, LongStr, ShortStr},
    config::{AuthMechanism, ConnectionConfig},
    error::{CloseReason, Error},
    frame::encode_method,
    io::{
        command::{Command, ConnectionShared, RpcReply},
        driver::Driver,
        transport::{self, Transport},
        wake_gate::WakeGated,
    },
    proto::{self, ConnectionError, Event, HandshakeParams, Mechanism, TunePreferences, Tuned},
    spec::{connection, Method, ReplyCode},
};

/// TLS record content types (RFC 8446 §5.1): what a TLS server sends to a client that is not speaking TLS.
const TLS_ALERT: u8 = 0x15;
const TLS_HANDSHAKE: u8 = 0x16;

/// A connection to a broker: a cheap, cloneable handle to the driver task that owns the socket.
///
/// Created by [`Connection::connect`]; the handshake (TCP connect, SASL, tuning, vhost open) completes
/// within `connection_timeout` or fails with a typed error ([`Error::AuthenticationFailed`] for bad
/// credentials, [`Error::ConnectionClosed`] with 530 for a forbidden vhost, [`Error::Connect`] or
/// [`Error::Timeout`] for an unreachable broker, [`Error::Tls`] for a failed TLS handshake).
///
/// The connection stays open while any handle on it lives (this, its [`Channel`]s, their consumers).
/// [`Connection::close`] closes it at once, cleanly (close/close-ok, bounded by `close_timeout`); dropping
/// the last handle does the same in the background. Heartbeats are sent and checked by the driver; a peer
/// silent for two intervals is declared dead and every waiter gets [`Error::MissedHeartbeats`].
#[derive(Clone)]
pub struct Connection {
    inner: Arc<ConnectionInner>,
}

pub(crate) struct ConnectionInner {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) shared: Arc<ConnectionShared>,
    pub(crate) config: Arc<ConnectionConfig>,
}

impl Connection {
    /// Connects to the broker at `uri` (`amqp://user:pass@host:port/vhost?heartbeat=10`).
    pub async fn connect(uri: &str) -> Result<Connection, Error> {
        Connection::connect_with(ConnectionConfig::from_uri(uri)?).await
    }

    /// Connects with a typed configuration.
    ///
    /// With `config.tls` (an `amqps://` URI, or [`ConnectionConfig::with_tls`]), the TLS handshake
    /// runs right after the TCP connect, within the same `connection_timeout`; it fails with
    /// [`Error::Tls`] saying what went wrong, and never falls back to plain TCP.
    pub async fn connect_with(config: ConnectionConfig) -> Result<Connection, Error> {
        config.validate()?;
        let deadline = Instant::now() + config.connection_timeout;
        match transport::connect(&config, deadline).await? {
            Transport::Tcp(reader, writer) => open(config, reader, writer, deadline).await,
            Transport::Tls(reader, writer) => open(config, reader, writer, deadline).await,
        }
    }

    /// Opens a new channel.
    ///
    /// Waits at most `rpc_timeout` in all: for room in the command queue, then for channel.open-ok.
    pub async fn open_channel(&self) -> Result<Channel, Error> {
        let deadline = Deadline::after(self.inner.config.rpc_timeout);
        let (tx, rx) = oneshot::channel();
        self.inner
            .send(Command::OpenChannel { reply: tx }, Some(deadline))
            .await?;
        let shared = match deadline.wait("channel.open-ok", rx).await? {
            Ok(Ok(RpcReply::Channel(opened))) => opened.into_shared(),
            Ok(Ok(_)) => {
                return Err(Error::Protocol {
                    code: crate::spec::ReplyCode::COMMAND_INVALID,
                    text: "unexpected reply to channel.open".into(),
                })
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(self.inner.shared.error()),
        };
        debug!(channel = shared.id, "channel open");
        Ok(Channel::new(self.inner.clone(), shared))
    }

    /// Closes the connection: channels and consumers end, pending operations fail with
    /// [`Error::ClosedByClient`]. Waits for the broker's close-ok up to `close_timeout`.
    ///
    /// The close goes behind the commands already queued (publishes made before it are written first).
    /// If the command queue stays full for `close_timeout` (the broker stopped reading this connection, as
    /// RabbitMQ does under a resource alarm, so the driver stopped taking commands), the close is asked for
    /// past the queue instead: the driver sends connection.close behind what it has already taken, and
    /// drops the socket when no close-ok came in `close_timeout`; queued commands then fail. Either way
    /// this returns within about three `close_timeout`s, with an error if the close did not complete.
    pub async fn close(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        let close_timeout = self.inner.config.close_timeout;
        match tokio::time::timeout(close_timeout, self.inner.commands.reserve()).await {
            Ok(Ok(permit)) => permit.send(Command::Close { reply: Some(tx) }),
            // The driver is gone: nothing is open.
            Ok(Err(_)) => return Ok(()),
            Err(_) => return self.close_past_the_queue().await,
        }
        let timeout = close_timeout + Duration::from_secs(1);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(Error::Timeout {
                what: "connection.close-ok",
                after: timeout,
            }),
        }
    }

    /// [`Connection::close`] when the command queue has no room: a flag and a notification the driver
    /// sees without taking a command, then a wait for it to let go of the queue.
    async fn close_past_the_queue(&self) -> Result<(), Error> {
        let shared = &self.inner.shared;
        shared.close_requested.store(true, Ordering::SeqCst);
        shared.close_notify.notify_one();
        // Wakes a driver that went back to taking commands meanwhile (if the queue is still full, it has
        // commands to take, and sees the flag at its next pass).
        let _ = self.inner.commands.try_send(Command::Close { reply: None });
        // The driver's close handshake and then its goodbye, each bounded by close_timeout.
        let timeout = 2 * self.inner.config.close_timeout + Duration::from_secs(1);
        match tokio::time::timeout(timeout, self.inner.commands.closed()).await {
            Ok(()) => match (shared.unanswered_close.get(), shared.error.get()) {
                (Some(timeout), _) => Err(timeout.clone()),
                (None, None | Some(Error::ClosedByClient(_))) => Ok(()),
                (None, Some(e)) => Err(e.clone()),
            },
            Err(_) => Err(Error::Timeout {
                what: "connection.close-ok",
                after: timeout,
            }),
        }
    }

    /// Whether the connection is still up (no close started, no failure seen).
    pub fn is_open(&self) -> bool {
        self.inner.shared.error.get().is_none() && !self.inner.commands.is_closed()
    }

    /// Why the connection ended, if it has.
    pub fn close_reason(&self) -> Option<Error> {
        self.inner.shared.error.get().cloned()
    }

    /// The broker's `server-properties` (product, version, capabilities).
    pub fn server_properties(&self) -> &FieldTable {
        &self.inner.shared.server_properties
    }

    /// The negotiated channel-max, frame-max and heartbeat.
    pub fn tuned(&self) -> Tuned {
        self.inner.shared.tuned
    }

    /// Whether the broker has blocked publishing on this connection (connection.blocked), and why.
    pub fn blocked(&self) -> Option<String> {
        self.inner.shared.blocked.borrow().clone()
    }

    /// Waits until the connection has ended, and says why: [`Error::ClosedByClient`] after
    /// [`Connection::close`] (or the last handle's drop), otherwise the failure that ended it (the
    /// broker's `connection.close` as [`Error::ConnectionClosed`], [`Error::MissedHeartbeats`], an I/O
    /// error, a protocol violation). The same error [`Connection::close_reason`] returns from then on.
    ///
    /// Any number of callers may wait. This is where a reconnect loop learns that it must reconnect
    /// (as with Go's `NotifyClose` or the Java client's shutdown listeners); by the time it resolves,
    /// every channel, consumer and pending operation of the connection has ended with the same reason.
    ///
    /// The future holds no handle (it borrows nothing and is `'static`), so it does not keep the
    /// connection open: `tokio::spawn(connection.closed())` watches a connection that closes when its
    /// last handle is dropped. (A clone of the connection moved into a task to call `closed` there is a
    /// handle, and keeps it open.) If the driver task stops without closing (it panicked, or its
    /// runtime shut down), the reason is an [`Error::Io`] that says so.
    pub fn closed(&self) -> impl std::future::Future<Output = Error> + Send + 'static {
        let shared = self.inner.shared.clone();
        async move { shared.wait_ended().await }
    }

    /// Renews the secret (password or token) this connection authenticated with:
    /// `connection.update-secret`, a RabbitMQ extension (3.8 and later), for credentials that expire,
    /// such as OAuth 2 tokens. `reason` is for the broker's log.
    ///
    /// RabbitMQ checks `new_secret` with the authentication backends whose credentials expire (OAuth 2)
    /// and answers update-secret-ok; it refuses a secret that does not authenticate by closing the
    /// whole connection (530 NOT_ALLOWED), and this then fails with that [`Error::ConnectionClosed`].
    /// Its internal user database says its passwords never expire, so there it takes any secret
    /// without checking it. The secret is never logged or shown by `Debug`.
    ///
    /// Waits at most `rpc_timeout`, for room in the command queue and then for the answer; several
    /// calls at once go out one at a time, in call order. A secret and reason that do not fit one frame
    /// of the negotiated frame-max, or a reason over 255 bytes, fail with [`Error::InvalidArgument`]
    /// before anything is sent.
    ///
    /// An [`Error::Timeout`] after the update went out leaves its outcome unknown, and the next update
    /// waits behind it (its answer, if it comes, still pairs with it); RabbitMQ answers or closes the
    /// connection, so a timeout means a broker that stopped answering: close the connection and
    /// connect again with the new secret.
    pub async fn update_secret(&self, new_secret: &str, reason: &str) -> Result<(), Error> {
        let update = connection::UpdateSecret {
            new_secret: LongStr::from(new_secret.to_owned()),
            reason: ShortStr::new(reason).map_err(|_| {
                Error::InvalidArgument("the update-secret reason is longer than 255 bytes".into())
            })?,
        };
        let frame_max = self.inner.shared.tuned.frame_max as usize;
        let mut frame = BytesMut::new();
        encode_method(&mut frame, 0, &Method::from(update.clone()));
        if frame_max != 0 && frame.len() > frame_max {
            return Err(Error::InvalidArgument(format!(
                "connection.update-secret is a {}-byte frame, over the negotiated frame-max of \
                 {frame_max}",
                frame.len()
            )));
        }
        let deadline = Deadline::after(self.inner.config.rpc_timeout);
        let (tx, rx) = oneshot::channel();
        self.inner
            .send(Command::UpdateSecret { update, reply: tx }, Some(deadline))
            .await?;
        match deadline.wait("connection.update-secret-ok", rx).await? {
            Ok(result) => result,
            Err(_) => Err(self.inner.shared.error()),
        }
    }
}

impl ConnectionInner {
    /// Reserves room for `n` commands (at most 2, the queue's minimum capacity), waiting until
    /// `deadline` (the operation's, or without one `rpc_timeout` from when the wait starts). Cancel-safe.
    /// A queue with room needs no timer (arming one costs more than the send), nor a clock reading.
    ///
    /// The wait for room is boxed: its timer and queue waiter would otherwise make every future that
    /// reserves (each publish among them) a few hundred bytes larger, copied at each move, for a path
    /// taken only when the queue is full and the task is about to wait anyway.
    pub(crate) async fn reserve(
        &self,
        n: usize,
        deadline: Option<Deadline>,
    ) -> Result<mpsc::PermitIterator<'_, Command>, Error> {
        match self.commands.try_reserve_many(n) {
            Ok(permits) => return Ok(permits),
            Err(mpsc::error::TrySendError::Closed(())) => return Err(self.shared.error()),
            Err(mpsc::error::TrySendError::Full(())) => {}
        }
        let deadline = deadline.unwrap_or_else(|| Deadline::after(self.config.rpc_timeout));
        Box::pin(self.reserve_waiting(n, deadline)).await
    }

    async fn reserve_waiting(
        &self,
        n: usize,
        deadline: Deadline,
    ) -> Result<mpsc::PermitIterator<'_, Command>, Error> {
        match deadline
            .wait("room in the command queue", self.commands.reserve_many(n))
            .await?
        {
            Ok(permits) => Ok(permits),
            Err(_) => Err(self.shared.error()),
        }
    }

    /// Queues `cmd`, waiting until `deadline` for room. Cancel-safe.
    pub(crate) async fn send(&self, cmd: Command, deadline: Option<Deadline>) -> Result<(), Error> {
        let mut permits = self.reserve(1, deadline).await?;
        if let Some(permit) = permits.next() {
            permit.send(cmd);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.inner.config.redacted_uri())
            .field("tuned", &self.inner.shared.tuned)
            .field("open", &self.is_open())
            .finish()
    }
}

/// Runs the AMQP handshake on a connected stream, then hands the stream to a new driver task.
async fn open<R, W>(
    config: ConnectionConfig,
    reader: R,
    writer: W,
    deadline: Instant,
) -> Result<Connection, Error>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (connection, driver) = open_unspawned(config, reader, writer, deadline).await?;
    tokio::spawn(driver);
    Ok(connection)
}

/// [`open`] without the spawn: the connection's handles and the driver's future, which owns the stream
/// and must be polled for anything to happen (the driver fuzz check polls it beside its handles, so a
/// panic in it reaches the check).
pub(crate) async fn open_unspawned<R, W>(
    config: ConnectionConfig,
    mut reader: R,
    mut writer: W,
    deadline: Instant,
) -> Result<
    (
        Connection,
        impl std::future::Future<Output = ()> + Send + 'static,
    ),
    Error,
>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let span = tracing::info_span!("coney.connection", peer = %config.redacted_uri());
    let params = handshake_params(&config);
    let mut proto = proto::Connection::new(params, Instant::now().into_std());
    let mut read_buf = BytesMut::with_capacity(64 * 1024);
    let handshake = async {
        // Until the broker's first byte, a closed or reset connection says something about the port
        // or the TLS session rather than about AMQP.
        let mut received_any = false;
        loop {
            if !proto.transmit().is_empty() {
                let out = proto.transmit().split();
                let written = async {
                    writer.write_all(&out).await?;
                    // A TLS stream may still hold records of what was written.
                    writer.flush().await
                };
                written
                    .await
                    .map_err(|e| early_io_error(e, config.tls, received_any))?;
                proto.on_transmit(Instant::now().into_std());
            }
            if let Some(Event::Opened {
                server_properties,
                tuned,
            }) = proto.poll_event()
            {
                return Ok((server_properties, tuned));
            }
            let n = reader
                .read_buf(&mut read_buf)
                .await
                .map_err(|e| early_io_error(e, config.tls, received_any))?;
            if n == 0 {
                return Err(match (config.tls, received_any) {
                    (true, false) => tls::closed_after_handshake(),
                    (true, true) => Error::Handshake(
                        "the broker closed the TLS connection during the AMQP handshake".into(),
                    ),
                    (false, _) => Error::Handshake(
                        "the broker closed the socket during the handshake (is this an AMQP 0-9-1 \
                         port? a TLS port needs amqps://)"
                            .into(),
                    ),
                });
            }
            if !received_any && !config.tls && matches!(read_buf[0], TLS_ALERT | TLS_HANDSHAKE) {
                return Err(Error::Handshake(
                    "the server answered with TLS: this is a TLS port, connect with amqps://"
                        .into(),
                ));
            }
            received_any = true;
            if let Err(e) = proto.handle_input(&mut read_buf, Instant::now().into_std()) {
                // Answer (close-ok, or our close) before giving up, best effort.
                let out = proto.transmit().split();
                let _ = writer.write_all(&out).await;
                let _ = writer.flush().await;
                return Err(handshake_error(e));
            }
        }
    };
    let (server_properties, tuned) = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(Error::Timeout {
                what: "the AMQP handshake",
                after: config.connection_timeout,
            })
        }
    };
    span.in_scope(|| info!(?tuned, tls = config.tls, "connected"));
    // At least 2: a channel command may need room for itself and the acks it sends ahead of itself.
    let (tx, rx) = mpsc::channel(config.command_queue.max(2));
    let shared = Arc::new(ConnectionShared {
        server_properties,
        tuned,
        blocked: watch::channel(None).0,
        error: Default::default(),
        close_requested: Default::default(),
        close_notify: Default::default(),
        channel_closes_requested: Default::default(),
        unanswered_close: Default::default(),
        rpc_timeout: config.rpc_timeout,
        ended: Default::default(),
        ended_notify: Default::default(),
    });
    let driver = Driver::new(
        reader,
        writer,
        proto,
        read_buf,
        rx,
        tx.downgrade(),
        shared.clone(),
        config.confirm_window.max(1),
        config.close_timeout,
    );
    let connection = Connection {
        inner: Arc::new(ConnectionInner {
            commands: tx,
            shared,
            config: Arc::new(config),
        }),
    };
    Ok((connection, WakeGated::new(driver.run()).instrument(span)))
}

fn handshake_params(config: &ConnectionConfig) -> HandshakeParams {
    HandshakeParams {
        mechanism: match config.auth_mechanism {
            AuthMechanism::Plain => Mechanism::Plain,
            AuthMechanism::AmqPlain => Mechanism::AmqPlain,
            AuthMechanism::External => Mechanism::External,
        },
        username: config.username.clone(),
        password: config.password.expose().to_string(),
        vhost: config.vhost.clone(),
        locale: config.locale.clone(),
        connection_name: config.connection_name.clone(),
        tune: TunePreferences {
            channel_max: config.channel_max,
            frame_max: config.frame_max,
            heartbeat: config.heartbeat,
        },
        max_message_size: config.max_message_size,
    }
}

/// An I/O error during the AMQP handshake. Before the broker's first byte, a reset or end of stream
/// means, on TCP, that this is probably not an AMQP port, and over TLS, that the broker refused the
/// session after the TLS handshake (see [`tls::closed_after_handshake`]).
fn early_io_error(e: std::io::Error, tls: bool, received_any: bool) -> Error {
    let closed = matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof
            | ErrorKind::BrokenPipe
    );
    if received_any || !closed || tls::is_rustls_error(&e) {
        return tls::io_error(e);
    }
    if tls {
        tls::closed_after_handshake()
    } else {
        Error::Handshake(
            "the server reset the connection before answering the AMQP header (is this an AMQP \
             0-9-1 port? a TLS port needs amqps://)"
                .into(),
        )
    }
}

fn handshake_error(e: ConnectionError) -> Error {
    match e {
        ConnectionError::ServerClosed(close) => {
            let reason = CloseReason::from(close);
            if reason.code == ReplyCode::ACCESS_REFUSED {
                Error::AuthenticationFailed(reason.text)
            } else {
                Error::ConnectionClosed(reason)
            }
        }
        ConnectionError::Violation { code, text } => Error::Protocol { code, text },
        ConnectionError::HeartbeatTimeout(d) => Error::MissedHeartbeats(d),
        ConnectionError::Handshake(text) => Error::Handshake(text),
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::error::TlsErrorKind;

    #[test]
    fn early_closes_say_what_they_probably_mean() {
        let reset = || io::Error::from(ErrorKind::ConnectionReset);
        assert_eq!(
            early_io_error(reset(), true, false).tls_kind(),
            Some(TlsErrorKind::HandshakeRefused)
        );
        assert!(
            matches!(early_io_error(reset(), false, false), Error::Handshake(t) if t.contains("amqps://"))
        );
        // Once the broker has answered, a reset is an I/O error like any other.
        assert!(matches!(early_io_error(reset(), true, true), Error::Io(_)));
        assert!(matches!(
            early_io_error(io::Error::from(ErrorKind::TimedOut), true, false),
            Error::Io(_)
        ));
        // A TLS alert that did arrive is reported as such.
        let alert = io::Error::new(
            ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        );
        let e = early_io_error(alert, true, false);
        assert!(e.to_string().contains("UnknownCA"), "{e}");
    }
}
