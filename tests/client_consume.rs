//! Consuming and fetching: get, ack/nack/reject, recover, qos, cancel, stale deliveries.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use coney::{
    options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions},
    BasicProperties, Channel, Confirmation, Consumer, Delivery, Error, FieldTable, ReplyCode,
    ShortStr,
};
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
    let outcome = confirm.await.expect("settled");
    assert!(
        matches!(outcome, Confirmation::Ack | Confirmation::NotRequested),
        "{outcome:?}"
    );
}

/// A channel in confirm mode with `bodies` published to a fresh exclusive queue.
async fn queue_with(ch: &Channel, prefix: &str, bodies: &[&'static str]) -> String {
    let q = unique(prefix);
    declare_exclusive(ch, &q).await;
    if !ch.is_confirm_mode() {
        ch.confirm_select().await.expect("confirm.select");
    }
    for body in bodies {
        publish(ch, &q, body).await;
    }
    q
}

async fn consume(ch: &Channel, queue: &str) -> Consumer {
    ch.basic_consume(queue, "", BasicConsumeOptions::default(), FieldTable::new())
        .await
        .expect("basic.consume")
}

async fn next(consumer: &mut Consumer) -> Delivery {
    match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => panic!("consumer failed: {e:?}"),
        Ok(None) => panic!("consumer ended"),
        Err(_) => panic!("no delivery within 10 s"),
    }
}

/// Asserts nothing is delivered within `wait`.
async fn assert_quiet(consumer: &mut Consumer, wait: Duration) {
    if let Ok(item) = tokio::time::timeout(wait, consumer.next()).await {
        panic!("expected no delivery, got {item:?}");
    }
}

#[tokio::test]
async fn basic_get_on_empty_and_full_queues() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_with(&ch, "get", &[]).await;
        assert!(ch.basic_get(&q, false).await.expect("get").is_none());

        for body in ["one", "two", "three"] {
            publish(&ch, &q, body).await;
        }
        let m = ch
            .basic_get(&q, false)
            .await
            .expect("get")
            .expect("message");
        assert_eq!(m.body, Bytes::from_static(b"one"));
        assert_eq!(m.message_count, 2);
        assert_eq!(m.routing_key.as_str(), q);
        assert!(!m.redelivered);
        m.ack().await.expect("ack");

        let m = ch.basic_get(&q, true).await.expect("get").expect("message");
        assert_eq!(m.body, Bytes::from_static(b"two"));
        assert_eq!(m.message_count, 1);

        // Rejected with requeue: it comes back, marked redelivered.
        let m = ch
            .basic_get(&q, false)
            .await
            .expect("get")
            .expect("message");
        assert_eq!(m.body, Bytes::from_static(b"three"));
        assert_eq!(m.message_count, 0);
        m.reject(true).await.expect("reject");
        let m = ch
            .basic_get(&q, false)
            .await
            .expect("get")
            .expect("message");
        assert_eq!(m.body, Bytes::from_static(b"three"));
        assert!(m.redelivered);
        // Nacked without requeue: gone.
        m.nack(BasicNackOptions::default()).await.expect("nack");
        assert!(ch.basic_get(&q, false).await.expect("get").is_none());
        assert_eq!(message_count(&conn, &q).await, 0);
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn reject_and_nack_with_and_without_requeue() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_with(&ch, "settle", &["a", "b"]).await;
        let mut consumer = consume(&ch, &q).await;

        // reject(requeue) → redelivered.
        let d = next(&mut consumer).await;
        assert_eq!((d.body.as_ref(), d.redelivered), (&b"a"[..], false));
        d.reject(true).await.expect("reject requeue");
        // "b" was already in flight; "a" comes back after it, redelivered.
        let d = next(&mut consumer).await;
        assert_eq!((d.body.as_ref(), d.redelivered), (&b"b"[..], false));
        // nack(requeue) → redelivered.
        d.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .expect("nack requeue");

        let mut seen = Vec::new();
        for _ in 0..2 {
            let d = next(&mut consumer).await;
            assert!(d.redelivered, "{d:?}");
            seen.push(String::from_utf8(d.body.to_vec()).unwrap());
            if d.body.as_ref() == b"a" {
                // reject without requeue → gone.
                d.reject(false).await.expect("reject drop");
            } else {
                // nack without requeue → gone.
                d.nack(BasicNackOptions::default())
                    .await
                    .expect("nack drop");
            }
        }
        seen.sort();
        assert_eq!(seen, ["a", "b"]);
        assert_quiet(&mut consumer, Duration::from_millis(500)).await;

        // A marker published now is the next delivery: nothing discarded came back.
        publish(&ch, &q, "marker").await;
        let d = next(&mut consumer).await;
        assert_eq!((d.body.as_ref(), d.redelivered), (&b"marker"[..], false));
        d.ack().await.expect("ack");
        ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await
            .expect("cancel");
        assert_eq!(message_count(&conn, &q).await, 0);
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn nack_multiple_requeues_every_earlier_delivery() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_with(&ch, "nack-multiple", &["1", "2", "3"]).await;
        let mut consumer = consume(&ch, &q).await;
        let mut last = None;
        for _ in 0..3 {
            last = Some(next(&mut consumer).await);
        }
        last.unwrap()
            .nack(BasicNackOptions {
                multiple: true,
                requeue: true,
            })
            .await
            .expect("nack multiple");
        for expected in ["1", "2", "3"] {
            let d = next(&mut consumer).await;
            assert_eq!(d.body.as_ref(), expected.as_bytes());
            assert!(d.redelivered);
            if expected == "3" {
                d.ack_multiple().await.expect("ack multiple");
            }
        }
        drop(consumer);
        assert_eq!(wait_for_count(&conn, &q, 0).await, 0);
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn basic_recover_redelivers_unacked_messages() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_with(&ch, "recover", &["x", "y"]).await;
        let mut consumer = consume(&ch, &q).await;
        for expected in ["x", "y"] {
            let d = next(&mut consumer).await;
            assert_eq!(d.body.as_ref(), expected.as_bytes());
            assert!(!d.redelivered);
        }
        ch.basic_recover(true).await.expect("basic.recover");
        for expected in ["x", "y"] {
            let d = next(&mut consumer).await;
            assert_eq!(d.body.as_ref(), expected.as_bytes());
            assert!(d.redelivered, "recovered deliveries are marked redelivered");
            d.ack().await.expect("ack");
        }
        assert_quiet(&mut consumer, Duration::from_millis(300)).await;
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn basic_qos_limits_deliveries_in_flight() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_with(&ch, "qos", &["0", "1", "2", "3", "4"]).await;
        ch.basic_qos(2, Default::default()).await.expect("qos");
        let mut consumer = consume(&ch, &q).await;
        let first = next(&mut consumer).await;
        let second = next(&mut consumer).await;
        assert_eq!(first.body.as_ref(), b"0");
        assert_eq!(second.body.as_ref(), b"1");
        assert_quiet(&mut consumer, Duration::from_millis(700)).await;

        // Each ack lets exactly one more in.
        first.ack().await.expect("ack");
        let third = next(&mut consumer).await;
        assert_eq!(third.body.as_ref(), b"2");
        assert_quiet(&mut consumer, Duration::from_millis(500)).await;

        third.ack_multiple().await.expect("ack multiple");
        let d = next(&mut consumer).await;
        assert_eq!(d.body.as_ref(), b"3");
        let d = next(&mut consumer).await;
        assert_eq!(d.body.as_ref(), b"4");
        d.ack_multiple().await.expect("ack");
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn deleting_the_queue_cancels_the_consumer() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_with(&ch, "cancel-by-delete", &["before"]).await;
        let mut consumer = consume(&ch, &q).await;
        let d = next(&mut consumer).await;
        assert_eq!(d.body.as_ref(), b"before");
        d.ack().await.expect("ack");

        let other = conn.open_channel().await.expect("channel");
        other
            .queue_delete(&q, Default::default())
            .await
            .expect("delete queue");

        match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
            Ok(Some(Err(Error::ConsumerCancelled(tag)))) => assert_eq!(tag, consumer.tag()),
            other => panic!("expected ConsumerCancelled, got {other:?}"),
        }
        assert!(consumer.next().await.is_none(), "then the consumer ends");
        assert!(consumer.next().await.is_none(), "and stays ended");
        assert!(matches!(
            consumer.end_reason(),
            Some(Error::ConsumerCancelled(_))
        ));
        // The channel survives a broker-side cancel.
        assert!(ch.is_open());
        declare_exclusive(&ch, &unique("after-cancel")).await;
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn basic_cancel_ends_the_consumer_cleanly() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_with(&ch, "cancel", &[]).await;
        let tag = unique("tag");
        let mut consumer = ch
            .basic_consume(&q, &tag, BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("consume");
        assert_eq!(consumer.tag(), tag);
        ch.basic_cancel(&tag, BasicCancelOptions::default())
            .await
            .expect("cancel");
        match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
            Ok(None) => {}
            other => panic!("expected the consumer to end with None, got {other:?}"),
        }
        // Messages published after the cancel stay in the queue.
        publish(&ch, &q, "kept").await;
        assert_eq!(wait_for_count(&conn, &q, 1).await, 1);

        // The no-wait form too.
        let mut consumer = consume(&ch, &q).await;
        let d = next(&mut consumer).await;
        d.ack().await.expect("ack");
        ch.basic_cancel(consumer.tag(), BasicCancelOptions { no_wait: true })
            .await
            .expect("cancel no-wait");
        match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
            Ok(None) => {}
            other => panic!("expected the consumer to end with None, got {other:?}"),
        }
        assert!(ch.is_open());
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn closing_the_channel_ends_consumers_and_makes_deliveries_stale() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_with(&ch, "stale", &["m"]).await;
        let mut consumer = consume(&ch, &q).await;
        let d = next(&mut consumer).await;
        ch.close().await.expect("close channel");
        match d.ack().await {
            Err(Error::StaleDelivery(tag)) => assert_eq!(tag, d.delivery_tag),
            other => panic!("expected StaleDelivery, got {other:?}"),
        }
        assert!(matches!(
            d.nack(BasicNackOptions::default()).await,
            Err(Error::StaleDelivery(_))
        ));
        assert!(matches!(d.reject(true).await, Err(Error::StaleDelivery(_))));
        // A client-side close ends the consumer without an error.
        assert!(consumer.next().await.is_none());

        // The unacked message went back to the queue; nothing else happened to it.
        let ch2 = conn.open_channel().await.expect("channel");
        let m = ch2
            .basic_get(&q, false)
            .await
            .expect("get")
            .expect("requeued");
        assert!(m.redelivered);
        m.ack().await.expect("ack on a live channel");
        conn.close().await.expect("close");
        // After the connection closed, the get message is stale too.
        assert!(matches!(m.ack().await, Err(Error::StaleDelivery(_))));
    })
    .await
}

#[tokio::test]
async fn no_ack_consumer_and_run_handler() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_with(&ch, "run", &["r0", "r1", "r2"]).await;
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
        let tag = consumer.tag().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel(8);
        let seen2 = seen.clone();
        let task = consumer.run(move |d| {
            seen2
                .lock()
                .unwrap()
                .push(String::from_utf8(d.body.to_vec()).unwrap());
            let done = done_tx.clone();
            async move {
                let _ = done.send(()).await;
            }
        });
        for _ in 0..3 {
            done_rx.recv().await.expect("handler ran");
        }
        assert_eq!(*seen.lock().unwrap(), ["r0", "r1", "r2"]);
        // Auto-acked: the queue is empty even though nothing was acked.
        assert_eq!(wait_for_count(&conn, &q, 0).await, 0);
        ch.basic_cancel(&tag, Default::default())
            .await
            .expect("cancel");
        assert!(
            task.await.expect("task").is_none(),
            "client cancel ends it cleanly"
        );
        conn.close().await.expect("close");
    })
    .await
}

/// Settling a delivery the broker settled when it sent it (`no_ack`) would be a 406 "unknown delivery
/// tag" that closes the channel; it is refused locally, and the channel goes on.
#[tokio::test]
async fn settling_a_no_ack_delivery_is_refused_and_the_channel_goes_on() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_with(&ch, "no-ack-settle", &["c0", "g0"]).await;
        let got = ch
            .basic_get(&q, true)
            .await
            .expect("get")
            .expect("a message");
        assert!(matches!(got.ack().await, Err(Error::InvalidArgument(_))));
        let mut consumer = ch
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
        let d = consumer.next().await.expect("open").expect("delivery");
        assert!(matches!(d.ack().await, Err(Error::InvalidArgument(_))));
        assert!(matches!(
            d.nack(Default::default()).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            d.reject(true).await,
            Err(Error::InvalidArgument(_))
        ));
        // Still open: an RPC on the channel works.
        let other = unique("after-no-ack");
        declare_exclusive(&ch, &other).await;
        assert!(ch.is_open());
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn channel_flow_and_global_qos() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        assert!(ch.channel_flow(true).await.expect("channel.flow"));
        ch.basic_qos(
            5,
            coney::options::BasicQosOptions {
                global: true,
                ..Default::default()
            },
        )
        .await
        .expect("global qos");
        assert!(ch.is_open());
        conn.close().await.expect("close");
    })
    .await
}

/// RabbitMQ's direct reply-to, the request/reply pattern without a reply queue: the requester consumes
/// the pseudo-queue `amq.rabbitmq.reply-to` (no-ack) and publishes with that name as `reply_to`; the
/// broker rewrites it to a per-channel name, to which the server publishes its reply on the default
/// exchange. An acking consumer of the pseudo-queue is refused with 406, and only its channel closes.
#[tokio::test]
async fn direct_reply_to_round_trip() {
    with_timeout(async {
        let (conn, requester) = connect_channel().await;
        let server = conn.open_channel().await.expect("server channel");
        let q = unique("direct-reply");
        declare_exclusive(&server, &q).await;
        let mut requests = consume(&server, &q).await;
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut replies = requester
            .basic_consume("amq.rabbitmq.reply-to", "", no_ack, FieldTable::new())
            .await
            .expect("consume amq.rabbitmq.reply-to");
        for n in 0..3 {
            let id = ShortStr::try_from(format!("request-{n}")).unwrap();
            let request = BasicProperties::default()
                .with_reply_to("amq.rabbitmq.reply-to")
                .with_correlation_id(id.clone());
            let sent = requester
                .basic_publish("", &q, BasicPublishOptions::default(), request, "ping")
                .await
                .expect("publish the request");
            assert!(matches!(sent.await, Ok(Confirmation::NotRequested)));

            let delivery = next(&mut requests).await;
            let reply_to = delivery.properties.reply_to.clone().expect("reply_to");
            assert!(
                reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
                "the broker rewrites reply_to: {reply_to}"
            );
            let answer = BasicProperties::default().with_correlation_id(
                delivery
                    .properties
                    .correlation_id
                    .clone()
                    .expect("correlation_id"),
            );
            let sent = server
                .basic_publish(
                    "",
                    reply_to.as_str(),
                    BasicPublishOptions::default(),
                    answer,
                    "pong",
                )
                .await
                .expect("publish the reply");
            assert!(matches!(sent.await, Ok(Confirmation::NotRequested)));
            delivery.ack().await.expect("ack the request");

            let reply = next(&mut replies).await;
            assert_eq!(&reply.body[..], b"pong");
            assert_eq!(reply.properties.correlation_id.as_ref(), Some(&id));
            assert_eq!(reply.consumer_tag.as_str(), replies.tag());
        }

        let acking = conn.open_channel().await.expect("third channel");
        let err = acking
            .basic_consume(
                "amq.rabbitmq.reply-to",
                "",
                BasicConsumeOptions::default(),
                FieldTable::new(),
            )
            .await
            .expect_err("an acking reply-to consumer is refused");
        assert_eq!(
            err.reply_code(),
            Some(ReplyCode::PRECONDITION_FAILED),
            "{err:?}"
        );
        assert!(!acking.is_open());
        assert!(requester.is_open() && server.is_open() && conn.is_open());
        conn.close().await.expect("close");
    })
    .await
}

/// A fresh exclusive queue holding `n` small messages, all confirmed.
async fn queue_of(ch: &Channel, prefix: &str, n: usize) -> String {
    let q = unique(prefix);
    declare_exclusive(ch, &q).await;
    if !ch.is_confirm_mode() {
        ch.confirm_select().await.expect("confirm.select");
    }
    let mut confirms = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!("m{i}");
        let publish = ch.basic_publish(
            "",
            &q,
            BasicPublishOptions::default(),
            BasicProperties::default(),
            body.into_bytes(),
        );
        confirms.push(publish.await.expect("publish"));
    }
    for confirm in confirms {
        assert_eq!(confirm.await.expect("settled"), Confirmation::Ack);
    }
    q
}

/// Whether the connection still answers: a channel opened and closed on it within 3 s. A consumer whose
/// buffer is full pauses the connection's reads, so the open-ok would not be read.
async fn connection_answers(conn: &coney::Connection) -> bool {
    match tokio::time::timeout(Duration::from_secs(3), conn.open_channel()).await {
        Ok(Ok(ch)) => {
            ch.close().await.expect("close the probe channel");
            true
        }
        _ => false,
    }
}

/// RabbitMQ ignores prefetch for a no_ack consumer, so its buffer is not sized by basic.qos: with
/// qos(5) it was a buffer of 5, full at once, and the whole connection stopped reading.
#[tokio::test]
async fn basic_qos_does_not_size_a_no_ack_consumers_buffer() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_of(&ch, "no-ack-qos", 200).await;
        ch.basic_qos(5, Default::default()).await.expect("qos");
        let options = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut consumer = ch
            .basic_consume(&q, "", options, FieldTable::new())
            .await
            .expect("consume");
        // Time for the broker to send them all.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            connection_answers(&conn).await,
            "the connection stopped reading"
        );
        for _ in 0..200 {
            next(&mut consumer).await;
        }
        conn.close().await.expect("close");
    })
    .await
}

/// basic.qos with `global: true` is the channel-wide limit and leaves the per-consumer one alone: after
/// qos(300) and then a global qos(0), a consumer may be sent 300, and its buffer holds them. The last
/// count, global or not, used to size it (256 here), so the connection stopped reading.
#[tokio::test]
async fn a_global_qos_does_not_replace_the_per_consumer_limit() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = queue_of(&ch, "global-qos", 300).await;
        ch.basic_qos(300, Default::default()).await.expect("qos");
        let global = coney::options::BasicQosOptions {
            global: true,
            ..Default::default()
        };
        ch.basic_qos(0, global).await.expect("global qos");
        let mut consumer = consume(&ch, &q).await;
        // Time for the broker to send them all.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            connection_answers(&conn).await,
            "the connection stopped reading"
        );
        for _ in 0..300 {
            next(&mut consumer).await.ack().await.expect("ack");
        }
        conn.close().await.expect("close");
    })
    .await
}

/// A connection with a 5 s `rpc_timeout`, and a consumer, without prefetch, of a fresh queue of 2,000
/// messages: more than its buffer of 256 holds.
async fn consuming_2000(prefix: &str) -> (coney::Connection, Channel, String, Consumer) {
    let config = config().with_rpc_timeout(Duration::from_secs(5));
    let conn = coney::Connection::connect_with(config)
        .await
        .expect("connect");
    let ch = conn.open_channel().await.expect("channel");
    let q = queue_of(&ch, prefix, 2000).await;
    let consumer = consume(&ch, &q).await;
    (conn, ch, q, consumer)
}

/// basic_cancel of a consumer that is behind (no prefetch: a queue of 256 and 2,000 messages on their
/// way) returns at the broker's cancel-ok. It used to wait until the application had read everything the
/// broker sent before the cancel, since a delivery held back for a full queue pauses the reads, and then
/// timed out. Now what the queue has no room for once the cancel is out is requeued: the deliveries
/// buffered stay readable, and every message is either read or back in the queue.
#[tokio::test]
async fn basic_cancel_of_a_consumer_that_is_behind_returns_at_cancel_ok() {
    with_timeout(async {
        let (conn, ch, q, mut consumer) = consuming_2000("cancel-behind").await;
        // Time for the broker to fill the consumer's queue and the driver to hold one back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let tag = consumer.tag().to_owned();
        ch.basic_cancel(&tag, BasicCancelOptions::default())
            .await
            .expect("cancelled without reading the consumer");
        let mut read = 0u32;
        while let Some(item) = consumer.next().await {
            item.expect("no error after our own cancel")
                .ack()
                .await
                .expect("ack");
            read += 1;
        }
        assert!((1..=256).contains(&read), "read {read}");
        assert_eq!(wait_for_count(&conn, &q, 2000 - read).await, 2000 - read);
        conn.close().await.expect("close");
    })
    .await
}

/// The same with a consumer that is read all along, slowly (2 ms a message), by `Consumer::run`, and
/// cancelled from another task: the cancel returns promptly and nothing is lost.
#[tokio::test]
async fn basic_cancel_of_a_slowly_read_consumer_returns_at_cancel_ok() {
    with_timeout(async {
        let (conn, ch, q, consumer) = consuming_2000("cancel-slow").await;
        let tag = consumer.tag().to_owned();
        let read = Arc::new(Mutex::new(0u32));
        let counted = read.clone();
        let handler = consumer.run(move |d| {
            let counted = counted.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                d.ack().await.expect("ack");
                *counted.lock().unwrap() += 1;
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        ch.basic_cancel(&tag, BasicCancelOptions::default())
            .await
            .expect("cancelled while the handler runs");
        let ended = handler.await.expect("handler task");
        assert!(ended.is_none(), "our own cancel ends it cleanly: {ended:?}");
        let read = *read.lock().unwrap();
        assert!(read < 2000, "read {read}");
        assert_eq!(wait_for_count(&conn, &q, 2000 - read).await, 2000 - read);
        conn.close().await.expect("close");
    })
    .await
}
