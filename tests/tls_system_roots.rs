//! [`TlsConfig::trust_system_roots`] against a private RabbitMQ node with a TLS listener and a test CA
//! (tests/support_node). The operating system's trust store is pointed at the test CA, or at another
//! one, through `SSL_CERT_FILE`, which is read (as OpenSSL reads it) each time a connection is made.
//!
//! One test in a binary of its own, because it changes the process's environment: no other test runs
//! beside it, and no connection is being made while a variable changes. Do not add a second test to
//! this file; it would run on another thread while the environment changes.

mod support_node;

use std::{path::Path, time::Duration};

use coney::{Connection, ConnectionConfig, Error, TlsConfig, TlsErrorKind};
use support_node::{
    pki::{self, Pki},
    NodeSpec, PrivateNode,
};

/// The hard limit on each connection attempt (node start-up is bounded separately).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);

fn tls_node() -> PrivateNode {
    let config = [
        "ssl_options.cacertfile = {dir}/pki/ca.pem",
        "ssl_options.certfile = {dir}/pki/server.pem",
        "ssl_options.keyfile = {dir}/pki/server.key",
        "ssl_options.verify = verify_none",
    ]
    .map(String::from)
    .to_vec();
    let spec = NodeSpec {
        label: "sysroots",
        plugins: vec![],
        config,
        tls_listener: true,
    };
    PrivateNode::start(&spec, |dir| {
        pki::generate(dir);
    })
}

/// Points the "operating system's" trust store at `file`. Called only between connection attempts.
fn system_store_is(file: &Path) {
    std::env::remove_var("SSL_CERT_DIR");
    std::env::set_var("SSL_CERT_FILE", file);
}

#[test]
fn system_roots_trust_what_the_system_store_holds_and_only_when_asked() {
    let node = tls_node();
    let pki = Pki::at(&node.dir);
    let uri = format!(
        "amqps://guest:guest@localhost:{}/%2f",
        node.amqps_port.expect("TLS listener")
    );
    let base = ConnectionConfig::from_uri(&uri).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Port 1 on localhost: nothing listens there, so a connect error would mean the network was tried.
    let nowhere = ConnectionConfig::from_uri("amqps://localhost:1/%2f").unwrap();
    let connect_to = |config: &ConnectionConfig, tls: TlsConfig| -> Result<Connection, Error> {
        runtime.block_on(async {
            tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                Connection::connect_with(config.clone().with_tls(tls)),
            )
            .await
            .expect("a connection attempt ends within its timeout")
        })
    };
    let connect = |tls: TlsConfig| connect_to(&base, tls);
    let close = |connection: Connection| {
        runtime
            .block_on(async { tokio::time::timeout(ATTEMPT_TIMEOUT, connection.close()).await })
            .expect("close within the timeout")
            .expect("close");
    };
    let assert_kind = |result: Result<Connection, Error>, kind: TlsErrorKind| match result {
        Err(err) => {
            assert_eq!(err.tls_kind(), Some(kind), "{err:?}");
            eprintln!("failed as expected: {err}");
        }
        Ok(connection) => panic!("connected, expected a {kind:?} failure: {connection:?}"),
    };

    // The store holds the broker's CA: trusted, but only when asked for; the bundled roots are not it.
    system_store_is(&pki.ca);
    let connection = connect(TlsConfig::new().trust_system_roots()).expect("connect");
    let channel = runtime
        .block_on(connection.open_channel())
        .expect("channel");
    drop(channel);
    close(connection);
    assert_kind(connect(TlsConfig::new()), TlsErrorKind::UnknownIssuer);

    // The store holds another CA: refused, until the broker's CA file is trusted beside the store.
    system_store_is(&pki.other_ca);
    assert_kind(
        connect(TlsConfig::new().trust_system_roots()),
        TlsErrorKind::UnknownIssuer,
    );
    let both = TlsConfig::new().trust_system_roots().trust_ca_file(&pki.ca);
    close(connect(both).expect("connect with the store and a CA file"));

    // A store that cannot be read, or holds no certificate, fails before any network traffic.
    system_store_is(&node.dir.join("no-such-bundle.pem"));
    assert_kind(
        connect_to(&nowhere, TlsConfig::new().trust_system_roots()),
        TlsErrorKind::CertificateFile,
    );
    let empty = node.dir.join("empty-bundle.pem");
    std::fs::write(&empty, b"").unwrap();
    system_store_is(&empty);
    assert_kind(
        connect_to(&nowhere, TlsConfig::new().trust_system_roots()),
        TlsErrorKind::CertificateFile,
    );
    std::env::remove_var("SSL_CERT_FILE");
}
