//! A peer that never stops sending: while every read of the driver finds more bytes waiting, the driver
//! must still send its heartbeats and take its handles' commands.
//!
//! The scripted broker runs on a thread of its own and streams no-ack deliveries as fast as the client
//! reads them, to a consumer that keeps up, so the driver's queue to it never fills and its reads never
//! pause.

mod fake_broker;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::BytesMut;
use coney::{
    codec::{FieldTable, ShortStr},
    frame::{encode_body, encode_content_header, encode_method, ContentHeader, Frame},
    options::{BasicConsumeOptions, BasicPublishOptions},
    spec::{basic, Method},
    BasicProperties, Connection,
};
use fake_broker::{deliver, FakeBroker, Peer, Tune};

/// Deliveries of 16-byte bodies, back to back.
fn delivery_chunk(channel: u16, tag: &ShortStr, count: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for _ in 0..count {
        encode_method(&mut buf, channel, &deliver(tag, 1).into());
        encode_content_header(
            &mut buf,
            channel,
            &ContentHeader {
                class_id: basic::CLASS_ID,
                body_size: 16,
                properties: Default::default(),
            },
        );
        encode_body(&mut buf, channel, &[b'x'; 16]);
    }
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_stops_sending_still_gets_heartbeats_and_commands() {
    const STREAM: Duration = Duration::from_secs(4);
    let broker = FakeBroker::bind().await;
    let config = broker.config().with_heartbeat(1);
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("broker runtime");
        rt.block_on(async move {
            let mut peer: Peer = broker.accept().await;
            peer.handshake_with(Tune {
                heartbeat: 1,
                ..Tune::default()
            })
            .await;
            let ch = peer.open_channel().await;
            let tag = peer.answer_consume(ch).await;
            let chunk = delivery_chunk(ch, &tag, 1000);
            let frames = peer.stream_for(&chunk, STREAM).await;
            peer.wait = Duration::from_secs(10);
            peer.methods_until_close(ch).await;
            let during: Vec<Method> = frames
                .iter()
                .filter_map(|f| match f {
                    Frame::Method { method, .. } => Some(method.clone()),
                    _ => None,
                })
                .collect();
            let heartbeats = frames
                .iter()
                .filter(|f| matches!(f, Frame::Heartbeat))
                .count();
            (heartbeats, during)
        })
    });
    let conn = Connection::connect_with(config).await.expect("connect");
    assert_eq!(conn.tuned().heartbeat, 1);
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
    let received = Arc::new(AtomicU64::new(0));
    let counting = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(d) = consumer.next().await {
                if d.is_err() {
                    break;
                }
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // While the stream runs: a publish, which has to get past the reads.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let publish = ch.basic_publish(
        "",
        "elsewhere",
        BasicPublishOptions::default(),
        BasicProperties::default(),
        &b"during the stream"[..],
    );
    let _not_confirmed = tokio::time::timeout(Duration::from_secs(2), publish)
        .await
        .expect("the publish was queued")
        .expect("publish");
    tokio::time::sleep(STREAM).await;
    assert!(conn.is_open(), "still connected: {:?}", conn.close_reason());
    conn.close().await.expect("close");
    counting.abort();
    let (heartbeats, during) = server.join().expect("broker thread");
    let received = received.load(Ordering::Relaxed);
    assert!(
        received > 10_000,
        "the stream flowed: {received} deliveries"
    );
    // Four seconds of a 1 s heartbeat: one every half second of write silence.
    assert!(
        heartbeats >= 2,
        "{heartbeats} heartbeats during {STREAM:?} of streaming ({received} deliveries)"
    );
    assert!(
        during.iter().any(|m| matches!(m, Method::BasicPublish(_))),
        "the publish reached the broker while it streamed: {during:?}"
    );
}
