//! Acks made back to back go out as one `basic.ack` with `multiple` when that settles exactly the same
//! deliveries, and one per settlement otherwise: checked frame by frame against a scripted broker, and
//! end to end against RabbitMQ (what stays in the queue is exactly what was not acked).

mod fake_broker;
mod support;

use std::time::Duration;

use coney::{
    codec::{FieldTable, ShortStr},
    frame::Frame,
    options::{BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, QueueDeclareOptions},
    spec::{basic, Method},
    BasicProperties, Channel, Connection, Consumer, Delivery,
};
use fake_broker::{deliver, FakeBroker, Peer};

const LIMIT: Duration = Duration::from_secs(15);

/// Opens a channel and a consumer, delivers tags `1..=count`, and hands back the consumer's deliveries
/// (in order) to `settle`; the broker side returns the settlement methods it read before the close.
async fn settle_on_fake_broker(count: u64, settle: impl AsyncFnOnce(Vec<Delivery>)) -> Vec<Method> {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch, _) = serve_consumer(broker, count).await;
        let mut seen = peer.methods_until_close(ch).await;
        // The consumer's drop cancels it.
        seen.retain(|m| !matches!(m, Method::BasicCancel(_)));
        seen
    };
    let client = async move {
        let (conn, _ch, mut consumer) = consume_from(config).await;
        let mut deliveries = Vec::new();
        while deliveries.len() < count as usize {
            let d = consumer.next().await.expect("open").expect("delivery");
            deliveries.push(d);
        }
        settle(deliveries).await;
        drop(consumer);
        conn.close().await.expect("close");
    };
    let (seen, ()) = tokio::time::timeout(LIMIT, async { tokio::join!(server, client) })
        .await
        .expect("scenario finished in time");
    seen
}

/// The broker side of a consumer: accepts, opens the channel, answers basic.consume and delivers tags
/// `1..=count`; returns the peer, the channel and the consumer tag.
async fn serve_consumer(broker: FakeBroker, count: u64) -> (Peer, u16, ShortStr) {
    let mut peer: Peer = broker.accept().await;
    peer.handshake().await;
    let ch = peer.open_channel().await;
    let tag: ShortStr = peer.answer_consume(ch).await;
    for t in 1..=count {
        peer.send_content(ch, deliver(&tag, t), b"m").await;
    }
    (peer, ch, tag)
}

/// Connects to the scripted broker and starts a consumer on queue `q` of a new channel.
async fn consume_from(config: coney::ConnectionConfig) -> (Connection, Channel, Consumer) {
    let conn = Connection::connect_with(config).await.expect("connect");
    let ch = conn.open_channel().await.expect("open channel");
    let consumer = ch
        .basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new())
        .await
        .expect("consume");
    (conn, ch, consumer)
}

fn ack(delivery_tag: u64, multiple: bool) -> Method {
    basic::Ack {
        delivery_tag,
        multiple,
    }
    .into()
}

// The tests run on the current-thread runtime: the driver cannot take the ack queue until the test's
// task yields, so acks made without awaiting anything that waits land in one batch.

#[tokio::test]
async fn acks_made_back_to_back_in_order_go_out_as_one_multiple_ack() {
    let seen = settle_on_fake_broker(50, async |deliveries| {
        for d in &deliveries {
            d.ack().await.expect("ack");
        }
    })
    .await;
    assert_eq!(seen, vec![ack(50, true)]);
}

#[tokio::test]
async fn nacks_rejects_and_out_of_order_acks_keep_their_own_frames() {
    let seen = settle_on_fake_broker(10, async |d| {
        let nack = BasicNackOptions {
            multiple: false,
            requeue: true,
        };
        d[0].ack().await.unwrap();
        d[1].ack().await.unwrap();
        d[2].ack().await.unwrap();
        d[3].nack(nack).await.unwrap();
        d[4].ack().await.unwrap();
        d[5].ack().await.unwrap();
        d[7].reject(true).await.unwrap(); // tag 8 before 7: merging stops for this channel
        d[6].ack().await.unwrap();
        d[8].ack().await.unwrap();
        d[9].ack().await.unwrap();
    })
    .await;
    let expected = vec![
        ack(3, true),
        basic::Nack {
            delivery_tag: 4,
            multiple: false,
            requeue: true,
        }
        .into(),
        ack(6, true),
        basic::Reject {
            delivery_tag: 8,
            requeue: true,
        }
        .into(),
        ack(7, false),
        ack(9, false),
        ack(10, false),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_batch_that_does_not_start_at_the_oldest_unsettled_tag_is_not_merged() {
    let seen = settle_on_fake_broker(4, async |d| {
        // Tag 1 is still unsettled: "up to 4" would ack it as well.
        d[1].ack().await.unwrap();
        d[2].ack().await.unwrap();
        d[3].ack().await.unwrap();
    })
    .await;
    assert_eq!(seen, vec![ack(2, false), ack(3, false), ack(4, false)]);
}

/// Against RabbitMQ: the first 250 of 300 deliveries acked one by one, in order (so merged), the last 50
/// left unacked; after the channel closes, exactly those 50 are back in the queue, in order.
#[tokio::test]
async fn merged_acks_settle_exactly_the_acked_messages_on_a_real_broker() {
    const N: usize = 300;
    const ACKED: usize = 250;
    let conn = support::connect().await;
    let ch = conn.open_channel().await.expect("open channel");
    let q = support::unique("ack-batching");
    support::declare_exclusive(&ch, &q).await;
    ch.confirm_select().await.expect("confirm.select");
    let mut confirms = Vec::new();
    for i in 0..N {
        let confirm = ch
            .basic_publish(
                "",
                &q,
                BasicPublishOptions::default(),
                BasicProperties::default(),
                format!("{i}"),
            )
            .await
            .expect("publish");
        confirms.push(confirm);
    }
    for c in confirms {
        assert!(c.await.expect("confirm").is_ack());
    }
    let consuming = conn.open_channel().await.expect("open channel");
    let mut consumer = consuming
        .basic_consume(&q, "", BasicConsumeOptions::default(), FieldTable::new())
        .await
        .expect("consume");
    let mut held = Vec::new();
    for i in 0..N {
        let d = tokio::time::timeout(LIMIT, consumer.next())
            .await
            .expect("a delivery in time")
            .expect("open")
            .expect("delivery");
        assert_eq!(d.body, format!("{i}").as_bytes(), "in publish order");
        if i < ACKED {
            d.ack().await.expect("ack");
        } else {
            held.push(d);
        }
    }
    drop(consumer);
    consuming.close().await.expect("close channel");
    assert_eq!(held.len(), N - ACKED);
    // RabbitMQ requeues a closed channel's unacked messages in the queue's own process, after close-ok:
    // a passive declare right away can still count 0 (seen about once in 20 runs). Wait until the count
    // is what it must be, then take the queue's content and check it is exactly the unacked messages.
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let ok = ch
            .queue_declare(&q, passive, FieldTable::new())
            .await
            .expect("passive declare");
        if ok.message_count as usize == N - ACKED {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} messages in the queue, not the {} unacked",
            ok.message_count,
            N - ACKED
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut left = Vec::new();
    while let Some(m) = ch.basic_get(&q, true).await.expect("basic.get") {
        left.push(String::from_utf8(m.body.to_vec()).expect("utf-8 body"));
    }
    let unacked: Vec<String> = (ACKED..N).map(|i| i.to_string()).collect();
    assert_eq!(left, unacked, "exactly the unacked messages are back");
}

/// Acks the driver holds for its next read (see `AckQueue::promise_sweep`) still go out when no read
/// comes: the broker here sends nothing after the deliveries and waits for the acks before it lets the
/// client go on.
#[tokio::test]
async fn acks_held_for_the_next_read_go_out_when_nothing_more_arrives() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (acked_tx, acked_rx) = tokio::sync::oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch, _) = serve_consumer(broker, 5).await;
        let (c, m) = peer.expect_method().await;
        assert_eq!((c, m), (ch, ack(5, true)), "the held acks, merged");
        acked_tx.send(()).expect("client waiting");
        let rest = peer.methods_until_close(ch).await;
        assert!(
            rest.iter().all(|m| matches!(m, Method::BasicCancel(_))),
            "{rest:?}"
        );
    };
    let client = async move {
        let (conn, _ch, mut consumer) = consume_from(config).await;
        for _ in 0..5 {
            let d = consumer.next().await.expect("open").expect("delivery");
            d.ack().await.expect("ack");
        }
        // Nothing else is sent or received until the broker has the acks.
        acked_rx.await.expect("broker saw the acks");
        drop(consumer);
        conn.close().await.expect("close");
    };
    tokio::time::timeout(LIMIT, async { tokio::join!(server, client) })
        .await
        .expect("scenario finished in time");
}

/// Acks the driver holds for a batch still go out while deliveries keep coming a few at a time: each read
/// finds too few acks to send (see `Sweep::AtRead` in the driver) and keeps the promise, and the timer
/// set with the promise must send them anyway. The broker streams deliveries as fast as the client takes
/// them (many reads a millisecond) until it sees the one ack the client makes.
#[tokio::test]
async fn held_acks_go_out_while_deliveries_keep_coming() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (acked_tx, mut acked_rx) = tokio::sync::oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch, tag) = serve_consumer(broker, 1).await;
        let mut next_tag = 2;
        loop {
            peer.send_content(ch, deliver(&tag, next_tag), b"m").await;
            next_tag += 1;
            // One look for a frame (a zero timeout still polls once), then let the client run.
            match tokio::time::timeout(Duration::ZERO, peer.next_frame()).await {
                Err(_) => tokio::task::yield_now().await,
                Ok(Ok(Some(Frame::Heartbeat))) => {}
                Ok(Ok(Some(Frame::Method { channel, method }))) => {
                    assert_eq!(channel, ch);
                    match method {
                        Method::BasicAck(a) => {
                            assert_eq!(a.delivery_tag, 1, "the one ack made");
                            break;
                        }
                        other => panic!("unexpected {other:?} before the ack"),
                    }
                }
                Ok(other) => panic!("broker read failed before the ack: {other:?}"),
            }
        }
        acked_tx.send(()).expect("client waiting");
        peer.methods_until_close(ch).await
    };
    let client = async move {
        let (conn, _ch, mut consumer) = consume_from(config).await;
        let first = consumer.next().await.expect("open").expect("delivery");
        first.ack().await.expect("ack");
        // Keep taking (and not acking) deliveries, so the driver keeps reading, until the broker has
        // the ack.
        loop {
            tokio::select! {
                _ = &mut acked_rx => break,
                d = consumer.next() => drop(d.expect("open").expect("delivery")),
            }
        }
        drop(consumer);
        conn.close().await.expect("close");
    };
    tokio::time::timeout(LIMIT, async { tokio::join!(server, client) })
        .await
        .expect("the ack went out while deliveries kept coming");
}

/// Acks made before `Connection::close` reach the broker before connection.close, even with the
/// consumer (whose cancel would otherwise carry them out first) still alive.
#[tokio::test]
async fn acks_go_out_before_the_connection_close() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch, _) = serve_consumer(broker, 3).await;
        peer.methods_until_close(ch).await
    };
    let client = async move {
        let (conn, _ch, mut consumer) = consume_from(config).await;
        for _ in 0..3 {
            let d = consumer.next().await.expect("open").expect("delivery");
            d.ack().await.expect("ack");
        }
        conn.close().await.expect("close");
        drop(consumer);
    };
    let (seen, ()) = tokio::time::timeout(LIMIT, async { tokio::join!(server, client) })
        .await
        .expect("scenario finished in time");
    assert_eq!(seen, vec![ack(3, true)]);
}

/// A settlement made after a channel command never overtakes it, even while the driver holds acks for
/// its next read: a reject made after a publish reaches the broker after the publish, with the broker's
/// next delivery (which makes the driver sweep held acks) sent while the publish is still queued. Which
/// the driver sees first depends on when the runtime polls the socket, so this checks the order the
/// broker sees rather than forcing the race; `AckQueue`'s unit tests pin the rule that closes it (a
/// promised sweep takes no settlement made behind a queued command).
#[tokio::test]
async fn a_settlement_made_after_a_command_never_overtakes_it() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch, tag) = serve_consumer(broker, 3).await;
        go_rx.await.expect("client acted");
        // Readable socket for the driver before it turns to its commands.
        peer.send_content(ch, deliver(&tag, 4), b"m").await;
        let (c, m) = peer.expect_method().await;
        assert_eq!(
            (c, m),
            (ch, ack(1, false)),
            "the ack made before the publish, first"
        );
        let (publish, _, _) = peer.expect_publish(ch).await;
        assert_eq!(publish.routing_key.as_str(), "elsewhere");
        let (c, m) = peer.expect_method().await;
        let reject: Method = basic::Reject {
            delivery_tag: 2,
            requeue: true,
        }
        .into();
        assert_eq!(
            (c, m),
            (ch, reject),
            "the reject made after the publish, after it"
        );
        // The cancel on drop, and the settlement of delivery 4.
        let rest = peer.methods_until_close(ch).await;
        assert!(
            rest.iter().all(|m| matches!(
                m,
                Method::BasicCancel(_) | Method::BasicReject(_) | Method::BasicAck(_)
            )),
            "{rest:?}"
        );
    };
    let client = async move {
        let (conn, ch, mut consumer) = consume_from(config).await;
        let mut d = Vec::new();
        for _ in 0..3 {
            d.push(consumer.next().await.expect("open").expect("delivery"));
        }
        // No await below waits for the driver or the broker (current-thread runtime): they run when
        // this task next waits, with the ack, the publish and the reject all made.
        go_tx.send(()).expect("broker waiting");
        d[0].ack().await.expect("ack");
        let _unconfirmed = ch
            .basic_publish(
                "",
                "elsewhere",
                BasicPublishOptions::default(),
                BasicProperties::default(),
                "x",
            )
            .await
            .expect("publish");
        d[1].reject(true).await.expect("reject");
        let fourth = consumer.next().await.expect("open").expect("delivery");
        assert_eq!(fourth.delivery_tag(), 4);
        drop(consumer);
        conn.close().await.expect("close");
    };
    tokio::time::timeout(LIMIT, async { tokio::join!(server, client) })
        .await
        .expect("scenario finished in time");
}
