//! The connection state machine: handshake, channel states, content assembly, heartbeats, close.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};

use crate::{
    codec::{FieldTable, ShortStr},
    frame::{self, ContentHeader, Frame, FrameDecoder, FrameError, PublishHead},
    proto::{
        byte_queue::ByteQueue,
        channel_map::ChannelMap,
        content::{Content, ContentError, PartialContent},
        handshake::{self, Mechanism, TunePreferences, Tuned},
    },
    spec::{self, channel, connection, BasicProperties, Method, ReplyCode},
};

/// What the handshake needs to know.
#[derive(Clone)]
pub struct HandshakeParams {
    /// SASL mechanism.
    pub mechanism: Mechanism,
    /// User name.
    pub username: String,
    /// Password (a secret: never logged).
    pub password: String,
    /// Virtual host to open.
    pub vhost: String,
    /// Locale for `start-ok`.
    pub locale: String,
    /// Shown in the management UI.
    pub connection_name: Option<String>,
    /// The client's side of tuning.
    pub tune: TunePreferences,
    /// Largest message body accepted; larger content closes its channel with 311.
    pub max_message_size: u64,
}

impl std::fmt::Debug for HandshakeParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeParams")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"***")
            .field("vhost", &self.vhost)
            .field("tune", &self.tune)
            .finish_non_exhaustive()
    }
}

/// Something the driver must act on.
///
/// `Content` is large (properties inline); events are moved once, from the state machine to the driver.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// The handshake completed.
    Opened {
        /// The server's `server-properties`.
        server_properties: FieldTable,
        /// Negotiated limits.
        tuned: Tuned,
    },
    /// A method without content for the driver to route: RPC responses, acks/nacks, cancels, flow.
    Method {
        /// Channel.
        channel: u16,
        /// The method.
        method: Method,
    },
    /// A complete deliver, return or get-ok.
    Content {
        /// Channel.
        channel: u16,
        /// Method, header and body.
        content: Content,
    },
    /// The state machine closed a channel itself (311: a message over the client's limit), with this
    /// cause: the channel's handles are done with it now, and its close-ok is awaited like that of a
    /// close the driver sends. [`Event::ChannelClosed`] follows the close-ok.
    ChannelClosing {
        /// Channel.
        channel: u16,
        /// Why.
        cause: ChannelCloseCause,
    },
    /// A channel is closed and its id free.
    ChannelClosed {
        /// Channel.
        channel: u16,
        /// Why.
        cause: ChannelCloseCause,
    },
    /// `connection.blocked`: publishing should pause.
    Blocked(ShortStr),
    /// `connection.unblocked`.
    Unblocked,
    /// Our `connection.close` was acknowledged; the socket may be closed.
    Closed,
}

/// Why a channel closed.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelCloseCause {
    /// The server closed it (a soft error, usually).
    Server(channel::Close),
    /// We closed it, with this code and text (200 for a normal close).
    Client {
        /// Reply code sent.
        code: ReplyCode,
        /// Reply text sent.
        text: String,
    },
}

/// Why the connection cannot go on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConnectionError {
    /// The peer broke the protocol. `connection.close` with this code is queued unless the handshake
    /// has not reached `connection.start` (nothing is sent then) or a close was already under way.
    #[error("protocol violation ({code}): {text}")]
    Violation {
        /// The code the spec gives the violation (the one in connection.close, if one is sent).
        code: ReplyCode,
        /// What was wrong (the close's reply text, if one is sent).
        text: String,
    },
    /// The server sent `connection.close` (we answered close-ok).
    #[error("connection closed by server: {} {}", .0.reply_code, .0.reply_text)]
    ServerClosed(connection::Close),
    /// Nothing heard from the server for two heartbeat intervals.
    #[error("no frames from the server for {0:?} (two heartbeat intervals)")]
    HeartbeatTimeout(Duration),
    /// The server's offer cannot be accepted (version, mechanism).
    #[error("handshake failed: {0}")]
    Handshake(String),
}

impl ConnectionError {
    fn violation(code: ReplyCode, text: impl Into<String>) -> ConnectionError {
        ConnectionError::Violation {
            code,
            text: text.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitStart,
    AwaitTune,
    AwaitOpenOk,
    Open,
    /// We sent connection.close; only close/close-ok matter now.
    Closing,
    Closed,
}

#[derive(Debug)]
struct ChannelState {
    closing: Option<ChannelCloseCause>,
    /// A server close received while our own close was in flight.
    server_close: Option<channel::Close>,
    content: Option<PartialContent>,
    leftovers: Leftovers,
}

/// Frames that the broker may still have on the wire for an incarnation of a channel it closed.
///
/// RabbitMQ can send a `basic.deliver` (with its content) behind its own `channel.close`: the delivery
/// was on its way when the channel failed, and while its close crosses ours it goes on until it reads
/// our close-ok. The Java client ignores frames on channels it does not know rather than closing the
/// whole connection. This one drops them only for an id the broker closed, from its close until the id
/// is opened again: the drop outlasts the broker's leftovers, so a broker that keeps sending on an id
/// it released long ago is not refused (such frames cost nothing: their content is not assembled).
/// Frames on an id that was never opened are still a 504.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leftovers {
    /// The channel is live, opening, or closing by our own `channel.close` (`closing` covers that).
    None,
    /// The broker closed the channel and its close-ok is queued: every frame for the id is dropped
    /// until the id is opened again.
    AfterClose,
    /// The id was opened again after the broker closed it: until `open-ok`, frames are the old
    /// incarnation's (the broker sent them before it read our close-ok, which went out before our
    /// `channel.open`) and are dropped. A `channel.close` is the new incarnation's and is handled.
    UntilOpenOk,
}

/// A client connection as a value: frames in, frames and events out, time passed in.
///
/// The driver feeds it bytes ([`Connection::handle_input`]) and timeouts ([`Connection::handle_timeout`]),
/// writes what [`Connection::transmit`] holds, and acts on [`Connection::poll_event`]. It answers the
/// parts of the protocol that need no decision from a user by itself: the handshake, heartbeats,
/// `close-ok`s, `flow-ok`.
#[derive(Debug)]
pub struct Connection {
    state: State,
    params: HandshakeParams,
    decoder: FrameDecoder,
    out: ByteQueue,
    events: VecDeque<Event>,
    channels: ChannelMap<ChannelState>,
    tuned: Option<Tuned>,
    server_properties: FieldTable,
    last_read: Instant,
    last_write: Instant,
    /// The body frame whose payload is being taken straight into its message ([`Connection::read_target`]).
    direct: Option<DirectBody>,
    /// Whether the last error [`Connection::handle_input`] returned left the input without a known frame
    /// boundary ([`Connection::lost_frame_boundary`]).
    lost_frame_boundary: bool,
}

/// A body frame of a multi-frame message whose header has been taken and whose payload is going straight
/// into the message's buffer: how many payload bytes are still to come, then the frame-end octet.
#[derive(Debug, Clone, Copy)]
struct DirectBody {
    channel: u16,
    remaining: usize,
}

/// Where the driver's next read should put the bytes it reads ([`Connection::read_target`]).
#[derive(Debug)]
pub enum ReadTarget<'a> {
    /// The read buffer that [`Connection::handle_input`] takes; at most this many bytes if `Some` (the
    /// frame-end octet and next frame header between two body frames of one message, so that the next
    /// payload can go straight into the message too).
    Buffer(Option<usize>),
    /// The rest of a body frame's payload, straight into its message's body: write into the spare
    /// capacity (advancing the length, as `read_buf` does), at most the limit, then call
    /// [`Connection::handle_body_read`] with the count.
    Body(bytes::buf::Limit<&'a mut BytesMut>),
}

/// A body frame at least this large, of a message with more than one, is taken straight into its message
/// when its payload has not all arrived with its header (instead of into the read buffer and then copied).
const DIRECT_BODY_MIN: usize = 16 * 1024;
/// The most of a frame's claim [`Connection::read_target`] makes room for in its message's body at once
/// (beyond the body's growth with what arrived).
const DIRECT_BODY_STEP: usize = 128 * 1024;

/// The message arriving on `channel`, if its content is still wanted: the connection open and the channel
/// not closing (otherwise the decoder's path drops content, and the direct path drops it too).
fn content_in_progress(
    channels: &mut ChannelMap<ChannelState>,
    state: State,
    channel: u16,
) -> Option<&mut PartialContent> {
    channels
        .get_mut(channel)
        .filter(|s| state == State::Open && s.closing.is_none())
        .and_then(|s| s.content.as_mut())
}

impl Connection {
    /// A connection about to start: the protocol header is already queued for transmission.
    pub fn new(params: HandshakeParams, now: Instant) -> Connection {
        let mut out = ByteQueue::with_capacity(64 * 1024);
        out.tail().extend_from_slice(&spec::PROTOCOL_HEADER);
        Connection {
            state: State::AwaitStart,
            params,
            decoder: FrameDecoder::default(),
            out,
            events: VecDeque::new(),
            channels: ChannelMap::new(),
            tuned: None,
            server_properties: FieldTable::new(),
            last_read: now,
            last_write: now,
            direct: None,
            lost_frame_boundary: false,
        }
    }

    /// Negotiated limits, once tuned.
    pub fn tuned(&self) -> Option<Tuned> {
        self.tuned
    }

    /// Whether the handshake has completed and no close has started.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether `connection.close-ok` has been exchanged.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The largest body slice one frame may carry.
    pub fn max_body_frame(&self) -> usize {
        match self
            .tuned
            .map(|t| t.frame_max)
            .unwrap_or(spec::FRAME_MIN_SIZE)
        {
            // "No limit" was negotiated: any size is allowed, so pick one that keeps frames interleavable.
            0 => NO_LIMIT_FRAME_SIZE as usize - frame::FRAME_OVERHEAD,
            n => n as usize - frame::FRAME_OVERHEAD,
        }
    }

    /// Bytes waiting to be written. The driver writes them and then calls [`Connection::on_transmit`].
    pub fn transmit(&mut self) -> &mut ByteQueue {
        &mut self.out
    }

    /// Records that bytes were written at `now` (for the heartbeat send timer).
    pub fn on_transmit(&mut self, now: Instant) {
        self.last_write = now;
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Decodes and handles every complete frame in `buf`.
    ///
    /// On `Err` the connection is failed (and connection.close queued if the error is a violation of
    /// ours to report); `buf` holds what follows the rejected frame, unless the error
    /// [lost the frame boundary](Connection::lost_frame_boundary).
    pub fn handle_input(
        &mut self,
        buf: &mut BytesMut,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        if buf.is_empty() {
            return Ok(());
        }
        self.last_read = now;
        self.lost_frame_boundary = false;
        loop {
            if self.direct.is_some() {
                if !self.continue_direct_body(buf)? {
                    return Ok(());
                }
                continue;
            }
            match self.decoder.decode(buf) {
                Ok(Some(frame)) => self.handle_frame(frame)?,
                Ok(None) => {
                    self.start_direct_body(buf);
                    return Ok(());
                }
                Err(e) => {
                    if e.keeps_frame_boundary() {
                        FrameDecoder::skip_rejected_frame(buf);
                    }
                    return Err(self.fail_frame(e));
                }
            }
        }
    }

    /// Whether the last error [`Connection::handle_input`] returned left `buf` without a known frame
    /// boundary. After any other error, `buf` starts at the frame after the rejected one (or is empty), and
    /// decoding can go on from there while the connection closes: the peer's close-ok is found where it
    /// is. After this one, what is buffered and what follows it cannot be split into frames.
    pub fn lost_frame_boundary(&self) -> bool {
        self.lost_frame_boundary
    }

    /// Where the next bytes read from the socket should go: usually the read buffer, but the rest of a
    /// large body frame of a multi-frame message goes straight into the message's body, saving the copy
    /// from the read buffer (most of the cost of a 1 MiB delivery after the kernel's own copy).
    ///
    /// Either target is correct: bytes of a body frame that land in the read buffer are appended by
    /// [`Connection::handle_input`] instead. The body's room follows [`PartialContent::body_room`]: four
    /// times what arrived, or `DIRECT_BODY_STEP` (128 KiB) of the frame's claim ahead of it if that is
    /// more, never past the header's declared size.
    pub fn read_target(&mut self) -> ReadTarget<'_> {
        use bytes::BufMut;
        let Some(DirectBody { channel, remaining }) = self.direct else {
            return ReadTarget::Buffer(None);
        };
        let Some(partial) = content_in_progress(&mut self.channels, self.state, channel) else {
            return ReadTarget::Buffer(None);
        };
        if remaining == 0 {
            // Between two body frames of the message: the end octet and the next header only.
            return ReadTarget::Buffer((!partial.is_whole()).then_some(frame::FRAME_OVERHEAD));
        }
        let room = partial.body_room(remaining.min(DIRECT_BODY_STEP));
        let spare = room.capacity() - room.len();
        ReadTarget::Body(room.limit(remaining.min(spare)))
    }

    /// Records `n` bytes written into [`ReadTarget::Body`] at `now`.
    pub fn handle_body_read(&mut self, n: usize, now: Instant) {
        self.last_read = now;
        if let Some(direct) = self.direct.as_mut() {
            direct.remaining = direct.remaining.saturating_sub(n);
        }
    }

    /// After a frame the decoder could not finish: if it is a large body frame of a multi-frame message
    /// on an open channel, takes its header (and the payload so far) so the rest can go straight into the
    /// message. Anything else (including every frame that will turn out to be an error) is left to the
    /// decoder, to be handled whole as before.
    fn start_direct_body(&mut self, buf: &mut BytesMut) {
        let Some((channel, size)) = self.decoder.incomplete_body(buf) else {
            return;
        };
        if size < DIRECT_BODY_MIN || channel == 0 {
            return;
        }
        let Some(partial) = content_in_progress(&mut self.channels, self.state, channel) else {
            return;
        };
        // A single-frame body is shared with the read buffer already, at no copy.
        if !partial
            .declared_size()
            .is_some_and(|declared| declared > size as u64)
        {
            return;
        }
        if partial.begin_body_frame(size).is_err() {
            return;
        }
        FrameDecoder::skip_body_header(buf);
        let arrived = buf.len().min(size);
        partial.extend_body(&buf[..arrived]);
        bytes::Buf::advance(buf, arrived);
        self.direct = Some(DirectBody {
            channel,
            remaining: size - arrived,
        });
    }

    /// Takes what `buf` holds of the direct body frame: payload bytes, then its end octet, after which the
    /// message may be whole. `Ok(true)` when the frame is done and decoding can go on.
    ///
    /// If the channel was closed (or the connection started closing) meanwhile, the rest of the frame is
    /// read and dropped, as the decoder's path drops content then.
    fn continue_direct_body(&mut self, buf: &mut BytesMut) -> Result<bool, ConnectionError> {
        let Some(direct) = self.direct.as_mut() else {
            return Ok(true);
        };
        let channel = direct.channel;
        let mut partial = content_in_progress(&mut self.channels, self.state, channel);
        if direct.remaining > 0 {
            let n = direct.remaining.min(buf.len());
            if let Some(partial) = partial.as_mut() {
                partial.extend_body(&buf[..n]);
            }
            bytes::Buf::advance(buf, n);
            direct.remaining -= n;
            if direct.remaining > 0 {
                return Ok(false);
            }
        }
        match FrameDecoder::take_frame_end(buf) {
            Ok(false) => Ok(false),
            Err(e) => {
                // The connection is failed; what follows (close-ok, if the server answers) is decoded
                // as frames again, not taken as this frame's end.
                self.direct = None;
                Err(self.fail_frame(e))
            }
            Ok(true) => {
                let whole = partial.is_some_and(|p| p.is_whole());
                self.direct = None;
                if whole {
                    self.after_content(channel, Ok(true))?;
                }
                Ok(true)
            }
        }
    }

    /// When [`Connection::handle_timeout`] next needs calling, if heartbeats are on.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let interval = self.heartbeat()?;
        Some((self.last_write + interval / 2).min(self.last_read + interval * 2))
    }

    /// Sends a heartbeat after half an interval of write silence; fails after two intervals of read
    /// silence. With `reading_paused` (the driver has stopped reading to apply backpressure), silence is
    /// ours, not the server's, and is not held against it.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        reading_paused: bool,
    ) -> Result<(), ConnectionError> {
        let Some(interval) = self.heartbeat() else {
            return Ok(());
        };
        if reading_paused {
            self.last_read = now;
        }
        if now.saturating_duration_since(self.last_read) >= interval * 2 {
            return Err(ConnectionError::HeartbeatTimeout(interval * 2));
        }
        if now.saturating_duration_since(self.last_write) >= interval / 2 {
            // Bytes still pending (the socket is not writable) will do as well as a heartbeat once written.
            if self.out.is_empty() {
                frame::encode_heartbeat(self.out.tail());
            }
            // Either way the write timer restarts now, so `poll_timeout` moves past `now`: otherwise a
            // driver whose socket is stuck would be woken again at once, and spin.
            self.last_write = now;
        }
        Ok(())
    }

    fn heartbeat(&self) -> Option<Duration> {
        match self.tuned {
            Some(t) if t.heartbeat > 0 && matches!(self.state, State::Open | State::Closing) => {
                Some(Duration::from_secs(t.heartbeat.into()))
            }
            _ => None,
        }
    }

    /// Starts opening channel `id` (the driver allocated it): sends `channel.open`.
    pub fn open_channel(&mut self, id: u16) {
        let leftovers = match self.channels.get(id) {
            Some(state) if state.leftovers == Leftovers::AfterClose => Leftovers::UntilOpenOk,
            _ => Leftovers::None,
        };
        self.channels.insert(
            id,
            ChannelState {
                closing: None,
                server_close: None,
                content: None,
                leftovers,
            },
        );
        self.queue_method(id, &channel::Open.into());
    }

    /// Whether channel `id` is open and not closing.
    pub fn channel_is_usable(&self, id: u16) -> bool {
        self.state == State::Open
            && self
                .channels
                .get(id)
                .is_some_and(|c| c.closing.is_none() && c.leftovers != Leftovers::AfterClose)
    }

    /// Starts closing channel `id` with `code`: sends `channel.close`; every later frame on the channel is
    /// discarded until `close-ok`, then [`Event::ChannelClosed`] follows.
    pub fn close_channel(&mut self, id: u16, code: ReplyCode, text: &str) {
        let Some(state) = self.channels.get_mut(id) else {
            return;
        };
        if state.closing.is_some() || state.leftovers == Leftovers::AfterClose {
            return;
        }
        state.closing = Some(ChannelCloseCause::Client {
            code,
            text: text.to_string(),
        });
        state.content = None;
        let close = channel::Close {
            reply_code: code,
            reply_text: short(text),
            class_id: 0,
            method_id: 0,
        };
        self.queue_method(id, &close.into());
    }

    /// Starts closing the connection: sends `connection.close`. [`Event::Closed`] follows `close-ok`.
    ///
    /// `false`, and nothing sent, if the connection is already closing or closed: only one
    /// connection.close goes on the wire, with the code of whichever close came first.
    pub fn close(&mut self, code: ReplyCode, text: &str) -> bool {
        if matches!(self.state, State::Closing | State::Closed) {
            return false;
        }
        let close = connection::Close {
            reply_code: code,
            reply_text: short(text),
            class_id: 0,
            method_id: 0,
        };
        self.queue_method(0, &close.into());
        self.state = State::Closing;
        true
    }

    /// Queues `connection.update-secret` (a RabbitMQ extension: the client renews an expiring credential
    /// on an open connection, and the broker answers with update-secret-ok, which arrives as an
    /// [`Event::Method`] on channel 0). `false`, and nothing queued, unless the connection is open: no
    /// method but close-ok may follow a connection.close.
    pub fn update_secret(&mut self, update: connection::UpdateSecret) -> bool {
        if self.state != State::Open {
            return false;
        }
        self.queue_method(0, &update.into());
        true
    }

    /// Queues a method frame on an open channel; `false`, and nothing queued, unless the connection is
    /// open and the channel open and not closing ([`Connection::channel_is_usable`]). The state
    /// machine's own frames (the handshake, closes and close-oks) do not go through this check.
    pub fn send_method(&mut self, channel: u16, method: &Method) -> bool {
        // spec (channel.close-ok): it "tells the recipient that it is safe to release resources for the
        // channel", so nothing may follow it on the channel (RabbitMQ closes the whole connection with
        // 504 "expected 'channel.open'" for a method on a channel it released); nothing but close-ok
        // may follow a channel.close or a connection.close either.
        if !self.channel_is_usable(channel) {
            return false;
        }
        self.queue_method(channel, method);
        true
    }

    fn queue_method(&mut self, channel: u16, method: &Method) {
        frame::encode_method(self.out.tail(), channel, method);
    }

    /// Queues a content-carrying method with its header and body, split into frames of the negotiated size.
    pub fn send_content(
        &mut self,
        channel: u16,
        method: &Method,
        properties: &BasicProperties,
        body: &[u8],
    ) {
        frame::encode_method(self.out.tail(), channel, method);
        let header = ContentHeader::new(method.class_id(), body.len() as u64, properties);
        frame::encode_content_header(self.out.tail(), channel, &header);
        for chunk in body.chunks(self.max_body_frame()) {
            frame::encode_body(self.out.tail(), channel, chunk);
        }
    }

    /// Like [`Connection::send_content`] for `basic.publish`, with the method and header frames already
    /// encoded where the message was made ([`PublishHead`]): the hot path. Body frames of at least
    /// [`ByteQueue::SHARE_MIN`] bytes share `body` (a reference count) instead of copying it.
    pub fn send_publish(&mut self, channel: u16, head: &PublishHead, body: &Bytes) {
        let max = self.max_body_frame();
        let share = body.len().min(max) >= ByteQueue::SHARE_MIN;
        let out = self.out.tail();
        let copied = if share { 0 } else { body.len() };
        let head = head.as_bytes();
        out.reserve(head.len() + copied + (body.len() / max + 1) * frame::FRAME_OVERHEAD);
        out.extend_from_slice(head);
        if !share {
            for chunk in body.chunks(max) {
                frame::encode_body(out, channel, chunk);
            }
            return;
        }
        let mut at = 0;
        while at < body.len() {
            let end = (at + max).min(body.len());
            let out = self.out.tail();
            out.extend_from_slice(&[spec::FRAME_BODY]);
            out.extend_from_slice(&channel.to_be_bytes());
            out.extend_from_slice(&((end - at) as u32).to_be_bytes());
            self.out.push_shared(body.slice(at..end));
            self.out.tail().extend_from_slice(&[spec::FRAME_END]);
            at = end;
        }
    }

    fn fail_frame(&mut self, e: FrameError) -> ConnectionError {
        self.lost_frame_boundary = !e.keeps_frame_boundary();
        let err = ConnectionError::violation(e.reply_code(), e.to_string());
        self.fail(&err);
        err
    }

    /// Sends connection.close for a violation we detected (if the handshake got far enough for the peer to
    /// understand one).
    fn fail(&mut self, err: &ConnectionError) {
        if let ConnectionError::Violation { code, text } = err {
            if !matches!(
                self.state,
                State::Closing | State::Closed | State::AwaitStart
            ) {
                self.close(*code, text);
            }
        }
    }

    fn violation(&mut self, code: ReplyCode, text: impl Into<String>) -> ConnectionError {
        let err = ConnectionError::violation(code, text);
        self.fail(&err);
        err
    }

    /// Handles one decoded frame.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<(), ConnectionError> {
        match frame {
            Frame::Heartbeat => Ok(()),
            Frame::Method { channel: 0, method } => self.handle_connection_method(method),
            Frame::Method { channel, method } => self.handle_channel_method(channel, method),
            // spec (4.2.3): channel 0 is for connection methods and heartbeats only. The spec names no
            // code for content there; RabbitMQ (rabbit_reader) and the Java client treat it as an
            // unexpected frame (505).
            Frame::Header { channel: 0, .. } | Frame::Body { channel: 0, .. } => {
                Err(self.violation(ReplyCode::UNEXPECTED_FRAME, "content frame on channel 0"))
            }
            Frame::Header { channel, header } => self.handle_header(channel, header),
            Frame::Body { channel, payload } => self.handle_body(channel, payload),
        }
    }

    fn handle_connection_method(&mut self, method: Method) -> Result<(), ConnectionError> {
        match (self.state, method) {
            (_, Method::ConnectionClose(close)) => {
                // spec: "After sending close-ok the peer closes the socket"; answering is always allowed.
                self.queue_method(0, &connection::CloseOk.into());
                self.state = State::Closed;
                Err(ConnectionError::ServerClosed(close))
            }
            (State::Closing, Method::ConnectionCloseOk(_)) => {
                self.state = State::Closed;
                self.events.push_back(Event::Closed);
                Ok(())
            }
            (State::Closing | State::Closed, _) => Ok(()),
            (State::AwaitStart, Method::ConnectionStart(start)) => self.on_start(start),
            (State::AwaitTune, Method::ConnectionTune(tune)) => self.on_tune(tune),
            (State::AwaitTune, Method::ConnectionSecure(_)) => {
                Err(ConnectionError::Handshake(format!(
                    "server sent a SASL challenge, which mechanism {} does not use",
                    self.params.mechanism.name()
                )))
            }
            (State::AwaitOpenOk, Method::ConnectionOpenOk(_)) => {
                self.state = State::Open;
                let tuned = self.tuned.expect("tuned before open");
                let server_properties = std::mem::take(&mut self.server_properties);
                self.events.push_back(Event::Opened {
                    server_properties,
                    tuned,
                });
                Ok(())
            }
            (State::Open, Method::ConnectionBlocked(b)) => {
                self.events.push_back(Event::Blocked(b.reason));
                Ok(())
            }
            (State::Open, Method::ConnectionUnblocked(_)) => {
                self.events.push_back(Event::Unblocked);
                Ok(())
            }
            (State::Open, Method::ConnectionUpdateSecretOk(_)) => {
                self.events.push_back(Event::Method {
                    channel: 0,
                    method: connection::UpdateSecretOk.into(),
                });
                Ok(())
            }
            (_, method) if method.class_id() != connection::CLASS_ID => Err(self.violation(
                ReplyCode::COMMAND_INVALID,
                format!("{} on channel 0", method.name()),
            )),
            (state, method) => Err(self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!("{} while {state:?}", method.name()),
            )),
        }
    }

    fn on_start(&mut self, start: connection::Start) -> Result<(), ConnectionError> {
        if (start.version_major, start.version_minor) != (0, 9) {
            return Err(ConnectionError::Handshake(format!(
                "server speaks AMQP {}-{}, not 0-9-1",
                start.version_major, start.version_minor
            )));
        }
        let wanted = self.params.mechanism.name();
        let offered = String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned();
        if !offered.split(' ').any(|m| m == wanted) {
            return Err(ConnectionError::Handshake(format!(
                "server does not offer SASL mechanism {wanted} (it offers: {offered})"
            )));
        }
        let start_ok = connection::StartOk {
            client_properties: handshake::client_properties(self.params.connection_name.as_deref()),
            mechanism: ShortStr::from_static(self.params.mechanism.name()),
            response: self
                .params
                .mechanism
                .response(&self.params.username, &self.params.password),
            locale: short(&self.params.locale),
        };
        // spec (frame-min-size): before connection.tune, a peer need accept no frame over 4096 octets
        // (RabbitMQ resets the socket for one).
        let method = Method::from(start_ok);
        let mut frame = bytes::BytesMut::new();
        frame::encode_method(&mut frame, 0, &method);
        if frame.len() > spec::FRAME_MIN_SIZE as usize {
            return Err(ConnectionError::Handshake(format!(
                "connection.start-ok would be a {}-byte frame, over the {} bytes a broker must accept \
                 before tuning: shorten the connection name or the credentials",
                frame.len(),
                spec::FRAME_MIN_SIZE
            )));
        }
        self.out.tail().extend_from_slice(&frame);
        self.state = State::AwaitTune;
        self.server_properties = start.server_properties;
        Ok(())
    }

    fn on_tune(&mut self, tune: connection::Tune) -> Result<(), ConnectionError> {
        let server = Tuned {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: tune.heartbeat,
        };
        let tuned = handshake::negotiate(server, self.params.tune);
        self.queue_method(
            0,
            &connection::TuneOk {
                channel_max: tuned.channel_max,
                frame_max: tuned.frame_max,
                heartbeat: tuned.heartbeat,
            }
            .into(),
        );
        // Inbound limit: the negotiated frame-max, or with "no limit" a cap derived from the message limit,
        // so a peer can never make us buffer more than one maximal message per frame. The cap never goes
        // below what we would accept with RabbitMQ's default frame-max: method and header frames (a large
        // headers table) do not count against the body limit, and spec: a peer "MUST accept frames of up
        // to frame-min-size octets".
        let inbound = match tuned.frame_max {
            0 => u32::try_from(
                self.params
                    .max_message_size
                    .saturating_add(frame::FRAME_OVERHEAD as u64),
            )
            .unwrap_or(u32::MAX)
            .max(NO_LIMIT_FRAME_SIZE),
            n => n,
        };
        self.decoder.set_max_frame_size(inbound);
        self.tuned = Some(tuned);
        self.queue_method(
            0,
            &connection::Open {
                virtual_host: short(&self.params.vhost),
            }
            .into(),
        );
        self.state = State::AwaitOpenOk;
        Ok(())
    }

    fn channel_state(&mut self, channel: u16) -> Result<&mut ChannelState, ConnectionError> {
        if self.channels.contains(channel) {
            return Ok(self.channels.get_mut(channel).expect("checked"));
        }
        Err(self.violation(
            ReplyCode::CHANNEL_ERROR,
            format!("frame on unopened channel {channel}"),
        ))
    }

    fn handle_channel_method(
        &mut self,
        channel: u16,
        method: Method,
    ) -> Result<(), ConnectionError> {
        if self.state != State::Open {
            if matches!(self.state, State::Closing | State::Closed) {
                return Ok(());
            }
            return Err(self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!("{} before open-ok", method.name()),
            ));
        }
        if method.class_id() == connection::CLASS_ID {
            return Err(self.violation(
                ReplyCode::COMMAND_INVALID,
                format!("{} on channel {channel}", method.name()),
            ));
        }
        if !method.info().server_sends {
            return Err(self.violation(
                ReplyCode::COMMAND_INVALID,
                format!("{} is never sent by a server", method.name()),
            ));
        }
        let state = self.channel_state(channel)?;
        match (state.leftovers, &method) {
            (Leftovers::None, _) => {}
            (Leftovers::AfterClose, _) => return Ok(()),
            (Leftovers::UntilOpenOk, Method::ChannelOpenOk(_)) => state.leftovers = Leftovers::None,
            (Leftovers::UntilOpenOk, Method::ChannelClose(_)) => {}
            (Leftovers::UntilOpenOk, _) => return Ok(()),
        }
        if let Some(cause) = state.closing.clone() {
            // spec (channel.close): "After sending this method, any received methods except Close and
            // Close-OK MUST be discarded."
            match method {
                Method::ChannelClose(close) => {
                    state.server_close = Some(close);
                    self.queue_method(channel, &channel::CloseOk.into());
                }
                Method::ChannelCloseOk(_) => {
                    let cause = match state.server_close.take() {
                        // The broker's close crossed ours: it answered ours with close-ok while
                        // closing, and keeps sending until it reads our close-ok to its close.
                        Some(close) => {
                            state.closing = None;
                            state.content = None;
                            state.leftovers = Leftovers::AfterClose;
                            ChannelCloseCause::Server(close)
                        }
                        None => {
                            self.channels.remove(channel);
                            cause
                        }
                    };
                    self.events
                        .push_back(Event::ChannelClosed { channel, cause });
                }
                _ => {}
            }
            return Ok(());
        }
        if state.content.is_some() {
            return Err(self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!(
                    "{} while content was expected on channel {channel}",
                    method.name()
                ),
            ));
        }
        match method {
            Method::ChannelClose(close) => {
                // Kept, to drop what the broker still has on the wire for this incarnation.
                state.leftovers = Leftovers::AfterClose;
                state.content = None;
                self.queue_method(channel, &channel::CloseOk.into());
                self.events.push_back(Event::ChannelClosed {
                    channel,
                    cause: ChannelCloseCause::Server(close),
                });
            }
            Method::ChannelFlow(flow) => {
                self.queue_method(
                    channel,
                    &channel::FlowOk {
                        active: flow.active,
                    }
                    .into(),
                );
                self.events.push_back(Event::Method {
                    channel,
                    method: flow.into(),
                });
            }
            m if m.info().content => state.content = Some(PartialContent::new(m)),
            method => self.events.push_back(Event::Method { channel, method }),
        }
        Ok(())
    }

    fn handle_header(
        &mut self,
        channel: u16,
        header: ContentHeader,
    ) -> Result<(), ConnectionError> {
        self.check_open_for_content(channel)?;
        if self.state != State::Open {
            return Ok(());
        }
        let max = self.params.max_message_size;
        let state = self.channel_state(channel)?;
        if state.closing.is_some() || state.leftovers != Leftovers::None {
            return Ok(());
        }
        let Some(partial) = state.content.as_mut() else {
            return Err(self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!("content header without a method on channel {channel}"),
            ));
        };
        let result = partial.header(header, max);
        self.after_content(channel, result)
    }

    fn handle_body(&mut self, channel: u16, payload: Bytes) -> Result<(), ConnectionError> {
        self.check_open_for_content(channel)?;
        if self.state != State::Open {
            return Ok(());
        }
        let state = self.channel_state(channel)?;
        if state.closing.is_some() || state.leftovers != Leftovers::None {
            return Ok(());
        }
        let Some(partial) = state.content.as_mut() else {
            return Err(self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!("content body without a method on channel {channel}"),
            ));
        };
        let result = partial.body(payload);
        self.after_content(channel, result)
    }

    /// Content before open-ok is as unexpected as a channel method then; after our close it is discarded.
    fn check_open_for_content(&mut self, channel: u16) -> Result<(), ConnectionError> {
        match self.state {
            State::AwaitStart | State::AwaitTune | State::AwaitOpenOk => Err(self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!("content frame on channel {channel} before open-ok"),
            )),
            State::Open | State::Closing | State::Closed => Ok(()),
        }
    }

    fn after_content(
        &mut self,
        channel: u16,
        result: Result<bool, ContentError>,
    ) -> Result<(), ConnectionError> {
        let error = match result {
            Ok(false) => return Ok(()),
            Ok(true) => {
                let partial = self
                    .channels
                    .get_mut(channel)
                    .and_then(|s| s.content.take());
                if let Some(partial) = partial {
                    let content = partial.finish();
                    self.events.push_back(Event::Content { channel, content });
                }
                return Ok(());
            }
            Err(error) => error,
        };
        // Whatever was collected is dropped with the error.
        if let Some(state) = self.channels.get_mut(channel) {
            state.content = None;
        }
        match error {
            ContentError::TooLarge { declared, max } => {
                // Our own limit, not a protocol violation: close only this channel (311 is a soft error).
                let text =
                    format!("message of {declared} bytes exceeds the client's limit of {max}");
                self.close_channel(channel, ReplyCode::CONTENT_TOO_LARGE, &text);
                self.events.push_back(Event::ChannelClosing {
                    channel,
                    cause: ChannelCloseCause::Client {
                        code: ReplyCode::CONTENT_TOO_LARGE,
                        text,
                    },
                });
                Ok(())
            }
            e => Err(self.violation(
                ReplyCode::UNEXPECTED_FRAME,
                format!("{e:?} on channel {channel}"),
            )),
        }
    }
}

/// The frame size used when frame-max 0 ("no limit") was negotiated: the split size for outbound bodies and
/// the floor of the inbound cap. RabbitMQ's default frame-max.
const NO_LIMIT_FRAME_SIZE: u32 = 128 * 1024;

/// A short string from text we generate or the user configured, truncated at a char boundary if longer
/// than 255 bytes (reply texts and locales are informational).
fn short(text: &str) -> ShortStr {
    let mut end = text.len().min(ShortStr::MAX_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ShortStr::new(&text[..end]).unwrap_or_default()
}
