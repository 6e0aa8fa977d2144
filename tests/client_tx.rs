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
