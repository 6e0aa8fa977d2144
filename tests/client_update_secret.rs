//! `Connection::update_secret` (connection.update-secret, RabbitMQ's extension for renewing a
//! credential on an open connection): against RabbitMQ, and against a scripted broker for the order of
//! several updates, an update-secret-ok nobody asked for, and a refusal (the broker's 530 close).

mod fake_broker;
mod support;

use std::time::Duration;

use coney::{
    codec::ShortStr,
    spec::{connection, Method, ReplyCode},
    Connection, Error,
};
use fake_broker::{scenario, FakeBroker};
use support::*;

const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn the_same_password_is_accepted_and_the_connection_goes_on() {
    with_timeout(async {
        let config = config();
        let password = config.password.expose().to_string();
        let conn = Connection::connect_with(config).await.expect("connect");
        conn.update_secret(&password, "coney test: renewing")
            .await
            .expect("update-secret with the password the connection logged in with");
        // The connection, and a channel opened after the update, still work.
        let ch = conn.open_channel().await.expect("open channel");
        let q = unique("update-secret");
        declare_exclusive(&ch, &q).await;
        assert!(conn.is_open());
        conn.close().await.expect("close");
    })
    .await;
}

/// RabbitMQ checks a new secret only with backends whose credentials expire (OAuth 2): its internal
/// user database says they never do, so it takes any secret without checking it. (A refusal closes the
/// connection with 530; the scripted broker below plays that.)
#[tokio::test]
async fn the_internal_backend_takes_any_secret_without_checking_it() {
    with_timeout(async {
        let conn = connect().await;
        conn.update_secret("not the password", "coney test: any secret")
            .await
            .expect("RabbitMQ's internal backend does not check the secret");
        let ch = conn.open_channel().await.expect("open channel");
        declare_exclusive(&ch, &unique("update-secret-any")).await;
        conn.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn arguments_that_cannot_be_sent_are_refused_before_anything_is_sent() {
    with_timeout(async {
        let conn = connect().await;
        let frame_max = conn.tuned().frame_max as usize;
        let long_reason = "r".repeat(256);
        let err = conn
            .update_secret("guest", &long_reason)
            .await
            .expect_err("a reason over 255 bytes");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        let huge_secret = "s".repeat(frame_max);
        let err = conn
            .update_secret(&huge_secret, "too large")
            .await
            .expect_err("a secret over frame-max");
        assert!(
            matches!(&err, Error::InvalidArgument(text) if text.contains("frame-max")),
            "{err:?}"
        );
        // Nothing went out: RabbitMQ would have closed the connection for either.
        let ch = conn
            .open_channel()
            .await
            .expect("open channel after the refusals");
        declare_exclusive(&ch, &unique("update-secret-args")).await;
        conn.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn updates_go_out_one_at_a_time_in_call_order() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let mut peer = broker.accept().await;
        peer.handshake().await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            match peer.expect_method().await {
                (0, Method::ConnectionUpdateSecret(update)) => {
                    seen.push(String::from_utf8(update.new_secret.to_vec()).expect("utf-8"));
                }
                other => panic!("fake broker: expected update-secret, got {other:?}"),
            }
            // The next one must not be on the wire before this answer.
            let early = tokio::time::timeout(Duration::from_millis(200), peer.next_frame()).await;
            assert!(
                early.is_err(),
                "a frame came before the update-secret was answered: {early:?}"
            );
            peer.send_method(0, connection::UpdateSecretOk).await;
        }
        peer.expect_clean_close().await;
        seen
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let (a, b, c) = tokio::join!(
            conn.update_secret("first", "1"),
            conn.update_secret("second", "2"),
            conn.update_secret("third", "3"),
        );
        a.expect("first");
        b.expect("second");
        c.expect("third");
        conn.close().await.expect("close");
    };
    let (seen, ()) = scenario(LIMIT, server, client).await;
    assert_eq!(seen, ["first", "second", "third"]);
}

#[tokio::test]
async fn an_update_secret_ok_nobody_asked_for_is_a_violation() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let server = async move {
        let mut peer = broker.accept().await;
        peer.handshake().await;
        peer.send_method(0, connection::UpdateSecretOk).await;
        peer.expect_connection_close_and_answer(ReplyCode::COMMAND_INVALID)
            .await;
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let reason = conn.closed().await;
        assert!(
            matches!(&reason, Error::Protocol { code, .. } if *code == ReplyCode::COMMAND_INVALID),
            "{reason:?}"
        );
    };
    scenario(LIMIT, server, client).await;
}

#[tokio::test]
async fn a_refused_secret_fails_with_the_brokers_close() {
    let broker = FakeBroker::bind().await;
    let config = broker.config().with_rpc_timeout(Duration::from_secs(60));
    let server = async move {
        let mut peer = broker.accept().await;
        peer.handshake().await;
        match peer.expect_method().await {
            (0, Method::ConnectionUpdateSecret(_)) => {}
            other => panic!("fake broker: expected update-secret, got {other:?}"),
        }
        let close = connection::Close {
            reply_code: ReplyCode::NOT_ALLOWED,
            reply_text: ShortStr::from("NOT_ALLOWED - access refused"),
            class_id: connection::CLASS_ID,
            method_id: connection::UpdateSecret::METHOD_ID,
        };
        peer.send_method(0, close).await;
        match peer.expect_method().await {
            (0, Method::ConnectionCloseOk(_)) => {}
            other => panic!("fake broker: expected close-ok, got {other:?}"),
        }
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let err = conn
            .update_secret("refused", "test")
            .await
            .expect_err("the broker closed the connection instead of answering");
        assert!(
            matches!(&err, Error::ConnectionClosed(r) if r.code == ReplyCode::NOT_ALLOWED),
            "{err:?}"
        );
    };
    scenario(LIMIT, server, client).await;
}
