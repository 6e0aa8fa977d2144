//! A scripted fake AMQP 0-9-1 broker for protocol edge cases and hostile input (DESIGN §8).
//!
//! [`FakeBroker::bind`] listens on `127.0.0.1:0`; a scenario calls [`FakeBroker::accept`] for the one
//! client it expects and then drives a [`Peer`] step by step: send methods, content and raw bytes, and
//! expect what the client sends back. Client frames are decoded with coney's own [`FrameDecoder`].
//!
//! Every wait is bounded by [`Peer::wait`] (default [`STEP_TIMEOUT`]) and panics with a message naming
//! what was awaited, so a scenario can never hang.

#![allow(dead_code)] // each test binary uses a different subset of the helpers

use std::{net::SocketAddr, time::Duration};

use bytes::{BufMut, BytesMut};
use coney::{
    codec::{FieldTable, LongStr, ShortStr},
    frame::{encode_body, encode_content_header, encode_heartbeat, encode_method, ContentHeader},
    frame::{Frame, FrameDecoder},
    spec::{self, basic, channel, connection, queue, Method, ReplyCode},
    ConnectionConfig,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Default bound on each wait of the fake broker.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest frame the fake broker accepts from the client (the client is not under test for size).
const CLIENT_FRAME_MAX: u32 = 1 << 20;

/// A listening fake broker that has not accepted its client yet.
pub struct FakeBroker {
    listener: TcpListener,
    addr: SocketAddr,
}

impl FakeBroker {
    /// Listens on an ephemeral port of 127.0.0.1.
    pub async fn bind() -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        FakeBroker { listener, addr }
    }

    /// Like [`FakeBroker::bind`], with the accepted socket's kernel buffers fixed at 64 KiB each way (no
    /// autotuning), so that a broker that stops reading makes the client's writes stall soon.
    pub async fn bind_with_small_buffers() -> FakeBroker {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
        socket.set_send_buffer_size(64 * 1024).expect("SO_SNDBUF");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind 127.0.0.1:0");
        let listener = socket.listen(16).expect("listen");
        let addr = listener.local_addr().expect("local_addr");
        FakeBroker { listener, addr }
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A client configuration pointing at this broker, with short timeouts (2 s handshake and RPCs,
    /// 1 s close) so a scenario fails fast.
    pub fn config(&self) -> ConnectionConfig {
        ConnectionConfig::default()
            .with_host("127.0.0.1")
            .with_port(self.port())
            .with_connection_timeout(Duration::from_secs(2))
            .with_rpc_timeout(Duration::from_secs(2))
            .with_close_timeout(Duration::from_secs(1))
    }

    /// Accepts the one client, does the handshake and answers its first `channel.open`; returns the peer
    /// and the channel's number.
    pub async fn accept_with_channel(self) -> (Peer, u16) {
        let mut peer = self.accept().await;
        peer.handshake().await;
        let channel = peer.open_channel().await;
        (peer, channel)
    }

    /// Accepts the one client of the scenario.
    pub async fn accept(self) -> Peer {
        let (stream, _) = tokio::time::timeout(STEP_TIMEOUT, self.listener.accept())
            .await
            .expect("fake broker: no client connected in time")
            .expect("fake broker: accept failed");
        stream.set_nodelay(true).expect("set_nodelay");
        Peer {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: FrameDecoder::new(CLIENT_FRAME_MAX),
            wait: STEP_TIMEOUT,
        }
    }
}

/// Why [`Peer::next_frame`] returned no frame.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing arrived within [`Peer::wait`].
    TimedOut(String),
    /// A read error, a partial frame at EOF, or bytes that are not a frame.
    Other(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::TimedOut(e) | ReadError::Other(e) => f.write_str(e),
        }
    }
}

/// What the server proposes in `connection.tune`.
#[derive(Debug, Clone, Copy)]
pub struct Tune {
    /// Proposed channel-max.
    pub channel_max: u16,
    /// Proposed frame-max.
    pub frame_max: u32,
    /// Proposed heartbeat, seconds.
    pub heartbeat: u16,
}

impl Default for Tune {
    /// RabbitMQ's defaults, but with heartbeats off so an idle scenario sees no heartbeat frames.
    fn default() -> Self {
        Tune {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 0,
        }
    }
}

/// The accepted client connection, seen from the broker side.
pub struct Peer {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    /// Bound on each wait.
    pub wait: Duration,
}

impl Peer {
    // ---- sending -------------------------------------------------------------------------------------

    /// Writes bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .await
            .unwrap_or_else(|e| panic!("fake broker: write of {} bytes failed: {e}", bytes.len()));
    }

    /// Writes bytes as they are, reporting failure (for writes racing the client's close).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(self.wait, self.stream.write_all(bytes)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "fake broker: write timed out",
            )),
        }
    }

    /// Sends one method frame.
    pub async fn send_method(&mut self, channel: u16, method: impl Into<Method>) {
        let bytes = method_frame(channel, &method.into());
        self.send_raw(&bytes).await;
    }

    /// Sends a content header frame.
    pub async fn send_header(&mut self, channel: u16, body_size: u64) {
        let mut buf = BytesMut::new();
        encode_content_header(
            &mut buf,
            channel,
            &ContentHeader {
                class_id: basic::CLASS_ID,
                body_size,
                properties: Default::default(),
            },
        );
        self.send_raw(&buf).await;
    }

    /// Sends one body frame.
    pub async fn send_body(&mut self, channel: u16, payload: &[u8]) {
        let mut buf = BytesMut::new();
        encode_body(&mut buf, channel, payload);
        self.send_raw(&buf).await;
    }

    /// Sends a whole message: `method`, its header and one body frame (none if `body` is empty).
    pub async fn send_content(&mut self, channel: u16, method: impl Into<Method>, body: &[u8]) {
        let mut buf = BytesMut::new();
        encode_method(&mut buf, channel, &method.into());
        encode_content_header(
            &mut buf,
            channel,
            &ContentHeader {
                class_id: basic::CLASS_ID,
                body_size: body.len() as u64,
                properties: Default::default(),
            },
        );
        if !body.is_empty() {
            encode_body(&mut buf, channel, body);
        }
        self.send_raw(&buf).await;
    }

    /// Writes `chunk` again and again for `duration`, as fast as the client takes it, and returns the frames
    /// the client sent meanwhile (heartbeats included), read without waiting between the writes.
    pub async fn stream_for(&mut self, chunk: &[u8], duration: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + duration;
        let mut frames = Vec::new();
        while tokio::time::Instant::now() < deadline {
            self.send_raw(chunk).await;
            loop {
                if self.buf.capacity() - self.buf.len() < 4096 {
                    self.buf.reserve(64 * 1024);
                }
                match self.stream.try_read_buf(&mut self.buf) {
                    Ok(0) => panic!("fake broker: the client closed the socket while streaming"),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("fake broker: read while streaming: {e}"),
                }
            }
            while let Some(frame) = self
                .decoder
                .decode(&mut self.buf)
                .unwrap_or_else(|e| panic!("fake broker: undecodable frame from the client: {e}"))
            {
                frames.push(frame);
            }
        }
        frames
    }

    /// Sends a heartbeat frame.
    pub async fn send_heartbeat(&mut self) {
        let mut buf = BytesMut::new();
        encode_heartbeat(&mut buf);
        self.send_raw(&buf).await;
    }

    /// Closes our writing side (FIN); the client sees EOF.
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    // ---- receiving -----------------------------------------------------------------------------------

    /// Reads until 8 bytes arrived and checks they are `AMQP 0 0 9 1`.
    pub async fn expect_protocol_header(&mut self) {
        while self.buf.len() < 8 {
            match self.read_more().await {
                Ok(0) => panic!("fake broker: EOF before the protocol header"),
                Ok(_) => {}
                Err(e) => panic!("fake broker: waiting for the protocol header: {e}"),
            }
        }
        let header = self.buf.split_to(8);
        assert_eq!(&header[..], &spec::PROTOCOL_HEADER[..], "protocol header");
    }

    /// The next frame from the client, or a panic on EOF, garbage or timeout.
    pub async fn expect_frame(&mut self) -> Frame {
        match self.next_frame().await {
            Ok(Some(frame)) => frame,
            Ok(None) => panic!("fake broker: client closed the socket while a frame was expected"),
            Err(e) => panic!("fake broker: while waiting for a frame: {e}"),
        }
    }

    /// The next frame, `Ok(None)` on EOF (with nothing buffered), `Err` on a timeout or a bad frame.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(e) => {
                    return Err(ReadError::Other(format!(
                        "client sent an undecodable frame: {e}"
                    )))
                }
            }
            match self.read_more().await {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => {
                    return Err(ReadError::Other(format!(
                        "EOF inside a frame ({} bytes buffered)",
                        self.buf.len()
                    )))
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(ReadError::TimedOut(e.to_string()))
                }
                Err(e) => return Err(ReadError::Other(e.to_string())),
            }
        }
    }

    /// The next method frame (heartbeats are skipped; any other frame panics).
    pub async fn expect_method(&mut self) -> (u16, Method) {
        loop {
            match self.expect_frame().await {
                Frame::Heartbeat => continue,
                Frame::Method { channel, method } => return (channel, method),
                other => panic!("fake broker: expected a method frame, got {other:?}"),
            }
        }
    }

    /// Expects `connection.close` with `code` on channel 0 (heartbeats skipped) and returns it.
    pub async fn expect_connection_close(&mut self, code: ReplyCode) -> connection::Close {
        let frame = loop {
            match self.next_frame().await {
                Ok(Some(Frame::Heartbeat)) => continue,
                Ok(Some(frame)) => break frame,
                Ok(None) => panic!(
                    "fake broker: client closed the socket without sending connection.close {code}"
                ),
                Err(e) => panic!("fake broker: waiting for connection.close {code}: {e}"),
            }
        };
        match frame {
            Frame::Method {
                channel: 0,
                method: Method::ConnectionClose(close),
            } => {
                assert_eq!(
                    close.reply_code, code,
                    "client closed with {} ({}), expected {code}",
                    close.reply_code, close.reply_text
                );
                close
            }
            other => panic!("fake broker: expected connection.close {code}, got {other:?}"),
        }
    }

    /// Expects `connection.close` with `code`, answers `close-ok` (best effort: the client may already
    /// have dropped the socket) and waits for EOF.
    pub async fn expect_connection_close_and_answer(&mut self, code: ReplyCode) {
        self.expect_connection_close(code).await;
        let bytes = method_frame(0, &connection::CloseOk.into());
        let _ = self.try_send_raw(&bytes).await;
        self.expect_eof().await;
    }

    /// Expects `channel.close` with `code` on `channel` (heartbeats skipped) and returns it.
    pub async fn expect_channel_close(&mut self, channel: u16, code: ReplyCode) -> channel::Close {
        match self.expect_method().await {
            (ch, Method::ChannelClose(close)) if ch == channel => {
                assert_eq!(
                    close.reply_code, code,
                    "client closed channel {channel} with {} ({}), expected {code}",
                    close.reply_code, close.reply_text
                );
                close
            }
            other => {
                panic!("fake broker: expected channel.close {code} on {channel}, got {other:?}")
            }
        }
    }

    /// Reads methods until the client's connection.close (heartbeats skipped), answers close-ok and waits
    /// for the socket to close; returns the methods seen on `channel`, in order. Panics on a method of
    /// another channel.
    #[allow(dead_code)] // not every test binary that includes this module closes this way
    pub async fn methods_until_close(&mut self, channel: u16) -> Vec<Method> {
        let mut seen = Vec::new();
        loop {
            match self.expect_method().await {
                (0, Method::ConnectionClose(_)) => break,
                (c, m) if c == channel => seen.push(m),
                other => panic!("fake broker: unexpected {other:?}"),
            }
        }
        self.send_method(0, connection::CloseOk).await;
        self.expect_eof().await;
        seen
    }

    /// Waits for the client to close the socket; frames arriving before that (other than heartbeats) are
    /// returned. Panics if the socket stays open past the wait.
    pub async fn expect_eof(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            match self.next_frame().await {
                Ok(None) => return frames,
                Ok(Some(Frame::Heartbeat)) => {}
                Ok(Some(frame)) => frames.push(frame),
                Err(ReadError::TimedOut(e)) => {
                    panic!("fake broker: waiting for the client to close the socket: {e}")
                }
                // A reset or a partial frame at the end is the client going away too.
                Err(_) => return frames,
            }
        }
    }

    /// Whether the client closes the socket within `within` (bytes it sends meanwhile are discarded).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut scratch = [0u8; 1024];
        tokio::time::timeout(within, async {
            loop {
                match self.stream.read(&mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(64 * 1024);
        }
        match tokio::time::timeout(self.wait, self.stream.read_buf(&mut self.buf)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "fake broker: nothing from the client for {:?} (timed out)",
                    self.wait
                ),
            )),
        }
    }

    // ---- scripted conversations ------------------------------------------------------------------------

    /// The whole handshake with RabbitMQ-like values; returns the client's `tune-ok`.
    pub async fn handshake(&mut self) -> connection::TuneOk {
        self.handshake_with(Tune::default()).await
    }

    /// The whole handshake, proposing `tune`: protocol header → start → start-ok → tune → tune-ok →
    /// open → open-ok. Returns the client's `tune-ok`.
    pub async fn handshake_with(&mut self, tune: Tune) -> connection::TuneOk {
        let tune_ok = self.handshake_until_open(tune).await;
        self.send_method(0, connection::OpenOk).await;
        tune_ok
    }

    /// The handshake up to the client's `connection.open`, which is left unanswered: the caller sends
    /// open-ok (with whatever should arrive beside it).
    pub async fn handshake_until_open(&mut self, tune: Tune) -> connection::TuneOk {
        self.expect_protocol_header().await;
        self.send_method(0, start()).await;
        self.expect_start_ok().await;
        self.send_method(
            0,
            connection::Tune {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: tune.heartbeat,
            },
        )
        .await;
        let tune_ok = match self.expect_method().await {
            (0, Method::ConnectionTuneOk(ok)) => ok,
            other => panic!("fake broker: expected connection.tune-ok, got {other:?}"),
        };
        self.expect_open().await;
        tune_ok
    }

    /// Expects `connection.start-ok` with the PLAIN credentials guest/guest.
    pub async fn expect_start_ok(&mut self) -> connection::StartOk {
        match self.expect_method().await {
            (0, Method::ConnectionStartOk(ok)) => {
                assert_eq!(ok.mechanism, "PLAIN", "start-ok mechanism");
                assert_eq!(ok.response.as_bytes(), b"\0guest\0guest", "PLAIN response");
                ok
            }
            other => panic!("fake broker: expected connection.start-ok, got {other:?}"),
        }
    }

    /// Expects `connection.open` for the default vhost.
    pub async fn expect_open(&mut self) {
        match self.expect_method().await {
            (0, Method::ConnectionOpen(open)) => assert_eq!(open.virtual_host, "/", "vhost"),
            other => panic!("fake broker: expected connection.open, got {other:?}"),
        }
    }

    /// Answers the client's next `channel.open`; returns its channel number.
    pub async fn open_channel(&mut self) -> u16 {
        match self.expect_method().await {
            (ch, Method::ChannelOpen(_)) if ch != 0 => {
                self.send_method(ch, channel::OpenOk).await;
                ch
            }
            other => panic!("fake broker: expected channel.open, got {other:?}"),
        }
    }

    /// Expects `queue.declare` on `channel` and returns the queue name (not answered).
    pub async fn expect_queue_declare(&mut self, channel: u16) -> ShortStr {
        match self.expect_method().await {
            (ch, Method::QueueDeclare(d)) if ch == channel => d.queue,
            other => panic!("fake broker: expected queue.declare on {channel}, got {other:?}"),
        }
    }

    /// Expects `confirm.select` on `channel` and answers select-ok.
    pub async fn answer_confirm_select(&mut self, channel: u16) {
        match self.expect_method().await {
            (c, Method::ConfirmSelect(_)) if c == channel => {
                self.send_method(channel, spec::confirm::SelectOk).await
            }
            other => panic!("fake broker: expected confirm.select on {channel}, got {other:?}"),
        }
    }

    /// Expects `queue.declare` on `channel` and answers declare-ok.
    pub async fn answer_queue_declare(&mut self, channel: u16) {
        let queue = self.expect_queue_declare(channel).await;
        self.send_method(
            channel,
            queue::DeclareOk {
                queue,
                message_count: 0,
                consumer_count: 0,
            },
        )
        .await;
    }

    /// Expects `basic.consume` on `channel`, answers consume-ok, and returns the consumer tag.
    pub async fn answer_consume(&mut self, channel: u16) -> ShortStr {
        match self.expect_method().await {
            (ch, Method::BasicConsume(c)) if ch == channel => {
                let tag = if c.consumer_tag.is_empty() {
                    ShortStr::from("amq.ctag-fake")
                } else {
                    c.consumer_tag
                };
                if !c.no_wait {
                    self.send_method(
                        channel,
                        basic::ConsumeOk {
                            consumer_tag: tag.clone(),
                        },
                    )
                    .await;
                }
                tag
            }
            other => panic!("fake broker: expected basic.consume on {channel}, got {other:?}"),
        }
    }

    /// Expects a published message on `channel` (publish, header, body frames) and returns its body.
    pub async fn expect_publish(&mut self, channel: u16) -> (basic::Publish, Vec<u8>, Vec<usize>) {
        let publish = match self.expect_method().await {
            (ch, Method::BasicPublish(p)) if ch == channel => p,
            other => panic!("fake broker: expected basic.publish on {channel}, got {other:?}"),
        };
        let header = match self.expect_frame().await {
            Frame::Header {
                channel: ch,
                header,
            } if ch == channel => header,
            other => panic!("fake broker: expected a content header on {channel}, got {other:?}"),
        };
        let mut body = Vec::new();
        let mut frame_sizes = Vec::new();
        while (body.len() as u64) < header.body_size {
            match self.expect_frame().await {
                Frame::Body {
                    channel: ch,
                    payload,
                } if ch == channel => {
                    frame_sizes.push(payload.len());
                    body.extend_from_slice(&payload);
                }
                other => panic!("fake broker: expected a body frame on {channel}, got {other:?}"),
            }
        }
        assert_eq!(body.len() as u64, header.body_size, "body size");
        (publish, body, frame_sizes)
    }

    /// Expects the client's clean `connection.close` (200) and answers close-ok.
    pub async fn expect_clean_close(&mut self) {
        self.expect_connection_close(ReplyCode::REPLY_SUCCESS).await;
        self.send_method(0, connection::CloseOk).await;
        self.expect_eof().await;
    }
}

// ---- wire builders -------------------------------------------------------------------------------------

/// A method frame's bytes.
pub fn method_frame(channel: u16, method: &Method) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_method(&mut buf, channel, method);
    buf
}

/// A frame with arbitrary type, channel and payload, its size field set to the payload's length.
pub fn raw_frame(frame_type: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.push(frame_type);
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(spec::FRAME_END);
    v
}

/// A realistic `server-properties` table (what RabbitMQ 3.13 announces).
pub fn server_properties() -> FieldTable {
    let capabilities = FieldTable::new()
        .with("publisher_confirms", true)
        .with("exchange_exchange_bindings", true)
        .with("basic.nack", true)
        .with("consumer_cancel_notify", true)
        .with("connection.blocked", true)
        .with("consumer_priorities", true)
        .with("authentication_failure_close", true)
        .with("per_consumer_qos", true)
        .with("direct_reply_to", true);
    FieldTable::new()
        .with("capabilities", capabilities)
        .with("cluster_name", "rabbit@fake-broker")
        .with(
            "copyright",
            "Copyright (c) 2007-2024 Broadcom Inc and/or its subsidiaries",
        )
        .with(
            "information",
            "Licensed under the MPL 2.0. Website: https://rabbitmq.com",
        )
        .with("platform", "Erlang/OTP 26.2.5")
        .with("product", "RabbitMQ")
        .with("version", "3.13.7")
}

/// `connection.start` as RabbitMQ sends it.
pub fn start() -> connection::Start {
    connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: server_properties(),
        mechanisms: LongStr::from("AMQPLAIN PLAIN"),
        locales: LongStr::from("en_US"),
    }
}

/// The bytes of a field table nested `levels` deep (the outermost table is level 1): each level holds one
/// entry `"a"` of type `F` whose value is the next level; the innermost table is empty.
pub fn nested_table_bytes(levels: usize) -> Vec<u8> {
    assert!(levels >= 1);
    let mut inner: Vec<u8> = vec![0, 0, 0, 0];
    for _ in 1..levels {
        let mut next = Vec::with_capacity(inner.len() + 7);
        next.extend_from_slice(&((inner.len() + 3) as u32).to_be_bytes());
        next.extend_from_slice(&[1, b'a', b'F']);
        next.extend_from_slice(&inner);
        inner = next;
    }
    inner
}

/// A `connection.start` method frame whose server-properties table is nested `levels` deep, built by hand.
pub fn start_frame_with_nested_properties(levels: usize) -> Vec<u8> {
    let mut payload = BytesMut::new();
    payload.put_u16(connection::Start::CLASS_ID);
    payload.put_u16(connection::Start::METHOD_ID);
    payload.put_u8(0);
    payload.put_u8(9);
    payload.put_slice(&nested_table_bytes(levels));
    for long in [&b"PLAIN"[..], b"en_US"] {
        payload.put_u32(long.len() as u32);
        payload.put_slice(long);
    }
    raw_frame(spec::FRAME_METHOD, 0, &payload)
}

/// A content header frame for a zero-length body whose `headers` property is nested `levels` deep.
pub fn header_frame_with_nested_headers(channel: u16, levels: usize) -> Vec<u8> {
    let mut payload = BytesMut::new();
    payload.put_u16(basic::CLASS_ID);
    payload.put_u16(0); // weight
    payload.put_u64(0); // body size
    payload.put_u16(0x2000); // property flags: headers only
    payload.put_slice(&nested_table_bytes(levels));
    raw_frame(spec::FRAME_HEADER, channel, &payload)
}

/// Runs a scenario's broker side and client side together; panics if they take longer than `limit`.
pub async fn scenario<S: std::future::Future, C: std::future::Future>(
    limit: Duration,
    server: S,
    client: C,
) -> (S::Output, C::Output) {
    tokio::time::timeout(limit, async { tokio::join!(server, client) })
        .await
        .expect("scenario finished in time")
}

/// `basic.deliver` for `consumer_tag` with `delivery_tag`.
pub fn deliver(consumer_tag: &ShortStr, delivery_tag: u64) -> basic::Deliver {
    basic::Deliver {
        consumer_tag: consumer_tag.clone(),
        delivery_tag,
        redelivered: false,
        exchange: ShortStr::from(""),
        routing_key: ShortStr::from("q"),
    }
}

/// The process's resident set size in bytes, from `/proc/self/status` (`None` where unavailable).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Publishes 64 KiB messages on `ch` to a broker that does not read, until one publish times out
/// waiting for room in the command queue: the queue is then full. Returns how many were queued; panics
/// if a publish fails otherwise or the queue never fills.
pub async fn fill_the_command_queue(ch: &coney::Channel) -> u32 {
    let body = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    let mut published = 0u32;
    let full = loop {
        let r = ch
            .basic_publish(
                "",
                "q",
                coney::options::BasicPublishOptions::default(),
                coney::BasicProperties::default(),
                body.clone(),
            )
            .await;
        match r {
            Ok(_) => published += 1,
            Err(e) => break e,
        }
        assert!(
            published < 100_000,
            "the command queue never filled ({published} publishes)"
        );
    };
    assert!(
        matches!(full, coney::Error::Timeout { .. }),
        "a publish stops on the full queue: {full:?}"
    );
    published
}
