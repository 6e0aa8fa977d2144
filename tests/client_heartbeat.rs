//! Heartbeats: an idle connection and a slow consumer both stay up with a 1 s heartbeat.

mod support;

use std::time::Duration;

use coney::{
    options::{BasicConsumeOptions, BasicPublishOptions},
    BasicProperties, Confirmation, Connection, FieldTable,
};
use support::*;

async fn connect_heartbeat_1() -> Connection {
    let url = url_with_query("heartbeat=1");
    let conn = Connection::connect(&url).await.expect("connect");
    assert_eq!(conn.tuned().heartbeat, 1, "{:?}", conn.tuned());
    conn
}

#[tokio::test]
async fn idle_connection_survives_with_one_second_heartbeat() {
    with_timeout(async {
        let conn = connect_heartbeat_1().await;
        let ch = conn.open_channel().await.expect("channel");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(conn.is_open(), "closed: {:?}", conn.close_reason());
        assert!(ch.is_open());
        declare_exclusive(&ch, &unique("after-idle")).await;
        let ch2 = conn.open_channel().await.expect("new channel after idling");
        declare_exclusive(&ch2, &unique("after-idle")).await;
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn heartbeat_from_config_builder() {
    with_timeout(async {
        let conn = Connection::connect_with(config().with_heartbeat(1))
            .await
            .expect("connect");
        assert_eq!(conn.tuned().heartbeat, 1);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(conn.is_open(), "closed: {:?}", conn.close_reason());
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn slow_consumer_keeps_its_connection() {
    with_timeout(async {
        let conn = connect_heartbeat_1().await;
        let ch = conn.open_channel().await.expect("channel");
        let q = unique("slow");
        declare_exclusive(&ch, &q).await;
        ch.confirm_select().await.expect("confirm.select");
        for body in ["first", "second"] {
            let confirm = ch
                .basic_publish(
                    "",
                    &q,
                    BasicPublishOptions::default(),
                    BasicProperties::default(),
                    body,
                )
                .await
                .expect("publish");
            assert_eq!(confirm.await.expect("confirm"), Confirmation::Ack);
        }

        ch.basic_qos(1, Default::default()).await.expect("qos");
        let consumer = ch
            .basic_consume(&q, "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("consume");
        let tag = consumer.tag().to_string();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = consumer.run(move |d| {
            let tx = tx.clone();
            async move {
                // A handler far slower than the heartbeat interval.
                tokio::time::sleep(Duration::from_secs(5)).await;
                d.ack().await.expect("ack after a long handler");
                let _ = tx.send(String::from_utf8(d.body.to_vec()).unwrap());
            }
        });
        let mut received = Vec::new();
        for _ in 0..2 {
            received.push(rx.recv().await.expect("handler finished"));
            assert!(conn.is_open(), "closed: {:?}", conn.close_reason());
        }
        assert_eq!(received, ["first", "second"]);
        assert!(conn.is_open(), "closed: {:?}", conn.close_reason());
        assert!(ch.is_open());
        ch.basic_cancel(&tag, Default::default())
            .await
            .expect("cancel");
        assert!(task.await.expect("task").is_none());
        assert_eq!(message_count(&conn, &q).await, 0);
        conn.close().await.expect("close");
    })
    .await
}

/// With `no_ack` the broker ignores the prefetch, so deliveries pile up beyond the consumer's buffer (sized
/// by the prefetch, 1 here) and the driver stops reading the socket while the handler sleeps. Heartbeats
/// must still flow both ways, and the paused reads must not be taken for a dead broker.
#[tokio::test]
async fn slow_no_ack_consumer_with_paused_reads_keeps_its_connection() {
    const MESSAGES: usize = 4;
    with_timeout(async {
        let conn = connect_heartbeat_1().await;
        let ch = conn.open_channel().await.expect("channel");
        let q = unique("slow-no-ack");
        declare_exclusive(&ch, &q).await;
        ch.confirm_select().await.expect("confirm.select");
        for i in 0..MESSAGES {
            let confirm = ch
                .basic_publish(
                    "",
                    &q,
                    BasicPublishOptions::default(),
                    BasicProperties::default(),
                    seq_body(i as u64, 64),
                )
                .await
                .expect("publish");
            assert_eq!(confirm.await.expect("confirm"), Confirmation::Ack);
        }
        ch.basic_qos(1, Default::default()).await.expect("qos");
        let consumer = ch
            .basic_consume(
                &q,
                "",
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::new(),
            )
            .await
            .expect("consume");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = consumer.run(move |d| {
            let tx = tx.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let _ = tx.send(check_seq_body(&d.body, 64));
            }
        });
        for i in 0..MESSAGES {
            assert_eq!(rx.recv().await.expect("handler finished"), i as u64);
            assert!(conn.is_open(), "closed: {:?}", conn.close_reason());
        }
        assert!(ch.is_open());
        declare_exclusive(&ch, &unique("after-slow")).await;
        conn.close().await.expect("close");
        assert!(task.await.expect("task").is_none());
    })
    .await
}
