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
