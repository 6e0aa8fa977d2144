//! Connection configuration and AMQP URI parsing.
//!
//! A [`ConnectionConfig`] is a plain value: building one does no I/O and it can be cloned, compared and
//! logged (the password prints as `***`). Get one from a URI ([`ConnectionConfig::from_uri`], or `parse()`),
//! from the environment ([`ConnectionConfig::from_env`]), or from [`ConnectionConfig::default`] and the
//! `with_*` builders.
//!
//! # URI format
//!
//! URIs follow the [RabbitMQ URI specification](https://www.rabbitmq.com/docs/uri-spec):
//!
//! ```text
//! amqp[s]://[user[:password]@]host[:port][/vhost][?name=value&...]
//! ```
//!
//! - `amqp` connects over TCP (default port 5672), `amqps` over TLS (default port 5671). The scheme is
//!   case-insensitive; anything else is [`ConfigError::UnsupportedScheme`].
//! - The user name and password are percent-decoded. Without any user info (no `@`), both default to
//!   `guest`; without a `:` in it, only the user name is given and the password stays `guest`
//!   (`amqp://user@host`, as the specification's examples, the Java client and the Go client read it);
//!   `amqp://:@host` has an empty user and password.
//! - The host is percent-decoded; an empty host means `localhost`. IPv6 literals are written in
//!   brackets (`amqp://[::1]:5672`) and stored without them (`::1`).
//! - The vhost is the percent-decoded path after the first `/`, so the default vhost `/` is written
//!   `%2F` and `a%2Fb` means the vhost `a/b`. A path with an unescaped second `/` is an error.
//!   The specification strictly reads `amqp://host/` as the empty vhost; like the Go client (the Java
//!   client gives the empty vhost there), coney reads both `amqp://host` and `amqp://host/` as the
//!   default vhost `/`.
//! - A fragment (`#...`) is an error: it is almost always a password with an unescaped `#`.
//! - Without user info, an `@` anywhere after the host (in the vhost or the query) is an error: it is
//!   almost always the rest of a password cut short by an unescaped `/` or `?` (`amqp://user:12/ab@host`
//!   would read as host `user`, port 12, vhost `ab@host`). Write `@` in a vhost or a value as `%40`.
//!
//! Query parameters (values are form-decoded; a parameter given twice is refused, since clients differ
//! on which one wins, and `verify=verify_none` must not win by being appended):
//!
//! | parameter | field | value |
//! |---|---|---|
//! | `heartbeat` | [`heartbeat`](ConnectionConfig::heartbeat) | seconds, `0` disables heartbeats |
//! | `frame_max` | [`frame_max`](ConnectionConfig::frame_max) | bytes, `0` (no limit) or at least 4096 |
//! | `channel_max` | [`channel_max`](ConnectionConfig::channel_max) | `0` (no limit) to 65535 |
//! | `connection_timeout` | [`connection_timeout`](ConnectionConfig::connection_timeout) | milliseconds, at least 1 |
//! | `rpc_timeout` | [`rpc_timeout`](ConnectionConfig::rpc_timeout) | milliseconds, at least 1 |
//! | `auth_mechanism` | [`auth_mechanism`](ConnectionConfig::auth_mechanism) | `plain`, `amqplain` or `external` (any case), given once |
//! | `connection_name` | [`connection_name`](ConnectionConfig::connection_name) | any text |
//! | `cacertfile`, `certfile`, `keyfile` | [`tls_params`](ConnectionConfig::tls_params) | file paths |
//! | `verify` | [`tls_params`](ConnectionConfig::tls_params) | `verify_peer` or `verify_none` |
//! | `server_name_indication` | [`tls_params`](ConnectionConfig::tls_params) | a host name (or `disable`) |
//!
//! The TLS parameters are read only for `amqps://` (see [`TlsConfig::from_params`]); `certfile` and
//! `keyfile` go together. `verify=verify_none` turns certificate verification off, with a warning.
//!
//! An invalid value is [`ConfigError::InvalidParameter`]. Unknown parameters are ignored with a
//! `tracing` warning that names the parameter (never its value), as the Java and Go clients ignore
//! them: a URI shared with other clients may carry their options.

use std::{fmt, str::FromStr, time::Duration};

use crate::{codec::ShortStr, spec::FRAME_MIN_SIZE};
use url::{form_urlencoded, Host, Url};

pub use crate::client::TlsConfig;

/// Default port of `amqp://`.
const AMQP_PORT: u16 = 5672;
/// Default port of `amqps://`.
const AMQPS_PORT: u16 = 5671;
/// The vhost travels in a shortstr (`connection.open`).
const VHOST_MAX_LEN: usize = ShortStr::MAX_LEN;

/// Everything needed to open one connection: where, who, and the limits and timeouts to use.
///
/// A plain value with public fields; nothing is checked until [`ConnectionConfig::from_uri`] or
/// [`ConnectionConfig::validate`]. `Debug` prints the password as `***`, and
/// [`ConnectionConfig::redacted_uri`] gives a log-safe URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Host name or IP address to connect to (IPv6 without brackets). Default `localhost`.
    pub host: String,
    /// TCP port. Default 5672, or 5671 for `amqps://`.
    pub port: u16,
    /// Whether to connect over TLS (`amqps://`). Default `false`.
    pub tls: bool,
    /// Virtual host to open. Default `/`.
    pub vhost: String,
    /// User name for authentication. Default `guest`.
    pub username: String,
    /// Password for authentication. Default `guest`. Never printed.
    pub password: Secret,
    /// Heartbeat interval to ask for, in seconds: `None` accepts the server's proposal, `Some(0)`
    /// disables heartbeats. Default `None`.
    pub heartbeat: Option<u16>,
    /// Largest frame to propose, in bytes; `0` proposes "no limit". Default 131072.
    pub frame_max: u32,
    /// Highest channel number to propose; `0` proposes "no limit". Default 2047.
    pub channel_max: u16,
    /// Time allowed for the TCP connect and the whole handshake (up to `connection.open-ok`).
    /// Default 30 s.
    pub connection_timeout: Duration,
    /// Time allowed for each operation on a handle, all its waits together: a synchronous method's
    /// (or `open_channel`'s) wait for room in the command queue and then for its reply; a publish's waits
    /// for the broker to allow publishing, for a confirm slot and for room; an ack's wait for room.
    /// Default 30 s.
    pub rpc_timeout: Duration,
    /// Time allowed for `connection.close` to be answered before the socket is dropped, and for a
    /// channel's close: up to this for room in the command queue, then this from sending
    /// channel.close to its close-ok. Default 5 s.
    pub close_timeout: Duration,
    /// SASL mechanism used to authenticate. Default [`AuthMechanism::Plain`].
    pub auth_mechanism: AuthMechanism,
    /// Name shown for the connection in the management UI (`connection_name` client property). It
    /// goes in `connection.start-ok`, which must fit the 4096-byte frame limit before tuning: a name of
    /// more than about 3.5 KiB fails `connect` with [`Error::Handshake`](crate::Error::Handshake).
    pub connection_name: Option<String>,
    /// Message locale to ask for. Default `en_US`.
    pub locale: String,
    /// Largest message body accepted from the broker, in bytes. Default 128 MiB. A larger delivery,
    /// get or return closes its channel with 311 CONTENT_TOO_LARGE
    /// ([`Error::ChannelClosed`](crate::Error::ChannelClosed)).
    pub max_message_size: u64,
    /// Most publishes awaiting a confirm at once on a channel in confirm mode. Default 1000.
    pub confirm_window: usize,
    /// Capacity of the queue from handles to the connection driver. Default 1024; values below 2 are
    /// raised to 2 (a settlement batch and the command behind it take two places).
    pub command_queue: usize,
    /// TLS options from the URI, as given. Used when `tls` is on and `tls_config` is `None`.
    pub tls_params: TlsParams,
    /// TLS settings for `amqps://` (set with [`ConnectionConfig::with_tls`]); they replace the URI's
    /// `tls_params`. `None` uses [`TlsConfig::from_params`] of `tls_params`. Setting this without
    /// `tls` is an error, never a plain TCP connection.
    pub tls_config: Option<TlsConfig>,
}

impl Default for ConnectionConfig {
    /// `amqp://guest:guest@localhost:5672/%2F` with the default limits and timeouts.
    fn default() -> Self {
        ConnectionConfig {
            host: "localhost".to_owned(),
            port: AMQP_PORT,
            tls: false,
            vhost: "/".to_owned(),
            username: "guest".to_owned(),
            password: Secret::new("guest"),
            heartbeat: None,
            frame_max: 131_072,
            channel_max: 2047,
            connection_timeout: Duration::from_secs(30),
            rpc_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(5),
            auth_mechanism: AuthMechanism::Plain,
            connection_name: None,
            locale: "en_US".to_owned(),
            max_message_size: 128 * 1024 * 1024,
            confirm_window: 1000,
            command_queue: 1024,
            tls_params: TlsParams::default(),
            tls_config: None,
        }
    }
}

impl ConnectionConfig {
    /// Parses an AMQP URI (see the [module docs](self) for the format and parameters).
    ///
    /// Fields the URI does not mention keep their [defaults](ConnectionConfig::default). Errors never
    /// contain the password.
    ///
    /// ```
    /// use coney::config::{AuthMechanism, ConnectionConfig};
    ///
    /// let config = ConnectionConfig::from_uri(
    ///     "amqps://app:s3cret@broker.example.com/prod?heartbeat=30&auth_mechanism=plain",
    /// )?;
    /// assert!(config.tls);
    /// assert_eq!(config.port, 5671);
    /// assert_eq!(config.vhost, "prod");
    /// assert_eq!(config.heartbeat, Some(30));
    /// assert_eq!(config.auth_mechanism, AuthMechanism::Plain);
    /// assert_eq!(config.password.expose(), "s3cret");
    /// assert_eq!(config.redacted_uri(), "amqps://app:***@broker.example.com:5671/prod");
    /// # Ok::<(), coney::config::ConfigError>(())
    /// ```
    pub fn from_uri(uri: &str) -> Result<ConnectionConfig, ConfigError> {
        let raw = RawUri::split(uri.trim())?;
        let mut config = ConnectionConfig {
            tls: raw.tls,
            port: if raw.tls { AMQPS_PORT } else { AMQP_PORT },
            ..ConnectionConfig::default()
        };

        if let Some(userinfo) = raw.userinfo {
            match userinfo.split_once(':') {
                Some((user, password)) => {
                    config.username = percent_decode(user, "user name")?;
                    config.password = Secret::new(percent_decode(password, "password")?);
                }
                // The specification's `amqp://user@`: a user name, and no password.
                None => config.username = percent_decode(userinfo, "user name")?,
            }
        }

        let (host, port) = parse_host_port(raw.host_port)?;
        config.host = host;
        if let Some(port) = port {
            config.port = port;
        }

        config.vhost = parse_vhost(raw.path)?;

        if let Some(query) = raw.query {
            let mut seen: Vec<String> = Vec::new();
            for (name, value) in form_urlencoded::parse(query.as_bytes()) {
                // A parameter given twice is refused rather than the last one kept: a URI meant as
                // "verify_peer" must not turn into "verify_none" by an appended copy. The Erlang client
                // takes several auth_mechanisms and tries them in order; coney takes one, and says so
                // (a URI meant as "EXTERNAL, else PLAIN" must not turn into PLAIN with the default
                // credentials).
                if seen.iter().any(|s| *s == name) {
                    return Err(invalid_uri(&if name == "auth_mechanism" {
                        "auth_mechanism is given more than once; coney takes one mechanism"
                            .to_owned()
                    } else {
                        format!("the parameter {name} is given more than once")
                    }));
                }
                seen.push(name.to_string());
                config.apply_parameter(&name, &value)?;
            }
        }

        config.validate()?;
        Ok(config)
    }

    /// Reads the URI from `AMQP_URL`, else from `RABBITMQ_URL`; without either (or with both empty),
    /// returns the [default](ConnectionConfig::default) configuration.
    ///
    /// A variable that is set but is not a valid URI is an error, not a fallback to the next one.
    pub fn from_env() -> Result<ConnectionConfig, ConfigError> {
        Self::from_env_vars(read_env("AMQP_URL")?, read_env("RABBITMQ_URL")?)
    }

    /// Sets the host name or IP address (an IPv6 address with or without brackets).
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        let host = host.into();
        self.host = match bare_host(&host) {
            bare if bare.len() == host.len() => host,
            bare => bare.to_owned(),
        };
        self
    }

    /// Sets the TCP port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Sets the virtual host.
    pub fn with_vhost(mut self, vhost: impl Into<String>) -> Self {
        self.vhost = vhost.into();
        self
    }

    /// Sets the user name and password.
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Self {
        self.username = username.into();
        self.password = password.into();
        self
    }

    /// Asks for a heartbeat interval of `seconds` (`0` disables heartbeats).
    pub fn with_heartbeat(mut self, seconds: u16) -> Self {
        self.heartbeat = Some(seconds);
        self
    }

    /// Sets the largest frame to propose (`0` for no limit, else at least 4096).
    pub fn with_frame_max(mut self, frame_max: u32) -> Self {
        self.frame_max = frame_max;
        self
    }

    /// Sets the highest channel number to propose (`0` for no limit).
    pub fn with_channel_max(mut self, channel_max: u16) -> Self {
        self.channel_max = channel_max;
        self
    }

    /// Sets the time allowed for the TCP connect and the handshake.
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// Sets the time allowed for each operation on a handle, all its waits together ([`rpc_timeout`](Self::rpc_timeout)).
    pub fn with_rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// Sets [`close_timeout`](ConnectionConfig::close_timeout): the time allowed for a
    /// `connection.close` or a `channel.close` to be answered.
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Sets the name shown for the connection in the management UI.
    pub fn with_connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// Sets the SASL mechanism.
    pub fn with_auth_mechanism(mut self, mechanism: AuthMechanism) -> Self {
        self.auth_mechanism = mechanism;
        self
    }

    /// Connects over TLS with `tls` (see [`TlsConfig`]). This turns TLS on but keeps the port: an
    /// `amqps://` URI already has 5671; with an `amqp://` URI or the default configuration, set the
    /// broker's TLS port with [`with_port`](ConnectionConfig::with_port).
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = true;
        self.tls_config = Some(tls);
        self
    }

    /// Sets the largest message body accepted from the broker.
    pub fn with_max_message_size(mut self, bytes: u64) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The longest timeout [`validate`](Self::validate) accepts: a year. Longer would be no timeout,
    /// which is not offered.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

    /// The largest confirm window or command queue [`validate`](Self::validate) accepts (tokio's
    /// `Semaphore::MAX_PERMITS`).
    pub const MAX_CAPACITY: usize = tokio::sync::Semaphore::MAX_PERMITS;

    /// Sets how many publishes may await a confirm at once on a channel.
    pub fn with_confirm_window(mut self, window: usize) -> Self {
        self.confirm_window = window;
        self
    }

    /// Checks the values the builders and public fields cannot check: `frame_max` is 0 or at least
    /// 4096, the port and every timeout, queue and window are nonzero, every timeout is at most
    /// [`MAX_TIMEOUT`](Self::MAX_TIMEOUT) and the window and the command queue at most
    /// [`MAX_CAPACITY`](Self::MAX_CAPACITY), the vhost fits in 255 bytes;
    /// `tls_config` is set only with `tls`, and with TLS on, the URI's TLS parameters make sense
    /// together (`certfile` and `keyfile` both or neither).
    ///
    /// [`ConnectionConfig::from_uri`] calls this; call it yourself after setting fields by hand.
    /// Errors are [`ConfigError::InvalidParameter`] named after the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name: &str, value: &dyn fmt::Debug| {
            Err(ConfigError::InvalidParameter {
                name: name.to_owned(),
                value: format!("{value:?}"),
            })
        };
        if self.port == 0 {
            return invalid("port", &self.port);
        }
        // spec: "The minimum non-zero value is 4096."
        if self.frame_max != 0 && self.frame_max < FRAME_MIN_SIZE {
            return invalid("frame_max", &self.frame_max);
        }
        if self.vhost.len() > VHOST_MAX_LEN {
            return invalid("vhost", &format_args!("<{} bytes>", self.vhost.len()));
        }
        // A zero timeout would fail every wait at once; "no timeout" is not offered (every wait is
        // bounded), and a `Duration::MAX` would overflow the deadlines made from it.
        for (name, timeout) in [
            ("connection_timeout", self.connection_timeout),
            ("rpc_timeout", self.rpc_timeout),
            ("close_timeout", self.close_timeout),
        ] {
            if timeout.is_zero() || timeout > Self::MAX_TIMEOUT {
                return invalid(name, &timeout);
            }
        }
        // tokio's queues and semaphores take at most MAX_CAPACITY (and panic above it).
        for (name, capacity) in [
            ("confirm_window", self.confirm_window),
            ("command_queue", self.command_queue),
        ] {
            if capacity == 0 || capacity > Self::MAX_CAPACITY {
                return invalid(name, &capacity);
            }
        }
        if self.tls_config.is_some() && !self.tls {
            // Never a silent plain TCP connection for a configuration that asks for TLS.
            return invalid("tls", &format_args!("false, but tls_config is set"));
        }
        if self.tls {
            self.effective_tls_config()?;
        }
        Ok(())
    }

    /// The TLS settings a connection with this configuration uses when `tls` is on: `tls_config` if
    /// set, else those of the URI's parameters ([`TlsConfig::from_params`]).
    pub fn effective_tls_config(&self) -> Result<TlsConfig, ConfigError> {
        match &self.tls_config {
            Some(tls) => Ok(tls.clone()),
            None => TlsConfig::from_params(&self.tls_params),
        }
    }

    /// The connection's address as a URI for logs: `amqp://user:***@host:port/vhost`.
    ///
    /// The password is always `***` (even when empty) and query parameters are left out. Parsing the
    /// result gives back the same scheme, user, host, port and vhost (except an empty vhost, which
    /// reads back as `/`).
    pub fn redacted_uri(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        let bare = bare_host(&self.host);
        let host = if bare.contains(':') {
            format!("[{bare}]")
        } else {
            percent_encode(bare)
        };
        format!(
            "{scheme}://{}:***@{host}:{}/{}",
            percent_encode(&self.username),
            self.port,
            percent_encode(&self.vhost)
        )
    }

    /// [`ConnectionConfig::from_env`] with the variables already read (`None` when unset).
    fn from_env_vars(
        amqp_url: Option<String>,
        rabbitmq_url: Option<String>,
    ) -> Result<ConnectionConfig, ConfigError> {
        let chosen = [("AMQP_URL", amqp_url), ("RABBITMQ_URL", rabbitmq_url)]
            .into_iter()
            .find_map(|(name, value)| value.filter(|v| !v.trim().is_empty()).map(|v| (name, v)));
        match chosen {
            None => Ok(ConnectionConfig::default()),
            Some((name, uri)) => ConnectionConfig::from_uri(&uri).map_err(|e| match e {
                ConfigError::InvalidUri(reason) => {
                    ConfigError::InvalidUri(format!("{name}: {reason}"))
                }
                other => other,
            }),
        }
    }

    /// Applies one query parameter.
    fn apply_parameter(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = || ConfigError::InvalidParameter {
            name: name.to_owned(),
            value: value.to_owned(),
        };
        let millis = || match value.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(invalid()),
        };
        match name {
            "heartbeat" => self.heartbeat = Some(value.parse().map_err(|_| invalid())?),
            "frame_max" => {
                let frame_max: u32 = value.parse().map_err(|_| invalid())?;
                // spec: "The minimum non-zero value is 4096."
                if frame_max != 0 && frame_max < FRAME_MIN_SIZE {
                    return Err(invalid());
                }
                self.frame_max = frame_max;
            }
            "channel_max" => self.channel_max = value.parse().map_err(|_| invalid())?,
            "connection_timeout" => self.connection_timeout = millis()?,
            "rpc_timeout" => self.rpc_timeout = millis()?,
            "auth_mechanism" => self.auth_mechanism = value.parse().map_err(|_| invalid())?,
            "connection_name" => self.connection_name = Some(value.to_owned()),
            "cacertfile" => self.tls_params.cacertfile = Some(value.to_owned()),
            "certfile" => self.tls_params.certfile = Some(value.to_owned()),
            "keyfile" => self.tls_params.keyfile = Some(value.to_owned()),
            "verify" => match value {
                "verify_peer" | "verify_none" => self.tls_params.verify = Some(value.to_owned()),
                _ => return Err(invalid()),
            },
            "server_name_indication" => {
                self.tls_params.server_name_indication = Some(value.to_owned())
            }
            _ => tracing::warn!(parameter = %name, "ignoring unknown AMQP URI query parameter"),
        }
        Ok(())
    }
}

impl FromStr for ConnectionConfig {
    type Err = ConfigError;

    /// Same as [`ConnectionConfig::from_uri`].
    fn from_str(uri: &str) -> Result<Self, Self::Err> {
        ConnectionConfig::from_uri(uri)
    }
}

/// A password: `Debug` and `Display` print `***`; only [`Secret::expose`] gives the text.
///
/// This keeps the password out of logs that print a config or an error; it does not wipe memory.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The password itself, for the authentication exchange. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Secret(secret)
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Secret(secret.to_owned())
    }
}

/// SASL mechanism used in `connection.start-ok`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AuthMechanism {
    /// `PLAIN`: user name and password (RFC 4616). The default.
    #[default]
    Plain,
    /// `AMQPLAIN`: user name and password in an AMQP field table (RabbitMQ-specific).
    AmqPlain,
    /// `EXTERNAL`: identity from the TLS client certificate; no password is sent.
    External,
}

impl AuthMechanism {
    /// The mechanism's name on the wire: `PLAIN`, `AMQPLAIN` or `EXTERNAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::AmqPlain => "AMQPLAIN",
            AuthMechanism::External => "EXTERNAL",
        }
    }
}

impl fmt::Display for AuthMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuthMechanism {
    type Err = ConfigError;

    /// Parses `plain`, `amqplain` or `external`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            AuthMechanism::Plain,
            AuthMechanism::AmqPlain,
            AuthMechanism::External,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| ConfigError::InvalidParameter {
            name: "auth_mechanism".to_owned(),
            value: s.to_owned(),
        })
    }
}

/// TLS options from the URI's query, kept as given for the TLS transport to interpret.
///
/// [`ConnectionConfig::from_uri`] only checks that `verify` is `verify_peer` or `verify_none`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsParams {
    /// `cacertfile`: path of the PEM file of CA certificates to trust.
    pub cacertfile: Option<String>,
    /// `certfile`: path of the PEM client certificate.
    pub certfile: Option<String>,
    /// `keyfile`: path of the PEM private key of the client certificate.
    pub keyfile: Option<String>,
    /// `verify`: `verify_peer` or `verify_none`.
    pub verify: Option<String>,
    /// `server_name_indication`: the name to send in SNI and check the certificate against.
    pub server_name_indication: Option<String>,
}

/// Why a configuration or URI was rejected. The text never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URI is malformed; the text says why, without quoting the URI.
    #[error("invalid AMQP URI: {0}")]
    InvalidUri(String),
    /// The URI's scheme is neither `amqp` nor `amqps`.
    #[error("unsupported URI scheme {0:?} (expected amqp or amqps)")]
    UnsupportedScheme(String),
    /// A query parameter (or, from [`ConnectionConfig::validate`], a field) has an invalid value.
    #[error("invalid value {value:?} for {name}")]
    InvalidParameter {
        /// The parameter or field name.
        name: String,
        /// The rejected value.
        value: String,
    },
}

/// A URI cut into its parts, still percent-encoded.
struct RawUri<'a> {
    tls: bool,
    userinfo: Option<&'a str>,
    host_port: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

impl<'a> RawUri<'a> {
    /// Cuts the URI by hand rather than with `Url::parse`, which would drop an empty user info,
    /// reject an empty host with a port, and resolve `.`/`..` in the path (the vhost).
    fn split(uri: &'a str) -> Result<Self, ConfigError> {
        let (scheme, rest) = match uri.split_once(':') {
            Some((scheme, rest)) if is_scheme(scheme) => (scheme, rest),
            _ => return Err(invalid_uri("missing scheme (expected amqp:// or amqps://)")),
        };
        let tls = if scheme.eq_ignore_ascii_case("amqp") {
            false
        } else if scheme.eq_ignore_ascii_case("amqps") {
            true
        } else {
            return Err(ConfigError::UnsupportedScheme(scheme.to_owned()));
        };
        let rest = rest
            .strip_prefix("//")
            .ok_or_else(|| invalid_uri("expected \"//\" after the scheme"))?;
        if rest.contains('#') {
            return Err(invalid_uri(
                "a fragment ('#') is not allowed; percent-encode '#' in passwords as %23",
            ));
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(authority_end);
        // The user info ends at the last '@', so a password may contain an unescaped '@'.
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        // A '/' or '?' in an unescaped password ends the authority early: `amqp://user:12/ab@host` reads
        // as host "user", port 12 and vhost "ab@host", which would connect elsewhere with the default
        // credentials and show the rest of the password as a vhost. With no user info before the host,
        // an '@' after it is that mistake far more often than a vhost with '@' in its name, which can
        // be written %40.
        if userinfo.is_none() && rest.contains('@') {
            return Err(invalid_uri(
                "an '@' after the host: percent-encode '/' and '?' in a password (%2F, %3F), \
                 and '@' in a vhost or a query value (%40)",
            ));
        }
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        Ok(RawUri {
            tls,
            userinfo,
            host_port,
            path,
            query,
        })
    }
}

/// RFC 3986: `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// `host` without the brackets of an IPv6 literal (`[::1]` → `::1`); anything else as it is.
pub(crate) fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Parses `host[:port]` (`[v6]` allowed; empty host means `localhost`) with the `url` crate.
fn parse_host_port(host_port: &str) -> Result<(String, Option<u16>), ConfigError> {
    let host_port = if host_port.is_empty() || host_port.starts_with(':') {
        format!("localhost{host_port}")
    } else {
        host_port.to_owned()
    };
    let url = Url::parse(&format!("amqp://{host_port}"))
        .map_err(|e| invalid_uri(&format!("invalid host or port: {e}")))?;
    let host = match url.host() {
        Some(Host::Domain(domain)) => {
            let host = percent_decode(domain, "host")?;
            // A delimiter that only percent-encoding let into the name is not part of any host name,
            // and would be read as a port or an address later.
            if host.chars().any(|c| {
                matches!(c, ':' | '/' | '?' | '#' | '[' | ']' | '@')
                    || c.is_whitespace()
                    || c.is_control()
            }) {
                return Err(invalid_uri(
                    "the host contains a percent-encoded delimiter, space or control character",
                ));
            }
            host
        }
        Some(Host::Ipv4(addr)) => addr.to_string(),
        Some(Host::Ipv6(addr)) => addr.to_string(),
        None => return Err(invalid_uri("missing host")),
    };
    if host.is_empty() {
        return Err(invalid_uri("missing host"));
    }
    match url.port() {
        Some(0) => Err(invalid_uri("port 0 is not allowed")),
        port => Ok((host, port)),
    }
}

/// The vhost from the URI path: the percent-decoded text after the leading `/`.
fn parse_vhost(path: &str) -> Result<String, ConfigError> {
    // Strictly "amqp://host/" names the empty vhost; like the Go client, treat it as the default.
    let segment = match path.strip_prefix('/') {
        None | Some("") => return Ok("/".to_owned()),
        Some(segment) => segment,
    };
    if segment.contains('/') {
        return Err(invalid_uri(
            "the vhost contains an unescaped '/'; write '/' in a vhost as %2F",
        ));
    }
    percent_decode(segment, "vhost")
}

/// Reads an environment variable; unset or empty is `None`.
fn read_env(name: &str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value).filter(|v| !v.trim().is_empty())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(invalid_uri(&format!("{name} is not valid Unicode")))
        }
    }
}

fn invalid_uri(reason: &str) -> ConfigError {
    ConfigError::InvalidUri(reason.to_owned())
}

/// Decodes `%XX` escapes (and nothing else: `+` stays `+`). `what` names the part for errors, which
/// never quote the text.
fn percent_decode(s: &str, what: &str) -> Result<String, ConfigError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|&b| hex_value(b));
            let lo = bytes.get(i + 2).and_then(|&b| hex_value(b));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => {
                    return Err(invalid_uri(&format!(
                        "invalid percent-encoding in the {what}"
                    )))
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid_uri(&format!("the {what} is not valid UTF-8")))
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Escapes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    use fmt::Write;

    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password that must never show up in any output.
    const PW: &str = "Zq9-s3cr3t-PW";

    fn parse(uri: &str) -> ConnectionConfig {
        ConnectionConfig::from_uri(uri).unwrap_or_else(|e| panic!("{uri}: {e}"))
    }

    fn parse_err(uri: &str) -> ConfigError {
        match ConnectionConfig::from_uri(uri) {
            Ok(config) => panic!("{uri} parsed: {config:?}"),
            Err(e) => e,
        }
    }

    fn assert_invalid_param(uri: &str, name: &str) {
        match parse_err(uri) {
            ConfigError::InvalidParameter { name: n, .. } => assert_eq!(n, name, "{uri}"),
            other => panic!("{uri}: expected InvalidParameter({name}), got {other:?}"),
        }
    }

    fn assert_invalid_uri(uri: &str) {
        match parse_err(uri) {
            ConfigError::InvalidUri(_) => {}
            other => panic!("{uri}: expected InvalidUri, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = ConnectionConfig::default();
        assert_eq!(c.host, "localhost");
        assert_eq!(c.port, 5672);
        assert!(!c.tls);
        assert_eq!(c.vhost, "/");
        assert_eq!(c.username, "guest");
        assert_eq!(c.password.expose(), "guest");
        assert_eq!(c.heartbeat, None);
        assert_eq!(c.frame_max, 131_072);
        assert_eq!(c.channel_max, 2047);
        assert_eq!(c.connection_timeout, Duration::from_secs(30));
        assert_eq!(c.rpc_timeout, Duration::from_secs(30));
        assert_eq!(c.close_timeout, Duration::from_secs(5));
        assert_eq!(c.auth_mechanism, AuthMechanism::Plain);
        assert_eq!(c.connection_name, None);
        assert_eq!(c.locale, "en_US");
        assert_eq!(c.max_message_size, 128 * 1024 * 1024);
        assert_eq!(c.confirm_window, 1000);
        assert_eq!(c.command_queue, 1024);
        assert_eq!(c.tls_params, TlsParams::default());
        c.validate().unwrap();
    }

    #[test]
    fn bare_uri_is_default() {
        assert_eq!(parse("amqp://"), ConnectionConfig::default());
        assert_eq!(parse("amqp://localhost"), ConnectionConfig::default());
        assert_eq!(
            parse("  amqp://localhost:5672/%2f\n"),
            ConnectionConfig::default()
        );
    }

    #[test]
    fn full_uri() {
        let c = parse("amqp://user:pass@host:10000/vhost");
        assert_eq!(
            (
                c.username.as_str(),
                c.password.expose(),
                c.host.as_str(),
                c.port,
                c.vhost.as_str()
            ),
            ("user", "pass", "host", 10000, "vhost")
        );
        assert!(!c.tls);
    }

    #[test]
    fn amqps_scheme_and_ports() {
        let c = parse("amqps://host");
        assert!(c.tls);
        assert_eq!(c.port, 5671);
        assert_eq!(parse("amqps://host:5999").port, 5999);
        assert_eq!(parse("amqp://host:1").port, 1);
        assert_eq!(parse("amqp://host:65535").port, 65535);
        assert_eq!(parse("amqp://host:").port, 5672);
        let c = parse("AMQPS://Host");
        assert!(c.tls);
        assert_eq!(c.host, "Host");
    }

    #[test]
    fn spec_examples() {
        // https://www.rabbitmq.com/docs/uri-spec#appendix-a-examples
        let c = parse("amqp://user%61:%61pass@ho%61st:10000/v%2fhost");
        assert_eq!(c.username, "usera");
        assert_eq!(c.password.expose(), "apass");
        assert_eq!(c.host, "hoast");
        assert_eq!(c.port, 10000);
        assert_eq!(c.vhost, "v/host");

        let c = parse("amqp://:@/");
        assert_eq!((c.username.as_str(), c.password.expose()), ("", ""));
        assert_eq!(c.host, "localhost");
        assert_eq!(c.vhost, "/"); // the spec says ""; see the module docs

        let repeated =
            ConnectionConfig::from_uri("amqp://h?auth_mechanism=external&auth_mechanism=plain");
        assert!(
            matches!(&repeated, Err(ConfigError::InvalidUri(text)) if text.contains("more than once")),
            "{repeated:?}"
        );

        // The specification's example: a user name, the password absent (so the default).
        let c = parse("amqp://user@");
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("user", "guest")
        );
        assert_eq!(c.host, "localhost");

        let c = parse("amqp://user:pass@");
        assert_eq!((c.username.as_str(), c.password.expose()), ("user", "pass"));

        let c = parse("amqp://host");
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("guest", "guest")
        );
        assert_eq!(c.host, "host");

        let c = parse("amqp://:10000");
        assert_eq!((c.host.as_str(), c.port), ("localhost", 10000));

        let c = parse("amqp:///vhost");
        assert_eq!((c.host.as_str(), c.vhost.as_str()), ("localhost", "vhost"));

        assert_eq!(parse("amqp://host/").vhost, "/");
        assert_eq!(parse("amqp://host/%2f").vhost, "/");
        assert_eq!(parse("amqp://[::1]").host, "::1");
    }

    #[test]
    fn userinfo_cases() {
        // Empty user info: an empty user name and no password (so the default), as Java and Go read it.
        let c = parse("amqp://@host");
        assert_eq!((c.username.as_str(), c.password.expose()), ("", "guest"));
        let c = parse("amqp://user:@host");
        assert_eq!((c.username.as_str(), c.password.expose()), ("user", ""));
        let c = parse("amqp://:pw@host");
        assert_eq!((c.username.as_str(), c.password.expose()), ("", "pw"));
        // Everything up to the last '@' is user info; the password is everything after the first ':'.
        let c = parse("amqp://us%3Aer:p@ss:w%40rd@host");
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("us:er", "p@ss:w@rd")
        );
        // '+' is literal outside the query.
        let c = parse("amqp://a+b:c+d@host/e+f");
        assert_eq!((c.username.as_str(), c.password.expose()), ("a+b", "c+d"));
        assert_eq!(c.vhost, "e+f");
        let c = parse("amqp://%C3%A9l%C3%A8ve:%F0%9F%94%91@host");
        assert_eq!((c.username.as_str(), c.password.expose()), ("élève", "🔑"));
        let c = parse("amqp://u:%2F%3F%23%25@host");
        assert_eq!(c.password.expose(), "/?#%");
    }

    #[test]
    fn hosts() {
        assert_eq!(parse("amqp://127.0.0.1:5673").host, "127.0.0.1");
        let c = parse("amqp://[::1]:5673/vh");
        assert_eq!(
            (c.host.as_str(), c.port, c.vhost.as_str()),
            ("::1", 5673, "vh")
        );
        assert_eq!(
            parse("amqps://u:p@[2001:DB8:0:0:0:0:0:1]").host,
            "2001:db8::1"
        );
        assert_eq!(
            parse("amqp://rabbit%2Dnode.example").host,
            "rabbit-node.example"
        );
        assert_eq!(
            parse("amqp://u:p@rabbit.local?heartbeat=1").host,
            "rabbit.local"
        );
    }

    #[test]
    fn vhosts() {
        assert_eq!(parse("amqp://host").vhost, "/");
        assert_eq!(parse("amqp://host/").vhost, "/");
        assert_eq!(parse("amqp://host/%2F").vhost, "/");
        assert_eq!(parse("amqp://host/vh").vhost, "vh");
        assert_eq!(parse("amqp://host/a%2Fb").vhost, "a/b");
        assert_eq!(parse("amqp://host/%2Fprod").vhost, "/prod");
        assert_eq!(
            parse("amqp://host/my%20vhost?heartbeat=5").vhost,
            "my vhost"
        );
        assert_eq!(parse("amqp://host/?heartbeat=5").vhost, "/");
        assert_eq!(parse("amqp://host?heartbeat=5").vhost, "/");
        // Dot segments are vhost names, not path navigation.
        assert_eq!(parse("amqp://host/.").vhost, ".");
        assert_eq!(parse("amqp://host/%2E%2E").vhost, "..");
        assert_eq!(
            parse(&format!("amqp://host/{}", "v".repeat(255)))
                .vhost
                .len(),
            255
        );
    }

    #[test]
    fn vhost_errors() {
        assert_invalid_uri("amqp://host/a/b");
        assert_invalid_uri("amqp://host//");
        assert_invalid_uri("amqp://host/a/../b");
        assert_invalid_uri("amqp://host/a%2");
        assert_invalid_uri("amqp://host/%FF");
        assert_invalid_param(&format!("amqp://host/{}", "v".repeat(256)), "vhost");
    }

    #[test]
    fn uri_errors() {
        assert!(
            matches!(parse_err("http://host"), ConfigError::UnsupportedScheme(s) if s == "http")
        );
        assert!(matches!(
            parse_err("amqp+ssl://host"),
            ConfigError::UnsupportedScheme(_)
        ));
        assert_invalid_uri("");
        assert_invalid_uri("//host");
        assert_invalid_uri("amqp:host");
        assert_invalid_uri("amqp:/host");
        assert_invalid_uri("amqp://host:99999");
        assert_invalid_uri("amqp://host:0");
        assert_invalid_uri("amqp://host:port");
        assert_invalid_uri("amqp://ho st");
        assert_invalid_uri("amqp://[::1");
        assert_invalid_uri("amqp://[nope]");
        assert_invalid_uri("amqp://h%zz");
        assert_invalid_uri("amqp://host#frag");
        assert_invalid_uri("amqp://u%zz:p@host");
    }

    #[test]
    fn schemeless_host_port_is_unsupported_scheme() {
        // "host:5672" is scheme "host" by RFC 3986; the error names it so the mistake is visible.
        assert!(
            matches!(parse_err("localhost:5672"), ConfigError::UnsupportedScheme(s) if s == "localhost")
        );
    }

    #[test]
    fn heartbeat_param() {
        assert_eq!(parse("amqp://h?heartbeat=10").heartbeat, Some(10));
        assert_eq!(parse("amqp://h?heartbeat=0").heartbeat, Some(0));
        assert_eq!(parse("amqp://h?heartbeat=65535").heartbeat, Some(65535));
        // Given twice: refused (clients differ on which one wins; see a_parameter_given_twice_is_refused).
        assert!(ConnectionConfig::from_uri("amqp://h?heartbeat=1&heartbeat=2").is_err());
        for bad in ["65536", "-1", "1.5", "", "ten", "10s"] {
            assert_invalid_param(&format!("amqp://h?heartbeat={bad}"), "heartbeat");
        }
        assert_invalid_param("amqp://h?heartbeat", "heartbeat");
    }

    #[test]
    fn frame_max_param() {
        assert_eq!(parse("amqp://h?frame_max=0").frame_max, 0);
        assert_eq!(parse("amqp://h?frame_max=4096").frame_max, 4096);
        assert_eq!(parse("amqp://h?frame_max=4294967295").frame_max, u32::MAX);
        for bad in ["1", "4095", "4294967296", "x", "-4096"] {
            assert_invalid_param(&format!("amqp://h?frame_max={bad}"), "frame_max");
        }
    }

    #[test]
    fn channel_max_param() {
        assert_eq!(parse("amqp://h?channel_max=0").channel_max, 0);
        assert_eq!(parse("amqp://h?channel_max=65535").channel_max, 65535);
        assert_invalid_param("amqp://h?channel_max=65536", "channel_max");
        assert_invalid_param("amqp://h?channel_max=many", "channel_max");
    }

    #[test]
    fn timeout_params() {
        let c = parse("amqp://h?connection_timeout=1500&rpc_timeout=250");
        assert_eq!(c.connection_timeout, Duration::from_millis(1500));
        assert_eq!(c.rpc_timeout, Duration::from_millis(250));
        for name in ["connection_timeout", "rpc_timeout"] {
            for bad in ["0", "-1", "1s", ""] {
                assert_invalid_param(&format!("amqp://h?{name}={bad}"), name);
            }
        }
    }

    #[test]
    fn auth_mechanism_param() {
        for (value, expected) in [
            ("plain", AuthMechanism::Plain),
            ("PLAIN", AuthMechanism::Plain),
            ("amqplain", AuthMechanism::AmqPlain),
            ("AMQPlain", AuthMechanism::AmqPlain),
            ("external", AuthMechanism::External),
            ("EXTERNAL", AuthMechanism::External),
        ] {
            assert_eq!(
                parse(&format!("amqps://h?auth_mechanism={value}")).auth_mechanism,
                expected
            );
        }
        assert_invalid_param("amqp://h?auth_mechanism=scram-sha-256", "auth_mechanism");
        assert_invalid_param("amqp://h?auth_mechanism=", "auth_mechanism");
    }

    #[test]
    fn a_parameter_given_twice_is_refused() {
        for uri in [
            "amqps://h?verify=verify_peer&verify=verify_none",
            "amqp://h?heartbeat=10&heartbeat=0",
            "amqp://h?auth_mechanism=external&auth_mechanism=plain",
        ] {
            assert!(
                matches!(ConnectionConfig::from_uri(uri), Err(ConfigError::InvalidUri(text)) if text.contains("more than once")),
                "{uri}"
            );
        }
        // Different parameters are fine.
        assert!(ConnectionConfig::from_uri("amqp://h?heartbeat=10&channel_max=5").is_ok());
    }

    #[test]
    fn a_host_with_a_percent_encoded_delimiter_is_refused() {
        for uri in [
            "amqp://h%3A1/",
            "amqp://h%2Fx/",
            "amqp://h%40x/",
            "amqp://h%20x/",
        ] {
            assert!(
                matches!(
                    ConnectionConfig::from_uri(uri),
                    Err(ConfigError::InvalidUri(_))
                ),
                "{uri}"
            );
        }
        assert_eq!(parse("amqp://h%2Dx/").host, "h-x");
    }

    #[test]
    fn with_host_takes_an_ipv6_literal_with_or_without_brackets() {
        assert_eq!(ConnectionConfig::default().with_host("[::1]").host, "::1");
        assert_eq!(ConnectionConfig::default().with_host("::1").host, "::1");
        assert_eq!(
            ConnectionConfig::default().with_host("rabbit").host,
            "rabbit"
        );
        assert_eq!(bare_host("[fe80::1]"), "fe80::1");
        assert_eq!(bare_host("[unclosed"), "[unclosed");
        // Set on the field with brackets, the host is shown (and parsed back) as the address.
        let config = ConnectionConfig {
            host: "[::1]".to_owned(),
            ..Default::default()
        };
        let uri = config.redacted_uri();
        assert!(uri.contains("@[::1]:5672/"), "{uri}");
        assert_eq!(ConnectionConfig::from_uri(&uri).unwrap().host, "::1");
    }

    #[test]
    fn auth_mechanism_names() {
        assert_eq!(AuthMechanism::Plain.as_str(), "PLAIN");
        assert_eq!(AuthMechanism::AmqPlain.to_string(), "AMQPLAIN");
        assert_eq!(AuthMechanism::External.as_str(), "EXTERNAL");
        assert_eq!(AuthMechanism::default(), AuthMechanism::Plain);
        assert_eq!(
            "External".parse::<AuthMechanism>().unwrap(),
            AuthMechanism::External
        );
    }

    #[test]
    fn connection_name_param_is_form_decoded() {
        let c = parse("amqp://h?connection_name=order+service%20%231%2B");
        assert_eq!(c.connection_name.as_deref(), Some("order service #1+"));
        assert_eq!(
            parse("amqp://h?connection_name=")
                .connection_name
                .as_deref(),
            Some("")
        );
    }

    #[test]
    fn tls_params() {
        let c = parse(
            "amqps://h?cacertfile=%2Fetc%2Fca.pem&certfile=/etc/client.pem&keyfile=/etc/key.pem\
             &verify=verify_peer&server_name_indication=rabbit.example.com",
        );
        assert_eq!(
            c.tls_params,
            TlsParams {
                cacertfile: Some("/etc/ca.pem".into()),
                certfile: Some("/etc/client.pem".into()),
                keyfile: Some("/etc/key.pem".into()),
                verify: Some("verify_peer".into()),
                server_name_indication: Some("rabbit.example.com".into()),
            }
        );
        assert_eq!(c.vhost, "/");
        assert_eq!(
            parse("amqps://h?verify=verify_none")
                .tls_params
                .verify
                .as_deref(),
            Some("verify_none")
        );
        assert_invalid_param("amqps://h?verify=yes", "verify");
        assert_invalid_param("amqps://h?verify=VERIFY_NONE", "verify");
    }

    #[test]
    fn tls_config() {
        let tls = TlsConfig::new().trust_ca_file("/ca.pem");
        let c = ConnectionConfig::default().with_tls(tls.clone());
        assert!(c.tls);
        assert_eq!(c.port, AMQP_PORT, "with_tls keeps the port");
        assert_eq!(c.effective_tls_config().unwrap(), tls);
        c.validate().unwrap();
        // TLS settings without TLS is an error, not a plain connection.
        let plain = ConnectionConfig {
            tls: false,
            ..c.clone()
        };
        assert!(matches!(
            plain.validate(),
            Err(ConfigError::InvalidParameter { name, .. }) if name == "tls"
        ));
        // Without a TlsConfig, the URI's parameters are used.
        let c = parse("amqps://h?cacertfile=/ca.pem");
        assert_eq!(c.effective_tls_config().unwrap(), tls);
        assert_eq!(c.tls_config, None);
    }

    #[test]
    fn tls_params_go_together() {
        assert_invalid_param("amqps://h?certfile=/c.pem", "keyfile");
        assert_invalid_param("amqps://h?keyfile=/k.pem", "certfile");
        // Ignored (with a warning at connect) for amqp://.
        assert_eq!(
            parse("amqp://h?certfile=/c.pem")
                .tls_params
                .certfile
                .as_deref(),
            Some("/c.pem")
        );
    }

    #[test]
    fn unknown_and_empty_params_are_ignored() {
        let c = parse("amqp://h?fail_if_no_peer_cert=true&&Heartbeat=3&heartbeat=4&");
        assert_eq!(c.heartbeat, Some(4));
        assert_eq!(parse("amqp://h?").heartbeat, None);
    }

    #[test]
    fn many_params_together() {
        let c = parse(
            "amqps://app:pw@mq.example:5999/prod?heartbeat=15&frame_max=8192&channel_max=100\
             &connection_timeout=2000&auth_mechanism=external&connection_name=app",
        );
        assert_eq!(c.heartbeat, Some(15));
        assert_eq!(c.frame_max, 8192);
        assert_eq!(c.channel_max, 100);
        assert_eq!(c.connection_timeout, Duration::from_secs(2));
        assert_eq!(c.auth_mechanism, AuthMechanism::External);
        assert_eq!(c.connection_name.as_deref(), Some("app"));
        assert_eq!(
            (c.host.as_str(), c.port, c.vhost.as_str(), c.tls),
            ("mq.example", 5999, "prod", true)
        );
        assert_eq!(c.rpc_timeout, Duration::from_secs(30));
    }

    #[test]
    fn from_str_matches_from_uri() {
        let uri = "amqp://u:p@h:1234/v?heartbeat=5";
        assert_eq!(uri.parse::<ConnectionConfig>().unwrap(), parse(uri));
        assert!("ftp://h".parse::<ConnectionConfig>().is_err());
    }

    #[test]
    fn builders() {
        let c = ConnectionConfig::default()
            .with_host("rabbit")
            .with_port(5999)
            .with_vhost("v")
            .with_credentials("alice", "wonder")
            .with_heartbeat(20)
            .with_frame_max(8192)
            .with_channel_max(64)
            .with_connection_timeout(Duration::from_secs(3))
            .with_rpc_timeout(Duration::from_secs(4))
            .with_close_timeout(Duration::from_secs(1))
            .with_connection_name("svc")
            .with_auth_mechanism(AuthMechanism::AmqPlain)
            .with_max_message_size(1024)
            .with_confirm_window(10);
        assert_eq!(c.host, "rabbit");
        assert_eq!(c.port, 5999);
        assert_eq!(c.vhost, "v");
        assert_eq!(
            (c.username.as_str(), c.password.expose()),
            ("alice", "wonder")
        );
        assert_eq!(c.heartbeat, Some(20));
        assert_eq!(c.frame_max, 8192);
        assert_eq!(c.channel_max, 64);
        assert_eq!(c.connection_timeout, Duration::from_secs(3));
        assert_eq!(c.rpc_timeout, Duration::from_secs(4));
        assert_eq!(c.close_timeout, Duration::from_secs(1));
        assert_eq!(c.connection_name.as_deref(), Some("svc"));
        assert_eq!(c.auth_mechanism, AuthMechanism::AmqPlain);
        assert_eq!(c.max_message_size, 1024);
        assert_eq!(c.confirm_window, 10);
        c.validate().unwrap();
        let owned =
            ConnectionConfig::default().with_credentials(String::from("u"), String::from("p"));
        assert_eq!(owned.password, Secret::new("p"));
    }

    #[test]
    fn validate_rejects_bad_fields() {
        let ok = ConnectionConfig::default;
        let field = |c: ConnectionConfig| match c.validate() {
            Err(ConfigError::InvalidParameter { name, .. }) => name,
            other => panic!("expected InvalidParameter, got {other:?}"),
        };
        assert_eq!(field(ok().with_port(0)), "port");
        assert_eq!(field(ok().with_frame_max(4095)), "frame_max");
        assert_eq!(field(ok().with_vhost("v".repeat(256))), "vhost");
        assert_eq!(
            field(ok().with_connection_timeout(Duration::ZERO)),
            "connection_timeout"
        );
        assert_eq!(field(ok().with_rpc_timeout(Duration::ZERO)), "rpc_timeout");
        assert_eq!(
            field(ok().with_close_timeout(Duration::ZERO)),
            "close_timeout"
        );
        assert_eq!(field(ok().with_confirm_window(0)), "confirm_window");
        assert_eq!(
            field(ConnectionConfig {
                command_queue: 0,
                ..ok()
            }),
            "command_queue"
        );
        // What would overflow a deadline, or panic in tokio's queues, is refused too.
        assert_eq!(
            field(ok().with_connection_timeout(Duration::MAX)),
            "connection_timeout"
        );
        assert_eq!(field(ok().with_rpc_timeout(Duration::MAX)), "rpc_timeout");
        assert_eq!(
            field(ok().with_close_timeout(Duration::MAX)),
            "close_timeout"
        );
        assert_eq!(
            field(ok().with_confirm_window(usize::MAX)),
            "confirm_window"
        );
        assert_eq!(
            field(ConnectionConfig {
                command_queue: usize::MAX,
                ..ok()
            }),
            "command_queue"
        );
        ok().with_frame_max(0)
            .with_channel_max(0)
            .with_heartbeat(0)
            .validate()
            .unwrap();
        ok().with_connection_timeout(ConnectionConfig::MAX_TIMEOUT)
            .with_rpc_timeout(ConnectionConfig::MAX_TIMEOUT)
            .with_close_timeout(ConnectionConfig::MAX_TIMEOUT)
            .with_confirm_window(ConnectionConfig::MAX_CAPACITY)
            .validate()
            .unwrap();
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new(PW);
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s:#?}"), "***");
        assert_eq!(s.expose(), PW);
        assert_eq!(Secret::from(PW.to_owned()), s);
        assert_eq!(Secret::from(PW), s);
    }

    #[test]
    fn config_debug_hides_password() {
        let c = parse(&format!("amqp://user:{PW}@host/vh"));
        for text in [format!("{c:?}"), format!("{c:#?}")] {
            assert!(!text.contains(PW), "{text}");
            assert!(text.contains("password: ***"), "{text}");
            assert!(text.contains("user"), "{text}");
        }
    }

    #[test]
    fn errors_never_contain_the_password() {
        let bad = [
            format!("amqp://user:{PW}@host:99999/vh"),
            format!("amqp://user:{PW}@host:0"),
            format!("amqp://user:{PW}@ho st/vh"),
            format!("amqp://user:{PW}@[::1/vh"),
            format!("amqp://user:{PW}@host/a/b"),
            format!("amqp://user:{PW}@host/%zz"),
            format!("amqp://user:{PW}%zz@host"),
            format!("amqp://user:{PW}%FF@host"),
            format!("amqp://user:{PW}@host#x"),
            format!("amqp://user:{PW}#@host"), // '#' in the password: the fragment
            format!("amqp://user:{PW}/@host"), // unescaped '/': the "port" is the password
            format!("amqp://user:{PW}?@host"), // unescaped '?'
            format!("amqp:/user:{PW}@host"),
            format!("amqp:user:{PW}@host"),
            format!("http://user:{PW}@host"),
            format!("amqp://user:{PW}@host?heartbeat=x"),
            format!("amqp://user:{PW}@host?frame_max=1"),
            format!("amqp://user:{PW}@host?verify=maybe"),
            format!("amqp://user:{PW}@host?auth_mechanism=nope"),
            format!("amqp://user:{PW}@host?connection_timeout=0"),
            format!("amqp://user:{PW}@host/{}", "v".repeat(300)),
            // Unescaped '/' or '?' after a numeric start: the rest would be taken for a vhost or a query.
            "amqp://user:12/Zq9-s3cr3t-PW@host".to_string(),
            "amqp://user:12?Zq9-s3cr3t-PW@host".to_string(),
        ];
        for uri in &bad {
            let e = parse_err(uri);
            for text in [e.to_string(), format!("{e:?}")] {
                assert!(!text.contains(PW), "{uri} -> {text}");
                assert!(!text.contains("Zq9"), "{uri} -> {text}");
            }
        }
    }

    #[test]
    fn redacted_uri() {
        let c = parse(&format!("amqp://user:{PW}@host:1234/vh?heartbeat=5"));
        assert_eq!(c.redacted_uri(), "amqp://user:***@host:1234/vh");
        assert_eq!(
            ConnectionConfig::default().redacted_uri(),
            "amqp://guest:***@localhost:5672/%2F"
        );
        let c = parse("amqps://a%40b:x@[::1]/a%2Fb%20c");
        assert_eq!(c.redacted_uri(), "amqps://a%40b:***@[::1]:5671/a%2Fb%20c");
        assert_eq!(
            parse("amqp://u:@h").redacted_uri(),
            "amqp://u:***@h:5672/%2F"
        );
    }

    #[test]
    fn an_at_sign_after_the_host_is_refused_unless_escaped() {
        // Taken for a password's tail after an unescaped '/' (see RawUri::split).
        assert!(ConnectionConfig::from_uri("amqp://host/a@b").is_err());
        assert!(ConnectionConfig::from_uri("amqp://host/?x=a@b").is_err());
        assert_eq!(parse("amqp://host/a%40b").vhost, "a@b");
        // With user info before the host, an '@' in it is fine.
        let c = parse("amqp://us%2Fer:p%40ss@host/vh");
        assert_eq!((c.username.as_str(), c.vhost.as_str()), ("us/er", "vh"));
    }

    #[test]
    fn redacted_uri_round_trips() {
        for uri in [
            "amqp://",
            "amqps://u%3A1:p@h.example:1/v%2Fx",
            "amqp://%C3%A9:p@[fe80::1]:9/%C3%A9t%C3%A9",
            "amqp://:@host/vh",
        ] {
            let c = parse(uri);
            let back = parse(&c.redacted_uri());
            assert_eq!(
                (back.tls, &back.username, &back.host, back.port, &back.vhost),
                (c.tls, &c.username, &c.host, c.port, &c.vhost),
                "{uri}"
            );
            assert_eq!(back.password.expose(), "***");
        }
    }

    #[test]
    fn from_env_vars_precedence() {
        let amqp = Some("amqp://a-host".to_owned());
        let rabbit = Some("amqps://r-host".to_owned());
        let from = ConnectionConfig::from_env_vars;

        assert_eq!(from(None, None).unwrap(), ConnectionConfig::default());
        assert_eq!(from(amqp.clone(), rabbit.clone()).unwrap().host, "a-host");
        assert_eq!(from(amqp.clone(), None).unwrap().host, "a-host");
        let c = from(None, rabbit.clone()).unwrap();
        assert_eq!((c.host.as_str(), c.tls), ("r-host", true));
        // Empty counts as unset.
        assert_eq!(
            from(Some(String::new()), rabbit.clone()).unwrap().host,
            "r-host"
        );
        assert_eq!(
            from(Some(" ".into()), Some(String::new())).unwrap(),
            ConnectionConfig::default()
        );
        // A bad AMQP_URL is an error, not a fallback, and the error names the variable.
        match from(Some(format!("amqp://u:{PW}@h/a/b")), rabbit) {
            Err(ConfigError::InvalidUri(reason)) => {
                assert!(reason.starts_with("AMQP_URL: "), "{reason}");
                assert!(!reason.contains(PW));
            }
            other => panic!("expected InvalidUri, got {other:?}"),
        }
        match from(None, Some("amqp://h:x".into())) {
            Err(ConfigError::InvalidUri(reason)) => {
                assert!(reason.starts_with("RABBITMQ_URL: "), "{reason}")
            }
            other => panic!("expected InvalidUri, got {other:?}"),
        }
        assert!(matches!(
            from(Some("amqp://h?heartbeat=x".into()), None),
            Err(ConfigError::InvalidParameter { .. })
        ));
    }

    #[test]
    fn from_env_reads_the_process_environment() {
        // Only reads the environment (mutating it would race with other tests).
        let read = |name| std::env::var(name).ok();
        let expected = ConnectionConfig::from_env_vars(read("AMQP_URL"), read("RABBITMQ_URL"));
        assert_eq!(ConnectionConfig::from_env(), expected);
    }
}
