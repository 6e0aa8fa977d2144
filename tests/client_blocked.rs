//! `connection.blocked` and `channel.flow` against a scripted broker: a publish waits while either holds,
//! and a publish waiting when the connection or the channel ends fails with that end's error at once,
//! not with `Error::Blocked` when its `rpc_timeout` runs out.

mod fake_broker;

use std::time::Duration;

use coney::{
    codec::ShortStr,
    options::BasicPublishOptions,
    spec::{channel, connection, Method, ReplyCode},
    BasicProperties, Connection, Error,
};
use fake_broker::{scenario, FakeBroker, Tune};
use tokio::sync::oneshot;

/// Long enough that a publish which waited it out would fail the scenario's bound.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);
const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_publish_waiting_on_a_blocked_connection_fails_when_the_broker_closes_it() {
    let broker = FakeBroker::bind().await;
    let config = broker.config().with_rpc_timeout(RPC_TIMEOUT);
    let (waiting_tx, waiting_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, _) = broker.accept_with_channel().await;
        let blocked = connection::Blocked {
            reason: ShortStr::from("low on memory"),
        };
        peer.send_method(0, blocked).await;
        waiting_rx.await.expect("client publishing");
        let close = connection::Close {
            reply_code: ReplyCode::CONNECTION_FORCED,
            reply_text: ShortStr::from("CONNECTION_FORCED - shutdown"),
            class_id: 0,
            method_id: 0,
        };
        peer.send_method(0, close).await;
        match peer.expect_method().await {
            (0, Method::ConnectionCloseOk(_)) => {}
            other => panic!("fake broker: expected close-ok, got {other:?}"),
        }
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        while conn.blocked().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let publish = ch.basic_publish(
            "",
            "q",
            BasicPublishOptions::default(),
            BasicProperties::default(),
            &b"held"[..],
        );
        tokio::pin!(publish);
        tokio::select! {
            r = &mut publish => panic!("published while blocked: {:?}", r.map(|_| ())),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        waiting_tx.send(()).expect("broker listening");
        let error = publish.await.map(|_| ()).expect_err("the connection ended");
        assert!(
            error.is_connection_closed()
                && error.reply_code() == Some(ReplyCode::CONNECTION_FORCED),
            "the connection's error, not {error:?}"
        );
        assert_eq!(conn.blocked(), None, "a closed connection is not blocked");
    };
    scenario(LIMIT, server, client).await;
}

#[tokio::test]
async fn a_publish_waiting_for_channel_flow_fails_when_the_broker_closes_the_channel() {
    let broker = FakeBroker::bind().await;
    let config = broker.config().with_rpc_timeout(RPC_TIMEOUT);
    let (waiting_tx, waiting_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        peer.send_method(ch, channel::Flow { active: false }).await;
        match peer.expect_method().await {
            (c, Method::ChannelFlowOk(ok)) if c == ch => assert!(!ok.active),
            other => panic!("fake broker: expected flow-ok, got {other:?}"),
        }
        waiting_rx.await.expect("client publishing");
        let close = channel::Close {
            reply_code: ReplyCode::PRECONDITION_FAILED,
            reply_text: ShortStr::from("PRECONDITION_FAILED - closing"),
            class_id: 0,
            method_id: 0,
        };
        peer.send_method(ch, close).await;
        match peer.expect_method().await {
            (c, Method::ChannelCloseOk(_)) if c == ch => {}
            other => panic!("fake broker: expected channel.close-ok, got {other:?}"),
        }
        peer.expect_clean_close().await;
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let publish = ch.basic_publish(
            "",
            "q",
            BasicPublishOptions::default(),
            BasicProperties::default(),
            &b"held"[..],
        );
        tokio::pin!(publish);
        tokio::select! {
            r = &mut publish => panic!("published while flow-stopped: {:?}", r.map(|_| ())),
            // Long enough for the driver to take the flow and answer it.
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        waiting_tx.send(()).expect("broker listening");
        let error = publish.await.map(|_| ()).expect_err("the channel ended");
        assert!(
            matches!(&error, Error::ChannelClosed(r) if r.code == ReplyCode::PRECONDITION_FAILED),
            "the channel's error, not {error:?}"
        );
        conn.close().await.expect("close");
    };
    scenario(LIMIT, server, client).await;
}

/// A broker with an alarm already in force may send connection.blocked right behind open-ok, so both can
/// arrive in one read, which the handshake decodes. The driver must act on the blocked at once, not at
/// its first read (here there is none: the broker sends nothing more until the client closes).
#[tokio::test]
async fn a_blocked_that_arrives_with_open_ok_is_seen_at_once() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let mut peer = broker.accept().await;
        peer.handshake_until_open(Tune::default()).await;
        let blocked = connection::Blocked {
            reason: ShortStr::from("low on disk"),
        };
        let both = [
            fake_broker::method_frame(0, &connection::OpenOk.into()),
            fake_broker::method_frame(0, &blocked.into()),
        ]
        .concat();
        peer.send_raw(&both).await;
        peer.expect_clean_close().await;
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let seen = tokio::time::timeout(Duration::from_secs(5), async {
            while conn.blocked().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(seen.is_ok(), "connection.blocked never seen");
        assert_eq!(conn.blocked().as_deref(), Some("low on disk"));
        conn.close().await.expect("clean close");
    };
    scenario(LIMIT, server, client).await;
}
