//! `Connection::closed` and `Channel::closed`: waiting for the end of a connection or a channel, and
//! learning why, against RabbitMQ.

mod support;

use std::time::Duration;

use coney::{
    options::{ExchangeDeclareOptions, QueueDeclareOptions},
    Error, FieldTable, ReplyCode,
};
use support::*;

/// How long a wait that must not end is watched (it must still be pending after this).
const STILL_PENDING: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_connection_the_broker_closes_is_reported_to_every_waiter() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let conn = conn.clone();
                tokio::spawn(async move { conn.closed().await })
            })
            .collect();
        let channel_waiter = {
            let ch = ch.clone();
            tokio::spawn(async move { ch.closed().await })
        };
        // Nothing has ended yet.
        assert!(tokio::time::timeout(STILL_PENDING, conn.closed())
            .await
            .is_err());
        // An unknown exchange type is a connection error in RabbitMQ (503 command-invalid).
        let err = ch
            .exchange_declare(
                &unique("closed-type"),
                "no-such-exchange-type",
                ExchangeDeclareOptions::default(),
                FieldTable::new(),
            )
            .await
            .expect_err("RabbitMQ refuses an unknown exchange type");
        let Error::ConnectionClosed(reason) = &err else {
            panic!("expected the broker's connection.close, got {err:?}");
        };
        assert_eq!(reason.code, ReplyCode::COMMAND_INVALID, "{reason:?}");
        for waiter in waiters {
            let seen = waiter.await.expect("waiter task");
            assert!(
                matches!(&seen, Error::ConnectionClosed(r) if r.code == ReplyCode::COMMAND_INVALID),
                "{seen:?}"
            );
        }
        let seen = channel_waiter.await.expect("channel waiter task");
        assert!(
            matches!(&seen, Error::ConnectionClosed(r) if r.code == ReplyCode::COMMAND_INVALID),
            "the channel ends with the connection's reason: {seen:?}"
        );
        // Once ended, it answers at once, with what close_reason says.
        let again = conn.closed().await;
        assert_eq!(
            again.to_string(),
            conn.close_reason().expect("a reason").to_string()
        );
        assert!(!conn.is_open());
    })
    .await;
}

#[tokio::test]
async fn a_client_close_ends_the_wait_with_closed_by_client() {
    with_timeout(async {
        let conn = connect().await;
        let waiter = {
            let conn = conn.clone();
            tokio::spawn(async move { conn.closed().await })
        };
        conn.close().await.expect("close");
        let seen = waiter.await.expect("waiter task");
        assert!(matches!(seen, Error::ClosedByClient(_)), "{seen:?}");
    })
    .await;
}

#[tokio::test]
async fn a_channel_the_broker_closes_is_reported_and_the_connection_goes_on() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let waiter = {
            let ch = ch.clone();
            tokio::spawn(async move { ch.closed().await })
        };
        assert!(tokio::time::timeout(STILL_PENDING, ch.closed())
            .await
            .is_err());
        // A passive declare of a queue that does not exist: 404, a channel error.
        let err = ch
            .queue_declare(
                &unique("closed-missing"),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::new(),
            )
            .await
            .expect_err("no such queue");
        assert!(
            matches!(&err, Error::ChannelClosed(r) if r.code == ReplyCode::NOT_FOUND),
            "{err:?}"
        );
        let seen = waiter.await.expect("waiter task");
        assert!(
            matches!(&seen, Error::ChannelClosed(r) if r.code == ReplyCode::NOT_FOUND),
            "{seen:?}"
        );
        // The connection did not end with its channel.
        assert!(tokio::time::timeout(STILL_PENDING, conn.closed())
            .await
            .is_err());
        let other = conn.open_channel().await.expect("another channel");
        declare_exclusive(&other, &unique("closed-after")).await;

        // A channel the client closes ends the wait with closed-by-client.
        let waiter = {
            let other = other.clone();
            tokio::spawn(async move { other.closed().await })
        };
        other.close().await.expect("close channel");
        let seen = waiter.await.expect("waiter task");
        assert!(matches!(seen, Error::ClosedByClient(_)), "{seen:?}");
        conn.close().await.expect("close");
    })
    .await;
}

/// The `closed` futures hold no handle: made before the last handles are dropped, they resolve when the
/// drops have closed the channel and the connection (a waiter holding a handle would keep both open).
#[tokio::test]
async fn waiting_keeps_nothing_open() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let connection_closed = tokio::spawn(conn.closed());
        let channel_closed = tokio::spawn(ch.closed());
        drop(ch);
        let err = tokio::time::timeout(Duration::from_secs(5), channel_closed)
            .await
            .expect("the dropped channel's waiter is answered")
            .expect("task");
        assert!(matches!(err, Error::ClosedByClient("channel")), "{err:?}");
        assert!(conn.is_open());
        drop(conn);
        let err = tokio::time::timeout(Duration::from_secs(5), connection_closed)
            .await
            .expect("the dropped connection's waiter is answered")
            .expect("task");
        assert!(
            matches!(err, Error::ClosedByClient("connection")),
            "{err:?}"
        );
    })
    .await
}

/// A driver task that stops without closing (here its runtime shuts down; a panic is the same) still
/// ends the connection for its handles: `closed` waiters on another runtime are answered with an I/O
/// error that says so, and the channel's too (it would otherwise never be marked closed).
#[test]
fn a_driver_whose_runtime_shuts_down_ends_every_waiter() {
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (conn, ch, mut consumer) = first.block_on(async {
        let (conn, ch) = connect_channel().await;
        let queue = unique("closed-runtime");
        declare_exclusive(&ch, &queue).await;
        let consumer = ch
            .basic_consume(&queue, "", Default::default(), FieldTable::new())
            .await
            .expect("consume");
        (conn, ch, consumer)
    });
    let connection_closed = conn.closed();
    let channel_closed = ch.closed();
    drop(first);

    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        for (what, err) in [
            (
                "connection",
                tokio::time::timeout(Duration::from_secs(5), connection_closed).await,
            ),
            (
                "channel",
                tokio::time::timeout(Duration::from_secs(5), channel_closed).await,
            ),
        ] {
            let err = err.unwrap_or_else(|_| panic!("the {what}'s waiter is answered"));
            assert!(
                matches!(&err, Error::Io(e) if e.to_string().contains("driver task stopped")),
                "{what}: {err:?}"
            );
        }
        // The consumer ends with the same error, not as if it had been cancelled.
        let ended = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("the consumer ends");
        assert!(
            matches!(&ended, Some(Err(Error::Io(e))) if e.to_string().contains("driver task stopped")),
            "{ended:?}"
        );
        drop(consumer);
        assert!(!conn.is_open() && !ch.is_open());
        assert!(conn.close_reason().is_some() && ch.close_reason().is_some());
        drop(ch);
        drop(conn);
    });
}
