//! Connecting, failing to connect, closing and dropping connections.

mod support;

use std::time::{Duration, Instant};

use coney::{
    options::{BasicConsumeOptions, QueueDeclareOptions},
    Connection, Error, FieldTable, ReplyCode,
};
use support::*;
use tokio::net::TcpListener;

#[tokio::test]
async fn connect_open_channel_and_close() {
    with_timeout(async {
        let conn = connect().await;
        assert!(conn.is_open());
        assert!(conn.close_reason().is_none());
        assert!(
            conn.server_properties().get("product").is_some(),
            "server properties: {:?}",
            conn.server_properties()
        );
        let tuned = conn.tuned();
        assert!(tuned.frame_max >= 4096, "{tuned:?}");
        assert!(tuned.channel_max > 0, "{tuned:?}");

        let ch = conn.open_channel().await.expect("open channel");
        assert!(ch.is_open());
        let q = unique("conn");
        declare_exclusive(&ch, &q).await;
        ch.close().await.expect("close channel");
        assert!(!ch.is_open());
        assert!(matches!(ch.close_reason(), Some(Error::ClosedByClient(_))));

        // A second channel still works after the first was closed.
        let ch2 = conn.open_channel().await.expect("open second channel");
        let ok = ch2
            .queue_declare(
                &q,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::new(),
            )
            .await
            .expect("passive declare");
        assert_eq!(ok.message_count, 0);

        conn.close().await.expect("close connection");
        assert!(!conn.is_open());
        assert!(!ch2.is_open());
        let err = ch2
            .queue_declare(&q, QueueDeclareOptions::default(), FieldTable::new())
            .await
            .expect_err("declare on a closed connection");
        assert!(err.is_connection_closed(), "{err:?}");
        // Closing again is harmless.
        conn.close().await.expect("second close");
    })
    .await
}

#[tokio::test]
async fn connect_with_config_from_uri() {
    with_timeout(async {
        let config = config().with_connection_name(unique("named"));
        let conn = Connection::connect_with(config).await.expect("connect");
        assert!(conn.is_open());
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn bad_credentials_fail_fast_with_authentication_failed() {
    with_timeout(async {
        let config = config().with_credentials("coney-no-such-user", "wrong-password");
        let started = Instant::now();
        let err = Connection::connect_with(config)
            .await
            .expect_err("bad credentials must not connect");
        let took = started.elapsed();
        assert!(
            matches!(err, Error::AuthenticationFailed(_)),
            "expected AuthenticationFailed, got {err:?}"
        );
        assert_eq!(err.reply_code(), Some(ReplyCode::ACCESS_REFUSED));
        assert!(!err.to_string().contains("wrong-password"), "{err}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
    })
    .await
}

#[tokio::test]
async fn wrong_vhost_fails_fast_with_530() {
    with_timeout(async {
        let config = config().with_vhost(unique("no-such-vhost"));
        let started = Instant::now();
        let err = Connection::connect_with(config)
            .await
            .expect_err("a missing vhost must not connect");
        let took = started.elapsed();
        match &err {
            Error::ConnectionClosed(reason) => assert_eq!(reason.code, ReplyCode::NOT_ALLOWED),
            other => panic!("expected ConnectionClosed(530), got {other:?}"),
        }
        assert_eq!(err.reply_code(), Some(ReplyCode(530)));
        assert!(took < Duration::from_secs(10), "took {took:?}");
    })
    .await
}

#[tokio::test]
async fn closed_port_fails_with_connect_error() {
    with_timeout(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let config = config()
            .with_host("127.0.0.1")
            .with_port(port)
            .with_connection_timeout(Duration::from_secs(5));
        let err = Connection::connect_with(config)
            .await
            .expect_err("nothing listens there");
        assert!(
            matches!(err, Error::Connect { .. }),
            "expected Connect, got {err:?}"
        );
        assert!(err.is_connection_closed());
    })
    .await
}

/// An IPv6 literal is connected to as an address (no lookup) and named in brackets in the error.
#[tokio::test]
async fn an_ipv6_literal_is_named_in_brackets() {
    with_timeout(async {
        let config = config()
            .with_host("::1")
            .with_port(1)
            .with_connection_timeout(Duration::from_secs(5));
        let err = Connection::connect_with(config)
            .await
            .expect_err("nothing listens on port 1");
        match &err {
            Error::Connect { addr, .. } => assert_eq!(addr, "[::1]:1"),
            other => panic!("expected Connect, got {other:?}"),
        }
        // In brackets too, as an address (it was looked up as a host name, and failed as one).
        let mut bracketed = support::config()
            .with_port(1)
            .with_connection_timeout(Duration::from_secs(5));
        bracketed.host = "[::1]".to_owned();
        let err = Connection::connect_with(bracketed)
            .await
            .expect_err("nothing listens on port 1");
        match &err {
            Error::Connect { addr, source } => {
                assert_eq!(addr, "[::1]:1");
                assert_eq!(
                    source.kind(),
                    std::io::ErrorKind::ConnectionRefused,
                    "{source}"
                );
            }
            other => panic!("expected Connect, got {other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn silent_server_times_out() {
    with_timeout(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // Accept and hold every socket, never writing a byte.
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let config = config()
            .with_host("127.0.0.1")
            .with_port(port)
            .with_connection_timeout(Duration::from_secs(1));
        let started = Instant::now();
        let err = Connection::connect_with(config)
            .await
            .expect_err("a silent server cannot complete the handshake");
        let took = started.elapsed();
        assert!(
            matches!(err, Error::Timeout { .. }),
            "expected Timeout, got {err:?}"
        );
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(2),
            "took {took:?}"
        );
        server.abort();
    })
    .await
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_connection() {
    with_timeout(async {
        let q = unique("dropped-exclusive");
        {
            let (conn, ch) = connect_channel().await;
            declare_exclusive(&ch, &q).await;
            let ch2 = conn.open_channel().await.expect("second channel");
            drop(conn);
            // Channels keep the connection alive.
            declare_exclusive(&ch2, &q).await;
            drop(ch);
            drop(ch2);
        }

        // The broker deletes the exclusive queue once the dropped connection is closed, so another
        // connection can then declare and consume it.
        let other = connect().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let ch = other.open_channel().await.expect("open channel");
            match ch
                .queue_declare(
                    &q,
                    QueueDeclareOptions {
                        exclusive: true,
                        ..Default::default()
                    },
                    FieldTable::new(),
                )
                .await
            {
                Ok(_) => {
                    let consumer = ch
                        .basic_consume(&q, "", BasicConsumeOptions::default(), FieldTable::new())
                        .await
                        .expect("consume the queue of the dropped connection");
                    drop(consumer);
                    break;
                }
                Err(e) => {
                    assert_eq!(
                        e.reply_code(),
                        Some(ReplyCode::RESOURCE_LOCKED),
                        "unexpected error while the old connection closes: {e:?}"
                    );
                    assert!(
                        Instant::now() < deadline,
                        "the dropped connection still holds its exclusive queue after 5 s"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        other.close().await.expect("close");
    })
    .await
}

/// The largest timeouts and capacities `validate` accepts work end to end, and larger ones are a typed
/// error from `connect_with` (a review found `Duration::MAX` and `usize::MAX` panicking: in deadline
/// arithmetic, and in tokio's semaphore inside the driver task).
#[tokio::test]
async fn the_largest_accepted_limits_work_and_larger_ones_are_refused() {
    with_timeout(async {
        use coney::{Confirmation, ConnectionConfig};
        let max = ConnectionConfig::MAX_TIMEOUT;
        let largest = config()
            .with_connection_timeout(max)
            .with_rpc_timeout(max)
            .with_close_timeout(max)
            .with_confirm_window(ConnectionConfig::MAX_CAPACITY);
        let conn = Connection::connect_with(largest).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        drop(ch.returned_messages(usize::MAX));
        ch.confirm_select().await.expect("confirm.select");
        let confirm = ch
            .basic_publish("", "", Default::default(), Default::default(), "m")
            .await
            .expect("publish");
        assert_eq!(confirm.await.expect("confirmed"), Confirmation::Ack);
        ch.close().await.expect("channel close");
        conn.close().await.expect("close");

        for too_large in [
            config().with_connection_timeout(Duration::MAX),
            config().with_rpc_timeout(Duration::MAX),
            config().with_close_timeout(Duration::MAX),
            config().with_confirm_window(usize::MAX),
        ] {
            match Connection::connect_with(too_large).await {
                Err(Error::Config(_)) => {}
                other => panic!("expected a configuration error, got {other:?}"),
            }
        }
    })
    .await
}
