//! Hostile peers: the real client against a scripted fake broker (`tests/fake_broker`).
//!
//! P6/P7/P8: whatever the broker sends or withholds, the client ends with a typed error within a bounded
//! time (or carries on where the spec says so), never panics, hangs or overflows its stack, does not
//! allocate from sizes the peer claims, and closes the connection with the reply code the spec requires,
//! which the fake broker reads and checks.
//!
//! Each test runs the broker script and the client side concurrently under a hard 15 s timeout and
//! asserts a tighter bound on the elapsed time.

mod fake_broker;

use std::{
    future::Future,
    time::{Duration, Instant},
};

use coney::{
    codec::{FieldTable, ShortStr},
    frame::Frame,
    options::{BasicConsumeOptions, BasicPublishOptions},
    spec::{self, basic, channel, connection, Method, ReplyCode},
    BasicProperties, Confirmation, Connection, ConnectionConfig, Error,
};
use fake_broker::{
    deliver, header_frame_with_nested_headers, method_frame, raw_frame, rss_bytes,
    start_frame_with_nested_properties, FakeBroker, Peer, Tune,
};

/// Hard limit on any one scenario.
const HARD_LIMIT: Duration = Duration::from_secs(15);
/// Most a scenario that fails fast may take.
const FAST: Duration = Duration::from_secs(4);
/// How much the resident set may grow while the peer claims huge sizes.
const RSS_SLACK: u64 = 50 * 1024 * 1024;

const FRAME_ERROR: ReplyCode = ReplyCode::FRAME_ERROR; // 501
const SYNTAX_ERROR: ReplyCode = ReplyCode::SYNTAX_ERROR; // 502
const COMMAND_INVALID: ReplyCode = ReplyCode::COMMAND_INVALID; // 503
const CHANNEL_ERROR: ReplyCode = ReplyCode::CHANNEL_ERROR; // 504
const UNEXPECTED_FRAME: ReplyCode = ReplyCode::UNEXPECTED_FRAME; // 505
const CONTENT_TOO_LARGE: ReplyCode = ReplyCode::CONTENT_TOO_LARGE; // 311

/// Runs `server` (the broker script, given the accepted client) and `client` (given a config pointing at
/// the broker, adjusted by `config`) concurrently; fails if either panics, if the whole takes longer than
/// [`HARD_LIMIT`], or if it takes longer than `max`. Returns the elapsed time.
async fn scenario<S, SF, C, CF>(
    max: Duration,
    config: impl FnOnce(ConnectionConfig) -> ConnectionConfig,
    server: S,
    client: C,
) -> Duration
where
    S: FnOnce(Peer) -> SF,
    SF: Future<Output = ()>,
    C: FnOnce(ConnectionConfig) -> CF,
    CF: Future<Output = ()>,
{
    let broker = FakeBroker::bind().await;
    let config = config(broker.config());
    let started = Instant::now();
    let both = async {
        tokio::join!(
            async { server(broker.accept().await).await },
            client(config)
        );
    };
    tokio::time::timeout(HARD_LIMIT, both)
        .await
        .unwrap_or_else(|_| panic!("scenario still running after {HARD_LIMIT:?}"));
    let elapsed = started.elapsed();
    assert!(
        elapsed <= max,
        "scenario took {elapsed:?}, more than {max:?}"
    );
    elapsed
}

async fn connect(config: ConnectionConfig) -> Connection {
    Connection::connect_with(config)
        .await
        .unwrap_or_else(|e| panic!("connect to the fake broker: {e:?}"))
}

fn assert_protocol_error(err: &Error, code: ReplyCode) {
    match err {
        Error::Protocol { code: c, .. } if *c == code => {}
        other => panic!("expected Error::Protocol with {code}, got {other:?}"),
    }
    assert_eq!(err.reply_code(), Some(code));
    assert!(err.is_connection_closed(), "{err:?}");
}

fn assert_timeout(result: Result<Connection, Error>) {
    match result {
        Err(Error::Timeout { .. }) => {}
        Err(other) => panic!("expected Error::Timeout, got {other:?}"),
        Ok(conn) => panic!("expected Error::Timeout, got a connection {conn:?}"),
    }
}

fn queue_declare(
    ch: &coney::Channel,
) -> impl Future<Output = Result<spec::queue::DeclareOk, Error>> + '_ {
    ch.queue_declare("q", Default::default(), FieldTable::new())
}

/// The common shape of a protocol-violation scenario: after the handshake the client opens a channel and
/// waits on `queue.declare`; instead of declare-ok the broker sends `hostile(channel)`. The pending call
/// must fail with `Error::Protocol { code }`, and the client must send `connection.close` with `code`.
async fn violation(hostile: impl FnOnce(u16) -> Vec<u8>, code: ReplyCode) {
    violation_with(|c| c, Tune::default(), hostile, code, Wire::CloseRequired).await;
}

/// What the fake broker demands of the client's side of the wire after a violation.
#[derive(Debug, Clone, Copy)]
enum Wire {
    /// `connection.close` with the code must arrive (then close-ok is sent and EOF awaited).
    CloseRequired,
    /// The socket must close; anything sent before must be `connection.close` with the code.
    CloseIfAny,
}

async fn violation_with(
    config: impl FnOnce(ConnectionConfig) -> ConnectionConfig,
    tune: Tune,
    hostile: impl FnOnce(u16) -> Vec<u8>,
    code: ReplyCode,
    wire: Wire,
) {
    scenario(
        FAST,
        config,
        |mut peer| async move {
            peer.handshake_with(tune).await;
            let ch = peer.open_channel().await;
            peer.expect_queue_declare(ch).await;
            peer.send_raw(&hostile(ch)).await;
            match wire {
                Wire::CloseRequired => peer.expect_connection_close_and_answer(code).await,
                Wire::CloseIfAny => expect_eof_after_close_if_any(&mut peer, code).await,
            }
        },
        |config| async move {
            let conn = connect(config).await;
            let ch = conn.open_channel().await.expect("open channel");
            let err = queue_declare(&ch)
                .await
                .expect_err("queue.declare must fail");
            assert_protocol_error(&err, code);
            let reason = conn
                .close_reason()
                .expect("the connection has a close reason");
            assert_protocol_error(&reason, code);
            assert!(!conn.is_open());
            // Every later call fails at once with the same typed error.
            let again = conn.open_channel().await.expect_err("connection is gone");
            assert_eq!(again.reply_code(), Some(code), "{again:?}");
        },
    )
    .await;
}

/// Waits for the client to close the socket; anything it sent first must be connection.close with `code`.
async fn expect_eof_after_close_if_any(peer: &mut Peer, code: ReplyCode) {
    for frame in peer.expect_eof().await {
        match frame {
            Frame::Method {
                channel: 0,
                method: Method::ConnectionClose(close),
            } => assert_eq!(close.reply_code, code, "{close:?}"),
            other => panic!("expected nothing but connection.close {code}, got {other:?}"),
        }
    }
}

// ---- handshake ------------------------------------------------------------------------------------------

#[tokio::test]
async fn silent_server_after_accept_times_out() {
    let elapsed = scenario(
        Duration::from_secs(3),
        |c| c.with_connection_timeout(Duration::from_secs(1)),
        |mut peer| async move {
            peer.expect_protocol_header().await;
            assert!(
                peer.closed_within(Duration::from_secs(3)).await,
                "the client kept the socket open after its connection timeout"
            );
        },
        |config| async move { assert_timeout(Connection::connect_with(config).await) },
    )
    .await;
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
}

#[tokio::test]
async fn server_never_sends_open_ok_times_out() {
    let elapsed = scenario(
        Duration::from_secs(3),
        |c| c.with_connection_timeout(Duration::from_secs(1)),
        |mut peer| async move {
            peer.expect_protocol_header().await;
            peer.send_method(0, fake_broker::start()).await;
            peer.expect_start_ok().await;
            peer.send_method(
                0,
                connection::Tune {
                    channel_max: 2047,
                    frame_max: 131_072,
                    heartbeat: 0,
                },
            )
            .await;
            match peer.expect_method().await {
                (0, Method::ConnectionTuneOk(_)) => {}
                other => panic!("expected tune-ok, got {other:?}"),
            }
            peer.expect_open().await;
            // ... and never answer.
            assert!(
                peer.closed_within(Duration::from_secs(3)).await,
                "the client kept the socket open after its connection timeout"
            );
        },
        |config| async move { assert_timeout(Connection::connect_with(config).await) },
    )
    .await;
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
}

#[tokio::test]
async fn server_closes_socket_mid_handshake() {
    scenario(
        Duration::from_secs(2),
        // A long handshake timeout: the failure must come from the EOF, not from the deadline.
        |c| c.with_connection_timeout(Duration::from_secs(10)),
        |mut peer| async move {
            peer.expect_protocol_header().await;
            peer.send_method(0, fake_broker::start()).await;
            peer.expect_start_ok().await;
            drop(peer);
        },
        |config| async move {
            match Connection::connect_with(config).await {
                Err(Error::Handshake(_) | Error::Io(_)) => {}
                other => panic!("expected Error::Handshake or Error::Io, got {other:?}"),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn slowloris_handshake_times_out() {
    let elapsed = scenario(
        Duration::from_millis(4500),
        |c| c.with_connection_timeout(Duration::from_secs(3)),
        |mut peer| async move {
            peer.expect_protocol_header().await;
            let start = method_frame(0, &fake_broker::start().into());
            let mut sent = 0;
            for byte in start.iter() {
                if peer.try_send_raw(&[*byte]).await.is_err() {
                    break;
                }
                sent += 1;
                if peer.closed_within(Duration::from_secs(1)).await {
                    break;
                }
            }
            assert!(
                sent < 8,
                "the client waited for {sent} bytes sent one per second"
            );
        },
        |config| async move { assert_timeout(Connection::connect_with(config).await) },
    )
    .await;
    assert!(elapsed >= Duration::from_millis(2900), "{elapsed:?}");
}

// ---- tuning ---------------------------------------------------------------------------------------------

/// The broker proposes `tune`; the connection must work: a channel opens, a message larger than any
/// frame is published in frames within the negotiated frame-max, an RPC completes, the close is clean.
async fn tune_still_works(tune: Tune, check: fn(&connection::TuneOk)) {
    scenario(
        FAST,
        |c| c,
        |mut peer| async move {
            let tune_ok = peer.handshake_with(tune).await;
            check(&tune_ok);
            assert!(
                tune_ok.frame_max == 0 || tune_ok.frame_max >= spec::FRAME_MIN_SIZE,
                "tune-ok frame-max {} is below the spec's minimum",
                tune_ok.frame_max
            );
            let ch = peer.open_channel().await;
            let (_, body, frames) = peer.expect_publish(ch).await;
            assert_eq!(body.len(), 300_000);
            let frame_max = match tune_ok.frame_max {
                0 => u32::MAX as usize,
                n => n as usize,
            };
            assert!(
                frames.iter().all(|&n| n + 8 <= frame_max),
                "body frames {frames:?} exceed the negotiated frame-max {frame_max}"
            );
            peer.answer_queue_declare(ch).await;
            peer.expect_clean_close().await;
        },
        |config| async move {
            let conn = connect(config).await;
            let tuned = conn.tuned();
            assert!(tuned.channel_max >= 1, "{tuned:?}");
            let ch = conn.open_channel().await.expect("open channel");
            let confirm = ch
                .basic_publish(
                    "",
                    "q",
                    BasicPublishOptions::default(),
                    BasicProperties::default(),
                    vec![7u8; 300_000],
                )
                .await
                .expect("publish");
            assert_eq!(confirm.await.expect("confirm"), Confirmation::NotRequested);
            queue_declare(&ch).await.expect("queue.declare");
            conn.close().await.expect("clean close");
        },
    )
    .await;
}

#[tokio::test]
async fn tune_frame_max_zero_still_works() {
    tune_still_works(
        Tune {
            frame_max: 0,
            ..Tune::default()
        },
        |ok| assert_eq!(ok.frame_max, 131_072, "the client's own limit applies"),
    )
    .await;
}

#[tokio::test]
async fn tune_frame_max_below_minimum_still_works() {
    tune_still_works(
        Tune {
            frame_max: 100,
            ..Tune::default()
        },
        |ok| assert_eq!(ok.frame_max, spec::FRAME_MIN_SIZE),
    )
    .await;
}

#[tokio::test]
async fn tune_channel_max_zero_still_works() {
    tune_still_works(
        Tune {
            channel_max: 0,
            ..Tune::default()
        },
        |ok| assert_eq!(ok.channel_max, 2047, "the client's own limit applies"),
    )
    .await;
}

#[tokio::test]
async fn tune_heartbeat_zero_still_works() {
    tune_still_works(
        Tune {
            heartbeat: 0,
            ..Tune::default()
        },
        |ok| assert_eq!(ok.heartbeat, 0),
    )
    .await;
}

// ---- deeply nested tables -------------------------------------------------------------------------------

/// connection.start whose server-properties nest `levels` deep: a typed error (502 for a table that fits
/// the pre-tune frame limit, 501 for a frame over it), no stack overflow, and no start-ok.
async fn nested_server_properties(levels: usize) {
    let frame = start_frame_with_nested_properties(levels);
    let code = if frame.len() > spec::FRAME_MIN_SIZE as usize {
        FRAME_ERROR
    } else {
        SYNTAX_ERROR
    };
    scenario(
        FAST,
        |c| c.with_connection_timeout(Duration::from_secs(10)),
        |mut peer| async move {
            peer.expect_protocol_header().await;
            peer.send_raw(&frame).await;
            // Before the handshake completes the client may just drop the socket; if it says anything, it
            // is connection.close with the code, never start-ok.
            for frame in peer.expect_eof().await {
                match frame {
                    Frame::Method {
                        channel: 0,
                        method: Method::ConnectionClose(close),
                    } => assert_eq!(close.reply_code, code),
                    other => panic!("client answered a bad connection.start with {other:?}"),
                }
            }
        },
        |config| async move {
            match Connection::connect_with(config).await {
                Err(err) => assert_protocol_error(&err, code),
                Ok(conn) => panic!("connected despite {levels} nested tables: {conn:?}"),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn nested_server_properties_100_levels() {
    nested_server_properties(100).await;
}

#[tokio::test]
async fn nested_server_properties_1000_levels() {
    nested_server_properties(1000).await;
}

#[tokio::test]
async fn nested_server_properties_10000_levels() {
    nested_server_properties(10_000).await;
}

// ---- protocol violations --------------------------------------------------------------------------------
//
// Each case: what the broker sends instead of queue.declare-ok, and the code the client must close with.

/// A method frame's bytes for `deliver` to consumer "ctag" on `ch`.
fn deliver_frame(ch: u16) -> Vec<u8> {
    method_frame(ch, &deliver(&ShortStr::from("ctag"), 1).into()).to_vec()
}

fn declare_ok_frame(ch: u16) -> Vec<u8> {
    method_frame(
        ch,
        &spec::queue::DeclareOk {
            queue: ShortStr::from("q"),
            message_count: 0,
            consumer_count: 0,
        }
        .into(),
    )
    .to_vec()
}

/// A content header payload (class basic, no properties) declaring `size` body bytes.
fn header_payload(size: u64) -> Vec<u8> {
    let mut payload = vec![0, 60, 0, 0];
    payload.extend_from_slice(&size.to_be_bytes());
    payload.extend_from_slice(&[0, 0]);
    payload
}

/// A body frame header claiming 0xFFFFFF00 payload bytes, followed by a little of it.
fn huge_frame_claim(ch: u16) -> Vec<u8> {
    let mut v = vec![spec::FRAME_BODY];
    v.extend_from_slice(&ch.to_be_bytes());
    v.extend_from_slice(&0xFFFF_FF00u32.to_be_bytes());
    v.extend_from_slice(&[0u8; 4096]);
    v
}

fn bad_frame_end(ch: u16) -> Vec<u8> {
    let mut bytes = declare_ok_frame(ch);
    *bytes.last_mut().unwrap() = 0x00;
    bytes
}

fn unknown_frame_type(ch: u16) -> Vec<u8> {
    raw_frame(42, ch, b"junk")
}

fn unknown_class(ch: u16) -> Vec<u8> {
    raw_frame(spec::FRAME_METHOD, ch, &[0x12, 0x34, 0x00, 0x01, 1, 2, 3])
}

fn unknown_method(ch: u16) -> Vec<u8> {
    raw_frame(spec::FRAME_METHOD, ch, &[0x00, 60, 0x00, 0xEE])
}

/// basic.publish is client-to-server only.
fn client_only_method(ch: u16) -> Vec<u8> {
    let publish = basic::Publish {
        exchange: ShortStr::from(""),
        routing_key: ShortStr::from("q"),
        mandatory: false,
        immediate: false,
    };
    method_frame(ch, &publish.into()).to_vec()
}

fn header_on_channel_zero(_: u16) -> Vec<u8> {
    raw_frame(spec::FRAME_HEADER, 0, &header_payload(3))
}

fn body_on_channel_zero(_: u16) -> Vec<u8> {
    raw_frame(spec::FRAME_BODY, 0, b"abc")
}

fn heartbeat_on_channel(ch: u16) -> Vec<u8> {
    raw_frame(spec::FRAME_HEARTBEAT, ch, &[])
}

fn header_without_method(ch: u16) -> Vec<u8> {
    raw_frame(spec::FRAME_HEADER, ch, &header_payload(3))
}

fn body_without_method(ch: u16) -> Vec<u8> {
    raw_frame(spec::FRAME_BODY, ch, b"abc")
}

fn body_before_header(ch: u16) -> Vec<u8> {
    let mut bytes = deliver_frame(ch);
    bytes.extend(raw_frame(spec::FRAME_BODY, ch, b"abc"));
    bytes
}

fn body_beyond_declared_size(ch: u16) -> Vec<u8> {
    let mut bytes = deliver_frame(ch);
    bytes.extend(raw_frame(spec::FRAME_HEADER, ch, &header_payload(5)));
    bytes.extend(raw_frame(spec::FRAME_BODY, ch, b"0123456789"));
    bytes
}

fn method_in_content(ch: u16) -> Vec<u8> {
    let mut bytes = deliver_frame(ch);
    bytes.extend(declare_ok_frame(ch));
    bytes
}

fn delivery_on_unknown_channel(ch: u16) -> Vec<u8> {
    deliver_frame(ch + 6)
}

/// After tuning (frame-max 128 KiB) a deep table fits in one frame: a delivery whose `headers` property
/// nests this deep must be stopped by the nesting cap (502), without a stack overflow.
fn nested_headers_100(ch: u16) -> Vec<u8> {
    nested_headers(ch, 100)
}

fn nested_headers_1000(ch: u16) -> Vec<u8> {
    nested_headers(ch, 1000)
}

fn nested_headers_10000(ch: u16) -> Vec<u8> {
    nested_headers(ch, 10_000)
}

fn nested_headers(ch: u16, levels: usize) -> Vec<u8> {
    let mut bytes = deliver_frame(ch);
    bytes.extend(header_frame_with_nested_headers(ch, levels));
    bytes
}

type Hostile = fn(u16) -> Vec<u8>;

/// Every protocol violation with the default tuning: (name, bytes, code the client must close with).
const VIOLATIONS: &[(&str, Hostile, ReplyCode)] = &[
    (
        "frame size far above frame-max",
        huge_frame_claim,
        FRAME_ERROR,
    ),
    ("bad frame-end octet", bad_frame_end, FRAME_ERROR),
    ("unknown frame type", unknown_frame_type, FRAME_ERROR),
    ("heartbeat on a channel", heartbeat_on_channel, FRAME_ERROR),
    ("100 nested header tables", nested_headers_100, SYNTAX_ERROR),
    (
        "1000 nested header tables",
        nested_headers_1000,
        SYNTAX_ERROR,
    ),
    (
        "10000 nested header tables",
        nested_headers_10000,
        SYNTAX_ERROR,
    ),
    ("unknown class id", unknown_class, COMMAND_INVALID),
    ("unknown method id", unknown_method, COMMAND_INVALID),
    ("client-only method", client_only_method, COMMAND_INVALID),
    (
        "header on channel 0",
        header_on_channel_zero,
        UNEXPECTED_FRAME,
    ),
    ("body on channel 0", body_on_channel_zero, UNEXPECTED_FRAME),
    (
        "delivery on an unknown channel",
        delivery_on_unknown_channel,
        CHANNEL_ERROR,
    ),
    (
        "header without method",
        header_without_method,
        UNEXPECTED_FRAME,
    ),
    ("body without method", body_without_method, UNEXPECTED_FRAME),
    ("body before header", body_before_header, UNEXPECTED_FRAME),
    (
        "body beyond the declared size",
        body_beyond_declared_size,
        UNEXPECTED_FRAME,
    ),
    (
        "method in the middle of content",
        method_in_content,
        UNEXPECTED_FRAME,
    ),
];

/// The typed-error half of every violation, with the wire check relaxed to "if the client says anything
/// before closing the socket, it is connection.close with the right code". The per-case tests below
/// require the close on the wire.
#[tokio::test]
async fn every_violation_ends_with_a_typed_error_and_a_closed_socket() {
    for (name, hostile, code) in VIOLATIONS {
        eprintln!("violation: {name} -> {code}");
        violation_with(|c| c, Tune::default(), *hostile, *code, Wire::CloseIfAny).await;
    }
}

fn assert_rss_bounded(before: Option<u64>) {
    if let (Some(before), Some(after)) = (before, rss_bytes()) {
        let grown = after.saturating_sub(before);
        assert!(
            grown <= RSS_SLACK,
            "RSS grew by {} MiB ({before} -> {after} bytes)",
            grown / (1024 * 1024)
        );
    }
}

#[tokio::test]
async fn frame_size_far_above_frame_max() {
    let before = rss_bytes();
    violation(huge_frame_claim, FRAME_ERROR).await;
    assert_rss_bounded(before);
}

#[tokio::test]
async fn frame_size_far_above_unlimited_frame_max() {
    let before = rss_bytes();
    unlimited_frame_max_claim(Wire::CloseRequired).await;
    assert_rss_bounded(before);
}

#[tokio::test]
async fn frame_size_far_above_limits_keeps_memory_bounded() {
    let before = rss_bytes();
    violation_with(
        |c| c,
        Tune::default(),
        huge_frame_claim,
        FRAME_ERROR,
        Wire::CloseIfAny,
    )
    .await;
    unlimited_frame_max_claim(Wire::CloseIfAny).await;
    assert_rss_bounded(before);
}

// ---- the close after a violation ----------------------------------------------------------------------

/// A bind-ok where declare-ok was awaited: a method the driver (not the state machine) rejects, with 503.
fn unexpected_bind_ok(ch: u16) -> Vec<u8> {
    method_frame(ch, &spec::queue::BindOk.into()).to_vec()
}

/// A declare-ok whose arguments stop short: a frame the decoder rejects with 502 although its extent, and
/// so the start of the next frame, is sound.
fn truncated_declare_ok(ch: u16) -> Vec<u8> {
    raw_frame(spec::FRAME_METHOD, ch, &[0, 50, 0, 11, 1])
}

/// After the violation `hostile(channel)`, sent with the first half of a heartbeat frame behind it, the
/// broker reads the client's connection.close with `code`, then sends the heartbeat's other half and
/// close-ok. The client must decode on from where the rejected frame ended, find the close-ok, and close
/// the socket at once; dropping what was buffered behind the rejected frame would leave it decoding from
/// the middle of the heartbeat, waiting for a close-ok it cannot find until its 30 s `close_timeout`.
async fn close_ok_behind_a_split_frame(hostile: fn(u16) -> Vec<u8>, code: ReplyCode) {
    let heartbeat = raw_frame(spec::FRAME_HEARTBEAT, 0, &[]);
    let (first, rest) = heartbeat.split_at(4);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    scenario(
        FAST,
        |c| c.with_close_timeout(Duration::from_secs(30)),
        |mut peer| async move {
            peer.handshake().await;
            let ch = peer.open_channel().await;
            peer.expect_queue_declare(ch).await;
            peer.send_raw(&[hostile(ch), first].concat()).await;
            peer.expect_connection_close(code).await;
            let close_ok = method_frame(0, &connection::CloseOk.into());
            peer.send_raw(&[rest, close_ok.to_vec()].concat()).await;
            peer.expect_eof().await;
        },
        |config| async move {
            let conn = connect(config).await;
            let ch = conn.open_channel().await.expect("open channel");
            let err = queue_declare(&ch)
                .await
                .expect_err("queue.declare must fail");
            assert_protocol_error(&err, code);
        },
    )
    .await;
}

#[tokio::test]
async fn close_ok_is_found_behind_a_method_the_driver_rejects() {
    close_ok_behind_a_split_frame(unexpected_bind_ok, COMMAND_INVALID).await;
}

#[tokio::test]
async fn close_ok_is_found_behind_a_frame_the_decoder_rejects() {
    close_ok_behind_a_split_frame(truncated_declare_ok, SYNTAX_ERROR).await;
}

/// Two violations in one read: a method the driver rejects (503), then content on channel 0, which the
/// state machine rejects (505) while decoding the read, before the driver sees the method. The state
/// machine's connection.close is the one on the wire, so 505 is also what the pending call and the close
/// reason must say (they said 503 while 505 was sent).
#[tokio::test]
async fn the_reported_violation_is_the_one_on_the_wire() {
    violation(
        |ch| {
            [
                unexpected_bind_ok(ch),
                raw_frame(spec::FRAME_HEADER, 0, &header_payload(1)),
            ]
            .concat()
        },
        UNEXPECTED_FRAME,
    )
    .await;
}

/// With frame-max 0 ("no limit") negotiated, the inbound cap is the message limit plus overhead.
async fn unlimited_frame_max_claim(wire: Wire) {
    violation_with(
        |c| c.with_frame_max(0),
        Tune {
            frame_max: 0,
            ..Tune::default()
        },
        huge_frame_claim,
        FRAME_ERROR,
        wire,
    )
    .await;
}

macro_rules! violation_tests {
    ($($name:ident: $hostile:ident => $code:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                violation($hostile, $code).await;
            }
        )*
    };
}

violation_tests! {
    bad_frame_end_octet: bad_frame_end => FRAME_ERROR;
    unknown_frame_type_octet: unknown_frame_type => FRAME_ERROR;
    heartbeat_on_nonzero_channel: heartbeat_on_channel => FRAME_ERROR;
    nested_content_headers_100_levels: nested_headers_100 => SYNTAX_ERROR;
    nested_content_headers_1000_levels: nested_headers_1000 => SYNTAX_ERROR;
    nested_content_headers_10000_levels: nested_headers_10000 => SYNTAX_ERROR;
    unknown_class_id: unknown_class => COMMAND_INVALID;
    unknown_method_id: unknown_method => COMMAND_INVALID;
    method_the_server_never_sends: client_only_method => COMMAND_INVALID;
    content_header_on_channel_zero: header_on_channel_zero => UNEXPECTED_FRAME;
    content_body_on_channel_zero: body_on_channel_zero => UNEXPECTED_FRAME;
    delivery_for_unknown_channel: delivery_on_unknown_channel => CHANNEL_ERROR;
    header_frame_without_method: header_without_method => UNEXPECTED_FRAME;
    body_frame_without_method: body_without_method => UNEXPECTED_FRAME;
    body_frame_before_header: body_before_header => UNEXPECTED_FRAME;
    body_bytes_beyond_declared_size: body_beyond_declared_size => UNEXPECTED_FRAME;
    method_in_the_middle_of_content: method_in_content => UNEXPECTED_FRAME;
}

#[tokio::test]
async fn truncated_frame_then_eof() {
    scenario(
        FAST,
        |c| c,
        |mut peer| async move {
            peer.handshake().await;
            let ch = peer.open_channel().await;
            peer.expect_queue_declare(ch).await;
            let whole = method_frame(
                ch,
                &spec::queue::DeclareOk {
                    queue: ShortStr::from("q"),
                    message_count: 0,
                    consumer_count: 0,
                }
                .into(),
            );
            peer.send_raw(&whole[..whole.len() / 2]).await;
            peer.shutdown().await;
            peer.expect_eof().await;
        },
        |config| async move {
            let conn = connect(config).await;
            let ch = conn.open_channel().await.expect("open channel");
            match queue_declare(&ch).await {
                Err(Error::Io(_)) => {}
                other => panic!("expected Error::Io, got {other:?}"),
            }
            assert!(matches!(conn.close_reason(), Some(Error::Io(_))));
        },
    )
    .await;
}

#[tokio::test]
async fn body_size_above_max_message_size_closes_the_channel_with_311() {
    scenario(
        FAST,
        |c| c.with_max_message_size(1024),
        |mut peer| async move {
            peer.handshake().await;
            let ch = peer.open_channel().await;
            let tag = peer.answer_consume(ch).await;
            peer.send_method(ch, deliver(&tag, 1)).await;
            peer.send_header(ch, 1_000_000).await;
            peer.send_body(ch, &[1u8; 1000]).await;
            peer.expect_channel_close(ch, CONTENT_TOO_LARGE).await;
            // What was already in flight must be discarded quietly.
            peer.send_body(ch, &[2u8; 1000]).await;
            peer.send_method(ch, channel::CloseOk).await;
            let ch2 = peer.open_channel().await;
            peer.answer_queue_declare(ch2).await;
            peer.expect_clean_close().await;
        },
        |config| async move {
            let conn = connect(config).await;
            let ch = conn.open_channel().await.expect("open channel");
            let mut consumer = ch
                .basic_consume(
                    "q",
                    "ctag",
                    BasicConsumeOptions::default(),
                    FieldTable::new(),
                )
                .await
                .expect("consume");
            match consumer.next().await {
                Some(Err(err @ Error::ChannelClosed(_))) => {
                    assert_eq!(err.reply_code(), Some(CONTENT_TOO_LARGE))
                }
                other => {
                    panic!("expected the consumer to end with ChannelClosed 311, got {other:?}")
                }
            }
            assert!(!ch.is_open());
            assert!(conn.is_open(), "{:?}", conn.close_reason());
            let ch2 = conn.open_channel().await.expect("open another channel");
            queue_declare(&ch2)
                .await
                .expect("queue.declare on the new channel");
            conn.close().await.expect("clean close");
            drop(consumer);
        },
    )
    .await;
}

#[tokio::test]
async fn huge_declared_body_within_limit_is_not_preallocated() {
    // The limit allows anything: the client must grow the body with the bytes that arrive, not reserve
    // the declared terabyte (which would abort the process or blow the resident set).
    let before = rss_bytes();
    scenario(
        FAST,
        |c| c.with_max_message_size(u64::MAX),
        |mut peer| async move {
            peer.handshake().await;
            let ch = peer.open_channel().await;
            let tag = peer.answer_consume(ch).await;
            peer.send_method(ch, deliver(&tag, 1)).await;
            peer.send_header(ch, 1 << 40).await;
            for _ in 0..16 {
                peer.send_body(ch, &[3u8; 64 * 1024]).await;
            }
            peer.shutdown().await;
            peer.expect_eof().await;
        },
        |config| async move {
            let conn = connect(config).await;
            let ch = conn.open_channel().await.expect("open channel");
            let mut consumer = ch
                .basic_consume(
                    "q",
                    "ctag",
                    BasicConsumeOptions::default(),
                    FieldTable::new(),
                )
                .await
                .expect("consume");
            match consumer.next().await {
                Some(Err(Error::Io(_))) => {}
                other => panic!("expected the consumer to end with Error::Io, got {other:?}"),
            }
        },
    )
    .await;
    assert_rss_bounded(before);
}

// ---- things the client must survive ---------------------------------------------------------------------

#[tokio::test]
async fn delivery_for_unknown_consumer_tag_is_rejected_with_requeue() {
    scenario(
        FAST,
        |c| c,
        |mut peer| async move {
            peer.handshake().await;
            let ch = peer.open_channel().await;
            let tag = peer.answer_consume(ch).await;
            peer.send_content(ch, deliver(&ShortStr::from("ghost"), 1), b"abc")
                .await;
            peer.send_content(ch, deliver(&tag, 2), b"real").await;
            match peer.expect_method().await {
                (c, Method::BasicReject(r)) if c == ch => {
                    assert_eq!(r.delivery_tag, 1);
                    assert!(r.requeue, "the ghost delivery must be requeued");
                }
                other => panic!("expected basic.reject for the unknown consumer, got {other:?}"),
            }
            peer.answer_queue_declare(ch).await;
            peer.expect_clean_close().await;
        },
        |config| async move {
            let conn = connect(config).await;
            let ch = conn.open_channel().await.expect("open channel");
            let mut consumer = ch
                .basic_consume(
                    "q",
                    "ctag",
                    BasicConsumeOptions::default(),
                    FieldTable::new(),
                )
                .await
                .expect("consume");
            let delivery = consumer
                .next()
                .await
                .expect("a delivery")
                .expect("a delivery, not an error");
            assert_eq!(delivery.delivery_tag, 2);
            assert_eq!(&delivery.body[..], b"real");
            queue_declare(&ch).await.expect("queue.declare");
            conn.close().await.expect("clean close");
            drop(consumer);
        },
    )
    .await;
}

#[tokio::test]
async fn bogus_acks_in_confirm_mode_are_ignored() {
    scenario(
        FAST,
        |c| c,
        |mut peer| async move {
            peer.handshake().await;
            let ch = peer.open_channel().await;
            match peer.expect_method().await {
                (c, Method::ConfirmSelect(_)) if c == ch => {}
                other => panic!("expected confirm.select, got {other:?}"),
            }
            peer.send_method(ch, spec::confirm::SelectOk).await;
            for _ in 0..3 {
                peer.expect_publish(ch).await;
            }
            let ack = |delivery_tag, multiple| basic::Ack {
                delivery_tag,
                multiple,
            };
            // Never-published tags, singly and `multiple` beyond the last one: nothing to settle.
            peer.send_method(ch, ack(99, false)).await;
            peer.send_method(ch, ack(50, true)).await;
            peer.send_method(ch, ack(1, false)).await;
            // The client checks #2 and #3 are still pending, then publishes #4.
            peer.expect_publish(ch).await;
            peer.send_method(
                ch,
                basic::Nack {
                    delivery_tag: 2,
                    multiple: false,
                    requeue: false,
                },
            )
            .await;
            peer.send_method(ch, ack(4, true)).await;
            peer.expect_clean_close().await;
        },
        |config| async move {
            let conn = connect(config).await;
            let ch = conn.open_channel().await.expect("open channel");
            ch.confirm_select().await.expect("confirm.select");
            let publish = |body: &'static str| {
                ch.basic_publish(
                    "",
                    "q",
                    BasicPublishOptions::default(),
                    BasicProperties::default(),
                    body,
                )
            };
            let p1 = publish("1").await.expect("publish 1");
            let mut p2 = publish("2").await.expect("publish 2");
            let mut p3 = publish("3").await.expect("publish 3");
            assert_eq!(p1.await.expect("confirm 1"), Confirmation::Ack);
            // The bogus acks came before ack 1: if they settled anything, it shows now.
            assert!(
                tokio::time::timeout(Duration::ZERO, &mut p2).await.is_err(),
                "publish 2 was settled by a bogus ack"
            );
            assert!(
                tokio::time::timeout(Duration::ZERO, &mut p3).await.is_err(),
                "publish 3 was settled by a bogus ack"
            );
            let p4 = publish("4").await.expect("publish 4");
            assert_eq!(p2.await.expect("confirm 2"), Confirmation::Nack);
            assert_eq!(p3.await.expect("confirm 3"), Confirmation::Ack);
            assert_eq!(p4.await.expect("confirm 4"), Confirmation::Ack);
            assert!(conn.is_open());
            conn.close().await.expect("clean close");
        },
    )
    .await;
}

#[tokio::test]
async fn basic_return_and_ack_without_confirm_mode_are_survived() {
    scenario(
        FAST,
        |c| c,
        |mut peer| async move {
            peer.handshake().await;
            let ch = peer.open_channel().await;
            let (publish, _, _) = peer.expect_publish(ch).await;
            assert!(publish.mandatory);
            peer.send_content(
                ch,
                basic::Return {
                    reply_code: ReplyCode(312), // NO_ROUTE (RabbitMQ; not in the 0-9-1 spec)
                    reply_text: ShortStr::from("NO_ROUTE"),
                    exchange: ShortStr::from(""),
                    routing_key: ShortStr::from("nowhere"),
                },
                b"bounced",
            )
            .await;
            peer.send_method(
                ch,
                basic::Ack {
                    delivery_tag: 1,
                    multiple: false,
                },
            )
            .await;
            peer.answer_queue_declare(ch).await;
            peer.expect_clean_close().await;
        },
        |config| async move {
            let conn = connect(config).await;
            let ch = conn.open_channel().await.expect("open channel");
            let confirm = ch
                .basic_publish(
                    "",
                    "nowhere",
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    BasicProperties::default(),
                    "bounced",
                )
                .await
                .expect("publish");
            assert_eq!(confirm.await.expect("confirm"), Confirmation::NotRequested);
            queue_declare(&ch)
                .await
                .expect("queue.declare after the return");
            assert!(ch.is_open() && conn.is_open());
            conn.close().await.expect("clean close");
        },
    )
    .await;
}

#[tokio::test]
async fn connection_close_in_the_middle_of_a_body() {
    server_close_mid_body(Wire::CloseRequired).await;
}

/// The typed-error half of the above, not requiring close-ok on the wire.
#[tokio::test]
async fn connection_close_in_the_middle_of_a_body_is_reported() {
    server_close_mid_body(Wire::CloseIfAny).await;
}

/// The broker closes the connection (320) while a message body is half sent: the consumer ends with
/// `ConnectionClosed` carrying the code and text, and the client answers close-ok (with
/// `Wire::CloseRequired`; with `Wire::CloseIfAny`, nothing but close-ok may arrive before EOF).
async fn server_close_mid_body(wire: Wire) {
    scenario(
        FAST,
        |c| c,
        |mut peer| async move {
            peer.handshake().await;
            let ch = peer.open_channel().await;
            let tag = peer.answer_consume(ch).await;
            peer.send_method(ch, deliver(&tag, 1)).await;
            peer.send_header(ch, 100).await;
            peer.send_body(ch, &[5u8; 10]).await;
            peer.send_method(
                0,
                connection::Close {
                    reply_code: ReplyCode::CONNECTION_FORCED,
                    reply_text: ShortStr::from(
                        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
                    ),
                    class_id: 0,
                    method_id: 0,
                },
            )
            .await;
            match (wire, peer.next_frame().await) {
                (
                    _,
                    Ok(Some(Frame::Method {
                        channel: 0,
                        method: Method::ConnectionCloseOk(_),
                    })),
                ) => {
                    peer.shutdown().await;
                    peer.expect_eof().await;
                }
                (Wire::CloseIfAny, Ok(None)) => {}
                (_, other) => panic!("expected connection.close-ok from the client, got {other:?}"),
            }
        },
        |config| async move {
            let conn = connect(config).await;
            let ch = conn.open_channel().await.expect("open channel");
            let mut consumer = ch
                .basic_consume("q", "ctag", BasicConsumeOptions::default(), FieldTable::new())
                .await
                .expect("consume");
            match consumer.next().await {
                Some(Err(Error::ConnectionClosed(reason))) => {
                    assert_eq!(reason.code, ReplyCode::CONNECTION_FORCED);
                    assert!(reason.text.contains("shutdown"), "{reason:?}");
                }
                other => panic!("expected ConnectionClosed 320, got {other:?}"),
            }
            match conn.close_reason() {
                Some(Error::ConnectionClosed(reason)) => {
                    assert_eq!(reason.code, ReplyCode::CONNECTION_FORCED)
                }
                other => panic!("expected ConnectionClosed 320 as the close reason, got {other:?}"),
            }
        },
    )
    .await;
}

/// A peer that never reads and keeps sending what the client must answer (`channel.flow`, answered with
/// `flow-ok`): the answers cannot be written, so once 16 MiB of them wait the client ends the connection
/// with an I/O error instead of holding ever more (a review measured 60 MiB more RSS for 48 MiB of
/// flows). The peer's socket buffers are fixed small, so that what the kernel holds stays well under
/// the flood.
#[tokio::test]
async fn a_peer_that_never_reads_is_not_answered_without_bound() {
    const FLOOD: usize = 64 << 20;
    let broker = FakeBroker::bind_with_small_buffers().await;
    let config = broker.config();
    let (flood_tx, flood_rx) = tokio::sync::oneshot::channel::<&'static str>();
    let server = async move {
        let mut peer = broker.accept().await;
        peer.handshake().await;
        let ch = peer.open_channel().await;
        let flow = method_frame(ch, &channel::Flow { active: true }.into());
        let chunk: Vec<u8> = flow
            .iter()
            .copied()
            .cycle()
            .take(flow.len() << 16)
            .collect();
        // From here on the broker reads nothing.
        let flood = async {
            let mut sent = 0;
            while sent < FLOOD {
                if peer.try_send_raw(&chunk).await.is_err() {
                    return "refused";
                }
                sent += chunk.len();
            }
            "sent"
        };
        let ended = tokio::time::timeout(Duration::from_secs(10), flood)
            .await
            .unwrap_or("stalled");
        flood_tx.send(ended).expect("client waiting");
    };
    let client = async move {
        let conn = connect(config).await;
        let _ch = conn.open_channel().await.expect("open channel");
        let ended = flood_rx.await.expect("flood over");
        assert_eq!(
            ended,
            "refused",
            "the client closed the socket rather than read all {} MiB of flows it could not answer",
            FLOOD >> 20
        );
        assert!(!conn.is_open());
        match conn.close_reason() {
            Some(Error::Io(e)) => assert!(e.to_string().contains("without reading"), "{e}"),
            other => panic!("expected the I/O error, got {other:?}"),
        }
    };
    tokio::time::timeout(HARD_LIMIT, async { tokio::join!(server, client) })
        .await
        .expect("scenario finished in time");
}
