//! TLS (`amqps://`) against private RabbitMQ nodes with TLS listeners and certificates made for the
//! test (tests/support_node): verification, typed failures, client certificates, SASL EXTERNAL.
//!
//! Two nodes, each started by the first test that needs it and shared by the file: `tls` (peer
//! verification on, client certificate optional, EXTERNAL enabled) and `mtls` (client certificate
//! required). Neither is the shared broker on 5672.

mod support_node;

use std::{
    future::Future,
    sync::OnceLock,
    time::{Duration, Instant},
};

use coney::{
    config::AuthMechanism,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    BasicProperties, Confirmation, Connection, ConnectionConfig, Error, FieldTable, TlsConfig,
    TlsErrorKind,
};
use support_node::{
    pki::{self, Pki, CLIENT_CN},
    NodeSpec, PrivateNode,
};

/// The hard limit on each test's body (node start-up is bounded separately).
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How fast a certificate failure must be reported: no hang, no retry loop.
const QUICK: Duration = Duration::from_secs(5);

struct TlsNode {
    node: PrivateNode,
    pki: Pki,
}

impl TlsNode {
    fn tls_port(&self) -> u16 {
        self.node.amqps_port.expect("TLS listener")
    }

    /// `amqps://guest:guest@{host}:{tls port}/%2f?{query}`.
    fn amqps(&self, host: &str, query: &str) -> String {
        format!("amqps://guest:guest@{host}:{}/%2f?{query}", self.tls_port())
    }

    /// The CA trusted, everything else default.
    fn config(&self, host: &str) -> ConnectionConfig {
        ConnectionConfig::from_uri(&self.amqps(host, ""))
            .unwrap()
            .with_tls(TlsConfig::new().trust_ca_file(&self.pki.ca))
    }
}

fn spec(label: &'static str, fail_if_no_peer_cert: bool) -> NodeSpec {
    let mut config: Vec<String> = [
        "ssl_options.cacertfile = {dir}/pki/ca.pem",
        "ssl_options.certfile = {dir}/pki/server.pem",
        "ssl_options.keyfile = {dir}/pki/server.key",
        "ssl_options.verify = verify_peer",
        "auth_mechanisms.1 = PLAIN",
        "auth_mechanisms.2 = AMQPLAIN",
        "auth_mechanisms.3 = EXTERNAL",
        "ssl_cert_login_from = common_name",
    ]
    .map(String::from)
    .to_vec();
    config.push(format!(
        "ssl_options.fail_if_no_peer_cert = {fail_if_no_peer_cert}"
    ));
    NodeSpec {
        label,
        plugins: vec!["rabbitmq_auth_mechanism_ssl"],
        config,
        tls_listener: true,
    }
}

fn start(label: &'static str, fail_if_no_peer_cert: bool) -> TlsNode {
    let node = PrivateNode::start(&spec(label, fail_if_no_peer_cert), |dir| {
        pki::generate(dir);
    });
    // The user SASL EXTERNAL maps the client certificate to; its password is never used.
    let password = format!("unused-{}", std::process::id());
    node.ctl(&["add_user", CLIENT_CN, &password]);
    node.ctl(&["set_permissions", "-p", "/", CLIENT_CN, ".*", ".*", ".*"]);
    let pki = Pki::at(&node.dir);
    TlsNode { node, pki }
}

/// Verification on, client certificate optional, EXTERNAL enabled.
fn tls_node() -> &'static TlsNode {
    static NODE: OnceLock<TlsNode> = OnceLock::new();
    NODE.get_or_init(|| start("tls", false))
}

/// Client certificate required (`fail_if_no_peer_cert = true`).
fn mtls_node() -> &'static TlsNode {
    static NODE: OnceLock<TlsNode> = OnceLock::new();
    NODE.get_or_init(|| start("mtls", true))
}

async fn within<F: Future>(limit: Duration, body: F) -> F::Output {
    match tokio::time::timeout(limit, body).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within {limit:?}"),
    }
}

/// Connects, expecting a failure within `limit`; returns the error.
async fn connect_err(config: ConnectionConfig, limit: Duration) -> Error {
    let started = Instant::now();
    let result = Connection::connect_with(config).await;
    let elapsed = started.elapsed();
    let err = result.expect_err("the connection should fail");
    assert!(elapsed < limit, "took {elapsed:?} to fail with {err}");
    eprintln!("failed as expected in {elapsed:?}: {err}");
    err
}

fn assert_tls_kind(err: &Error, kind: TlsErrorKind) {
    assert_eq!(err.tls_kind(), Some(kind), "{err:?}");
    assert!(!err.is_recoverable(), "{err:?}");
    assert!(err.is_connection_closed(), "{err:?}");
}

/// Declares an exclusive server-named queue, publishes `bodies` with confirms, consumes them back.
async fn round_trip(connection: &Connection, bodies: &[Vec<u8>]) {
    let channel = connection.open_channel().await.expect("open channel");
    let queue = channel
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::new(),
        )
        .await
        .expect("declare")
        .queue;
    channel.confirm_select().await.expect("confirm.select");
    let mut confirms = Vec::new();
    for body in bodies {
        confirms.push(
            channel
                .basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    BasicProperties::default(),
                    body.clone(),
                )
                .await
                .expect("publish"),
        );
    }
    for confirm in confirms {
        assert_eq!(confirm.await.expect("confirm"), Confirmation::Ack);
    }
    channel
        .basic_qos(100, Default::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions::default(),
            FieldTable::new(),
        )
        .await
        .expect("consume");
    for expected in bodies {
        let delivery = consumer
            .next()
            .await
            .expect("a delivery")
            .expect("no error");
        assert!(delivery.body == expected[..], "body differs");
        delivery.ack().await.expect("ack");
    }
}

#[tokio::test]
async fn amqps_publish_and_consume_with_trusted_ca() {
    let node = tls_node();
    within(TEST_TIMEOUT, async {
        let connection = Connection::connect_with(node.config("localhost"))
            .await
            .expect("connect over TLS");
        let bodies: Vec<Vec<u8>> = (0..10).map(|i| format!("hello {i}").into_bytes()).collect();
        round_trip(&connection, &bodies).await;
        connection.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn amqps_uri_parameters_trust_the_ca_and_ip_san_verifies() {
    let node = tls_node();
    within(TEST_TIMEOUT, async {
        // 127.0.0.1 is in the server certificate's subject alternative names.
        let uri = node.amqps(
            "127.0.0.1",
            &format!("cacertfile={}", node.pki.ca.display()),
        );
        let connection = Connection::connect(&uri).await.expect("connect over TLS");
        round_trip(&connection, &[b"by uri".to_vec()]).await;
        connection.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn many_confirmed_publishes_and_a_large_message_over_tls() {
    let node = tls_node();
    within(TEST_TIMEOUT, async {
        let connection = Connection::connect_with(node.config("localhost"))
            .await
            .expect("connect");
        // Enough to fill socket buffers, so TLS writes are partial and records wait to be flushed.
        let mut bodies: Vec<Vec<u8>> = (0..2000u32)
            .map(|i| {
                let mut body = i.to_be_bytes().to_vec();
                body.resize(8 * 1024, (i % 251) as u8);
                body
            })
            .collect();
        bodies.push(vec![7u8; 4 * 1024 * 1024]);
        let started = Instant::now();
        round_trip(&connection, &bodies).await;
        eprintln!(
            "2000 x 8 KiB + 4 MiB round trip over TLS in {:?}",
            started.elapsed()
        );
        connection.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn untrusted_ca_is_unknown_issuer() {
    let node = tls_node();
    within(TEST_TIMEOUT, async {
        let other_ca = node
            .config("localhost")
            .with_tls(TlsConfig::new().trust_ca_file(&node.pki.other_ca));
        let err = connect_err(other_ca, QUICK).await;
        assert_tls_kind(&err, TlsErrorKind::UnknownIssuer);

        // The bundled Mozilla roots do not include the test CA either.
        let default_roots = node.config("localhost").with_tls(TlsConfig::new());
        let err = connect_err(default_roots, QUICK).await;
        assert_tls_kind(&err, TlsErrorKind::UnknownIssuer);
    })
    .await;
}

#[tokio::test]
async fn wrong_server_name_is_name_mismatch() {
    let node = tls_node();
    within(TEST_TIMEOUT, async {
        let config = node.config("127.0.0.1").with_tls(
            TlsConfig::new()
                .trust_ca_file(&node.pki.ca)
                .server_name("wrong.example"),
        );
        let err = connect_err(config, QUICK).await;
        assert_tls_kind(&err, TlsErrorKind::NameMismatch);
        assert!(err.to_string().contains("wrong.example"), "{err}");

        // The same through the URI.
        let uri = node.amqps(
            "127.0.0.1",
            &format!(
                "cacertfile={}&server_name_indication=wrong.example",
                node.pki.ca.display()
            ),
        );
        let err = connect_err(ConnectionConfig::from_uri(&uri).unwrap(), QUICK).await;
        assert_tls_kind(&err, TlsErrorKind::NameMismatch);
    })
    .await;
}

#[tokio::test]
async fn amqps_to_the_plaintext_port_is_a_plaintext_peer() {
    let node = tls_node();
    within(TEST_TIMEOUT, async {
        let uri = format!(
            "amqps://guest:guest@localhost:{}/%2f?connection_timeout=2000&cacertfile={}",
            node.node.amqp_port,
            node.pki.ca.display()
        );
        let err = connect_err(ConnectionConfig::from_uri(&uri).unwrap(), QUICK).await;
        assert_tls_kind(&err, TlsErrorKind::PlaintextPeer);
    })
    .await;
}

#[tokio::test]
async fn amqp_to_the_tls_port_fails_clearly_within_the_timeout() {
    let node = tls_node();
    within(TEST_TIMEOUT, async {
        let uri = format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f?connection_timeout=2000",
            node.tls_port()
        );
        let err = connect_err(
            ConnectionConfig::from_uri(&uri).unwrap(),
            Duration::from_secs(3),
        )
        .await;
        match &err {
            Error::Handshake(text) => assert!(text.contains("amqps://"), "{text}"),
            Error::Timeout { .. } => {}
            other => panic!("expected a handshake error or a timeout, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn external_auth_with_a_client_certificate_is_the_certificate_cn() {
    let node = tls_node();
    within(TEST_TIMEOUT, async {
        // No user name or password: EXTERNAL takes the identity from the certificate.
        let uri = format!(
            "amqps://localhost:{}/%2f?auth_mechanism=external&cacertfile={}&certfile={}&keyfile={}",
            node.tls_port(),
            node.pki.ca.display(),
            node.pki.client_cert.display(),
            node.pki.client_key.display()
        );
        let config = ConnectionConfig::from_uri(&uri).unwrap();
        assert_eq!(config.auth_mechanism, AuthMechanism::External);
        let connection = Connection::connect_with(config)
            .await
            .expect("EXTERNAL over TLS");
        round_trip(&connection, &[b"as coney-client".to_vec()]).await;

        let listed = node.node.ctl(&[
            "list_connections",
            "user",
            "auth_mechanism",
            "ssl",
            "--quiet",
        ]);
        assert!(
            listed.lines().any(
                |l| l.split_whitespace().collect::<Vec<_>>() == [CLIENT_CN, "EXTERNAL", "true"]
            ),
            "the broker lists: {listed}"
        );
        connection.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn external_without_a_client_certificate_is_refused() {
    let node = tls_node();
    within(TEST_TIMEOUT, async {
        let config = node
            .config("localhost")
            .with_auth_mechanism(AuthMechanism::External);
        let err = connect_err(config, QUICK).await;
        // RabbitMQ offers EXTERNAL only on connections that presented a certificate.
        assert!(
            matches!(err, Error::Handshake(_) | Error::AuthenticationFailed(_)),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn client_certificate_from_an_untrusted_ca_is_refused() {
    let node = tls_node();
    within(TEST_TIMEOUT, async {
        let config = node.config("localhost").with_tls(
            TlsConfig::new()
                .trust_ca_file(&node.pki.ca)
                .client_cert_files(&node.pki.other_client_cert, &node.pki.other_client_key),
        );
        // Several times: the broker's alert and its reset race (see the mutual TLS test).
        for _ in 0..5 {
            let err = connect_err(config.clone(), QUICK).await;
            assert_tls_kind(&err, TlsErrorKind::HandshakeRefused);
            assert!(err.to_string().contains("client certificate"), "{err}");
        }
    })
    .await;
}

#[tokio::test]
async fn mutual_tls_required_and_no_client_certificate_is_refused() {
    let node = mtls_node();
    within(TEST_TIMEOUT, async {
        // In TLS 1.3 the broker refuses after the client's handshake is done: its alert may arrive,
        // or be lost in its reset (RabbitMQ closes with SO_LINGER 0). Both must read the same.
        for _ in 0..5 {
            let err = connect_err(node.config("localhost"), QUICK).await;
            assert_tls_kind(&err, TlsErrorKind::HandshakeRefused);
            assert!(err.to_string().contains("client certificate"), "{err}");
        }

        // With the certificate (PEM in memory this time), the same broker lets us in.
        let cert = std::fs::read(&node.pki.client_cert).unwrap();
        let key = std::fs::read(&node.pki.client_key).unwrap();
        let config = node.config("localhost").with_tls(
            TlsConfig::new()
                .trust_ca_file(&node.pki.ca)
                .client_cert(cert, key),
        );
        let connection = Connection::connect_with(config)
            .await
            .expect("connect with a client certificate");
        round_trip(&connection, &[b"mutual".to_vec()]).await;
        connection.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn danger_disable_verification_accepts_an_unverifiable_server() {
    let node = tls_node();
    within(TEST_TIMEOUT, async {
        let config = node.config("127.0.0.1").with_tls(
            TlsConfig::new()
                .server_name("wrong.example")
                .danger_disable_verification(),
        );
        let connection = Connection::connect_with(config).await.expect("connect");
        connection.close().await.expect("close");

        let uri = node.amqps("localhost", "verify=verify_none");
        let connection = Connection::connect(&uri).await.expect("connect");
        connection.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn unusable_certificate_files_fail_before_connecting() {
    within(TEST_TIMEOUT, async {
        let dir = std::env::temp_dir().join(format!("coney-tls-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        let secret = "MC4CAQAwBQYDK2VwBCIEI-not-a-real-key-SECRET";
        std::fs::write(&not_pem, format!("-----BEGIN PRIVATE KEY-----\n{secret}\n")).unwrap();
        // Port 1 on localhost: nothing listens, so a Connect error would mean we tried the network.
        let base = ConnectionConfig::from_uri("amqps://localhost:1/%2f").unwrap();
        let cases = [
            TlsConfig::new().trust_ca_file(dir.join("missing-ca.pem")),
            TlsConfig::new().trust_ca_file(&not_pem),
            TlsConfig::new().client_cert_files(dir.join("missing.pem"), &not_pem),
            TlsConfig::new().client_cert(b"not pem".to_vec(), std::fs::read(&not_pem).unwrap()),
        ];
        for tls in cases {
            let err = connect_err(base.clone().with_tls(tls), QUICK).await;
            assert_tls_kind(&err, TlsErrorKind::CertificateFile);
            assert!(!format!("{err} {err:?}").contains(secret), "{err:?}");
        }
        // certfile without keyfile is refused when the URI is parsed.
        assert!(ConnectionConfig::from_uri("amqps://localhost/%2f?certfile=/c.pem").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}
