//! Transactions: commit and rollback of publishes and acks, observed through message counts.

mod support;

use coney::{options::BasicPublishOptions, BasicProperties, Channel, Confirmation};
use support::*;

async fn publish(ch: &Channel, queue: &str, body: &'static str) {
    let confirm = ch
        .basic_publish(
            "",
            queue,
            BasicPublishOptions::default(),
            BasicProperties::default(),
            body,
        )
        .await
        .expect("publish");
    assert_eq!(confirm.await.expect("settled"), Confirmation::NotRequested);
}

#[tokio::test]
async fn commit_publishes_and_rollback_discards_them() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = unique("tx-publish");
        declare_exclusive(&ch, &q).await;
        ch.tx_select().await.expect("tx.select");

        for body in ["r1", "r2", "r3"] {
            publish(&ch, &q, body).await;
        }
        // Not visible before the commit.
        assert_eq!(message_count(&conn, &q).await, 0);
        ch.tx_rollback().await.expect("tx.rollback");
        assert_eq!(message_count(&conn, &q).await, 0);

        for body in ["c1", "c2"] {
            publish(&ch, &q, body).await;
        }
        assert_eq!(message_count(&conn, &q).await, 0);
        ch.tx_commit().await.expect("tx.commit");
        assert_eq!(message_count(&conn, &q).await, 2);

        // The queue holds the committed messages only, in order.
        let reader = conn.open_channel().await.expect("channel");
        for expected in ["c1", "c2"] {
            let m = reader
                .basic_get(&q, true)
                .await
                .expect("get")
                .expect("message");
            assert_eq!(m.body.as_ref(), expected.as_bytes());
        }
        assert!(reader.basic_get(&q, true).await.expect("get").is_none());

        // An empty commit is fine.
        ch.tx_commit().await.expect("empty commit");
        assert!(ch.is_open());
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn commit_and_rollback_of_acks() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = unique("tx-ack");
        declare_exclusive(&ch, &q).await;
        for body in ["a", "b"] {
            publish(&ch, &q, body).await;
        }
        assert_eq!(message_count(&conn, &q).await, 2);

        // Acks rolled back: the messages stay unacked, and come back when the channel closes.
        let tx = conn.open_channel().await.expect("channel");
        tx.tx_select().await.expect("tx.select");
        let a = tx.basic_get(&q, false).await.expect("get").expect("a");
        let b = tx.basic_get(&q, false).await.expect("get").expect("b");
        a.ack().await.expect("ack");
        b.ack().await.expect("ack");
        tx.tx_rollback().await.expect("rollback");
        tx.close().await.expect("close channel");
        assert_eq!(wait_for_count(&conn, &q, 2).await, 2);

        // Acks committed: the messages are gone for good.
        let tx = conn.open_channel().await.expect("channel");
        tx.tx_select().await.expect("tx.select");
        for _ in 0..2 {
            let m = tx
                .basic_get(&q, false)
                .await
                .expect("get")
                .expect("message");
            assert!(m.redelivered);
            m.ack().await.expect("ack");
        }
        tx.tx_commit().await.expect("commit");
        tx.close().await.expect("close channel");
        assert_eq!(message_count(&conn, &q).await, 0);

        let ch2 = conn.open_channel().await.expect("channel");
        assert!(ch2.basic_get(&q, false).await.expect("get").is_none());
        conn.close().await.expect("close");
    })
    .await
}

/// A connection with `n` messages in a fresh exclusive queue, and a second channel consuming it with
/// prefetch `n` (in a transaction if `tx`).
async fn filled_and_consumed(
    prefix: &str,
    n: u32,
    tx: bool,
) -> (coney::Connection, String, Channel, coney::Consumer) {
    let (conn, ch) = connect_channel().await;
    let q = unique(prefix);
    declare_exclusive(&ch, &q).await;
    for _ in 0..n {
        publish(&ch, &q, "m").await;
    }
    assert_eq!(wait_for_count(&conn, &q, n).await, n);
    let consuming = conn.open_channel().await.expect("channel");
    consuming
        .basic_qos(n as u16, Default::default())
        .await
        .expect("qos");
    if tx {
        consuming.tx_select().await.expect("tx.select");
    }
    let consumer = consuming
        .basic_consume(&q, "", Default::default(), Default::default())
        .await
        .expect("consume");
    (conn, q, consuming, consumer)
}

/// Acks are batched per channel on their way to the driver; a channel command sent after them must still
/// follow them on the wire. Here hundreds of acks of consumed messages are followed at once by
/// `tx.commit` and a channel close: if any ack slipped behind the commit it would be rolled back by the
/// close and its message would come back.
#[tokio::test]
async fn a_burst_of_consumer_acks_is_committed_by_the_commit_that_follows_it() {
    with_timeout(async {
        const N: u32 = 500;
        let (conn, q, tx, mut consumer) = filled_and_consumed("tx-ack-burst", N, true).await;
        for _ in 0..N {
            let d = consumer.next().await.expect("delivery").expect("ok");
            d.ack().await.expect("ack");
        }
        tx.tx_commit().await.expect("commit");
        drop(consumer);
        tx.close().await.expect("close channel");
        assert_eq!(message_count(&conn, &q).await, 0);
        conn.close().await.expect("close");
    })
    .await
}

/// The same ordering against a plain channel close: acks made just before `close` are applied, not
/// dropped with the channel.
#[tokio::test]
async fn acks_just_before_a_channel_close_are_applied() {
    with_timeout(async {
        const N: u32 = 300;
        let (conn, q, consuming, mut consumer) =
            filled_and_consumed("ack-then-close", N, false).await;
        let mut held = Vec::new();
        for _ in 0..N {
            held.push(consumer.next().await.expect("delivery").expect("ok"));
        }
        for d in &held {
            d.ack().await.expect("ack");
        }
        consuming.close().await.expect("close channel");
        assert_eq!(message_count(&conn, &q).await, 0);
        conn.close().await.expect("close");
    })
    .await
}

/// After `tx.rollback` the acks it abandoned are unsettled again, so later acks must not be merged into a
/// `multiple` ack that would settle those deliveries too: here acks 3 and 4, made back to back after acks 1
/// and 2 were rolled back, must commit 3 and 4 only, and closing the channel brings 1 and 2 back.
#[tokio::test]
async fn acks_after_a_rollback_do_not_settle_the_rolled_back_ones() {
    with_timeout(async {
        let (conn, q, tx, mut consumer) = filled_and_consumed("tx-rollback-merge", 4, true).await;
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(consumer.next().await.expect("delivery").expect("ok"));
        }
        held[0].ack().await.expect("ack 1");
        held[1].ack().await.expect("ack 2");
        tx.tx_rollback().await.expect("rollback");
        // Back to back, without yielding in between: one batch for the driver.
        held[2].ack().await.expect("ack 3");
        held[3].ack().await.expect("ack 4");
        tx.tx_commit().await.expect("commit");
        drop(consumer);
        tx.close().await.expect("close channel");
        assert_eq!(wait_for_count(&conn, &q, 2).await, 2, "1 and 2 come back");
        conn.close().await.expect("close");
    })
    .await
}
