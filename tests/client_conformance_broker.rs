//! Protocol conformance against the real broker at `AMQP_URL`: the bugs of `tests/client_conformance.rs`
//! that reproduce with RabbitMQ, and the pre-tune frame limit.

mod support;

use coney::{
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    BasicProperties, Connection, Error, FieldTable, ReplyCode,
};

/// A soft error that closes one channel must not close the connection. Here the broker's channel.close
/// (404, a publish to a missing exchange) arrives in the same read as the reply to the RPC before it;
/// the driver used to send the channel's next queued RPC after its close-ok, on a channel RabbitMQ has
/// released, and RabbitMQ closed the whole connection with 504 ("expected 'channel.open'").
#[tokio::test]
async fn a_channel_error_racing_an_rpc_reply_does_not_close_the_connection() {
    support::with_timeout(async {
        let conn = Connection::connect(&support::url()).await.expect("connect");
        for attempt in 0..200 {
            let ch = conn.open_channel().await.unwrap_or_else(|e| {
                panic!(
                    "attempt {attempt}: the connection died: {e:?} ({:?})",
                    conn.close_reason()
                )
            });
            let options = QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            };
            let first = ch.queue_declare("", options, FieldTable::new());
            let publish = ch.basic_publish(
                "coney-conformance-missing-exchange",
                "rk",
                BasicPublishOptions::default(),
                BasicProperties::default(),
                "x",
            );
            let second = ch.queue_declare("", options, FieldTable::new());
            let (first, _published, second) = tokio::join!(first, publish, second);
            assert!(first.is_ok(), "attempt {attempt}: {first:?}");
            match second {
                Err(Error::ChannelClosed(r)) if r.code == coney::spec::ReplyCode::NOT_FOUND => {}
                other => panic!("attempt {attempt}: second declare: {:?}", other.map(drop)),
            }
            // Let a 504 from the broker arrive, if one comes.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert!(
                conn.is_open(),
                "attempt {attempt}: connection closed: {:?}",
                conn.close_reason()
            );
        }
        conn.close().await.expect("close");
    })
    .await;
}

/// A consumer without basic.qos on a queue holding more than 256 messages fills its buffer at once;
/// closing the connection while the consumer is still held (not dropped first) used to wait out
/// close_timeout and fail, because the driver had stopped reading and never saw the close-ok.
#[tokio::test]
async fn closing_a_connection_with_an_undrained_consumer_completes() {
    support::with_timeout(async {
        let config = support::config().with_close_timeout(std::time::Duration::from_secs(2));
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open");
        let queue = support::unique("conformance-undrained");
        let options = QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        };
        ch.queue_declare(&queue, options, FieldTable::new())
            .await
            .expect("declare");
        for _ in 0..1000 {
            let confirm = ch
                .basic_publish(
                    "",
                    &queue,
                    BasicPublishOptions::default(),
                    BasicProperties::default(),
                    "m",
                )
                .await
                .expect("publish");
            drop(confirm);
        }
        let mut consumer = ch
            .basic_consume(&queue, "", Default::default(), FieldTable::new())
            .await
            .expect("consume");
        let first = consumer.next().await.expect("a delivery").expect("ok");
        first.ack().await.expect("ack");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let closed = conn.close().await;
        let took = started.elapsed();
        drop(consumer);
        assert!(closed.is_ok(), "close: {closed:?} after {took:?}");
        assert!(
            took < std::time::Duration::from_secs(2),
            "close took {took:?}, not waiting out close_timeout"
        );
    })
    .await;
}

/// Publishes one message with raw frames (coney's API only takes UTF-8 routing keys and encodes
/// properties canonically): PLAIN guest/guest on vhost "/", channel 1, `exchange` and the routing key
/// `routing_key` as given, the property list `properties` (flag word and values) as given, body "x".
async fn raw_publish(exchange: &str, routing_key: &[u8], properties: &[u8]) {
    use bytes::BytesMut;
    use coney::{
        codec::{LongStr, ShortStr},
        frame::{encode_body, encode_method, Frame, FrameDecoder},
        spec::{self, channel, connection, Method},
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect("127.0.0.1:5672")
        .await
        .expect("tcp");
    sock.write_all(&spec::PROTOCOL_HEADER).await.unwrap();
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    loop {
        let frame = loop {
            if let Some(f) = decoder.decode(&mut buf).expect("frame") {
                break f;
            }
            assert!(sock.read_buf(&mut buf).await.unwrap() > 0, "EOF");
        };
        let Frame::Method { method, .. } = frame else {
            continue;
        };
        match method {
            Method::ConnectionStart(_) => encode_method(
                &mut out,
                0,
                &connection::StartOk {
                    client_properties: Default::default(),
                    mechanism: ShortStr::from("PLAIN"),
                    response: LongStr::from(b"\0guest\0guest".to_vec()),
                    locale: ShortStr::from("en_US"),
                }
                .into(),
            ),
            Method::ConnectionTune(t) => {
                encode_method(
                    &mut out,
                    0,
                    &connection::TuneOk {
                        channel_max: t.channel_max,
                        frame_max: t.frame_max,
                        heartbeat: 0,
                    }
                    .into(),
                );
                encode_method(
                    &mut out,
                    0,
                    &connection::Open {
                        virtual_host: ShortStr::from("/"),
                    }
                    .into(),
                );
            }
            Method::ConnectionOpenOk(_) => encode_method(&mut out, 1, &channel::Open.into()),
            Method::ChannelOpenOk(_) => {
                let mut payload = vec![0, 60, 0, 40, 0, 0];
                payload.push(exchange.len() as u8);
                payload.extend_from_slice(exchange.as_bytes());
                payload.push(routing_key.len() as u8);
                payload.extend_from_slice(routing_key);
                payload.push(0);
                out.extend_from_slice(&[spec::FRAME_METHOD, 0, 1]);
                out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                out.extend_from_slice(&payload);
                out.extend_from_slice(&[spec::FRAME_END]);
                let mut header = vec![0, 60, 0, 0];
                header.extend_from_slice(&1u64.to_be_bytes());
                header.extend_from_slice(properties);
                out.extend_from_slice(&[spec::FRAME_HEADER, 0, 1]);
                out.extend_from_slice(&(header.len() as u32).to_be_bytes());
                out.extend_from_slice(&header);
                out.extend_from_slice(&[spec::FRAME_END]);
                encode_body(&mut out, 1, b"x");
                encode_method(
                    &mut out,
                    0,
                    &connection::Close {
                        reply_code: spec::ReplyCode::REPLY_SUCCESS,
                        reply_text: ShortStr::from("bye"),
                        class_id: 0,
                        method_id: 0,
                    }
                    .into(),
                );
            }
            Method::ConnectionCloseOk(_) => return,
            other => panic!("raw publisher: unexpected {other:?}"),
        }
        sock.write_all(&out.split()).await.unwrap();
    }
}

/// A fresh auto-delete fanout exchange and a consumer of an exclusive queue bound to it (named from
/// `prefix`): what a raw publisher's message reaches.
async fn fanout_consumer(ch: &coney::Channel, prefix: &str) -> (String, coney::Consumer) {
    let exchange = support::unique("conformance-fanout");
    let queue = support::unique(prefix);
    let auto_delete = coney::options::ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    ch.exchange_declare(&exchange, "fanout", auto_delete, FieldTable::new())
        .await
        .expect("exchange");
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    ch.queue_declare(&queue, options, FieldTable::new())
        .await
        .expect("queue");
    ch.queue_bind(&queue, &exchange, "", Default::default(), FieldTable::new())
        .await
        .expect("bind");
    let consumer = ch
        .basic_consume(&queue, "", Default::default(), FieldTable::new())
        .await
        .expect("consume");
    (exchange, consumer)
}

/// The same with RabbitMQ: it routes a message whose routing key is not UTF-8 (published here with raw
/// frames to a fanout exchange); a coney consumer of the bound queue used to lose its whole connection
/// (502) instead of receiving it.
#[tokio::test]
async fn a_non_utf8_routing_key_from_another_client_does_not_kill_the_consumers_connection() {
    support::with_timeout(async {
        let conn = Connection::connect(&support::url()).await.expect("connect");
        let ch = conn.open_channel().await.expect("open");
        let (exchange, mut consumer) = fanout_consumer(&ch, "conformance-non-utf8").await;
        raw_publish(&exchange, b"k\xff\xfe", &[0, 0]).await;
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), consumer.next()).await;
        let reason = conn.close_reason();
        assert!(
            matches!(got, Ok(Some(Ok(_)))),
            "the consumer got {got:?}; connection: {reason:?}"
        );
    })
    .await;
}

/// The same for a property list RabbitMQ relays without checking it (seen byte for byte with RabbitMQ
/// 3.10): a flag word with the continuation bit (0) and bit 1 set, which no basic property uses, and a
/// headers table whose boolean octet is 2. A coney consumer used to lose its connection with 502 over
/// it, again after each redelivery; it gets the message, the boolean read as true.
#[tokio::test]
async fn unused_flag_bits_and_a_boolean_octet_of_2_from_another_client_are_delivered() {
    support::with_timeout(async {
        let conn = Connection::connect(&support::url()).await.expect("connect");
        let ch = conn.open_channel().await.expect("open");
        let (exchange, mut consumer) = fanout_consumer(&ch, "conformance-flags").await;
        // Flags: headers (bit 13), bit 1 and the continuation bit 0; then the table {flag: t 0x02}.
        let mut properties = 0x2003u16.to_be_bytes().to_vec();
        properties.extend_from_slice(&[0, 0, 0, 7, 4, b'f', b'l', b'a', b'g', b't', 2]);
        raw_publish(&exchange, b"k", &properties).await;
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), consumer.next()).await;
        let reason = conn.close_reason();
        let flag = match &got {
            Ok(Some(Ok(delivery))) => delivery
                .properties
                .headers
                .as_ref()
                .and_then(|h| h.get("flag").cloned()),
            _ => None,
        };
        assert_eq!(
            flag,
            Some(coney::codec::FieldValue::Bool(true)),
            "the consumer got {got:?}; connection: {reason:?}"
        );
        conn.close().await.expect("close");
    })
    .await;
}

/// spec (frame-min-size): until frame-max is negotiated, frames larger than 4096 octets may be refused.
/// A connection name of a few KiB makes connection.start-ok larger than that; RabbitMQ drops the
/// connection, and the client used to report a bare `Io(ConnectionReset)` after 3 s. It now refuses
/// before sending, with a handshake error that names the limit.
#[tokio::test]
async fn a_long_connection_name_is_refused_or_fits_the_pre_tune_frame_limit() {
    support::with_timeout(async {
        let config = support::config().with_connection_name("n".repeat(5000));
        match Connection::connect_with(config).await {
            Ok(conn) => conn.close().await.expect("close"),
            Err(Error::Handshake(text)) if text.contains("4096") => {}
            Err(e) => panic!("connect with a 5000-byte connection name: {e:?}"),
        }
    })
    .await;
}

/// A fresh channel of `conn` consuming an exclusive queue of `messages` under `basic_qos(prefetch)`,
/// whose first delivery the application acked twice (its bug): RabbitMQ closes the channel with 406,
/// while the credit the first ack freed sends it more. Returns the channel, its consumer and that
/// delivery.
async fn acked_twice(
    conn: &Connection,
    attempt: u32,
    prefix: &str,
    messages: usize,
    prefetch: u16,
) -> (coney::Channel, coney::Consumer, coney::Delivery) {
    let ch = conn.open_channel().await.unwrap_or_else(|e| {
        panic!(
            "attempt {attempt}: the connection died: {e:?} ({:?})",
            conn.close_reason()
        )
    });
    let queue = support::unique(prefix);
    support::declare_exclusive(&ch, &queue).await;
    ch.confirm_select().await.expect("confirm.select");
    let mut confirms = Vec::new();
    for i in 0..messages {
        let publish = ch.basic_publish(
            "",
            &queue,
            BasicPublishOptions::default(),
            BasicProperties::default(),
            format!("m{i}").into_bytes(),
        );
        confirms.push(publish.await.expect("publish"));
    }
    for confirm in confirms {
        confirm.await.expect("confirmed");
    }
    ch.basic_qos(prefetch, Default::default())
        .await
        .expect("qos");
    let mut consumer = ch
        .basic_consume(
            &queue,
            "",
            BasicConsumeOptions::default(),
            FieldTable::new(),
        )
        .await
        .expect("consume");
    let first = consumer.next().await.expect("a delivery").expect("ok");
    first.ack().await.expect("ack");
    first.ack().await.expect("the second ack is queued");
    (ch, consumer, first)
}

/// RabbitMQ can have deliveries on the wire behind its channel.close: here a double ack (406) frees
/// prefetch credit, so the broker sends more to the consumer just as it closes the channel. Those frames
/// used to be "a frame on an unopened channel", and the client closed the whole connection with 504;
/// now only the channel ends, every waiter on it with the 406, and the connection goes on.
#[tokio::test]
async fn deliveries_behind_the_brokers_channel_close_end_only_the_channel() {
    support::with_timeout(async {
        let conn = Connection::connect(&support::url()).await.expect("connect");
        for attempt in 0..5 {
            let (ch, mut consumer, first) =
                acked_twice(&conn, attempt, "behind-close", 20, 5).await;
            let closed = ch.closed().await;
            assert_eq!(
                closed.reply_code(),
                Some(ReplyCode::PRECONDITION_FAILED),
                "attempt {attempt}: {closed:?}"
            );
            let mut last = None;
            while let Some(item) = consumer.next().await {
                last = Some(item.map(|d| d.delivery_tag()));
            }
            assert!(
                matches!(&last, Some(Err(Error::ChannelClosed(_)))),
                "attempt {attempt}: the consumer ends with the channel's error: {last:?}"
            );
            assert!(
                matches!(first.ack().await, Err(Error::StaleDelivery(_))),
                "attempt {attempt}: an ack after the close is stale"
            );
            assert!(
                conn.is_open(),
                "attempt {attempt}: the connection ended: {:?}",
                conn.close_reason()
            );
        }
        conn.close().await.expect("close");
    })
    .await
}

/// As `deliveries_behind_the_brokers_channel_close_end_only_the_channel`, but the application closes
/// the channel right after its double ack: RabbitMQ, closing, answers our close with close-ok at once
/// and goes on forwarding the deliveries the first ack's credit released until it reads our close-ok
/// (the 504 came at the first attempt before the fix; from helper-33's review).
#[tokio::test]
async fn deliveries_behind_a_crossing_close_end_only_the_channel() {
    support::with_timeout(async {
        let conn = Connection::connect(&support::url()).await.expect("connect");
        for attempt in 0..20 {
            let (ch, mut consumer, _first) =
                acked_twice(&conn, attempt, "crossing-close", 40, 1).await;
            let _ = ch.close().await;
            while consumer.next().await.is_some() {}
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert!(
                conn.is_open(),
                "attempt {attempt}: the connection ended: {:?}",
                conn.close_reason()
            );
        }
        conn.close().await.expect("close");
    })
    .await
}
