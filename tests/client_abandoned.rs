//! Operations whose caller gave up (its future was dropped, or it timed out) against a scripted broker:
//! nothing is left running on the broker's side and nothing waits forever on ours.
//!
//! Each scenario synchronises the broker's script with the client through oneshots, so that the future is
//! dropped at a known point of the exchange (on this current-thread runtime the driver runs only when the
//! test yields).

mod fake_broker;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use coney::{
    codec::{FieldTable, LongStr, ShortStr},
    frame::Frame,
    options::{BasicConsumeOptions, BasicPublishOptions},
    spec::{basic, channel, connection, queue, Method, ReplyCode},
    BasicProperties, Connection, Error,
};
use fake_broker::{deliver, fill_the_command_queue, scenario, FakeBroker, Peer};
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(20);

/// A basic.consume already sent when its caller dropped the future: the consume-ok that follows starts a
/// consumer nobody receives from, so the driver cancels it, and a delivery already on the way for it is
/// given back to the queue.
#[tokio::test]
async fn a_consume_abandoned_after_it_was_sent_is_cancelled() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        match peer.expect_method().await {
            (c, Method::BasicConsume(_)) if c == ch => {}
            other => panic!("fake broker: expected basic.consume, got {other:?}"),
        }
        arrived_tx.send(()).expect("client listening");
        dropped_rx.await.expect("client dropped the consume");
        let tag = ShortStr::from("amq.ctag-abandoned");
        peer.send_method(
            ch,
            basic::ConsumeOk {
                consumer_tag: tag.clone(),
            },
        )
        .await;
        peer.send_content(ch, deliver(&tag, 1), b"on its way").await;
        (tag, peer.methods_until_close(ch).await)
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let consume = ch.basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new());
        tokio::select! {
            biased;
            r = consume => panic!("consume answered before the broker was told to: {:?}", r.map(|_| ())),
            _ = arrived_rx => {}
        }
        dropped_tx.send(()).expect("broker listening");
        // Let the driver take the consume-ok and the delivery.
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close().await.expect("close");
    };
    let ((tag, seen), ()) = scenario(LIMIT, server, client).await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, Method::BasicCancel(c) if c.consumer_tag == tag)),
        "the abandoned consumer was cancelled: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|m| matches!(m, Method::BasicReject(r) if r.delivery_tag == 1 && r.requeue)),
        "its delivery went back to the queue: {seen:?}"
    );
    assert!(
        !seen.iter().any(|m| matches!(m, Method::BasicAck(_))),
        "nothing acked: {seen:?}"
    );
}

/// An RPC still queued behind an unanswered one when its caller dropped the future is never sent: here a
/// basic.consume behind a slow queue.declare. The next RPC goes out in its place.
#[tokio::test]
async fn an_rpc_abandoned_before_it_was_sent_is_not_sent() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let name = peer.expect_queue_declare(ch).await;
        arrived_tx.send(()).expect("client listening");
        dropped_rx.await.expect("client dropped the consume");
        peer.send_method(
            ch,
            queue::DeclareOk {
                queue: name,
                message_count: 0,
                consumer_count: 0,
            },
        )
        .await;
        match peer.expect_method().await {
            (c, Method::BasicQos(q)) if c == ch => assert_eq!(q.prefetch_count, 7),
            other => panic!("fake broker: expected basic.qos next, got {other:?}"),
        }
        peer.send_method(ch, basic::QosOk {}).await;
        peer.methods_until_close(ch).await
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let declarer = {
            let ch = ch.clone();
            tokio::spawn(async move {
                ch.queue_declare("slow", Default::default(), FieldTable::new())
                    .await
            })
        };
        arrived_rx.await.expect("the declare reached the broker");
        let consume = ch.basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new());
        tokio::select! {
            biased;
            r = consume => panic!("consume answered: {:?}", r.map(|_| ())),
            // Long enough for the driver to queue the consume behind the declare.
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        dropped_tx.send(()).expect("broker listening");
        declarer
            .await
            .expect("declarer ran")
            .expect("declare answered");
        ch.basic_qos(7, Default::default()).await.expect("qos");
        conn.close().await.expect("close");
    };
    let (seen, ()) = scenario(LIMIT, server, client).await;
    assert!(
        !seen.iter().any(|m| matches!(m, Method::BasicConsume(_))),
        "the abandoned consume never went out: {seen:?}"
    );
}

/// A channel.open whose caller dropped the future before open-ok: nobody holds a handle to close the
/// channel, so the driver closes it, and the connection goes on.
#[tokio::test]
async fn a_channel_abandoned_before_open_ok_is_closed() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    let server = async move {
        let mut peer: Peer = broker.accept().await;
        peer.handshake().await;
        let abandoned = match peer.expect_method().await {
            (c, Method::ChannelOpen(_)) if c != 0 => c,
            other => panic!("fake broker: expected channel.open, got {other:?}"),
        };
        arrived_tx.send(()).expect("client listening");
        dropped_rx.await.expect("client dropped the open");
        peer.send_method(abandoned, channel::OpenOk).await;
        peer.expect_channel_close(abandoned, ReplyCode::REPLY_SUCCESS)
            .await;
        peer.send_method(abandoned, channel::CloseOk).await;
        let next = peer.open_channel().await;
        peer.methods_until_close(next).await;
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let open = conn.open_channel();
        tokio::select! {
            biased;
            r = open => panic!("open answered: {:?}", r.map(|_| ())),
            _ = arrived_rx => {}
        }
        dropped_tx.send(()).expect("broker listening");
        // Let the driver take the open-ok and close the channel before the next open goes out.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ch = conn.open_channel().await.expect("a later channel opens");
        assert!(ch.is_open());
        conn.close().await.expect("close");
    };
    scenario(LIMIT, server, client).await;
}

/// A broker that stops reading (as RabbitMQ does to a connection under a resource alarm) lets the writes
/// pile up until the driver stops taking commands and the command queue fills. `Connection::close` must
/// still return, in bounded time, with the connection closed: it asks for the close past the queue.
#[tokio::test]
async fn close_returns_when_the_broker_stops_reading() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let server = async move {
        let (peer, _) = broker.accept_with_channel().await;
        // Reads nothing more; the socket stays open until the client is done.
        done_rx.await.expect("client done");
        drop(peer);
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        fill_the_command_queue(&ch).await;
        // close_timeout is 1 s: the wait for room, the close handshake and the goodbye are one each.
        let closed = tokio::time::timeout(Duration::from_secs(10), conn.close())
            .await
            .expect("close returned");
        assert!(
            matches!(closed, Err(Error::Timeout { .. })),
            "no close-ok came: {closed:?}"
        );
        assert!(!conn.is_open(), "the connection is closed");
        assert!(!ch.is_open(), "and its channel with it");
        done_tx.send(()).expect("broker waiting");
    };
    scenario(Duration::from_secs(60), server, client).await;
}

/// A `no_ack` consumer dropped while a delivery to it is on the way: the broker settled that delivery when
/// it sent it, so the client drops it. A reject would name a tag the broker does not hold, and RabbitMQ
/// would close the channel with 406.
#[tokio::test]
async fn a_delivery_in_flight_to_a_dropped_no_ack_consumer_is_dropped_not_rejected() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let tag = peer.answer_consume(ch).await;
        match peer.expect_method().await {
            (c, Method::BasicCancel(cancel)) if c == ch && cancel.consumer_tag == tag => {
                assert!(
                    cancel.no_wait,
                    "a dropped consumer does not wait for cancel-ok"
                );
            }
            other => panic!("fake broker: expected basic.cancel, got {other:?}"),
        }
        // Sent before the broker processed the cancel.
        peer.send_content(ch, deliver(&tag, 1), b"in flight").await;
        peer.methods_until_close(ch).await
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let consumer = ch
            .basic_consume(
                "q",
                "",
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::new(),
            )
            .await
            .expect("consume");
        drop(consumer);
        // Let the driver take the delivery.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(ch.is_open());
        conn.close().await.expect("close");
    };
    let (seen, ()) = scenario(LIMIT, server, client).await;
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, Method::BasicReject(_) | Method::BasicAck(_))),
        "nothing settled: {seen:?}"
    );
}

/// A basic.get already sent when its caller dropped the future: without no_ack the broker holds the
/// message for the channel, so the client gives it back (basic.reject with requeue) instead of letting it
/// sit unacked until the channel closes.
#[tokio::test]
async fn a_get_abandoned_after_it_was_sent_is_requeued() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        match peer.expect_method().await {
            (c, Method::BasicGet(get)) if c == ch => assert!(!get.no_ack),
            other => panic!("fake broker: expected basic.get, got {other:?}"),
        }
        arrived_tx.send(()).expect("client listening");
        dropped_rx.await.expect("client dropped the get");
        let ok = basic::GetOk {
            delivery_tag: 7,
            redelivered: false,
            exchange: ShortStr::from(""),
            routing_key: ShortStr::from("q"),
            message_count: 0,
        };
        peer.send_content(ch, ok, b"nobody's").await;
        peer.methods_until_close(ch).await
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let get = ch.basic_get("q", false);
        tokio::select! {
            biased;
            r = get => panic!("get answered: {:?}", r.map(|_| ())),
            _ = arrived_rx => {}
        }
        dropped_tx.send(()).expect("broker listening");
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close().await.expect("close");
    };
    let (seen, ()) = scenario(LIMIT, server, client).await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, Method::BasicReject(r) if r.delivery_tag == 7 && r.requeue)),
        "the message went back to the queue: {seen:?}"
    );
}

/// A basic.consume whose future is dropped after the driver answered it but before the future read the
/// answer: the consumer is registered and nobody will ever hold it. The first delivery to it finds its
/// queue's receiver gone, and the driver cancels the consumer (and requeues the delivery).
#[tokio::test]
async fn a_consume_dropped_after_its_answer_is_cancelled_at_its_first_delivery() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let tag = peer.answer_consume(ch).await;
        arrived_tx.send(()).expect("client listening");
        dropped_rx.await.expect("client dropped the consume");
        peer.send_content(ch, deliver(&tag, 1), b"to nobody").await;
        (tag, peer.methods_until_close(ch).await)
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        // Boxed, so that dropping it drops the future (a `tokio::pin!`ned one lives to the end of the block).
        let mut consume =
            Box::pin(ch.basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new()));
        tokio::select! {
            biased;
            r = &mut consume => panic!("consume answered before consume-ok: {:?}", r.map(|_| ())),
            _ = arrived_rx => {}
        }
        // Not polled meanwhile: the driver takes consume-ok, registers the consumer and answers into a
        // receiver that is still there.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(consume);
        dropped_tx.send(()).expect("broker listening");
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close().await.expect("close");
    };
    let ((tag, seen), ()) = scenario(LIMIT, server, client).await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, Method::BasicCancel(c) if c.consumer_tag == tag && c.no_wait)),
        "the consumer nobody holds was cancelled: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|m| matches!(m, Method::BasicReject(r) if r.delivery_tag == 1 && r.requeue)),
        "its delivery went back: {seen:?}"
    );
}

/// A channel.open whose future is dropped after the driver answered it but before the future read the
/// answer: the answer closes the channel when it is dropped unread.
#[tokio::test]
async fn a_channel_dropped_after_its_answer_is_closed() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (arrived_tx, arrived_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, abandoned) = broker.accept_with_channel().await;
        arrived_tx.send(()).expect("client listening");
        peer.expect_channel_close(abandoned, ReplyCode::REPLY_SUCCESS)
            .await;
        peer.send_method(abandoned, channel::CloseOk).await;
        peer.expect_clean_close().await;
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let mut open = Box::pin(conn.open_channel());
        tokio::select! {
            biased;
            r = &mut open => panic!("open answered before open-ok: {:?}", r.map(|_| ())),
            _ = arrived_rx => {}
        }
        // Not polled meanwhile: the driver takes open-ok and answers into a receiver still there.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(open);
        tokio::time::sleep(Duration::from_millis(200)).await;
        conn.close().await.expect("close");
    };
    scenario(LIMIT, server, client).await;
}

/// A broker that never answers an RPC keeps every later RPC of the channel waiting behind it. A caller
/// that retries on timeout must not make its abandoned attempts pile up there (a review found 600
/// attempts with a 100 KB `arguments` table holding 58 MiB): they are dropped when the next RPC comes,
/// and none is sent.
#[tokio::test]
async fn abandoned_rpcs_behind_an_unanswered_one_are_dropped() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        // Never answered.
        peer.expect_queue_declare(ch).await;
        peer.methods_until_close(ch).await
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let note = Bytes::from(vec![b'x'; 100_000]);
        let attempt = |arguments: FieldTable| {
            let declare = ch.queue_declare("q", Default::default(), arguments);
            async move {
                let _ = tokio::time::timeout(Duration::from_millis(5), declare).await;
            }
        };
        for _ in 0..50 {
            attempt(FieldTable::new().with("x-note", LongStr::from(note.clone()))).await;
        }
        // The next RPC on the channel clears the abandoned ones waiting.
        attempt(FieldTable::new()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let unique = note.is_unique();
        conn.close().await.expect("close");
        unique
    };
    let (seen, unique) = scenario(LIMIT, server, client).await;
    assert!(
        unique,
        "the abandoned attempts' arguments are no longer held by the driver"
    );
    assert!(seen.is_empty(), "abandoned attempts are not sent: {seen:?}");
}

/// A channel dropped while the command queue is full (the broker is not reading, so the driver takes no
/// commands) could not queue its close, and stayed open on the broker, its id taken, until the
/// connection closed. Now the driver is told past the queue, and closes it after the publishes the
/// channel queued before the drop (P11).
#[tokio::test]
async fn a_channel_dropped_while_the_command_queue_is_full_is_closed_after_its_publishes() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        dropped_rx.await.expect("the client dropped its channel");
        let mut publishes = 0u32;
        loop {
            match peer.expect_frame().await {
                Frame::Method {
                    channel,
                    method: Method::BasicPublish(_),
                } if channel == ch => publishes += 1,
                Frame::Method {
                    channel,
                    method: Method::ChannelClose(close),
                } if channel == ch => {
                    assert_eq!(close.reply_code, ReplyCode::REPLY_SUCCESS);
                    break;
                }
                Frame::Header { .. } | Frame::Body { .. } | Frame::Heartbeat => {}
                other => panic!("fake broker: unexpected {other:?}"),
            }
        }
        peer.send_method(ch, channel::CloseOk {}).await;
        peer.expect_clean_close().await;
        publishes
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let published = fill_the_command_queue(&ch).await;
        drop(ch);
        dropped_tx.send(()).expect("broker waiting");
        // Time for the broker to read the publishes and answer the close.
        tokio::time::sleep(Duration::from_millis(500)).await;
        conn.close().await.expect("close");
        published
    };
    let (seen, published) = scenario(LIMIT, server, client).await;
    assert_eq!(
        seen, published,
        "every publish before the drop went out first"
    );
}

/// A connection.close the broker never answers: `Connection::close` returns the `Timeout`, but the
/// connection is closed by the client all the same, and its handles say so. The `Timeout` used to become
/// the connection's error: later calls failed with "timed out waiting for connection.close-ok", whose
/// `is_connection_closed()` is false and `is_recoverable()` true, and `closed()` gave it too.
#[tokio::test]
async fn an_unanswered_connection_close_leaves_the_connection_closed_by_the_client() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, _) = broker.accept_with_channel().await;
        peer.expect_connection_close(ReplyCode::REPLY_SUCCESS).await;
        // No close-ok.
        peer.expect_eof().await;
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let closed = conn.close().await;
        assert!(
            matches!(closed, Err(Error::Timeout { .. })),
            "no close-ok came: {closed:?}"
        );
        let reason = conn.closed().await;
        assert!(
            matches!(reason, Error::ClosedByClient(_)),
            "the connection's end: {reason:?}"
        );
        let again = conn.open_channel().await.expect_err("closed");
        assert!(again.is_connection_closed(), "{again:?}");
        assert!(!again.is_recoverable(), "{again:?}");
        let declared = ch
            .queue_declare("q", Default::default(), FieldTable::new())
            .await
            .expect_err("closed");
        assert!(declared.is_connection_closed(), "{declared:?}");
    };
    scenario(LIMIT, server, client).await;
}

/// The same while another channel keeps the command queue busy: the dropped channel is closed once its
/// own commands are handled, not when the whole queue is next empty, which a busy publisher on another
/// channel may never let happen (from helper-35's review: it waited until the other channel stopped).
#[tokio::test]
async fn a_dropped_channel_is_closed_while_another_channel_keeps_publishing() {
    let broker = FakeBroker::bind_with_small_buffers().await;
    let config = broker.config();
    let stop = Arc::new(AtomicBool::new(false));
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    let stop_publishing = stop.clone();
    let server = async move {
        let (mut peer, ch1) = broker.accept_with_channel().await;
        let ch2 = peer.open_channel().await;
        dropped_rx
            .await
            .expect("the client dropped its first channel");
        let start = tokio::time::Instant::now();
        // Slow reads keep the client's queue busy; after 10 s the other publisher is told to stop.
        let mut stopped = false;
        loop {
            match peer.expect_frame().await {
                Frame::Method {
                    method: Method::BasicPublish(_),
                    ..
                } => {
                    if !stopped {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                Frame::Method {
                    channel,
                    method: Method::ChannelClose(_),
                } if channel == ch1 => break,
                // The other publisher stopped (too late) and dropped its channel.
                Frame::Method {
                    channel,
                    method: Method::ChannelClose(_),
                } if channel == ch2 => peer.send_method(ch2, channel::CloseOk {}).await,
                // The client gave up on its own: the first channel was never closed.
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionClose(_),
                } => {
                    peer.send_method(0, connection::CloseOk).await;
                    return true;
                }
                Frame::Header { .. } | Frame::Body { .. } | Frame::Heartbeat => {}
                other => panic!("fake broker: unexpected {other:?}"),
            }
            if !stopped && start.elapsed() > Duration::from_secs(10) {
                stop_publishing.store(true, Ordering::SeqCst);
                stopped = true;
            }
        }
        peer.send_method(ch1, channel::CloseOk {}).await;
        stop_publishing.store(true, Ordering::SeqCst);
        loop {
            match peer.expect_frame().await {
                Frame::Method {
                    channel,
                    method: Method::ChannelClose(_),
                } if channel == ch2 => peer.send_method(ch2, channel::CloseOk {}).await,
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionClose(_),
                } => break,
                _ => {}
            }
        }
        peer.send_method(0, connection::CloseOk).await;
        stopped
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch1 = conn.open_channel().await.expect("open channel 1");
        let ch2 = conn.open_channel().await.expect("open channel 2");
        let body = Bytes::from(vec![7u8; 64 * 1024]);
        let other_body = body.clone();
        let publisher = tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let publish = ch2.basic_publish(
                    "",
                    "q",
                    BasicPublishOptions::default(),
                    BasicProperties::default(),
                    other_body.clone(),
                );
                match publish.await {
                    Ok(_) | Err(Error::Timeout { .. }) => {}
                    Err(e) => panic!("publish on channel 2: {e:?}"),
                }
            }
        });
        fill_the_command_queue(&ch1).await;
        drop(ch1);
        dropped_tx.send(()).expect("broker waiting");
        publisher.await.expect("publisher");
        let _ = conn.close().await;
    };
    let (stopped, ()) = scenario(Duration::from_secs(60), server, client).await;
    assert!(
        !stopped,
        "the dropped channel was closed only after the other channel stopped publishing, or never"
    );
}
