//! coney's one public error type.

use std::{fmt, sync::Arc, time::Duration};

use crate::{
    codec::CodecError,
    config::ConfigError,
    spec::{channel, connection, ErrorClass, ReplyCode},
};

/// Everything that can go wrong, for every API in the crate.
///
/// Cheap to clone (one failure is reported to every waiter on a connection or channel). Match on the
/// predicates rather than on variants where you can: [`Error::reply_code`], [`Error::is_connection_closed`],
/// [`Error::is_recoverable`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration or URI is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An argument cannot be sent (e.g. a name longer than 255 bytes).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The cause.
        source: Arc<std::io::Error>,
    },
    /// Reading from or writing to the socket failed, or the peer closed it without `connection.close`.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// A wait ran past its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The deadline that passed.
        after: Duration,
    },
    /// The broker refused the credentials (403 during the handshake).
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The handshake could not complete (protocol version, SASL mechanism, challenge).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The broker closed the connection.
    #[error("connection closed by broker: {0}")]
    ConnectionClosed(CloseReason),
    /// The channel was closed for an error: by the broker (a soft error such as 404 or 406), or by this
    /// client for the broker's fault on it (311 CONTENT_TOO_LARGE for a message over
    /// `max_message_size`).
    #[error("channel closed by broker: {0}")]
    ChannelClosed(CloseReason),
    /// The broker broke the protocol, and the client ended the connection. Once the broker has sent
    /// `connection.start` the client says why in a `connection.close` carrying `code`, unless a close
    /// was already under way; before that there is no AMQP conversation to close, so it closes the
    /// socket and sends nothing. (A call answered with a reply of the wrong kind also fails with it,
    /// `COMMAND_INVALID`, without ending anything: the driver checks every reply against its method
    /// first, so that is not expected to happen.)
    #[error("protocol violation ({code}): {text}")]
    Protocol {
        /// The reply code the spec gives the violation (sent in `connection.close` if one was sent).
        code: ReplyCode,
        /// What was wrong.
        text: String,
    },
    /// No frames arrived for two heartbeat intervals.
    #[error("missed heartbeats: nothing received for {0:?}")]
    MissedHeartbeats(Duration),
    /// The connection or channel was closed by this client (by `close()` or by dropping it), or the
    /// consumer was cancelled by it (`basic_cancel`, or dropping the `Consumer`).
    #[error("{0} was closed by the client")]
    ClosedByClient(&'static str),
    /// Publishing waited past its deadline while the broker had the connection blocked.
    #[error("connection blocked by broker: {0}")]
    Blocked(String),
    /// An ack/nack/reject for a delivery received on a channel that has since closed. Nothing was sent.
    #[error("delivery tag {0} belongs to a channel that is closed")]
    StaleDelivery(u64),
    /// The broker cancelled the consumer (its basic.cancel: the queue was deleted, or a node holding it
    /// went away). A cancel by this client ends the consumer with no error.
    #[error("consumer {0} was cancelled")]
    ConsumerCancelled(String),
    /// Every channel number up to channel-max is in use.
    #[error("no free channel: all {0} are open")]
    ChannelsExhausted(u16),
    /// A decode error in data handed to the client, or in a delivery's properties that were checked on
    /// arrival but failed to build on the consumer's side (a bug if it happens).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// TLS could not be set up: the server's certificate was not trusted or not for this host, the
    /// broker refused the handshake, the peer does not speak TLS, or a certificate file is unusable.
    #[error("TLS error ({kind}): {message}")]
    Tls {
        /// What failed.
        kind: TlsErrorKind,
        /// What failed, in words, with a hint at the fix. Never contains key material.
        message: String,
    },
}

/// What failed in a TLS connection ([`Error::Tls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The server's certificate does not chain to a trusted certificate authority.
    UnknownIssuer,
    /// The server's certificate is not valid for the host name (or server name) connected to.
    NameMismatch,
    /// The server's certificate was rejected for another reason: expired, not yet valid, revoked,
    /// not for server authentication, malformed.
    BadCertificate,
    /// The broker refused the handshake (a TLS alert, or it closed the connection): typically it
    /// requires a client certificate, or does not accept the one presented.
    HandshakeRefused,
    /// The peer does not speak TLS: an `amqps://` connection reached a plain AMQP (or other) port.
    PlaintextPeer,
    /// A CA certificate, client certificate or key file cannot be read or parsed.
    CertificateFile,
    /// Any other TLS failure.
    Other,
}

impl fmt::Display for TlsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsErrorKind::UnknownIssuer => "unknown issuer",
            TlsErrorKind::NameMismatch => "name mismatch",
            TlsErrorKind::BadCertificate => "bad certificate",
            TlsErrorKind::HandshakeRefused => "handshake refused",
            TlsErrorKind::PlaintextPeer => "peer does not speak TLS",
            TlsErrorKind::CertificateFile => "certificate file",
            TlsErrorKind::Other => "other",
        })
    }
}

/// Why the broker closed a connection or channel: `connection.close` / `channel.close` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// The reply code, e.g. 404 NOT_FOUND.
    pub code: ReplyCode,
    /// The broker's explanation.
    pub text: String,
    /// Class of the method that caused it (0 if none).
    pub class_id: u16,
    /// Method that caused it (0 if none).
    pub method_id: u16,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)?;
        if self.class_id != 0 {
            let name = crate::spec::method_info(self.class_id, self.method_id)
                .map(|i| i.name)
                .unwrap_or("?");
            write!(f, " (caused by {name})")?;
        }
        Ok(())
    }
}

impl From<connection::Close> for CloseReason {
    fn from(c: connection::Close) -> CloseReason {
        CloseReason {
            code: c.reply_code,
            text: c.reply_text.to_string(),
            class_id: c.class_id,
            method_id: c.method_id,
        }
    }
}

impl From<channel::Close> for CloseReason {
    fn from(c: channel::Close) -> CloseReason {
        CloseReason {
            code: c.reply_code,
            text: c.reply_text.to_string(),
            class_id: c.class_id,
            method_id: c.method_id,
        }
    }
}

impl Error {
    /// The broker's (or, for protocol violations, our) reply code, if the error carries one.
    pub fn reply_code(&self) -> Option<ReplyCode> {
        match self {
            Error::ConnectionClosed(r) | Error::ChannelClosed(r) => Some(r.code),
            Error::Protocol { code, .. } => Some(*code),
            Error::AuthenticationFailed(_) => Some(ReplyCode::ACCESS_REFUSED),
            _ => None,
        }
    }

    /// Whether the connection this came from is gone (every handle on it will fail from now on).
    pub fn is_connection_closed(&self) -> bool {
        matches!(
            self,
            Error::Io(_)
                | Error::ConnectionClosed(_)
                | Error::Protocol { .. }
                | Error::MissedHeartbeats(_)
                | Error::ClosedByClient("connection")
                | Error::AuthenticationFailed(_)
                | Error::Handshake(_)
                | Error::Connect { .. }
                | Error::Tls { .. }
        )
    }

    /// What failed, if this is a TLS error.
    pub fn tls_kind(&self) -> Option<TlsErrorKind> {
        match self {
            Error::Tls { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether retrying on a new connection may succeed: network failures, timeouts and broker-initiated
    /// connection closes (320 CONNECTION_FORCED on restart, resource errors) are; bad credentials, bad
    /// arguments, TLS failures (certificates, refused handshakes), soft errors and client-initiated
    /// closes are not.
    pub fn is_recoverable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Io(_)
            | Error::Timeout { .. }
            | Error::MissedHeartbeats(_) => true,
            Error::Protocol { .. } => true,
            Error::ConnectionClosed(r) => !matches!(
                r.code,
                ReplyCode::ACCESS_REFUSED | ReplyCode::NOT_ALLOWED | ReplyCode::INVALID_PATH
            ),
            _ => false,
        }
    }

    /// Whether this is a channel-level (soft) error that left the connection usable.
    pub fn is_soft(&self) -> bool {
        matches!(self, Error::ChannelClosed(r) if r.code.error_class() != Some(ErrorClass::Hard))
    }

    pub(crate) fn io(e: std::io::Error) -> Error {
        Error::Io(Arc::new(e))
    }
}

/// Shorthand for `Result<T, coney::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
