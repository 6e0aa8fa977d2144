//! An operation waits at most one `rpc_timeout` in all, however many waits it makes: room in the command
//! queue, then the broker's reply.
//!
//! The scripted broker stops reading until the command queue is full, so that a synchronous method must
//! first wait for room. It starts reading again after most of `rpc_timeout`, and never answers. Waits
//! bounded one by one would end after that delay plus a whole `rpc_timeout`.

mod fake_broker;

use std::time::{Duration, Instant};

use coney::{
    codec::FieldTable,
    options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions},
    BasicProperties, Connection, Error,
};
use fake_broker::{deliver, fill_the_command_queue, scenario, FakeBroker};
use tokio::sync::oneshot;

#[tokio::test]
async fn a_method_that_waits_for_room_and_then_for_its_reply_ends_within_one_rpc_timeout() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let rpc_timeout = config.rpc_timeout;
    assert_eq!(
        rpc_timeout,
        Duration::from_secs(2),
        "the fake broker's setting"
    );
    let (waiting_tx, waiting_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, _) = broker.accept_with_channel().await;
        // Reads nothing until the client's calls are waiting for room.
        waiting_rx.await.expect("client waiting");
        tokio::time::sleep(rpc_timeout * 3 / 4).await;
        // Reads (and drops) everything from now on, answering nothing.
        let drain = peer.closed_within(Duration::from_secs(30));
        tokio::select! {
            _ = drain => {}
            _ = done_rx => {}
        }
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        fill_the_command_queue(&ch).await;

        let start = Instant::now();
        let declare = ch.queue_declare("q", QueueDeclareOptions::default(), FieldTable::new());
        let open = conn.open_channel();
        let signal = async {
            // Both calls have found the queue full by the time this runs (a current-thread runtime
            // polls the join's branches in order).
            waiting_tx.send(()).expect("broker waiting");
        };
        let (declared, opened, ()) = tokio::join!(declare, open, signal);
        let took = start.elapsed();
        assert!(
            matches!(declared, Err(Error::Timeout { .. })),
            "no declare-ok came: {declared:?}"
        );
        assert!(
            matches!(opened, Err(Error::Timeout { .. })),
            "no open-ok came: {opened:?}"
        );
        // One rpc_timeout is 2 s; waits bounded one by one would take 1.5 s + 2 s.
        assert!(
            took < rpc_timeout * 3 / 2,
            "both calls ended within about one rpc_timeout of their start: {took:?}"
        );
        drop(done_tx);
        conn.close().await.ok();
    };
    scenario(Duration::from_secs(60), server, client).await;
}

/// An ack that finds the command queue full waits for room at most `rpc_timeout` (it was a fixed 30 s).
#[tokio::test]
async fn an_ack_waits_for_room_at_most_one_rpc_timeout() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let rpc_timeout = config.rpc_timeout;
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        let tag = peer.answer_consume(ch).await;
        peer.send_content(ch, deliver(&tag, 1), b"to ack").await;
        // Reads nothing more; the socket stays open until the client is done.
        done_rx.await.expect("client done");
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        let mut consumer = ch
            .basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("consume");
        let delivery = consumer
            .next()
            .await
            .expect("a delivery")
            .expect("not an error");
        fill_the_command_queue(&ch).await;
        let start = Instant::now();
        let acked = tokio::time::timeout(Duration::from_secs(20), delivery.ack())
            .await
            .expect("the ack's own timeout ends it first");
        let took = start.elapsed();
        assert!(
            matches!(acked, Err(Error::Timeout { after, .. }) if after == rpc_timeout),
            "no room came: {acked:?}"
        );
        assert!(took < rpc_timeout * 3, "{took:?}");
        done_tx.send(()).expect("broker waiting");
    };
    scenario(Duration::from_secs(60), server, client).await;
}

/// A channel.close the broker never answers: `Channel::close` returns `Timeout` after `close_timeout`,
/// and the channel has ended for its handles all the same (found by a review: its confirms and
/// consumers waited for as long as the connection lived, and `is_open` stayed true). Its id stays taken:
/// the next channel gets another.
#[tokio::test]
async fn a_channel_close_never_answered_ends_the_channel_for_its_handles() {
    let broker = FakeBroker::bind().await;
    let config = broker.config();
    let close_timeout = config.close_timeout;
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        peer.answer_confirm_select(ch).await;
        let _tag = peer.answer_consume(ch).await;
        peer.expect_publish(ch).await;
        peer.expect_channel_close(ch, coney::ReplyCode::REPLY_SUCCESS)
            .await;
        // No close-ok, no ack. The next channel.open is answered.
        let next = peer.open_channel().await;
        assert_ne!(next, ch, "the unanswered channel's id is still taken");
        peer.expect_clean_close().await;
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        ch.confirm_select().await.expect("confirm.select");
        let mut consumer = ch
            .basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("consume");
        let confirm = ch
            .basic_publish(
                "",
                "q",
                BasicPublishOptions::default(),
                BasicProperties::default(),
                "m",
            )
            .await
            .expect("publish");
        let start = Instant::now();
        let closed = ch.close().await;
        let took = start.elapsed();
        assert!(
            matches!(closed, Err(Error::Timeout { .. })),
            "no close-ok came: {closed:?}"
        );
        assert!(
            took < close_timeout * 3,
            "within about close_timeout: {took:?}"
        );
        assert!(!ch.is_open(), "the channel reports itself closed");
        let settled = tokio::time::timeout(Duration::from_secs(1), confirm)
            .await
            .expect("the confirm ends with the channel");
        assert!(matches!(settled, Err(Error::Timeout { .. })), "{settled:?}");
        let ended = tokio::time::timeout(Duration::from_secs(1), consumer.next())
            .await
            .expect("the consumer ends with the channel");
        assert!(matches!(ended, Some(Err(_)) | None), "{ended:?}");
        let other = conn.open_channel().await.expect("another channel");
        assert_ne!(other.id(), ch.id());
        conn.close().await.expect("close");
    };
    scenario(Duration::from_secs(60), server, client).await;
}

/// The client closes a channel itself with 311 when a delivery is over `max_message_size`. Its
/// handles are done with it at once (found by a review: with no close-ok from the broker, its confirms
/// and consumers waited as long as the connection lived, and `is_open` stayed true), and the wait for
/// the close-ok is bounded like that of a close the driver sends.
#[tokio::test]
async fn a_channel_the_client_closes_for_an_oversized_message_ends_for_its_handles() {
    let broker = FakeBroker::bind().await;
    let config = broker.config().with_max_message_size(1024);
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let server = async move {
        let (mut peer, ch) = broker.accept_with_channel().await;
        peer.answer_confirm_select(ch).await;
        let tag = peer.answer_consume(ch).await;
        peer.expect_publish(ch).await;
        // A delivery of 1 MB, over the client's limit of 1024 bytes.
        peer.send_method(ch, fake_broker::deliver(&tag, 1)).await;
        peer.send_header(ch, 1_000_000).await;
        peer.expect_channel_close(ch, coney::ReplyCode::CONTENT_TOO_LARGE)
            .await;
        // No close-ok, no ack; keeps reading.
        tokio::select! {
            _ = peer.closed_within(Duration::from_secs(30)) => {}
            _ = done_rx => {}
        }
    };
    let client = async move {
        let conn = Connection::connect_with(config).await.expect("connect");
        let ch = conn.open_channel().await.expect("open channel");
        ch.confirm_select().await.expect("confirm.select");
        let mut consumer = ch
            .basic_consume("q", "", BasicConsumeOptions::default(), FieldTable::new())
            .await
            .expect("consume");
        let confirm = ch
            .basic_publish(
                "",
                "q",
                BasicPublishOptions::default(),
                BasicProperties::default(),
                "m",
            )
            .await
            .expect("publish");
        let ended = tokio::time::timeout(Duration::from_secs(2), consumer.next())
            .await
            .expect("the consumer ends with the channel");
        let code = |e: &Error| e.reply_code().map(|c| c.code());
        assert!(
            matches!(&ended, Some(Err(e)) if code(e) == Some(311)),
            "{ended:?}"
        );
        let settled = tokio::time::timeout(Duration::from_secs(1), confirm)
            .await
            .expect("the confirm ends with the channel");
        assert!(
            matches!(&settled, Err(e) if code(e) == Some(311)),
            "{settled:?}"
        );
        assert!(!ch.is_open());
        let _ = done_tx.send(());
        let _ = conn.close().await;
    };
    scenario(Duration::from_secs(60), server, client).await;
}
