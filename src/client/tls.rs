//! TLS settings for `amqps://` connections, and how TLS failures are reported.
//!
//! A [`TlsConfig`] is a plain value: building one reads no file and opens no socket. Files are read and
//! the `rustls` configuration is built when a connection is made, so a bad file fails that connection
//! with [`Error::Tls`] of kind [`TlsErrorKind::CertificateFile`] before any network traffic, and a
//! rotated certificate is picked up by the next connection.

use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, Once},
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{ring, CryptoProvider},
    pki_types::{
        pem::{self, PemObject},
        CertificateDer, PrivateKeyDer, ServerName, UnixTime,
    },
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, InvalidMessage,
    RootCertStore, SignatureScheme,
};

use crate::{
    config::{ConfigError, TlsParams},
    error::{Error, TlsErrorKind},
};

/// How an `amqps://` connection sets up TLS: which certificate authorities to trust, which client
/// certificate to present, which name to verify the server's certificate against.
///
/// The default ([`TlsConfig::new`]) is the secure one: the server's certificate must chain to one of
/// the bundled Mozilla root certificates ([`webpki-roots`](https://docs.rs/webpki-roots)) and be valid
/// for the host name connected to, which is also sent in SNI. TLS 1.2 and 1.3 are offered; nothing older.
/// A broker whose certificate comes from a private CA needs that CA trusted: its file
/// ([`trust_ca_file`](TlsConfig::trust_ca_file), the URI's `cacertfile`), or the operating system's
/// trust store where it is installed ([`trust_system_roots`](TlsConfig::trust_system_roots)).
///
/// ```
/// use coney::{ConnectionConfig, TlsConfig};
///
/// let tls = TlsConfig::new()
///     .trust_ca_file("/etc/rabbitmq/ca.pem")
///     .client_cert_files("/etc/app/client.pem", "/etc/app/client.key");
/// let config = ConnectionConfig::from_uri("amqps://rabbit.example.com/prod")?.with_tls(tls);
/// assert!(config.tls);
/// # Ok::<(), coney::config::ConfigError>(())
/// ```
///
/// Set it with [`ConnectionConfig::with_tls`](crate::ConnectionConfig::with_tls). Without one, an `amqps://` connection uses
/// [`TlsConfig::from_params`] of the URI's `cacertfile`, `certfile`, `keyfile`, `verify` and
/// `server_name_indication` parameters. `Debug` never shows key material.
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// CA certificates to trust instead of the bundled roots; empty means the bundled roots, unless
    /// `system_roots` is set.
    trusted_cas: Vec<PemSource>,
    /// Trust the operating system's CA certificates (instead of the bundled roots).
    system_roots: bool,
    client_cert: Option<(PemSource, PemSource)>,
    rustls: Option<Arc<ClientConfig>>,
    server_name: Option<String>,
    disable_sni: bool,
    danger_disable_verification: bool,
}

impl TlsConfig {
    /// The secure default: bundled Mozilla roots, full certificate and host name verification, SNI, no
    /// client certificate.
    pub fn new() -> TlsConfig {
        TlsConfig::default()
    }

    /// The settings an AMQP URI's query asks for, named as the Erlang client names them:
    ///
    /// | parameter | effect |
    /// |---|---|
    /// | `cacertfile` | [`trust_ca_file`](TlsConfig::trust_ca_file) |
    /// | `certfile` and `keyfile` | [`client_cert_files`](TlsConfig::client_cert_files) (both or neither) |
    /// | `verify=verify_none` | [`danger_disable_verification`](TlsConfig::danger_disable_verification), with a warning |
    /// | `verify=verify_peer` | the default |
    /// | `server_name_indication=NAME` | [`server_name`](TlsConfig::server_name) |
    /// | `server_name_indication=disable` | [`disable_sni`](TlsConfig::disable_sni) |
    ///
    /// A `certfile` without a `keyfile` (or the reverse), or a `verify` other than `verify_peer` and
    /// `verify_none`, is [`ConfigError::InvalidParameter`].
    pub fn from_params(params: &TlsParams) -> Result<TlsConfig, ConfigError> {
        let mut tls = TlsConfig::new();
        if let Some(path) = &params.cacertfile {
            tls = tls.trust_ca_file(path);
        }
        match (&params.certfile, &params.keyfile) {
            (Some(cert), Some(key)) => tls = tls.client_cert_files(cert, key),
            (None, None) => {}
            (Some(_), None) => return Err(missing("keyfile", "certfile")),
            (None, Some(_)) => return Err(missing("certfile", "keyfile")),
        }
        match params.verify.as_deref() {
            None | Some("verify_peer") => {}
            Some("verify_none") => tls = tls.danger_disable_verification(),
            Some(other) => {
                return Err(ConfigError::InvalidParameter {
                    name: "verify".to_owned(),
                    value: other.to_owned(),
                })
            }
        }
        match params.server_name_indication.as_deref() {
            Some("disable") => tls = tls.disable_sni(),
            Some(name) => tls = tls.server_name(name),
            None => {}
        }
        Ok(tls)
    }

    /// Trusts the CA certificates in the PEM file at `path` **instead of** the bundled roots, like the
    /// Erlang client's `cacertfile`. Call it again to trust several files.
    pub fn trust_ca_file(mut self, path: impl Into<PathBuf>) -> TlsConfig {
        self.trusted_cas.push(PemSource::File(path.into()));
        self
    }

    /// Trusts the CA certificates in `pem` (PEM text) instead of the bundled roots.
    pub fn trust_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> TlsConfig {
        self.trusted_cas.push(PemSource::Memory(pem.into()));
        self
    }

    /// Trusts the operating system's CA certificates **instead of** the bundled roots (together with
    /// any [`trust_ca_file`](TlsConfig::trust_ca_file) or [`trust_ca_pem`](TlsConfig::trust_ca_pem)),
    /// as the Go client does by default: a CA installed system-wide (with `update-ca-certificates` or
    /// `update-ca-trust`) is then trusted without naming its file.
    ///
    /// The store is read by [`rustls-native-certs`](https://docs.rs/rustls-native-certs) each time a
    /// connection is made (so a CA added later is seen by the next connection; reading a bundle of a
    /// few hundred certificates takes some milliseconds, on the connecting task's thread):
    /// - If `SSL_CERT_FILE` or `SSL_CERT_DIR` is set, only the file and directory they name are read,
    ///   on every platform (OpenSSL and Go would still read the other default location).
    /// - Otherwise, on Linux and other Unix systems: the first CA bundle found at the usual paths
    ///   (`/etc/ssl/certs/ca-certificates.crt`, `/etc/pki/tls/certs/ca-bundle.crt`, ...) and the
    ///   usual certificate directories (the `openssl-probe` crate's list).
    /// - On macOS: certificates in the keychains whose trust settings make them roots (a CA imported
    ///   without `security add-trusted-cert` is not); on Windows: the current user's `ROOT` store.
    ///   Neither is tested by this crate's CI, which runs on Linux; for the platform's own verifier
    ///   (revocation, intermediates from the platform store) give
    ///   [`with_rustls_config`](TlsConfig::with_rustls_config) a configuration from
    ///   [`rustls-platform-verifier`](https://docs.rs/rustls-platform-verifier).
    ///
    /// A store from which no certificate can be read fails the connection with [`Error::Tls`] of kind
    /// [`TlsErrorKind::CertificateFile`] before any network traffic. Certificates in it that cannot be
    /// used are skipped (the first time, with a warning). There is no URI parameter for it.
    pub fn trust_system_roots(mut self) -> TlsConfig {
        self.system_roots = true;
        self
    }

    /// Presents a client certificate for mutual TLS (and for [SASL
    /// EXTERNAL](crate::config::AuthMechanism::External)): `cert_chain_pem` holds the certificate
    /// followed by any intermediates, `key_pem` its private key (PKCS#8, PKCS#1 or SEC1), both PEM.
    pub fn client_cert(
        mut self,
        cert_chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> TlsConfig {
        self.client_cert = Some((
            PemSource::Memory(cert_chain_pem.into()),
            PemSource::Memory(key_pem.into()),
        ));
        self
    }

    /// Like [`TlsConfig::client_cert`], reading the PEM files at `cert_chain_path` and `key_path` when
    /// a connection is made.
    pub fn client_cert_files(
        mut self,
        cert_chain_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> TlsConfig {
        self.client_cert = Some((
            PemSource::File(cert_chain_path.into()),
            PemSource::File(key_path.into()),
        ));
        self
    }

    /// Uses `config` as it is, for full control (other roots, a revocation list, a different crypto
    /// provider, session caching). Trust, client certificate and verification settings of this
    /// `TlsConfig` are then ignored; [`server_name`](TlsConfig::server_name) still applies, and so
    /// do `config.enable_sni` and [`disable_sni`](TlsConfig::disable_sni).
    pub fn with_rustls_config(mut self, config: Arc<ClientConfig>) -> TlsConfig {
        self.rustls = Some(config);
        self
    }

    /// Verifies the server's certificate against `name` (and sends it in SNI) instead of the host
    /// connected to: for a broker reached by IP address or through a tunnel.
    pub fn server_name(mut self, name: impl Into<String>) -> TlsConfig {
        self.server_name = Some(name.into());
        self
    }

    /// Sends no SNI extension. The certificate is still verified against the host name.
    pub fn disable_sni(mut self) -> TlsConfig {
        self.disable_sni = true;
        self
    }

    /// **Dangerous**: accepts any server certificate for any name, so anyone on the path can read and
    /// change the traffic. For a test broker with a throw-away certificate only. The first such
    /// connection in the process logs a warning.
    pub fn danger_disable_verification(mut self) -> TlsConfig {
        self.danger_disable_verification = true;
        self
    }

    /// Whether [`TlsConfig::danger_disable_verification`] was asked for.
    pub fn is_verification_disabled(&self) -> bool {
        self.danger_disable_verification && self.rustls.is_none()
    }

    /// Builds the `rustls` configuration and the name to verify for a connection to `host`, reading
    /// the PEM files now.
    pub(crate) fn prepare(
        &self,
        host: &str,
    ) -> Result<(Arc<ClientConfig>, ServerName<'static>), Error> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_owned()).map_err(|_| {
            Error::InvalidArgument(format!("{name:?} is not a valid TLS server name"))
        })?;
        let config = match &self.rustls {
            Some(config) => config.clone(),
            None => Arc::new(self.build()?),
        };
        let config = if self.disable_sni && config.enable_sni {
            let mut config = (*config).clone();
            config.enable_sni = false;
            Arc::new(config)
        } else {
            config
        };
        Ok((config, server_name))
    }

    fn build(&self) -> Result<ClientConfig, Error> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            // TLS 1.2 is the minimum; rustls implements nothing older.
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| tls_error(TlsErrorKind::Other, e.to_string()))?;
        let builder = if self.danger_disable_verification {
            static WARNING: Once = Once::new();
            WARNING.call_once(|| {
                tracing::warn!(
                    "TLS certificate verification is disabled (danger_disable_verification or \
                     verify=verify_none): the broker's identity is not checked"
                )
            });
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(self.root_store()?)
        };
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = load_certificates(cert, "client certificate")?;
                let key = load_key(key)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    tls_error(
                        TlsErrorKind::CertificateFile,
                        format!(
                            "the client certificate and key cannot be used ({}): {e}",
                            cert.describe()
                        ),
                    )
                })?
            }
        };
        config.enable_sni = !self.disable_sni;
        Ok(config)
    }

    fn root_store(&self) -> Result<RootCertStore, Error> {
        if self.trusted_cas.is_empty() && !self.system_roots {
            return Ok(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            });
        }
        let mut store = RootCertStore::empty();
        if self.system_roots {
            add_system_roots(&mut store)?;
        }
        for source in &self.trusted_cas {
            for cert in load_certificates(source, "CA certificate")? {
                store.add(cert).map_err(|e| {
                    tls_error(
                        TlsErrorKind::CertificateFile,
                        format!(
                            "a CA certificate in {} is not usable: {e}",
                            source.describe()
                        ),
                    )
                })?;
            }
        }
        Ok(store)
    }
}

impl PartialEq for TlsConfig {
    /// Equal settings; a [`rustls` configuration](TlsConfig::with_rustls_config) is compared by
    /// identity (the same `Arc`).
    fn eq(&self, other: &TlsConfig) -> bool {
        let same_rustls = match (&self.rustls, &other.rustls) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_rustls
            && self.trusted_cas == other.trusted_cas
            && self.system_roots == other.system_roots
            && self.client_cert == other.client_cert
            && self.server_name == other.server_name
            && self.disable_sni == other.disable_sni
            && self.danger_disable_verification == other.danger_disable_verification
    }
}

impl Eq for TlsConfig {}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TlsConfig");
        if self.trusted_cas.is_empty() && !self.system_roots {
            d.field("trust", &"bundled webpki roots");
        } else {
            if self.system_roots {
                d.field("trust_system_roots", &true);
            }
            d.field("trust", &self.trusted_cas);
        }
        d.field(
            "client_cert",
            &self.client_cert.as_ref().map(|(cert, _)| cert),
        )
        .field("rustls_config", &self.rustls.as_ref().map(|_| "custom"))
        .field("server_name", &self.server_name)
        .field("disable_sni", &self.disable_sni)
        .field(
            "danger_disable_verification",
            &self.danger_disable_verification,
        )
        .finish()
    }
}

/// Where PEM text comes from. `Debug` shows a path, never the contents (which may be a private key).
#[derive(Clone, PartialEq, Eq)]
enum PemSource {
    File(PathBuf),
    Memory(Vec<u8>),
}

impl PemSource {
    fn read(&self, what: &str) -> Result<Vec<u8>, Error> {
        match self {
            PemSource::File(path) => std::fs::read(path).map_err(|e| {
                tls_error(
                    TlsErrorKind::CertificateFile,
                    format!("cannot read the {what} file {}: {e}", path.display()),
                )
            }),
            PemSource::Memory(pem) => Ok(pem.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            PemSource::File(path) => format!("file {}", path.display()),
            PemSource::Memory(_) => "PEM given in memory".to_owned(),
        }
    }
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PemSource::File(path) => write!(f, "{path:?}"),
            PemSource::Memory(pem) => write!(f, "<{} bytes of PEM>", pem.len()),
        }
    }
}

fn load_certificates(
    source: &PemSource,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = source.read(what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            tls_error(
                TlsErrorKind::CertificateFile,
                format!(
                    "the {what} {} is not valid PEM: {}",
                    source.describe(),
                    pem_problem(&e)
                ),
            )
        })?;
    if certs.is_empty() {
        return Err(tls_error(
            TlsErrorKind::CertificateFile,
            format!("no certificate found in the {what} {}", source.describe()),
        ));
    }
    Ok(certs)
}

/// Adds the operating system's CA certificates to `store` ([`TlsConfig::trust_system_roots`]).
fn add_system_roots(store: &mut RootCertStore) -> Result<(), Error> {
    let found = rustls_native_certs::load_native_certs();
    let (added, unusable) = store.add_parsable_certificates(found.certs);
    let problems = found
        .errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if added == 0 {
        return Err(tls_error(
            TlsErrorKind::CertificateFile,
            if problems.is_empty() {
                "the operating system's trust store holds no usable CA certificate".to_owned()
            } else {
                format!("the operating system's trust store could not be read: {problems}")
            },
        ));
    }
    static WARNING: Once = Once::new();
    if unusable > 0 || !problems.is_empty() {
        WARNING.call_once(|| {
            tracing::warn!(
            added,
            unusable,
                problems = %problems,
                "some of the operating system's CA certificates could not be used (not warned again)"
            )
        });
    }
    Ok(())
}

/// What is wrong with PEM text, without quoting it.
fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line".to_owned(),
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a section is not valid base64".to_owned(),
        pem::Error::SectionTooLarge => "a section is too large".to_owned(),
        other => other.to_string(),
    }
}

fn load_key(source: &PemSource) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = source.read("private key")?;
    // The PEM parser's messages may quote the input; for a key, say only what was expected.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        tls_error(
            TlsErrorKind::CertificateFile,
            format!(
                "no PEM private key (PKCS#8, PKCS#1 or SEC1) found in the {}",
                source.describe()
            ),
        )
    })
}

fn missing(absent: &str, present: &str) -> ConfigError {
    ConfigError::InvalidParameter {
        name: absent.to_owned(),
        value: format!("<missing; required with {present}>"),
    }
}

fn tls_error(kind: TlsErrorKind, message: String) -> Error {
    Error::Tls { kind, message }
}

/// Turns an I/O error from the TLS stream into [`Error::Tls`] when `rustls` caused it, naming what
/// failed; other I/O errors stay [`Error::Io`].
///
/// tokio-rustls reports `rustls` errors as `io::Error`s of kind `InvalidData` wrapping a
/// [`rustls::Error`]; a TLS 1.3 server that refuses the client certificate does so after the client's
/// handshake has finished, so its alert arrives on the first read of the AMQP handshake.
pub(crate) fn io_error(e: std::io::Error) -> Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => from_rustls(tls),
        None => Error::io(e),
    }
}

/// Whether `e` carries a [`rustls::Error`].
pub(crate) fn is_rustls_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// The broker closed or reset the connection after the TLS handshake completed and before it
/// answered the AMQP protocol header.
///
/// In TLS 1.3 the client's side of the handshake is over before the server has checked the client
/// certificate; a server that rejects it (or requires one) sends an alert and closes. RabbitMQ
/// closes with SO_LINGER 0, so the alert is often lost in the reset, and this is all that is seen.
pub(crate) fn closed_after_handshake() -> Error {
    tls_error(
        TlsErrorKind::HandshakeRefused,
        "the broker closed the connection right after the TLS handshake, before answering the \
         AMQP header: it most likely refused the client certificate, or requires one"
            .to_owned(),
    )
}

/// An I/O error while the TLS handshake itself runs: as [`io_error`], and an early end of stream
/// means the server gave up on the handshake.
pub(crate) fn handshake_io_error(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof && !is_rustls_error(&e) {
        return tls_error(
            TlsErrorKind::HandshakeRefused,
            "the server closed the connection during the TLS handshake (is this a TLS port?)"
                .to_owned(),
        );
    }
    io_error(e)
}

fn from_rustls(e: &rustls::Error) -> Error {
    use rustls::Error as E;
    let (kind, message) = match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => (
            TlsErrorKind::UnknownIssuer,
            "the server's certificate is not signed by a trusted certificate authority \
             (trust its CA with trust_ca_file or cacertfile, or with trust_system_roots if it is \
             installed in the system's trust store)"
                .to_owned(),
        ),
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => (
            TlsErrorKind::NameMismatch,
            format!("the server's certificate is not valid for the name connected to: {e}"),
        ),
        E::InvalidCertificate(_) => (
            TlsErrorKind::BadCertificate,
            format!("the server's certificate was rejected: {e}"),
        ),
        E::AlertReceived(alert) => (TlsErrorKind::HandshakeRefused, refused(*alert)),
        E::InvalidMessage(
            InvalidMessage::InvalidContentType | InvalidMessage::UnknownProtocolVersion,
        ) => (
            TlsErrorKind::PlaintextPeer,
            "the server did not answer with TLS (is this a plain AMQP port? use amqp:// for it, \
             or the broker's TLS port, usually 5671)"
                .to_owned(),
        ),
        other => (TlsErrorKind::Other, other.to_string()),
    };
    tls_error(kind, message)
}

fn refused(alert: AlertDescription) -> String {
    let why = match alert {
        AlertDescription::CertificateRequired => {
            "the broker requires a client certificate (client_cert, or certfile and keyfile)"
        }
        AlertDescription::HandshakeFailure => {
            "no common TLS version or cipher suite, or the broker requires a client certificate"
        }
        AlertDescription::BadCertificate
        | AlertDescription::UnknownCA
        | AlertDescription::CertificateUnknown
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateExpired
        | AlertDescription::CertificateRevoked
        | AlertDescription::AccessDenied => "the broker did not accept the client certificate",
        AlertDescription::ProtocolVersion => "no TLS version both sides support",
        _ => "the broker ended the TLS session",
    };
    format!("TLS alert {alert:?} from the broker: {why}")
}

/// Accepts any certificate for any name; still checks that the server holds the key it presents.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn kind_of(e: rustls::Error) -> Option<TlsErrorKind> {
        io_error(io::Error::new(io::ErrorKind::InvalidData, e)).tls_kind()
    }

    #[test]
    fn rustls_errors_map_to_kinds() {
        use rustls::Error as E;
        let cases = [
            (
                E::InvalidCertificate(CertificateError::UnknownIssuer),
                TlsErrorKind::UnknownIssuer,
            ),
            (
                E::InvalidCertificate(CertificateError::NotValidForName),
                TlsErrorKind::NameMismatch,
            ),
            (
                E::InvalidCertificate(CertificateError::Expired),
                TlsErrorKind::BadCertificate,
            ),
            (
                E::AlertReceived(AlertDescription::CertificateRequired),
                TlsErrorKind::HandshakeRefused,
            ),
            (
                E::AlertReceived(AlertDescription::UnknownCA),
                TlsErrorKind::HandshakeRefused,
            ),
            (
                E::InvalidMessage(InvalidMessage::InvalidContentType),
                TlsErrorKind::PlaintextPeer,
            ),
            (E::DecryptError, TlsErrorKind::Other),
        ];
        for (error, kind) in cases {
            assert_eq!(kind_of(error.clone()), Some(kind), "{error:?}");
        }
    }

    #[test]
    fn refusals_say_why() {
        let e = io_error(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        ));
        assert!(
            e.to_string().contains("requires a client certificate"),
            "{e}"
        );
    }

    #[test]
    fn plain_io_errors_stay_io() {
        let e = io_error(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        assert!(matches!(e, Error::Io(_)), "{e:?}");
        assert!(e.is_recoverable());
    }

    #[test]
    fn end_of_stream_in_the_tls_handshake_is_a_refusal() {
        let e = handshake_io_error(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "tls handshake eof",
        ));
        assert_eq!(e.tls_kind(), Some(TlsErrorKind::HandshakeRefused), "{e:?}");
        let e = handshake_io_error(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert_eq!(e.tls_kind(), Some(TlsErrorKind::HandshakeRefused), "{e:?}");
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = "-----BEGIN PRIVATE KEY-----\nSECRETKEYBYTES\n-----END PRIVATE KEY-----\n";
        let tls = TlsConfig::new().client_cert("cert", key);
        let text = format!("{tls:?} {tls:#?}");
        assert!(!text.contains("SECRETKEYBYTES"), "{text}");
        let config = crate::ConnectionConfig::default().with_tls(tls);
        assert!(!format!("{config:?}").contains("SECRETKEYBYTES"));
    }

    #[test]
    fn system_roots_are_part_of_the_settings() {
        let bundled = TlsConfig::new();
        let system = TlsConfig::new().trust_system_roots();
        assert_ne!(bundled, system);
        assert_eq!(system, TlsConfig::new().trust_system_roots());
        assert!(format!("{bundled:?}").contains("bundled webpki roots"));
        let text = format!("{system:?}");
        assert!(
            text.contains("trust_system_roots") && !text.contains("bundled"),
            "{text}"
        );
    }

    #[test]
    fn from_params_follows_the_erlang_client() {
        let params = TlsParams {
            cacertfile: Some("/ca.pem".into()),
            certfile: Some("/c.pem".into()),
            keyfile: Some("/k.pem".into()),
            verify: Some("verify_peer".into()),
            server_name_indication: Some("rabbit.example".into()),
        };
        assert_eq!(
            TlsConfig::from_params(&params).unwrap(),
            TlsConfig::new()
                .trust_ca_file("/ca.pem")
                .client_cert_files("/c.pem", "/k.pem")
                .server_name("rabbit.example")
        );
        let none = TlsParams {
            verify: Some("verify_none".into()),
            server_name_indication: Some("disable".into()),
            ..Default::default()
        };
        let tls = TlsConfig::from_params(&none).unwrap();
        assert!(tls.is_verification_disabled());
        assert_eq!(
            tls,
            TlsConfig::new().danger_disable_verification().disable_sni()
        );
        assert_eq!(
            TlsConfig::from_params(&TlsParams::default()).unwrap(),
            TlsConfig::new()
        );
        for (params, missing) in [
            (
                TlsParams {
                    certfile: Some("/c.pem".into()),
                    ..Default::default()
                },
                "keyfile",
            ),
            (
                TlsParams {
                    keyfile: Some("/k.pem".into()),
                    ..Default::default()
                },
                "certfile",
            ),
        ] {
            match TlsConfig::from_params(&params) {
                Err(ConfigError::InvalidParameter { name, .. }) => assert_eq!(name, missing),
                other => panic!("expected InvalidParameter, got {other:?}"),
            }
        }
    }

    #[test]
    fn prepare_builds_a_verifying_config_with_sni() {
        let (config, name) = TlsConfig::new().prepare("rabbit.example").unwrap();
        assert!(config.enable_sni);
        assert_eq!(name, ServerName::try_from("rabbit.example").unwrap());
        let (_, name) = TlsConfig::new().prepare("127.0.0.1").unwrap();
        assert!(matches!(name, ServerName::IpAddress(_)));
        let (config, name) = TlsConfig::new()
            .server_name("other.example")
            .disable_sni()
            .prepare("10.0.0.1")
            .unwrap();
        assert!(!config.enable_sni);
        assert_eq!(name, ServerName::try_from("other.example").unwrap());
        assert!(TlsConfig::new()
            .danger_disable_verification()
            .prepare("h")
            .is_ok());
        assert!(matches!(
            TlsConfig::new().prepare("not a name!"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn a_custom_rustls_config_is_used_as_is() {
        let custom = Arc::new(
            ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        );
        let tls = TlsConfig::new()
            .trust_ca_file("/never/read.pem")
            .with_rustls_config(custom.clone());
        let (config, _) = tls.prepare("h").unwrap();
        assert!(Arc::ptr_eq(&config, &custom));
        assert_eq!(tls.clone(), tls);
        assert_ne!(
            tls,
            TlsConfig::new().with_rustls_config(Arc::new((*custom).clone()))
        );
        let (config, _) = tls.disable_sni().prepare("h").unwrap();
        assert!(!config.enable_sni);
    }
}
