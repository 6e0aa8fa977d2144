//! Against the broker at `AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`): the protocol header
//! coney sends is accepted, and the broker's `connection.start` decodes into what RabbitMQ announces.
//!
//! Only the codec and frame layers are used: a plain socket, no client.

use std::time::Duration;

use bytes::BytesMut;
use coney::{
    codec::FieldValue,
    frame::{Frame, FrameDecoder},
    spec::{self, connection, Method},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn broker_sends_connection_start() {
    let start = tokio::time::timeout(TIMEOUT, read_connection_start())
        .await
        .unwrap_or_else(|_| panic!("no connection.start from {} within {TIMEOUT:?}", broker().0));

    assert_eq!((start.version_major, start.version_minor), (0, 9));

    let mechanisms = start.mechanisms.as_str().expect("mechanisms are UTF-8");
    assert!(
        mechanisms.split(' ').any(|m| m == "PLAIN"),
        "mechanisms: {mechanisms:?}"
    );
    let locales = start.locales.as_str().expect("locales are UTF-8");
    assert!(
        locales.split(' ').any(|l| l == "en_US"),
        "locales: {locales:?}"
    );

    let props = &start.server_properties;
    assert_eq!(
        props.get("product").and_then(FieldValue::as_str),
        Some("RabbitMQ"),
        "server-properties: {props:?}"
    );
    let capabilities = props
        .get("capabilities")
        .and_then(FieldValue::as_table)
        .unwrap_or_else(|| panic!("no capabilities table in {props:?}"));
    assert_eq!(
        capabilities
            .get("publisher_confirms")
            .and_then(FieldValue::as_bool),
        Some(true),
        "capabilities: {capabilities:?}"
    );
    // What coney relies on beyond confirms.
    for capability in ["basic.nack", "connection.blocked", "consumer_cancel_notify"] {
        assert_eq!(
            capabilities.get(capability).and_then(FieldValue::as_bool),
            Some(true),
            "{capability}: {capabilities:?}"
        );
    }
}

/// Connects, sends the protocol header, and decodes frames until the first one is complete.
async fn read_connection_start() -> connection::Start {
    let (host, port) = broker();
    let mut socket = TcpStream::connect((host.as_str(), port))
        .await
        .unwrap_or_else(|e| panic!("connecting to {host}:{port} (set AMQP_URL): {e}"));
    socket.write_all(&spec::PROTOCOL_HEADER).await.unwrap();

    let decoder = FrameDecoder::default();
    let mut buf = BytesMut::with_capacity(4096);
    let frame = loop {
        if let Some(frame) = decoder.decode(&mut buf).expect("a valid frame") {
            break frame;
        }
        let n = socket.read_buf(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "the broker closed the connection before sending a frame"
        );
    };
    match frame {
        Frame::Method {
            channel: 0,
            method: Method::ConnectionStart(start),
        } => start,
        other => panic!("expected connection.start on channel 0, got {other:?}"),
    }
}

/// Host and port from `AMQP_URL`.
fn broker() -> (String, u16) {
    let text = std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_string());
    let url = url::Url::parse(&text).unwrap_or_else(|e| panic!("AMQP_URL {text:?}: {e}"));
    let host = url.host_str().unwrap_or("127.0.0.1").to_string();
    let port = url.port().unwrap_or(spec::DEFAULT_PORT);
    (host, port)
}
