//! basic.return in confirm mode, against a scripted broker that sends what RabbitMQ may: returns in
//! publish order, each before the ack that covers its publish, and acks coalesced, so that several
//! returns can come before one `multiple` ack over returned and routed publishes alike. Each publish's
//! confirm must say what happened to that message.
//!
//! `tests/client_publish.rs` has the same against the real broker, in a burst
//! (`returns_in_a_burst_resolve_the_publishes_they_belong_to`).

mod fake_broker;

use std::time::Duration;

use coney::{
    codec::ShortStr,
    options::BasicPublishOptions,
    spec::{basic, ReplyCode},
    BasicProperties, Channel, Confirmation, Connection,
};
use fake_broker::{scenario, FakeBroker};

const LIMIT: Duration = Duration::from_secs(30);

fn mandatory() -> BasicPublishOptions {
    BasicPublishOptions {
        mandatory: true,
        ..Default::default()
    }
}

/// The basic.return of a message published to `amq.direct` with `routing_key`.
fn unroutable(routing_key: &str) -> basic::Return {
    basic::Return {
        reply_code: ReplyCode(312),
        reply_text: ShortStr::from("NO_ROUTE"),
        exchange: ShortStr::from("amq.direct"),
        routing_key: ShortStr::try_from(routing_key.to_owned()).expect("short"),
    }
}

/// Publishes each `(routing key, body)` to `amq.direct`, mandatory, and awaits every confirm.
async fn publish_all(ch: &Channel, messages: &[(&str, &str)]) -> Vec<Confirmation> {
    let mut confirms = Vec::new();
    for (routing_key, body) in messages {
        confirms.push(
            ch.basic_publish(
                "amq.direct",
                routing_key,
                mandatory(),
                BasicProperties::default(),
                body.to_string(),
            )
            .await
            .expect("publish"),
        );
    }
    let mut outcomes = Vec::new();
    for c in confirms {
        outcomes.push(c.await.expect("confirm"));
    }
    outcomes
}

/// Connects, puts a channel in confirm mode, publishes `messages` as [`publish_all`] does and closes.
async fn confirm_mode_publishes(
    config: coney::ConnectionConfig,
    messages: &[(&str, &str)],
) -> Vec<Confirmation> {
    let conn = Connection::connect_with(config).await.expect("connect");
    let ch = conn.open_channel().await.expect("open channel");
    ch.confirm_select().await.expect("confirm.select");
    let outcomes = publish_all(&ch, messages).await;
    conn.close().await.expect("close");
    outcomes
}

fn returned_body(outcome: &Confirmation) -> Option<&[u8]> {
    match outcome {
        Confirmation::Returned(r) => Some(&r.body),
        _ => None,
    }
}

/// Two unroutable publishes, both returned, then one `multiple` ack for both. (Found by a review: the
/// driver kept one return per channel, so the first was dropped and its publish reported `Ack`.)
#[tokio::test]
async fn two_returns_before_one_multiple_ack_are_both_reported() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        peer.answer_confirm_select(ch).await;
        peer.expect_publish(ch).await;
        peer.expect_publish(ch).await;
        peer.send_content(ch, unroutable("nowhere"), b"first").await;
        peer.send_content(ch, unroutable("nowhere"), b"second")
            .await;
        let ack = basic::Ack {
            delivery_tag: 2,
            multiple: true,
        };
        peer.send_method(ch, ack).await;
        peer.methods_until_close(ch).await;
    };
    let client = confirm_mode_publishes(config, &[("nowhere", "first"), ("nowhere", "second")]);
    let ((), outcomes) = scenario(LIMIT, server, client).await;
    let bodies: Vec<_> = outcomes.iter().map(returned_body).collect();
    assert_eq!(
        bodies,
        vec![Some(&b"first"[..]), Some(&b"second"[..])],
        "{outcomes:?}"
    );
}

/// A returned publish, then a routed one, settled by one `multiple` ack that names the routed one: the
/// return belongs to the first, not to the publish the ack names.
#[tokio::test]
async fn a_multiple_ack_naming_a_routed_publish_leaves_the_return_with_its_own() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        peer.answer_confirm_select(ch).await;
        for _ in 0..3 {
            peer.expect_publish(ch).await;
        }
        peer.send_content(ch, unroutable("nowhere"), b"lost").await;
        let ack = basic::Ack {
            delivery_tag: 2,
            multiple: true,
        };
        peer.send_method(ch, ack).await;
        // A third publish with the same key, returned and acked on its own afterwards.
        peer.send_content(ch, unroutable("nowhere"), b"lost too")
            .await;
        let ack = basic::Ack {
            delivery_tag: 3,
            multiple: false,
        };
        peer.send_method(ch, ack).await;
        peer.methods_until_close(ch).await;
    };
    let client = confirm_mode_publishes(
        config,
        &[("nowhere", "lost"), ("q", "kept"), ("nowhere", "lost too")],
    );
    let ((), outcomes) = scenario(LIMIT, server, client).await;
    assert_eq!(
        returned_body(&outcomes[0]),
        Some(&b"lost"[..]),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], Confirmation::Ack, "{outcomes:?}");
    assert_eq!(
        returned_body(&outcomes[2]),
        Some(&b"lost too"[..]),
        "{outcomes:?}"
    );
}

/// A return that matches no outstanding publish (here: a routing key nobody published with) goes to the
/// returns listener, and takes no publish's confirm.
#[tokio::test]
async fn a_return_for_no_outstanding_publish_goes_to_the_listener() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        peer.answer_confirm_select(ch).await;
        peer.expect_publish(ch).await;
        peer.send_content(ch, unroutable("somebody-else"), b"stray")
            .await;
        let ack = basic::Ack {
            delivery_tag: 1,
            multiple: false,
        };
        peer.send_method(ch, ack).await;
        peer.methods_until_close(ch).await;
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let mut returns = ch.returned_messages(4);
        ch.confirm_select().await.expect("confirm.select");
        let outcomes = publish_all(&ch, &[("mine", "routed")]).await;
        let stray = tokio::time::timeout(Duration::from_secs(5), returns.next())
            .await
            .expect("the stray return reached the listener")
            .expect("listener open");
        conn.close().await.expect("close");
        (outcomes, stray)
    };
    let ((), (outcomes, stray)) = scenario(LIMIT, server, client).await;
    assert_eq!(outcomes, vec![Confirmation::Ack]);
    assert_eq!(&stray.body[..], b"stray");
    assert_eq!(stray.routing_key.as_str(), "somebody-else");
}
