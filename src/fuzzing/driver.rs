//! The `driver` check: the whole client (handles, driver, wake gate) against a scripted broker that, after
//! a valid start, sends arbitrary bytes.
//!
//! The broker answers the handshake and a fixed preamble (a channel in confirm mode with prefetch 8, a
//! consumer `ctag`, three publishes awaiting their confirms), then writes the input and closes its side.
//! Meanwhile the client consumes, settles what it gets in every way there is (ack, multiple ack, nack,
//! reject), and closes. The driver's future is polled here beside the handles, not spawned, so a panic
//! in it reaches the caller.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, DuplexStream, WriteHalf};

use crate::{
    client::options::{BasicConsumeOptions, BasicNackOptions, BasicPublishOptions},
    client::{open_unspawned, Connection},
    codec::{FieldTable, LongStr, ShortStr},
    config::ConnectionConfig,
    frame::{encode_method, Frame, FrameDecoder},
    spec::{self, basic, channel, confirm, connection, BasicProperties, Method},
};

/// A scenario that takes longer than this has hung: with the broker's side closed after the input, a run
/// takes a few milliseconds. After the preamble nothing the client does waits on `rpc_timeout` (its RPCs
/// are all in the preamble, where a loaded machine must not fail them: 2 s), and its close waits at most
/// about three `close_timeout`s of 100 ms.
const SCENARIO_LIMIT: Duration = Duration::from_secs(10);

/// Deliveries the client takes before it stops consuming and closes.
const DELIVERIES_TAKEN: usize = 64;

/// Runs the scenario on `data` and panics if anything panics, if it does not finish within
/// ten seconds, if a publish's confirm is still unresolved once the connection has closed, or
/// if the connection still says it is open.
pub fn check_driver(data: &[u8]) {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
    }
    RUNTIME.with(|rt| {
        rt.block_on(async {
            if tokio::time::timeout(SCENARIO_LIMIT, scenario(data))
                .await
                .is_err()
            {
                panic!("the driver scenario did not finish within {SCENARIO_LIMIT:?}: a hang");
            }
        })
    });
}

async fn scenario(data: &[u8]) {
    let (client_io, broker_io) = tokio::io::duplex(64 * 1024);
    let (reader, writer) = tokio::io::split(client_io);
    let config = ConnectionConfig::default()
        .with_connection_timeout(Duration::from_secs(2))
        .with_rpc_timeout(Duration::from_secs(2))
        .with_close_timeout(Duration::from_millis(100))
        .with_max_message_size(64 * 1024);
    let client = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let (conn, driver) = open_unspawned(config, reader, writer, deadline)
            .await
            .expect("handshake with the scripted broker");
        tokio::join!(driver, client_script(conn));
    };
    tokio::join!(scripted_broker(broker_io, data), client);
}

/// The client's side: the preamble must succeed (the broker scripts it); after it, anything may fail,
/// but only with an error, and nothing may wait past the connection's end.
async fn client_script(conn: Connection) {
    let ch = conn.open_channel().await.expect("scripted channel.open-ok");
    ch.confirm_select().await.expect("scripted select-ok");
    ch.basic_qos(8, Default::default())
        .await
        .expect("scripted qos-ok");
    let mut consumer = ch
        .basic_consume(
            "q",
            "ctag",
            BasicConsumeOptions::default(),
            FieldTable::new(),
        )
        .await
        .expect("scripted consume-ok");
    let mut confirms = Vec::new();
    for i in 0..3u8 {
        let confirm = ch
            .basic_publish(
                "",
                "q",
                BasicPublishOptions::default(),
                BasicProperties::default(),
                vec![i; 3],
            )
            .await
            .expect("a publish before the broker's input");
        confirms.push(confirm);
    }
    // From here the broker sends the input; an update-secret waits for its answer meanwhile.
    let updating = conn.update_secret("renewed", "fuzz");
    let consuming = async {
        for _ in 0..DELIVERIES_TAKEN {
            let Some(Ok(delivery)) = consumer.next().await else {
                break;
            };
            let _ = match delivery.delivery_tag() % 4 {
                0 => delivery.ack().await,
                1 => delivery.ack_multiple().await,
                2 => delivery.nack(BasicNackOptions::default()).await,
                _ => delivery.reject(false).await,
            };
        }
        drop(consumer);
        let _ = conn.close().await;
    };
    let _ = tokio::join!(updating, consuming);
    assert!(!conn.is_open(), "closed, and still open");
    let ended = tokio::time::timeout(Duration::from_millis(10), conn.closed()).await;
    assert!(
        ended.is_ok(),
        "closed() still waiting after the connection closed"
    );
    for confirm in confirms {
        // The driver has ended: every confirm has its answer (a verdict or the connection's error).
        let settled = tokio::time::timeout(Duration::from_millis(10), confirm).await;
        assert!(
            settled.is_ok(),
            "a confirm still unresolved after the connection closed"
        );
    }
}

/// The broker's side: the handshake and the preamble, then `data`, then EOF; it reads (and drops)
/// whatever the client sends until the client closes.
async fn scripted_broker(io: DuplexStream, data: &[u8]) {
    let (rd, mut wr) = tokio::io::split(io);
    let mut peer = ClientFrames {
        rd,
        inbox: BytesMut::new(),
        decoder: FrameDecoder::new(1 << 20),
    };
    peer.protocol_header().await;
    let start = connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: FieldTable::new().with("product", "fuzz"),
        mechanisms: LongStr::from("PLAIN AMQPLAIN"),
        locales: LongStr::from("en_US"),
    };
    send(&mut wr, 0, start.into()).await;
    peer.expect("start-ok", |m| matches!(m, Method::ConnectionStartOk(_)))
        .await;
    let tune = connection::Tune {
        channel_max: 16,
        frame_max: 131_072,
        heartbeat: 0,
    };
    send(&mut wr, 0, tune.into()).await;
    peer.expect("tune-ok", |m| matches!(m, Method::ConnectionTuneOk(_)))
        .await;
    peer.expect("open", |m| matches!(m, Method::ConnectionOpen(_)))
        .await;
    send(&mut wr, 0, connection::OpenOk.into()).await;
    peer.expect("channel.open", |m| matches!(m, Method::ChannelOpen(_)))
        .await;
    send(&mut wr, 1, channel::OpenOk.into()).await;
    peer.expect("confirm.select", |m| matches!(m, Method::ConfirmSelect(_)))
        .await;
    send(&mut wr, 1, confirm::SelectOk.into()).await;
    peer.expect("basic.qos", |m| matches!(m, Method::BasicQos(_)))
        .await;
    send(&mut wr, 1, basic::QosOk.into()).await;
    peer.expect("basic.consume", |m| matches!(m, Method::BasicConsume(_)))
        .await;
    let ok = basic::ConsumeOk {
        consumer_tag: ShortStr::from("ctag"),
    };
    send(&mut wr, 1, ok.into()).await;
    for _ in 0..3 {
        peer.expect("basic.publish", |m| matches!(m, Method::BasicPublish(_)))
            .await;
        match peer.frame().await {
            Some(Frame::Header { .. }) => {}
            other => panic!("scripted broker: expected a content header, got {other:?}"),
        }
        match peer.frame().await {
            Some(Frame::Body { .. }) => {}
            other => panic!("scripted broker: expected a body frame, got {other:?}"),
        }
    }
    // The input; the client may stop reading (and close) before it has all of it.
    let _ = wr.write_all(data).await;
    let _ = wr.shutdown().await;
    peer.drain().await;
}

async fn send(wr: &mut WriteHalf<DuplexStream>, channel: u16, method: Method) {
    let mut buf = BytesMut::new();
    encode_method(&mut buf, channel, &method);
    wr.write_all(&buf)
        .await
        .expect("scripted broker: write during the preamble");
}

/// The client's frames as the scripted broker reads them.
struct ClientFrames<R> {
    rd: R,
    inbox: BytesMut,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> ClientFrames<R> {
    async fn protocol_header(&mut self) {
        while self.inbox.len() < spec::PROTOCOL_HEADER.len() {
            let n = self.rd.read_buf(&mut self.inbox).await.unwrap_or(0);
            assert!(n > 0, "scripted broker: EOF before the protocol header");
        }
        assert_eq!(
            &self.inbox[..spec::PROTOCOL_HEADER.len()],
            &spec::PROTOCOL_HEADER[..]
        );
        self.inbox.advance(spec::PROTOCOL_HEADER.len());
    }

    /// The next frame, `None` at EOF.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.inbox)
                .expect("the client's frames decode")
            {
                return Some(frame);
            }
            match self.rd.read_buf(&mut self.inbox).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn expect(&mut self, what: &str, matches: impl Fn(&Method) -> bool) {
        match self.frame().await {
            Some(Frame::Method { method, .. }) if matches(&method) => {}
            other => panic!("scripted broker: expected {what}, got {other:?}"),
        }
    }

    async fn drain(&mut self) {
        let mut scratch = [0u8; 4096];
        while matches!(self.rd.read(&mut scratch).await, Ok(n) if n > 0) {}
    }
}
