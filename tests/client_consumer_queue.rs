//! The queue between the driver and a consumer, against a scripted broker: what happens to deliveries
//! the driver holds back while the consumer's queue is full.

mod fake_broker;

use std::time::Duration;

use coney::{
    codec::{FieldTable, ShortStr},
    options::{BasicCancelOptions, BasicConsumeOptions},
    spec::{basic, Method},
    Connection,
};
use fake_broker::{deliver, FakeBroker, Peer};

const LIMIT: Duration = Duration::from_secs(15);

/// A consumer cancelled while the driver holds a delivery for it (its queue was full) still gets that
/// delivery, after the ones before it and before its end; nothing is rejected back to the broker.
#[tokio::test]
async fn a_delivery_parked_for_a_full_queue_survives_a_cancel() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let mut peer: Peer = broker.accept().await;
        peer.handshake().await;
        let ch = peer.open_channel().await;
        match peer.expect_method().await {
            (c, Method::BasicQos(q)) if c == ch => assert_eq!(q.prefetch_count, 2),
            other => panic!("fake broker: expected basic.qos, got {other:?}"),
        }
        peer.send_method(ch, basic::QosOk {}).await;
        let tag: ShortStr = peer.answer_consume(ch).await;
        // One more than the prefetch (and the consumer's queue) holds: the third waits in the driver.
        for t in 1..=3 {
            peer.send_content(ch, deliver(&tag, t), b"m").await;
        }
        peer.methods_until_close(ch).await
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        ch.basic_qos(2, Default::default()).await.expect("qos");
        let mut consumer = ch
            .basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("consume");
        // Let the driver read all three and park the third.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let tag = consumer.tag().to_owned();
        ch.basic_cancel(&tag, BasicCancelOptions { no_wait: true })
            .await
            .expect("cancel");
        // Let the driver take the cancel while the third delivery is still parked (on this
        // current-thread runtime it runs only when the test yields).
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut tags = Vec::new();
        while let Some(d) = consumer.next().await {
            let d = d.expect("no error after our own cancel");
            tags.push(d.delivery_tag());
            d.ack().await.expect("ack");
        }
        assert_eq!(tags, vec![1, 2, 3]);
        drop(consumer);
        conn.close().await.expect("close");
    };
    let (seen, ()) = tokio::time::timeout(LIMIT, async { tokio::join!(server, client) })
        .await
        .expect("scenario finished in time");
    let cancel_at = seen
        .iter()
        .position(|m| matches!(m, Method::BasicCancel(_)))
        .expect("a cancel");
    assert!(
        !seen.iter().any(|m| matches!(m, Method::BasicReject(_))),
        "nothing rejected: {seen:?}"
    );
    let acked: Vec<&Method> = seen[cancel_at + 1..].iter().collect();
    assert!(
        matches!(acked.last(), Some(Method::BasicAck(a)) if a.delivery_tag == 3),
        "all three acked after the cancel: {seen:?}"
    );
}

/// A consumer with prefetch 1 whose owner stops reading it: its queue holds one delivery and the driver
/// holds back the next, which pauses its reads. The broker sends `count` deliveries, then answers the
/// client's close (of the connection when `channel_close` is false, else of the channel) at once.
async fn close_with_a_full_consumer(channel_close: bool) -> Result<(), coney::Error> {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        match peer.expect_method().await {
            (c, Method::BasicQos(_)) if c == ch => peer.send_method(ch, basic::QosOk {}).await,
            other => panic!("fake broker: expected basic.qos, got {other:?}"),
        }
        let tag = peer.answer_consume(ch).await;
        for t in 1..=3 {
            peer.send_content(ch, deliver(&tag, t), b"m").await;
        }
        if channel_close {
            // The channel's close-ok, and then the connection's.
            peer.expect_channel_close(ch, coney::ReplyCode::REPLY_SUCCESS)
                .await;
            peer.send_method(ch, coney::spec::channel::CloseOk {}).await;
        }
        peer.expect_clean_close().await;
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        ch.basic_qos(1, Default::default()).await.expect("qos");
        let consumer = ch
            .basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("consume");
        // The deliveries arrive and fill the consumer's queue of one.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let closed = if channel_close {
            let closed = ch.close().await;
            conn.close().await.expect("the connection closes too");
            closed
        } else {
            conn.close().await
        };
        drop(consumer);
        closed
    };
    let ((), closed) = fake_broker::scenario(LIMIT, server, client).await;
    closed
}

/// (Found by a review.) The held-back delivery paused the reads, so the close-ok the broker sent at once
/// was never read: `close` timed out and dropped the socket without the handshake.
#[tokio::test]
async fn the_connection_closes_cleanly_while_a_consumer_queue_is_full() {
    let closed = close_with_a_full_consumer(false).await;
    assert!(closed.is_ok(), "{closed:?}");
}

/// The same for the channel's close: its close-ok comes behind the deliveries.
#[tokio::test]
async fn a_channel_closes_cleanly_while_its_consumer_queue_is_full() {
    let closed = close_with_a_full_consumer(true).await;
    assert!(closed.is_ok(), "{closed:?}");
}
