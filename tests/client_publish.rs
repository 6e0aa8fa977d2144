//! Publishing: confirms, returns, errors, volume, large messages and order.

mod support;

use std::collections::VecDeque;

use bytes::Bytes;
use coney::{
    codec::MAX_NESTING,
    options::{BasicConsumeOptions, BasicPublishOptions, BindOptions},
    BasicProperties, Channel, Confirmation, Connection, Consumer, Error, FieldTable, ReplyCode,
    ShortStr,
};
use support::*;

fn mandatory() -> BasicPublishOptions {
    BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    }
}

/// Takes `n` deliveries of [`seq_body`] bodies of `len` bytes, asserting they carry 0, 1, 2, ... in
/// order (`what` names the failure), and acks each.
async fn ack_in_sequence(consumer: &mut Consumer, n: u64, len: usize, what: &str) {
    for i in 0..n {
        let d = consumer.next().await.expect("open").expect("delivery");
        assert_eq!(check_seq_body(&d.body, len), i, "{what}");
        d.ack().await.expect("ack");
    }
}

async fn consume(ch: &Channel, queue: &str, prefetch: u16) -> Consumer {
    ch.basic_qos(prefetch, Default::default())
        .await
        .expect("basic.qos");
    ch.basic_consume(queue, "", BasicConsumeOptions::default(), FieldTable::new())
        .await
        .expect("basic.consume")
}

#[tokio::test]
async fn publish_to_a_missing_exchange_closes_the_channel_with_404() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let confirm = ch
            .basic_publish(
                &unique("no-such-exchange"),
                "k",
                BasicPublishOptions::default(),
                BasicProperties::default(),
                &b"lost"[..],
            )
            .await
            .expect("the publish itself is sent");
        // Without confirm mode nothing is said about the message.
        assert_eq!(
            confirm.await.expect("not requested"),
            Confirmation::NotRequested
        );

        // The broker closes the channel; the next RPC on it sees why.
        let err = ch
            .queue_declare(&unique("after-404"), Default::default(), FieldTable::new())
            .await
            .expect_err("the channel was closed by the broker");
        match &err {
            Error::ChannelClosed(reason) => assert_eq!(reason.code, ReplyCode::NOT_FOUND),
            other => panic!("expected ChannelClosed(404), got {other:?}"),
        }
        assert!(!ch.is_open());
        assert!(conn.is_open());
        let err = ch
            .basic_publish(
                "",
                "k",
                BasicPublishOptions::default(),
                BasicProperties::default(),
                &b"x"[..],
            )
            .await
            .expect_err("publishing on a closed channel fails");
        assert_eq!(err.reply_code(), Some(ReplyCode::NOT_FOUND), "{err:?}");

        let ch2 = conn.open_channel().await.expect("next channel");
        declare_exclusive(&ch2, &unique("after-404")).await;
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn publish_to_a_missing_exchange_in_confirm_mode_fails_the_confirm_with_404() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        ch.confirm_select().await.expect("confirm.select");
        assert!(ch.is_confirm_mode());
        let confirm = ch
            .basic_publish(
                &unique("no-such-exchange"),
                "k",
                BasicPublishOptions::default(),
                BasicProperties::default(),
                &b"lost"[..],
            )
            .await
            .expect("the publish itself is sent");
        let err = confirm
            .await
            .expect_err("the channel closed before any ack");
        match &err {
            Error::ChannelClosed(reason) => assert_eq!(reason.code, ReplyCode::NOT_FOUND),
            other => panic!("expected ChannelClosed(404), got {other:?}"),
        }
        assert!(!ch.is_open());
        assert!(conn.is_open());
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn unroutable_mandatory_publish_is_returned_with_312() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        ch.confirm_select().await.expect("confirm.select");
        let rk = unique("nowhere");
        let properties = BasicProperties::default()
            .with_content_type("text/plain")
            .with_message_id("m-1");
        let confirm = ch
            .basic_publish("amq.direct", &rk, mandatory(), properties.clone(), "bounce")
            .await
            .expect("publish");
        match confirm.await.expect("settled") {
            Confirmation::Returned(r) => {
                assert_eq!(r.reply_code, ReplyCode(312));
                assert_eq!(r.reply_code.code(), 312);
                assert_eq!(r.exchange.as_str(), "amq.direct");
                assert_eq!(r.routing_key.as_str(), rk);
                assert_eq!(r.body, Bytes::from_static(b"bounce"));
                assert_eq!(r.properties.content_type, properties.content_type);
                assert_eq!(r.properties.message_id, properties.message_id);
            }
            other => panic!("expected Returned, got {other:?}"),
        }

        // Not mandatory: silently dropped, but acked.
        let confirm = ch
            .basic_publish(
                "amq.direct",
                &rk,
                BasicPublishOptions::default(),
                BasicProperties::default(),
                "dropped",
            )
            .await
            .expect("publish");
        assert_eq!(confirm.await.expect("settled"), Confirmation::Ack);

        // A routable mandatory message is simply acked, and the channel still works after returns.
        let q = unique("routable");
        declare_exclusive(&ch, &q).await;
        let confirm = ch
            .basic_publish("", &q, mandatory(), BasicProperties::default(), "kept")
            .await
            .expect("publish");
        assert_eq!(confirm.await.expect("settled"), Confirmation::Ack);
        assert_eq!(wait_for_count(&conn, &q, 1).await, 1);
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn properties_and_headers_round_trip() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = unique("props");
        declare_exclusive(&ch, &q).await;
        let headers = FieldTable::new()
            .with("x-string", "value")
            .with("x-int", 42i32)
            .with("x-bool", true);
        let properties = BasicProperties::default()
            .with_content_type("application/json")
            .with_content_encoding("identity")
            .with_headers(headers)
            .with_delivery_mode(2u8)
            .with_priority(3u8)
            .with_correlation_id("corr")
            .with_reply_to(ShortStr::new(&q).unwrap())
            .with_message_id("id-1")
            .with_kind("kind")
            .with_app_id("coney-tests");
        let confirm = ch
            .basic_publish(
                "",
                &q,
                BasicPublishOptions::default(),
                properties.clone(),
                "{}",
            )
            .await
            .expect("publish");
        assert_eq!(confirm.await.expect("settled"), Confirmation::NotRequested);
        let mut consumer = consume(&ch, &q, 10).await;
        let d = consumer.next().await.expect("open").expect("delivery");
        assert_eq!(*d.properties, properties);
        assert_eq!(d.body, Bytes::from_static(b"{}"));
        assert_eq!(d.exchange.as_str(), "");
        assert_eq!(d.routing_key.as_str(), q);
        assert!(!d.redelivered);
        d.ack().await.expect("ack");
        conn.close().await.expect("close");
    })
    .await
}

/// A header frame larger than the negotiated frame-max would make RabbitMQ close the whole connection with
/// 501 frame-error. It is refused before it is sent, with an error naming the header's size and frame-max,
/// and the channel and the connection go on working. Names longer than a short string are refused the same way.
#[tokio::test]
async fn properties_too_large_for_frame_max_are_refused_and_the_channel_goes_on() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let frame_max = conn.tuned().frame_max;
        assert!(frame_max > 0, "RabbitMQ sets a frame-max");
        ch.confirm_select().await.expect("confirm.select");
        let q = unique("big-props");
        declare_exclusive(&ch, &q).await;
        let huge = BasicProperties::default()
            .with_headers(FieldTable::new().with("x-big", "v".repeat(frame_max as usize)));
        let refused = ch
            .basic_publish("", &q, BasicPublishOptions::default(), huge, "x")
            .await;
        match refused {
            Err(Error::InvalidArgument(text)) => {
                assert!(text.contains(&format!("frame-max {frame_max}")), "{text}");
                assert!(text.contains(" bytes"), "{text}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        let long_key = "k".repeat(256);
        let refused = ch
            .basic_publish(
                "",
                &long_key,
                BasicPublishOptions::default(),
                BasicProperties::default(),
                "x",
            )
            .await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{refused:?}"
        );
        // Just under the limit is sent, and arrives.
        let fits = BasicProperties::default()
            .with_headers(FieldTable::new().with("x-big", "v".repeat(frame_max as usize - 200)));
        let confirm = ch
            .basic_publish("", &q, BasicPublishOptions::default(), fits, "y")
            .await
            .expect("publish under the limit");
        assert_eq!(confirm.await.expect("settled"), Confirmation::Ack);
        let mut consumer = consume(&ch, &q, 10).await;
        let d = consumer.next().await.expect("open").expect("delivery");
        assert_eq!(d.body, Bytes::from_static(b"y"));
        d.ack().await.expect("ack");
        conn.close().await.expect("close");
    })
    .await
}

/// Headers nested deeper than a consumer's decoder accepts (`MAX_NESTING`) would come back as a delivery
/// (or a return, or a get) that closes the receiving connection: such a publish is refused before it is
/// sent. At the limit, the message goes through the broker and is received with its headers intact.
#[tokio::test]
async fn headers_nested_deeper_than_a_consumer_accepts_are_refused() {
    /// A table `levels` deep, itself included, as the decoder counts.
    fn nested(levels: usize) -> FieldTable {
        let mut table = FieldTable::new().with("leaf", 1i32);
        for _ in 1..levels {
            table = FieldTable::new().with("t", table);
        }
        table
    }
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        ch.confirm_select().await.expect("confirm.select");
        let q = unique("deep-headers");
        declare_exclusive(&ch, &q).await;
        let refused = ch
            .basic_publish(
                "",
                &q,
                BasicPublishOptions::default(),
                BasicProperties::default().with_headers(nested(MAX_NESTING + 1)),
                "too deep",
            )
            .await;
        match refused {
            Err(Error::InvalidArgument(text)) => assert!(text.contains("levels deep"), "{text}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        let deepest = nested(MAX_NESTING);
        let confirm = ch
            .basic_publish(
                "",
                &q,
                BasicPublishOptions::default(),
                BasicProperties::default().with_headers(deepest.clone()),
                "deepest",
            )
            .await
            .expect("publish at the limit");
        assert_eq!(confirm.await.expect("settled"), Confirmation::Ack);
        let mut consumer = consume(&ch, &q, 10).await;
        let d = consumer.next().await.expect("open").expect("delivery");
        assert_eq!(d.body, Bytes::from_static(b"deepest"));
        assert_eq!(d.properties.headers.as_ref(), Some(&deepest));
        d.ack().await.expect("ack");
        assert!(conn.is_open());
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_confirmed_publishes_arrive_intact_and_in_order() {
    const N: u64 = 100_000;
    const LEN: usize = 16;
    const WINDOW: usize = 1000;
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = unique("100k");
        declare_exclusive(&ch, &q).await;

        let consumer_ch = conn.open_channel().await.expect("consumer channel");
        let mut consumer = consume(&consumer_ch, &q, 1000).await;
        let receiver = tokio::spawn(async move {
            let mut expected = 0u64;
            while expected < N {
                let d = consumer
                    .next()
                    .await
                    .unwrap_or_else(|| panic!("consumer ended after {expected} messages"))
                    .expect("delivery");
                let seq = check_seq_body(&d.body, LEN);
                assert_eq!(seq, expected, "out of order");
                assert!(!d.redelivered);
                expected += 1;
                if expected % 100 == 0 {
                    d.ack_multiple().await.expect("ack");
                }
            }
            expected
        });

        ch.confirm_select().await.expect("confirm.select");
        let mut pending = VecDeque::with_capacity(WINDOW + 1);
        let mut acked = 0u64;
        for i in 0..N {
            let confirm = ch
                .basic_publish(
                    "",
                    &q,
                    BasicPublishOptions::default(),
                    BasicProperties::default(),
                    seq_body(i, LEN),
                )
                .await
                .expect("publish");
            pending.push_back(confirm);
            if pending.len() >= WINDOW {
                let c = pending.pop_front().unwrap();
                assert_eq!(c.await.expect("confirm"), Confirmation::Ack);
                acked += 1;
            }
        }
        for c in pending {
            assert_eq!(c.await.expect("confirm"), Confirmation::Ack);
            acked += 1;
        }
        assert_eq!(acked, N);

        let received = receiver.await.expect("receiver task");
        assert_eq!(received, N);
        assert_eq!(wait_for_count(&conn, &q, 0).await, 0);
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_message_arrives_intact() {
    const BIG: usize = 16 * 1024 * 1024;
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = unique("16mib");
        declare_exclusive(&ch, &q).await;
        ch.confirm_select().await.expect("confirm.select");

        let big = Bytes::from(seq_body(1, BIG));
        let bodies = [
            Bytes::from(seq_body(0, 16)),
            big,
            Bytes::from(seq_body(2, 16)),
        ];
        let mut confirms = Vec::new();
        for body in &bodies {
            confirms.push(
                ch.basic_publish(
                    "",
                    &q,
                    BasicPublishOptions::default(),
                    BasicProperties::default().with_content_type("application/octet-stream"),
                    body.clone(),
                )
                .await
                .expect("publish"),
            );
        }
        for c in confirms {
            assert_eq!(c.await.expect("confirm"), Confirmation::Ack);
        }

        let mut consumer = consume(&ch, &q, 10).await;
        for (i, expected) in bodies.iter().enumerate() {
            let d = consumer.next().await.expect("open").expect("delivery");
            assert_eq!(check_seq_body(&d.body, expected.len()), i as u64);
            assert!(d.body == *expected, "body {i} differs");
            d.ack().await.expect("ack");
        }

        // And once more through basic.get, with the consumer cancelled first (else it would take it).
        ch.basic_cancel(consumer.tag(), Default::default())
            .await
            .expect("cancel");
        assert!(consumer.next().await.is_none());
        let confirm = ch
            .basic_publish(
                "",
                &q,
                BasicPublishOptions::default(),
                BasicProperties::default(),
                bodies[1].clone(),
            )
            .await
            .expect("publish");
        assert_eq!(confirm.await.expect("confirm"), Confirmation::Ack);
        let get_ch = conn.open_channel().await.expect("channel");
        let m = get_ch
            .basic_get(&q, false)
            .await
            .expect("basic.get")
            .expect("a message");
        assert!(m.body == bodies[1], "basic.get body differs");
        m.ack().await.expect("ack");
        conn.close().await.expect("close");
    })
    .await
}

/// With a command queue of two and a confirm window of eight, publishes keep finding no room and wait (the
/// paths a publish takes when it cannot be done at its first poll); none is lost, duplicated or reordered,
/// and every confirm settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_that_wait_for_room_arrive_once_and_in_order() {
    const N: u64 = 5000;
    with_timeout(async {
        let mut config = config().with_confirm_window(8);
        config.command_queue = 2;
        let conn = coney::Connection::connect_with(config)
            .await
            .expect("connect");
        let ch = conn.open_channel().await.expect("channel");
        ch.confirm_select().await.expect("confirm.select");
        let q = unique("waiting");
        declare_exclusive(&ch, &q).await;
        let mut pending = VecDeque::new();
        for i in 0..N {
            let confirm = ch
                .basic_publish(
                    "",
                    &q,
                    BasicPublishOptions::default(),
                    BasicProperties::default(),
                    seq_body(i, 32),
                )
                .await
                .expect("publish");
            pending.push_back(confirm);
            if pending.len() > 64 {
                let c = pending.pop_front().expect("non-empty");
                assert_eq!(c.await.expect("settled"), Confirmation::Ack);
            }
        }
        for c in pending {
            assert_eq!(c.await.expect("settled"), Confirmation::Ack);
        }
        let mut consumer = consume(&ch, &q, 500).await;
        ack_in_sequence(&mut consumer, N, 32, "lost, duplicated or out of order").await;
        conn.close().await.expect("close");
    })
    .await
}

/// A publish future made while the channel is open and first polled after it closed fails with the
/// channel's state; it is not reported as sent.
#[tokio::test]
async fn a_publish_made_before_the_channel_closed_and_polled_after_fails() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = unique("late-poll");
        let publish = ch.basic_publish(
            "",
            &q,
            BasicPublishOptions::default(),
            BasicProperties::default(),
            "x",
        );
        ch.close().await.expect("channel.close");
        let result = publish.await;
        assert!(result.is_err(), "a publish on a closed channel: {result:?}");
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn thousand_publishes_without_confirms_arrive_in_order() {
    const N: u64 = 1000;
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = unique("order");
        declare_exclusive(&ch, &q).await;
        for i in 0..N {
            let confirm = ch
                .basic_publish(
                    "",
                    &q,
                    BasicPublishOptions::default(),
                    BasicProperties::default(),
                    seq_body(i, 32),
                )
                .await
                .expect("publish");
            assert_eq!(confirm.await.expect("settled"), Confirmation::NotRequested);
        }
        let consumer_ch = conn.open_channel().await.expect("channel");
        let mut consumer = consume(&consumer_ch, &q, 100).await;
        ack_in_sequence(&mut consumer, N, 32, "out of order").await;
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn returns_without_confirms_reach_the_listener_and_never_stall() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let rk = unique("nowhere");
        let mut returns = ch.returned_messages(2);
        for i in 0..5 {
            let body = format!("bounce {i}");
            let confirm = ch
                .basic_publish(
                    "amq.direct",
                    &rk,
                    mandatory(),
                    BasicProperties::default(),
                    body,
                )
                .await
                .expect("publish");
            assert_eq!(
                confirm.await.expect("no confirms"),
                Confirmation::NotRequested
            );
        }
        // The listener holds 2; the other 3 are dropped rather than stalling the connection.
        for i in 0..2 {
            let r = returns.next().await.expect("a return");
            assert_eq!(r.reply_code, ReplyCode(312));
            assert_eq!(r.routing_key.as_str(), rk);
            assert_eq!(r.body, Bytes::from(format!("bounce {i}")));
        }
        // The connection kept going: an RPC after the overflow works.
        let q = unique("after-returns");
        declare_exclusive(&ch, &q).await;
        ch.close().await.expect("close");
        assert!(
            returns.next().await.is_none(),
            "the listener ends with its channel"
        );
        conn.close().await.expect("close");
    })
    .await
}

/// A publish made while `confirm.select` is on its way (its publisher looked before the channel was in
/// confirm mode) but sent after it is numbered by the broker all the same; the confirms of later publishes
/// must keep the broker's numbers. Here the early publish is unroutable and mandatory: if the numbers
/// slipped by one, its return and ack would be taken for the next publish's, which is routable.
#[tokio::test]
async fn a_publish_racing_confirm_select_keeps_the_confirm_numbers() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = unique("confirm-race");
        declare_exclusive(&ch, &q).await;
        let mut returns = ch.returned_messages(4);
        let rk = unique("nowhere");
        // On this current-thread runtime the driver runs only when the test yields: join polls the select
        // (queued) and then the publish (queued behind it, without a confirm) before the driver takes either.
        let (selected, early) = tokio::join!(
            ch.confirm_select(),
            ch.basic_publish(
                "amq.direct",
                &rk,
                mandatory(),
                BasicProperties::default(),
                "early"
            )
        );
        selected.expect("confirm.select");
        let early = early.expect("publish");
        assert_eq!(
            early.await.expect("settled"),
            Confirmation::NotRequested,
            "made before confirm mode"
        );
        for body in ["first", "second"] {
            let confirm = ch
                .basic_publish("", &q, mandatory(), BasicProperties::default(), body)
                .await
                .expect("publish");
            assert_eq!(confirm.await.expect("settled"), Confirmation::Ack, "{body}");
        }
        let r = returns.next().await.expect("the early publish's return");
        assert_eq!(r.body, Bytes::from_static(b"early"));
        assert_eq!(wait_for_count(&conn, &q, 2).await, 2);
        conn.close().await.expect("close");
    })
    .await
}

/// A burst of mandatory publishes, some unroutable, none awaited before the next: RabbitMQ returns each
/// unroutable one as it routes it and confirms them together afterwards (often in one `multiple` ack), so
/// several returns can arrive before the ack that covers them. Each publish's confirm must still say what
/// happened to that message: `Returned` for the unroutable ones, `Ack` for the routed ones.
#[tokio::test]
async fn returns_in_a_burst_resolve_the_publishes_they_belong_to() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        ch.confirm_select().await.expect("confirm.select");
        let q = unique("burst-routable");
        declare_exclusive(&ch, &q).await;
        let nowhere = unique("burst-nowhere");
        // A pattern of routed (true) and unroutable (false) messages, repeated.
        let pattern = [false, false, true, false, true, true, false];
        let mut confirms = Vec::new();
        for round in 0..20 {
            for (i, &routed) in pattern.iter().enumerate() {
                let body = format!("{round}-{i}");
                let (exchange, rk) = if routed {
                    ("", q.as_str())
                } else {
                    ("amq.direct", nowhere.as_str())
                };
                let confirm = ch
                    .basic_publish(
                        exchange,
                        rk,
                        mandatory(),
                        BasicProperties::default(),
                        body.clone(),
                    )
                    .await
                    .expect("publish");
                confirms.push((routed, body, confirm));
            }
        }
        let mut routed_count = 0;
        for (routed, body, confirm) in confirms {
            match confirm.await.expect("settled") {
                Confirmation::Ack => assert!(routed, "{body} was unroutable but confirmed as Ack"),
                Confirmation::Returned(r) => {
                    assert!(!routed, "{body} was routed but confirmed as Returned");
                    assert_eq!(
                        r.body,
                        Bytes::from(body.clone()),
                        "the return of {body} is its own"
                    );
                }
                other => panic!("{body}: unexpected {other:?}"),
            }
            routed_count += u32::from(routed);
        }
        assert_eq!(wait_for_count(&conn, &q, routed_count).await, routed_count);
        conn.close().await.expect("close");
    })
    .await
}

/// The same with the unroutable publish carrying no properties at all, right after a routed one with
/// headers (helper-28's review): the return's property list was keyed as received, and a list without
/// properties is kept as no bytes, while the publish's key hashed its encoded flag word; so the return
/// was credited to the routed publish. Both are keyed as coney encodes the properties now.
#[tokio::test]
async fn a_return_without_properties_resolves_its_own_publish() {
    with_timeout(async {
        let (conn, ch) = headers_exchange_in_confirm_mode("returns-bare").await;
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let routed =
            BasicProperties::default().with_headers(FieldTable::new().with("kind", "routed"));
        let mut outcomes = Vec::new();
        for round in 0..5 {
            let a = ch
                .basic_publish(
                    "amq.headers",
                    "",
                    mandatory,
                    routed.clone(),
                    format!("a{round}"),
                )
                .await
                .expect("publish a");
            let b = ch
                .basic_publish(
                    "amq.headers",
                    "",
                    mandatory,
                    BasicProperties::default(),
                    format!("b{round}"),
                )
                .await
                .expect("publish b");
            let describe = |c: Confirmation| match c {
                Confirmation::Returned(r) => {
                    format!("Returned({})", String::from_utf8_lossy(&r.body))
                }
                other => format!("{other:?}"),
            };
            outcomes.push((
                describe(a.await.expect("a settled")),
                describe(b.await.expect("b settled")),
            ));
        }
        conn.close().await.expect("close");
        for (round, outcome) in outcomes.iter().enumerate() {
            assert_eq!(
                outcome,
                &("Ack".to_string(), format!("Returned(b{round})")),
                "{outcomes:?}"
            );
        }
    })
    .await
}

/// A channel in confirm mode, and an exclusive queue (named from `prefix`) bound to `amq.headers` for
/// messages whose header `kind` is `routed`: publishes there with the same exchange, key and body size
/// are routed or returned by their headers alone.
async fn headers_exchange_in_confirm_mode(prefix: &str) -> (Connection, Channel) {
    let (conn, ch) = connect_channel().await;
    ch.confirm_select().await.expect("confirm.select");
    let q = unique(prefix);
    declare_exclusive(&ch, &q).await;
    ch.queue_bind(
        &q,
        "amq.headers",
        "",
        BindOptions::default(),
        FieldTable::new()
            .with("x-match", "all")
            .with("kind", "routed"),
    )
    .await
    .expect("bind");
    (conn, ch)
}

/// A headers exchange routes on the message's headers, not its routing key: here mandatory publishes
/// with the same exchange, key and body size alternate between routed and unroutable. (Found by a
/// review: matched on exchange, key and body size alone, each return went to the routed publish before
/// its own, which was reported `Returned` with the other's body, and the unroutable one `Ack`. The
/// properties, which the return repeats, now decide.)
#[tokio::test]
async fn returns_from_a_headers_exchange_resolve_the_right_publishes() {
    with_timeout(async {
        let (conn, ch) = headers_exchange_in_confirm_mode("returns-headers").await;
        let mandatory = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let mut confirms = Vec::new();
        for round in 0..10 {
            for kind in ["routed", "nowhere"] {
                // Same length for every body: "r-00", "n-00", ...
                let body = format!("{}-{round:02}", &kind[..1]);
                let confirm = ch
                    .basic_publish(
                        "amq.headers",
                        "",
                        mandatory,
                        BasicProperties::default()
                            .with_headers(FieldTable::new().with("kind", kind)),
                        body.clone(),
                    )
                    .await
                    .expect("publish");
                confirms.push((kind, body, confirm));
            }
        }
        let mut wrong = Vec::new();
        for (kind, body, confirm) in confirms {
            let outcome = match confirm.await.expect("settled") {
                Confirmation::Ack => "Ack".to_string(),
                Confirmation::Returned(r) => {
                    format!("Returned({})", String::from_utf8_lossy(&r.body))
                }
                other => format!("{other:?}"),
            };
            let expected = if kind == "routed" {
                "Ack".to_string()
            } else {
                format!("Returned({body})")
            };
            if outcome != expected {
                wrong.push(format!("{body}: {outcome}, expected {expected}"));
            }
        }
        conn.close().await.expect("close");
        assert!(wrong.is_empty(), "{} of 20 wrong: {wrong:#?}", wrong.len());
    })
    .await
}

/// A returns listener made after its channel closed ends at once (`None`), as the docs say a listener
/// does when its channel closes; it used to wait forever, since nothing would take its sender.
#[tokio::test]
async fn a_returns_listener_made_after_the_channel_closed_ends() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        ch.close().await.expect("close the channel");
        let mut late = ch.returned_messages(4);
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), late.next()).await;
        assert!(
            matches!(next, Ok(None)),
            "the listener of a closed channel ends: {next:?}"
        );
        conn.close().await.expect("close");
    })
    .await
}
