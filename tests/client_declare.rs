//! Declarations, bindings, purge and delete, and the soft errors they can cause.

mod support;

use coney::{
    options::{
        BasicConsumeOptions, BasicPublishOptions, BindOptions, ExchangeDeclareOptions,
        ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    BasicProperties, Channel, Confirmation, Error, FieldTable, ReplyCode, ShortStr,
};
use support::*;

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        passive: true,
        ..Default::default()
    }
}

fn exclusive() -> QueueDeclareOptions {
    QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    }
}

/// The error must be a channel close with `code`, and the channel must be closed with the same reason.
fn assert_channel_closed(ch: &Channel, err: &Error, code: ReplyCode) {
    match err {
        Error::ChannelClosed(reason) => assert_eq!(reason.code, code, "{err:?}"),
        other => panic!("expected ChannelClosed({code}), got {other:?}"),
    }
    assert_eq!(err.reply_code(), Some(code));
    assert!(err.is_soft(), "{err:?}");
    assert!(!err.is_connection_closed(), "{err:?}");
    assert!(!ch.is_open(), "the channel must be closed after {code}");
    let reason = ch.close_reason().expect("a closed channel has a reason");
    assert_eq!(reason.reply_code(), Some(code), "{reason:?}");
}

/// Publishes a mandatory message in confirm mode and says whether it was routed (acked) or returned.
async fn routed(ch: &Channel, exchange: &str, routing_key: &str) -> bool {
    let confirm = ch
        .basic_publish(
            exchange,
            routing_key,
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            BasicProperties::default(),
            &b"probe"[..],
        )
        .await
        .expect("publish");
    match confirm.await.expect("confirm") {
        Confirmation::Ack => true,
        Confirmation::Returned(r) => {
            assert_eq!(r.reply_code, ReplyCode(312), "{r:?}");
            false
        }
        other => panic!("unexpected confirmation {other:?}"),
    }
}

#[tokio::test]
async fn queue_declare_with_conflicting_arguments_is_406_and_closes_only_the_channel() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = unique("conflict");
        let args = FieldTable::new().with("x-max-length", 10i32);
        let ok = ch
            .queue_declare(&q, exclusive(), args)
            .await
            .expect("first declare");
        assert_eq!(ok.queue.as_str(), q);
        assert_eq!((ok.message_count, ok.consumer_count), (0, 0));

        let other_args = FieldTable::new().with("x-max-length", 20i32);
        let err = ch
            .queue_declare(&q, exclusive(), other_args)
            .await
            .expect_err("a conflicting redeclare must fail");
        assert_channel_closed(&ch, &err, ReplyCode::PRECONDITION_FAILED);

        // Every later call on the dead channel fails with the same reason, at once.
        let err = ch
            .queue_declare(&q, passive(), FieldTable::new())
            .await
            .expect_err("the channel is closed");
        assert_channel_closed(&ch, &err, ReplyCode::PRECONDITION_FAILED);

        // The connection and the next channel carry on.
        assert!(conn.is_open());
        let ch2 = conn.open_channel().await.expect("next channel");
        let ok = ch2
            .queue_declare(&q, passive(), FieldTable::new())
            .await
            .expect("passive declare on the next channel");
        assert_eq!(ok.queue.as_str(), q);
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn queue_redeclare_with_other_flags_is_406() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = unique("flags");
        declare_queue(&ch, &q).await;
        let same_arguments = FieldTable::new().with("x-expires", 300_000i32);
        let err = ch
            .queue_declare(
                &q,
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                same_arguments,
            )
            .await
            .expect_err("durable vs non-durable");
        assert_channel_closed(&ch, &err, ReplyCode::PRECONDITION_FAILED);
        let ch2 = conn.open_channel().await.expect("next channel");
        declare_queue(&ch2, &q).await;
        assert_eq!(
            ch2.queue_delete(&q, QueueDeleteOptions::default())
                .await
                .expect("delete"),
            0
        );
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn exchange_declare_with_conflicting_type_is_406() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let x = unique("x-conflict");
        let auto_delete = ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        };
        ch.exchange_declare(&x, "direct", auto_delete, FieldTable::new())
            .await
            .expect("declare exchange");
        let err = ch
            .exchange_declare(&x, "fanout", auto_delete, FieldTable::new())
            .await
            .expect_err("direct vs fanout");
        assert_channel_closed(&ch, &err, ReplyCode::PRECONDITION_FAILED);

        let ch2 = conn.open_channel().await.expect("next channel");
        ch2.exchange_declare(
            &x,
            "direct",
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::new(),
        )
        .await
        .expect("passive exchange declare");
        ch2.exchange_delete(&x, ExchangeDeleteOptions::default())
            .await
            .expect("delete exchange");
        let err = ch2
            .exchange_declare(
                &x,
                "direct",
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::new(),
            )
            .await
            .expect_err("the exchange was deleted");
        assert_channel_closed(&ch2, &err, ReplyCode::NOT_FOUND);
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn passive_declare_of_a_missing_queue_is_404() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let err = ch
            .queue_declare(&unique("missing"), passive(), FieldTable::new())
            .await
            .expect_err("the queue does not exist");
        assert_channel_closed(&ch, &err, ReplyCode::NOT_FOUND);
        assert!(conn.is_open());
        let ch2 = conn.open_channel().await.expect("next channel");
        declare_exclusive(&ch2, &unique("after-404")).await;
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn another_connections_exclusive_queue_is_405() {
    with_timeout(async {
        let (owner, owner_ch) = connect_channel().await;
        let q = unique("exclusive");
        declare_exclusive(&owner_ch, &q).await;

        let (other, ch) = connect_channel().await;
        let err = ch
            .basic_consume(&q, "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect_err("consuming another connection's exclusive queue must fail");
        assert_channel_closed(&ch, &err, ReplyCode::RESOURCE_LOCKED);

        let ch2 = other.open_channel().await.expect("next channel");
        let err = ch2
            .queue_declare(&q, exclusive(), FieldTable::new())
            .await
            .expect_err("declaring it must fail too");
        assert_channel_closed(&ch2, &err, ReplyCode::RESOURCE_LOCKED);

        // The owner is unaffected.
        let consumer = owner_ch
            .basic_consume(&q, "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("the owner can consume");
        drop(consumer);
        other.close().await.expect("close");
        owner.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn server_named_and_nowait_declarations() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let ok = ch
            .queue_declare("", exclusive(), FieldTable::new())
            .await
            .expect("server-named queue");
        assert!(ok.queue.as_str().starts_with("amq.gen-"), "{:?}", ok.queue);

        let q = unique("nowait");
        ch.queue_declare_nowait(&q, exclusive(), FieldTable::new())
            .await
            .expect("no-wait declare");
        let ok = ch
            .queue_declare(&q, passive(), FieldTable::new())
            .await
            .expect("the no-wait declare took effect");
        assert_eq!(ok.queue.as_str(), q);

        let err = ch
            .queue_declare_nowait("", exclusive(), FieldTable::new())
            .await
            .expect_err("no-wait needs a name");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(ch.is_open());

        let too_long = "x".repeat(256);
        let err = ch
            .queue_declare(&too_long, exclusive(), FieldTable::new())
            .await
            .expect_err("names are at most 255 bytes");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        assert!(ch.is_open());
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn exchange_bind_and_unbind_change_routing() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let source = unique("x-source");
        let destination = unique("x-destination");
        let q = unique("e2e");
        let opts = ExchangeDeclareOptions::default();
        ch.exchange_declare(&source, "direct", opts, FieldTable::new())
            .await
            .expect("declare source");
        ch.exchange_declare(&destination, "fanout", opts, FieldTable::new())
            .await
            .expect("declare destination");
        declare_exclusive(&ch, &q).await;
        ch.queue_bind(
            &q,
            &destination,
            "",
            BindOptions::default(),
            FieldTable::new(),
        )
        .await
        .expect("queue.bind");
        ch.confirm_select().await.expect("confirm.select");

        assert!(!routed(&ch, &source, "k").await, "not bound yet");
        ch.exchange_bind(
            &destination,
            &source,
            "k",
            BindOptions::default(),
            FieldTable::new(),
        )
        .await
        .expect("exchange.bind");
        assert!(routed(&ch, &source, "k").await, "bound with key k");
        assert!(!routed(&ch, &source, "other").await, "other key");
        assert_eq!(wait_for_count(&conn, &q, 1).await, 1);

        ch.exchange_unbind(
            &destination,
            &source,
            "k",
            BindOptions::default(),
            FieldTable::new(),
        )
        .await
        .expect("exchange.unbind");
        assert!(!routed(&ch, &source, "k").await, "unbound");
        assert_eq!(message_count(&conn, &q).await, 1);

        // no-wait forms, checked by the next synchronous call.
        ch.exchange_bind(
            &destination,
            &source,
            "k2",
            BindOptions { no_wait: true },
            FieldTable::new(),
        )
        .await
        .expect("exchange.bind no-wait");
        assert!(routed(&ch, &source, "k2").await, "bound with key k2");

        ch.exchange_delete(&source, ExchangeDeleteOptions::default())
            .await
            .expect("delete source");
        ch.exchange_delete(
            &destination,
            ExchangeDeleteOptions {
                no_wait: true,
                ..Default::default()
            },
        )
        .await
        .expect("delete destination");
        let err = ch
            .exchange_declare(
                &destination,
                "fanout",
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::new(),
            )
            .await
            .expect_err("deleted");
        assert_channel_closed(&ch, &err, ReplyCode::NOT_FOUND);
        conn.close().await.expect("close");
    })
    .await
}

#[tokio::test]
async fn queue_bind_unbind_purge_delete_report_counts() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let q = unique("bind");
        declare_queue(&ch, &q).await;
        ch.confirm_select().await.expect("confirm.select");

        assert!(!routed(&ch, "amq.direct", &q).await, "not bound yet");
        ch.queue_bind(
            &q,
            "amq.direct",
            &q,
            BindOptions::default(),
            FieldTable::new(),
        )
        .await
        .expect("queue.bind");
        for _ in 0..3 {
            assert!(routed(&ch, "amq.direct", &q).await, "bound");
        }
        assert_eq!(wait_for_count(&conn, &q, 3).await, 3);

        ch.queue_unbind(&q, "amq.direct", &q, FieldTable::new())
            .await
            .expect("queue.unbind");
        assert!(!routed(&ch, "amq.direct", &q).await, "unbound");
        assert_eq!(message_count(&conn, &q).await, 3);

        assert_eq!(ch.queue_purge(&q).await.expect("purge"), 3);
        assert_eq!(message_count(&conn, &q).await, 0);
        assert_eq!(ch.queue_purge(&q).await.expect("purge empty"), 0);

        for _ in 0..2 {
            assert!(routed(&ch, "", &q).await, "default exchange");
        }
        let err = ch
            .queue_delete(
                &q,
                QueueDeleteOptions {
                    if_empty: true,
                    ..Default::default()
                },
            )
            .await
            .expect_err("the queue is not empty");
        assert_channel_closed(&ch, &err, ReplyCode::PRECONDITION_FAILED);

        let ch = conn.open_channel().await.expect("next channel");
        assert_eq!(
            ch.queue_delete(&q, QueueDeleteOptions::default())
                .await
                .expect("delete"),
            2
        );
        let err = ch
            .queue_declare(&q, passive(), FieldTable::new())
            .await
            .expect_err("deleted");
        assert_channel_closed(&ch, &err, ReplyCode::NOT_FOUND);
        conn.close().await.expect("close");
    })
    .await
}

/// A binding whose arguments table makes the method frame larger than the negotiated frame-max would be
/// a 501 frame-error from RabbitMQ, closing the whole connection. It is refused before it is sent, and the
/// connection and the channel go on.
#[tokio::test]
async fn a_binding_with_arguments_over_frame_max_is_refused_and_the_connection_goes_on() {
    with_timeout(async {
        let (conn, ch) = connect_channel().await;
        let frame_max = conn.tuned().frame_max as usize;
        assert!(frame_max > 0, "RabbitMQ negotiates a frame-max");
        let q = unique("huge-binding");
        declare_exclusive(&ch, &q).await;
        let mut arguments = FieldTable::new().with("x-match", "all");
        for i in 0..frame_max / 200 + 1 {
            let key = ShortStr::try_from(format!("header-{i}")).expect("a short key");
            arguments = arguments.with(key, "v".repeat(200));
        }
        let refused = ch
            .queue_bind(&q, "amq.headers", "", BindOptions::default(), arguments)
            .await
            .expect_err("over frame-max");
        assert!(
            matches!(&refused, Error::InvalidArgument(text) if text.contains("frame-max")),
            "{refused:?}"
        );
        assert!(conn.is_open() && ch.is_open());
        // The same binding with a table that fits goes through.
        let fits = FieldTable::new()
            .with("x-match", "all")
            .with("kind", "small");
        ch.queue_bind(&q, "amq.headers", "", BindOptions::default(), fits)
            .await
            .expect("a binding that fits");
        conn.close().await.expect("close");
    })
    .await
}
