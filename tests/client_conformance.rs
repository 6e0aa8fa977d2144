//! Protocol conformance against a scripted broker: close handshakes (what may follow a close or a
//! close-ok, a close crossing ours, closes while a consumer's queue is full), errors reported with the
//! broker's reply code, dead peers, and short strings that are not UTF-8. Each test is a bug a
//! conformance review found, and fails without its fix. `tests/client_conformance_broker.rs` has the
//! same against RabbitMQ where it reproduces there.

mod fake_broker;

use std::time::Duration;

use bytes::Bytes;
use coney::{
    codec::{FieldTable, FieldValue, ShortStr},
    frame::Frame,
    options::{BasicConsumeOptions, BasicPublishOptions},
    spec::{basic, channel, connection, Method, ReplyCode},
    BasicProperties, Connection, Error,
};
use fake_broker::{
    deliver, fill_the_command_queue, method_frame, raw_frame, scenario, FakeBroker, Peer,
};
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(20);

fn precondition_failed() -> channel::Close {
    channel::Close {
        reply_code: ReplyCode::PRECONDITION_FAILED,
        reply_text: ShortStr::from("PRECONDITION_FAILED - fake"),
        class_id: 0,
        method_id: 0,
    }
}

/// Reads frames until the client's channel.close-ok on `ch`; returns the methods seen on `ch` before it.
async fn drain_until_channel_close_ok(peer: &mut Peer, ch: u16) -> Vec<Method> {
    let mut seen = Vec::new();
    loop {
        match peer.expect_frame().await {
            Frame::Method {
                channel,
                method: Method::ChannelCloseOk(_),
            } if channel == ch => return seen,
            Frame::Method { channel, method } if channel == ch => seen.push(method),
            _ => {}
        }
    }
}

/// A server-initiated channel.close must fail every pending operation of the channel with the server's
/// reply code, including calls the client made before it saw the close whose commands were still queued
/// for the driver. Here the driver is kept from taking commands (a 32 MiB publish the broker does not read
/// yet fills the write side past the driver's 4 MiB limit), while it still reads the broker's close.
#[tokio::test]
async fn calls_queued_behind_a_server_channel_close_get_the_servers_reply_code() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (queued_tx, queued_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        peer.answer_confirm_select(ch).await;
        queued_rx.await.expect("client queued its calls");
        // Not reading yet: the client's 32 MiB publish is stuck in its write buffer.
        peer.send_method(ch, precondition_failed()).await;
        let seen = drain_until_channel_close_ok(&mut peer, ch).await;
        peer.methods_until_close(ch).await;
        seen
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        ch.confirm_select().await.expect("confirm.select");
        let big = ch
            .basic_publish(
                "",
                "q",
                BasicPublishOptions::default(),
                BasicProperties::default(),
                Bytes::from(vec![0u8; 32 << 20]),
            )
            .await
            .expect("big publish queued");
        // Let the driver write what the socket takes and stop taking commands.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let small = ch
            .basic_publish(
                "",
                "q",
                BasicPublishOptions::default(),
                BasicProperties::default(),
                "x",
            )
            .await
            .expect("small publish queued");
        let declare = ch.queue_declare("q", Default::default(), FieldTable::new());
        tokio::pin!(declare);
        // One poll puts queue.declare into the command queue.
        assert!(futures_poll_once(declare.as_mut()).await.is_none());
        queued_tx.send(()).expect("broker listening");
        let declared = declare.await;
        let big = big.await;
        let small = small.await;
        conn.close().await.expect("close");
        (big, small, declared.map(drop))
    };
    let (seen, (big, small, declared)) = scenario(LIMIT, server, client).await;
    assert_eq!(
        code(&big),
        Some(ReplyCode::PRECONDITION_FAILED),
        "big publish: {big:?}"
    );
    assert!(
        !seen.iter().any(|m| matches!(m, Method::QueueDeclare(_))),
        "{seen:?}"
    );
    assert_eq!(
        code(&declared),
        Some(ReplyCode::PRECONDITION_FAILED),
        "queue.declare made before the client saw the close: {declared:?}"
    );
    assert_eq!(
        code(&small),
        Some(ReplyCode::PRECONDITION_FAILED),
        "publish made before the client saw the close: {small:?}"
    );
}

fn code<T>(r: &Result<T, Error>) -> Option<ReplyCode> {
    r.as_ref().err().and_then(Error::reply_code)
}

/// Polls `f` once; `Some` if it completed.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut f).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// `count` deliveries for `tag` on `ch`, tags 1..=count, with a 4-byte body, as one buffer.
fn deliveries(ch: u16, tag: &ShortStr, count: u64) -> Vec<u8> {
    use coney::frame::{encode_body, encode_content_header, encode_method, ContentHeader};
    let mut buf = bytes::BytesMut::new();
    for t in 1..=count {
        encode_method(&mut buf, ch, &deliver(tag, t).into());
        encode_content_header(
            &mut buf,
            ch,
            &ContentHeader {
                class_id: basic::CLASS_ID,
                body_size: 4,
                properties: Default::default(),
            },
        );
        encode_body(&mut buf, ch, b"body");
    }
    buf.to_vec()
}

/// More deliveries than a consumer without a prefetch limit buffers (256): the driver parks one and
/// stops reading the socket.
const OVERFLOW: u64 = 300;

/// spec (connection.close): "After sending this method, any received methods except Close and Close-OK
/// MUST be discarded." A consumer whose buffer is full (its reader busy elsewhere, here: closing the
/// connection) must not keep the client from reading the broker's close-ok: `Connection::close` should
/// return `Ok` at once, not `Err(Timeout)` after `close_timeout`.
#[tokio::test]
async fn connection_close_completes_while_a_consumer_buffer_is_full() {
    let broker = FakeBroker::bind().await;
    let config = broker.config().with_close_timeout(Duration::from_secs(3));
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let tag = peer.answer_consume(ch).await;
        peer.send_raw(&deliveries(ch, &tag, OVERFLOW)).await;
        // The client's close; deliveries it rejects or acks meanwhile are skipped.
        loop {
            if let (0, Method::ConnectionClose(_)) = peer.expect_method().await {
                break;
            }
        }
        peer.send_method(0, connection::CloseOk).await;
        peer.expect_eof().await;
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let _consumer = ch
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
        // Let the deliveries arrive and fill the consumer's buffer.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let closed = conn.close().await;
        (closed, started.elapsed())
    };
    let ((), (closed, took)) = scenario(LIMIT, server, client).await;
    assert!(
        closed.is_ok(),
        "close with a full consumer buffer: {closed:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(1), "close took {took:?}");
}

/// The same for channel.close: the channel's own parked delivery is to be discarded (spec), the close-ok
/// read, and the connection must go on (here: a second channel opens afterwards).
#[tokio::test]
async fn channel_close_completes_while_its_consumer_buffer_is_full() {
    let broker = FakeBroker::bind().await;
    let config = broker.config().with_close_timeout(Duration::from_secs(2));
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let tag = peer.answer_consume(ch).await;
        peer.send_raw(&deliveries(ch, &tag, OVERFLOW)).await;
        loop {
            match peer.expect_method().await {
                (c, Method::ChannelClose(_)) if c == ch => break,
                _ => {}
            }
        }
        peer.send_method(ch, channel::CloseOk).await;
        let second = peer.open_channel().await;
        peer.expect_clean_close().await;
        second
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let _consumer = ch
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
        tokio::time::sleep(Duration::from_millis(300)).await;
        let closed = ch.close().await;
        // Held until the connection closes: dropping it would close it first.
        let second = conn.open_channel().await;
        let _ = conn.close().await;
        (closed, second.map(|c| c.id()))
    };
    let (_, (closed, second)) = scenario(LIMIT, server, client).await;
    assert!(
        closed.is_ok(),
        "channel.close with a full consumer buffer: {closed:?}"
    );
    assert!(second.is_ok(), "a channel opened afterwards: {second:?}");
}

/// spec (connection.close, rule "stability"): "After sending this method, any received methods except
/// Close and Close-OK MUST be discarded. The response to receiving a Close after sending Close must be to
/// send Close-Ok." Here the broker's close crosses the client's close for a violation. (The client's
/// goodbye used to shut the socket down without writing the close-ok it had queued.)
#[tokio::test]
async fn a_server_close_crossing_the_clients_violation_close_is_answered() {
    let broker = FakeBroker::bind().await;
    let config = broker.config().with_close_timeout(Duration::from_secs(2));
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        peer.expect_queue_declare(ch).await;
        // A body frame with no content method before it: 505.
        peer.send_raw(&raw_frame(coney::spec::FRAME_BODY, ch, b"abc"))
            .await;
        peer.expect_connection_close(ReplyCode::UNEXPECTED_FRAME)
            .await;
        // Instead of close-ok, the broker's own close (it was closing too).
        peer.send_method(
            0,
            connection::Close {
                reply_code: ReplyCode::INTERNAL_ERROR,
                reply_text: ShortStr::from("INTERNAL_ERROR"),
                class_id: 0,
                method_id: 0,
            },
        )
        .await;
        peer.expect_eof().await
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let _ = ch
            .queue_declare("q", Default::default(), FieldTable::new())
            .await;
        // Let the driver's goodbye finish.
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (after_close, ()) = scenario(LIMIT, server, client).await;
    assert!(
        after_close
            .iter()
            .any(|f| matches!(f, Frame::Method { channel: 0, method: Method::ConnectionCloseOk(_) })),
        "the client answered the broker's close with close-ok before closing the socket: {after_close:?}"
    );
}

/// The first of the client's two queue.declares, answered once the second is queued behind it: the
/// declare-ok, for the caller to send in one write with what must arrive in the same read.
async fn declare_ok_after_the_second_declare(peer: &mut Peer, ch: u16) -> bytes::BytesMut {
    let queue = peer.expect_queue_declare(ch).await;
    // Give the client time to queue its second RPC behind the first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    method_frame(
        ch,
        &coney::spec::queue::DeclareOk {
            queue,
            message_count: 0,
            consumer_count: 0,
        }
        .into(),
    )
}

/// Two queue.declares on `ch` at once: the second waits in the driver behind the first.
async fn two_declares(ch: &coney::Channel) -> (Result<(), Error>, Result<(), Error>) {
    let first = ch.queue_declare("q1", Default::default(), FieldTable::new());
    let second = ch.queue_declare("q2", Default::default(), FieldTable::new());
    let (first, second) = tokio::join!(first, second);
    (first.map(drop), second.map(drop))
}

/// After answering the broker's connection.close with close-ok the client must send nothing more
/// (connection.close-ok "tells the recipient that it is safe to release resources for the connection and
/// close the socket"; the Java client shuts its channels down before sending it). Here the reply to one RPC
/// and the broker's close arrive in one read: the reply is dispatched after the state machine queued
/// close-ok, and the channel's next RPC must not follow it (it used to).
#[tokio::test]
async fn nothing_is_sent_after_close_ok_to_the_brokers_close() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let mut bytes = declare_ok_after_the_second_declare(&mut peer, ch).await;
        bytes.extend_from_slice(&method_frame(
            0,
            &connection::Close {
                reply_code: ReplyCode::CONNECTION_FORCED,
                reply_text: ShortStr::from("CONNECTION_FORCED - shutdown"),
                class_id: 0,
                method_id: 0,
            }
            .into(),
        ));
        peer.send_raw(&bytes).await;
        peer.expect_eof().await
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let (first, second) = two_declares(&ch).await;
        (first, second)
    };
    let (frames, (first, second)) = scenario(LIMIT, server, client).await;
    assert!(first.is_ok(), "{first:?}");
    assert_eq!(
        code(&second),
        Some(ReplyCode::CONNECTION_FORCED),
        "{second:?}"
    );
    let close_ok_at = frames
        .iter()
        .position(|f| {
            matches!(
                f,
                Frame::Method {
                    channel: 0,
                    method: Method::ConnectionCloseOk(_)
                }
            )
        })
        .expect("close-ok sent");
    assert_eq!(
        close_ok_at + 1,
        frames.len(),
        "frames after connection.close-ok: {:?}",
        &frames[close_ok_at + 1..]
    );
}

/// The same after the client's own connection.close for a violation: a reply decoded before the bad
/// frame is dispatched after the state machine queued connection.close, and the channel's next RPC must
/// not go out behind the close (the Java client's channels quiesce: nothing but close-ok follows a close).
#[tokio::test]
async fn nothing_but_close_ok_is_sent_after_the_clients_violation_close() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let mut bytes = declare_ok_after_the_second_declare(&mut peer, ch).await;
        // A body frame with no content method before it: 505.
        bytes.extend_from_slice(&raw_frame(coney::spec::FRAME_BODY, ch, b"abc"));
        peer.send_raw(&bytes).await;
        let mut after_close = Vec::new();
        let mut closed = false;
        loop {
            match peer.next_frame().await {
                Ok(Some(Frame::Method {
                    channel: 0,
                    method: Method::ConnectionClose(c),
                })) => {
                    assert_eq!(c.reply_code, ReplyCode::UNEXPECTED_FRAME);
                    closed = true;
                    // Answer later, so that whatever the client sends after its close is seen.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    peer.send_method(0, connection::CloseOk).await;
                }
                Ok(Some(Frame::Heartbeat)) => {}
                Ok(Some(f)) if closed => after_close.push(f),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        after_close
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let (first, second) = two_declares(&ch).await;
        (first, second)
    };
    let (after_close, (_first, second)) = scenario(LIMIT, server, client).await;
    assert_eq!(
        code(&second),
        Some(ReplyCode::UNEXPECTED_FRAME),
        "{second:?}"
    );
    assert!(
        after_close.is_empty(),
        "frames after the client's connection.close: {after_close:?}"
    );
}

/// A reply and the broker's channel.close arriving in one read: the driver dispatches the reply after the
/// state machine has answered the close with close-ok, and the channel's next queued RPC must not go out
/// on the channel the broker has released (it used to). RabbitMQ takes a method on a channel it has not
/// seen opened as a hard 504 CHANNEL_ERROR ("expected 'channel.open'") and closes the whole connection;
/// the spec (channel.close) says the channel is gone once close-ok is sent.
#[tokio::test]
async fn nothing_is_sent_on_a_channel_after_its_close_ok() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let mut bytes = declare_ok_after_the_second_declare(&mut peer, ch).await;
        bytes.extend_from_slice(&method_frame(
            ch,
            &channel::Close {
                reply_code: ReplyCode::NOT_FOUND,
                reply_text: ShortStr::from("NOT_FOUND - no exchange 'missing' in vhost '/'"),
                class_id: 60,
                method_id: 40,
            }
            .into(),
        ));
        peer.send_raw(&bytes).await;
        let mut after_close_ok = Vec::new();
        let mut close_ok = false;
        loop {
            match peer.expect_method().await {
                (0, Method::ConnectionClose(_)) => break,
                (c, Method::ChannelCloseOk(_)) if c == ch => close_ok = true,
                (c, m) if c == ch && close_ok => after_close_ok.push(m),
                _ => {}
            }
        }
        peer.send_method(0, connection::CloseOk).await;
        peer.expect_eof().await;
        (close_ok, after_close_ok)
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let (first, second) = two_declares(&ch).await;
        conn.close().await.expect("close");
        (first, second)
    };
    let ((close_ok, after), (first, second)) = scenario(LIMIT, server, client).await;
    assert!(first.is_ok(), "{first:?}");
    assert!(close_ok, "close-ok sent");
    assert_eq!(code(&second), Some(ReplyCode::NOT_FOUND), "{second:?}");
    assert!(
        after.is_empty(),
        "methods on the channel after its close-ok: {after:?}"
    );
}

/// P5 / spec 4.2.7: a peer silent for two heartbeat intervals is dead and the socket is closed without
/// the close handshake. The dead peer has also stopped reading: the driver used to try to flush its
/// write buffer to it first, and failed the waiters only after `close_timeout` more.
#[tokio::test]
async fn waiters_learn_of_missed_heartbeats_without_waiting_out_close_timeout() {
    let broker = FakeBroker::bind().await;
    let config = broker
        .config()
        .with_rpc_timeout(Duration::from_secs(15))
        .with_close_timeout(Duration::from_secs(5));
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let server = async move {
        let mut peer = broker.accept().await;
        peer.handshake_with(fake_broker::Tune {
            heartbeat: 1,
            ..Default::default()
        })
        .await;
        let _ch = peer.open_channel().await;
        // Dead from here: neither reads nor writes until the client is done.
        let _ = done_rx.await;
        drop(peer);
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let _big = ch
            .basic_publish(
                "",
                "q",
                BasicPublishOptions::default(),
                BasicProperties::default(),
                Bytes::from(vec![0u8; 32 << 20]),
            )
            .await
            .expect("publish");
        let started = std::time::Instant::now();
        let declared = ch
            .queue_declare("q", Default::default(), FieldTable::new())
            .await;
        let took = started.elapsed();
        let _ = done_tx.send(());
        (declared.map(drop), took)
    };
    let ((), (declared, took)) = scenario(LIMIT, server, client).await;
    assert!(
        matches!(declared, Err(Error::MissedHeartbeats(_))),
        "{declared:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "the waiter learned it after {took:?}"
    );
}

/// A `basic.deliver` whose routing key is not UTF-8: shortstr is octets on the wire, RabbitMQ does not
/// check routing keys, and other clients (Go strings, Python bytes, Erlang binaries) publish such keys.
/// The client used to close the whole connection with 502 instead of delivering the message, and since
/// the message was requeued, every reconnect died on it again. It is delivered, its key decoded lossily.
#[tokio::test]
async fn a_delivery_with_a_non_utf8_routing_key_does_not_kill_the_connection() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let tag = peer.answer_consume(ch).await;
        // basic.deliver by hand: consumer-tag, delivery-tag, redelivered, exchange, routing-key.
        let mut payload = vec![0, 60, 0, 60];
        payload.push(tag.len() as u8);
        payload.extend_from_slice(tag.as_bytes());
        payload.extend_from_slice(&1u64.to_be_bytes());
        payload.push(0);
        payload.push(0); // exchange ""
        payload.extend_from_slice(&[3, b'k', 0xff, 0xfe]); // routing key "k\xff\xfe"
        let mut bytes = raw_frame(coney::spec::FRAME_METHOD, ch, &payload);
        let mut header = bytes::BytesMut::new();
        coney::frame::encode_content_header(
            &mut header,
            ch,
            &coney::frame::ContentHeader {
                class_id: basic::CLASS_ID,
                body_size: 1,
                properties: Default::default(),
            },
        );
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&raw_frame(coney::spec::FRAME_BODY, ch, b"x"));
        peer.send_raw(&bytes).await;
        loop {
            if let (0, Method::ConnectionClose(c)) = peer.expect_method().await {
                peer.send_method(0, connection::CloseOk).await;
                break c.reply_code;
            }
        }
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let mut consumer = ch
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
        let first = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await;
        let delivered = matches!(first, Ok(Some(Ok(_))));
        let reason = conn.close_reason();
        let _ = conn.close().await;
        (delivered, format!("{first:?}"), reason)
    };
    let (code_sent, (delivered, first, reason)) = scenario(LIMIT, server, client).await;
    assert!(
        delivered,
        "the delivery: {first}; the client closed the connection with {code_sent} ({reason:?})"
    );
}

/// A delivery whose properties carry what RabbitMQ relays from a publisher without checking it: a
/// header whose boolean octet is 2, and bit 1 of the flag word, which no basic property uses (both
/// seen relayed byte for byte by RabbitMQ 3.10 from a raw publisher). Refusing either closed the
/// connection with 502, again after every redelivery. It is delivered, the boolean read as true.
#[tokio::test]
async fn a_delivery_with_a_boolean_octet_of_2_and_an_unused_flag_bit_is_delivered() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let tag = peer.answer_consume(ch).await;
        let deliver = method_frame(ch, &deliver(&tag, 1).into());
        let mut bytes = deliver.to_vec();
        // The header by hand: class 60, weight 0, body size 1, flags headers (bit 13) and bit 1, then
        // the headers table {flag: t 0x02}.
        let mut payload = vec![0, 60, 0, 0];
        payload.extend_from_slice(&1u64.to_be_bytes());
        payload.extend_from_slice(&0x2002u16.to_be_bytes());
        payload.extend_from_slice(&[0, 0, 0, 7, 4, b'f', b'l', b'a', b'g', b't', 2]);
        bytes.extend_from_slice(&raw_frame(coney::spec::FRAME_HEADER, ch, &payload));
        bytes.extend_from_slice(&raw_frame(coney::spec::FRAME_BODY, ch, b"x"));
        peer.send_raw(&bytes).await;
        loop {
            if let (0, Method::ConnectionClose(c)) = peer.expect_method().await {
                peer.send_method(0, connection::CloseOk).await;
                break c.reply_code;
            }
        }
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let mut consumer = ch
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
        let first = tokio::time::timeout(Duration::from_secs(2), consumer.next()).await;
        let flag = match &first {
            Ok(Some(Ok(delivery))) => delivery
                .properties
                .headers
                .as_ref()
                .and_then(|h| h.get("flag").cloned()),
            _ => None,
        };
        let reason = conn.close_reason();
        let _ = conn.close().await;
        (flag, format!("{first:?}"), reason)
    };
    let (code_sent, (flag, first, reason)) = scenario(LIMIT, server, client).await;
    assert_eq!(
        flag,
        Some(FieldValue::Bool(true)),
        "the delivery: {first}; the client closed the connection with {code_sent} ({reason:?})"
    );
}

/// RabbitMQ can have a delivery on the wire behind its own channel.close (the Java client drops such
/// frames "to avoid closing the whole connection"). It used to be a frame on an unopened channel, so a
/// soft error on a consuming channel closed the whole connection with 504.
#[tokio::test]
async fn a_delivery_behind_the_brokers_channel_close_ends_only_the_channel() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let mut peer: Peer = broker.accept().await;
        peer.handshake().await;
        let ch = peer.open_channel().await;
        let tag = peer.answer_consume(ch).await;
        peer.send_content(ch, deliver(&tag, 1), b"m1").await;
        peer.send_method(ch, precondition_failed()).await;
        peer.send_content(ch, deliver(&tag, 2), b"m2").await;
        match peer.expect_method().await {
            (c, Method::ChannelCloseOk(_)) if c == ch => {}
            other => panic!("fake broker: expected channel.close-ok, got {other:?}"),
        }
        let (c, m) = peer.expect_method().await;
        assert!(
            matches!(m, Method::ChannelOpen(_)),
            "expected channel.open, got {m:?}"
        );
        peer.send_method(c, channel::OpenOk {}).await;
        peer.expect_clean_close().await;
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let mut consumer = ch
            .basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("consume");
        let first = consumer.next().await.expect("one").expect("ok");
        assert_eq!(first.delivery_tag(), 1);
        let closed = ch.closed().await;
        assert_eq!(closed.reply_code(), Some(ReplyCode::PRECONDITION_FAILED));
        let end = consumer.next().await;
        assert!(
            matches!(&end, Some(Err(Error::ChannelClosed(_)))),
            "the consumer ends with the channel's error: {end:?}"
        );
        assert!(
            conn.is_open(),
            "the connection ended: {:?}",
            conn.close_reason()
        );
        let _other = conn.open_channel().await.expect("another channel");
        conn.close().await.expect("close");
    };
    scenario(LIMIT, server, client).await;
}

/// The id of a channel the broker closed is reused by the next open; frames of the old incarnation that
/// arrive before its open-ok (the broker sent them before it read the close-ok) must not reach the new
/// one: the driver rejected the stale delivery's tag on the new channel, which RabbitMQ answers with 406
/// (and a stale tag must never reach the wire, P3).
#[tokio::test]
async fn a_stale_delivery_does_not_reach_the_reopened_channel() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let mut peer: Peer = broker.accept().await;
        peer.handshake().await;
        let ch = peer.open_channel().await;
        let tag = peer.answer_consume(ch).await;
        peer.send_method(ch, precondition_failed()).await;
        match peer.expect_method().await {
            (c, Method::ChannelCloseOk(_)) if c == ch => {}
            other => panic!("fake broker: expected channel.close-ok, got {other:?}"),
        }
        let (c, m) = peer.expect_method().await;
        assert!(
            matches!(m, Method::ChannelOpen(_)),
            "expected channel.open, got {m:?}"
        );
        assert_eq!(c, ch, "the id is reused");
        peer.send_content(ch, deliver(&tag, 7), b"stale").await;
        peer.send_method(c, channel::OpenOk {}).await;
        let mut seen = Vec::new();
        loop {
            match peer.expect_method().await {
                (0, Method::ConnectionClose(_)) => break,
                (c, Method::ChannelClose(_)) if c == ch => {
                    peer.send_method(ch, channel::CloseOk {}).await;
                }
                (c, m) if c == ch => seen.push(m),
                other => panic!("fake broker: unexpected {other:?}"),
            }
        }
        peer.send_method(0, connection::CloseOk).await;
        peer.expect_eof().await;
        seen
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let _consumer = ch
            .basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("consume");
        ch.closed().await;
        let again = conn.open_channel().await.expect("reopen");
        // What the new channel sends next comes after anything the driver did with the stale delivery.
        again.close().await.expect("close the new channel");
        assert!(
            conn.is_open(),
            "the connection ended: {:?}",
            conn.close_reason()
        );
        conn.close().await.expect("close");
    };
    let (seen, ()) = scenario(LIMIT, server, client).await;
    assert!(
        !seen
            .iter()
            .any(|m| matches!(m, Method::BasicReject(_) | Method::BasicAck(_))),
        "the stale delivery was settled on the new channel: {seen:?}"
    );
}

/// An ack that waits for room in the command queue while its channel closes must not report success:
/// the driver drops a flush for a closed channel unsent, so the ack never reaches the broker, and the
/// docs promise `StaleDelivery` for an ack after the close. It used to return `Ok`.
#[tokio::test]
async fn an_ack_that_waited_for_room_while_its_channel_closed_is_stale() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let (waiting_tx, waiting_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let tag = peer.answer_consume(ch).await;
        peer.send_content(ch, deliver(&tag, 1), b"m1").await;
        waiting_rx
            .await
            .expect("the client's ack is waiting for room");
        // Not reading until now: the client's publishes fill its write side and its command queue.
        peer.send_method(ch, precondition_failed()).await;
        let seen = drain_until_channel_close_ok(&mut peer, ch).await;
        peer.methods_until_close(ch).await;
        seen
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let mut consumer = ch
            .basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("consume");
        let delivery = consumer.next().await.expect("one").expect("ok");
        fill_the_command_queue(&ch).await;
        let ack = delivery.ack();
        tokio::pin!(ack);
        // One poll finds the command queue full and starts waiting for room.
        assert!(futures_poll_once(ack.as_mut()).await.is_none());
        waiting_tx.send(()).expect("broker listening");
        let acked = ack.await;
        let closed = ch.closed().await;
        conn.close().await.expect("close");
        (acked, closed)
    };
    let (seen, (acked, closed)) = scenario(LIMIT, server, client).await;
    assert_eq!(closed.reply_code(), Some(ReplyCode::PRECONDITION_FAILED));
    assert!(
        matches!(acked, Err(Error::StaleDelivery(1))),
        "the ack was never sent, so it is stale: {acked:?}"
    );
    assert!(
        !seen.iter().any(|m| matches!(m, Method::BasicAck(_))),
        "{seen:?}"
    );
}

/// After the leftover frames, returns the code of the client's connection.close, or None if
/// it sent channel.open next (the connection lived on).
async fn after_leftover(peer: &mut Peer) -> Option<ReplyCode> {
    loop {
        match peer.expect_method().await {
            (0, Method::ConnectionClose(c)) => {
                peer.send_method(0, connection::CloseOk).await;
                return Some(c.reply_code);
            }
            (c, Method::ChannelOpen(_)) => {
                peer.send_method(c, channel::OpenOk {}).await;
                peer.expect_clean_close().await;
                return None;
            }
            _ => {}
        }
    }
}

/// The broker's channel.close crosses the client's: RabbitMQ (closing) answers the client's close with
/// close-ok and goes on forwarding queue deliveries until it reads the client's close-ok. A delivery
/// after that close-ok is a leftover like the one above, but the state machine removed the channel at
/// the close-ok, so it was a 504 that closed the whole connection (from helper-33's review).
#[tokio::test]
async fn a_delivery_behind_a_crossing_close_ends_only_the_channel() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let mut peer: Peer = broker.accept().await;
        peer.handshake().await;
        let ch = peer.open_channel().await;
        let tag = peer.answer_consume(ch).await;
        match peer.expect_method().await {
            (c, Method::ChannelClose(_)) if c == ch => {}
            other => panic!("expected the client's channel.close, got {other:?}"),
        }
        // Ours crossed it on the wire.
        peer.send_method(ch, precondition_failed()).await;
        match peer.expect_method().await {
            (c, Method::ChannelCloseOk(_)) if c == ch => {}
            other => panic!("expected close-ok for our close, got {other:?}"),
        }
        peer.send_method(ch, channel::CloseOk {}).await;
        peer.send_content(ch, deliver(&tag, 3), b"leftover").await;
        after_leftover(&mut peer).await
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let _consumer = ch
            .basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("consume");
        let _ = ch.close().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let alive = conn.is_open();
        let reason = conn.close_reason();
        if alive {
            let _again = conn.open_channel().await.expect("reopen");
            let _ = conn.close().await;
        }
        (alive, reason)
    };
    let (code, (alive, reason)) = scenario(LIMIT, server, client).await;
    assert!(
        alive && code.is_none(),
        "a leftover delivery after a crossing close closed the connection: code {code:?}, {reason:?}"
    );
}
