//! The connection driver: the one task that owns the socket.
//!
//! It reads into one buffer and feeds [`proto::Connection`], routes the events to the waiters it keeps
//! (RPC replies, confirms, consumers), takes commands from handles over a bounded queue, and writes
//! everything queued in as few syscalls as it can (the write buffer is swapped, not copied, out of the
//! state machine). It never runs user code and never waits on a user: a full consumer queue pauses reading
//! from the socket (TCP backpressure) while commands, writes and heartbeats carry on.
//!
//! It is spawned inside [`WakeGated`](super::wake_gate::WakeGated): a handle that wakes it while it is being
//! polled gets another pass of its loop at once, not a trip through the runtime's scheduler.

use std::{
    collections::VecDeque,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use bytes::{BufMut, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot},
    time::Instant,
};
use tracing::{debug, trace, warn};

use crate::{
    client::{Confirmation, DeliveryAcker, GetMessage, InboundDelivery, ReturnedMessage},
    codec::ShortStr,
    error::{CloseReason, Error},
    frame::{PropertyList, PublishHead},
    io::{
        ack_coalescer::AckCoalescer,
        ack_queue::{may_hold_acks, Settlement},
        command::{
            smaller_limit, ChannelShared, Command, ConfirmWaiter, ConnectionShared, ConsumerSink,
            OpenedChannel, Publish, RpcReply,
        },
        consumer_map::ConsumerMap,
        delivery_queue::{DeliveryHandle, DeliverySender, Pushed},
        repeated_warning::{BrokerWarnings, RepeatedWarning},
    },
    proto::{
        self, ByteQueue, ChannelCloseCause, ChannelIds, ChannelMap, ConfirmTracker, Connection,
        ConnectionError, Content, Event, ReadTarget, ReturnKey,
    },
    spec::{basic, channel, connection, BasicProperties, Method, ReplyCode},
};

/// How many commands the driver takes in one go before it turns to the socket again.
const COMMAND_BATCH: usize = 256;
/// Read buffer growth step at first: what an idle or small-message connection keeps.
const READ_CHUNK_MIN: usize = 64 * 1024;
/// The largest growth step. A read that fills the buffer doubles the step up to this: with large messages
/// (64 KiB frames from RabbitMQ arrive in pieces), a small step means a fresh allocation, its page faults
/// and a copy of the partial frame for nearly every message; `benches/compare` consume 64 KiB went from
/// about 52 to 37 µs of CPU per message with a 256 KiB step.
const READ_CHUNK_MAX: usize = 256 * 1024;
/// When a promised sweep is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// At a read: only once enough settlements have piled up ([`sweep_batch`]).
    AtRead,
    /// On the timer, at a close, or near the prefetch limit: whatever is queued.
    Now,
}

/// The most settlements a sweep at a read waits for.
const SWEEP_BATCH_MAX: usize = 64;

/// How long acks a sweep was promised may wait when no read comes first (tokio's timers tick in
/// milliseconds).
const SWEEP_DELAY: Duration = Duration::from_millis(1);
/// Reads in a row that use less than a quarter of the growth step before it is halved.
const SMALL_READS_TO_SHRINK: u32 = 64;
/// Above this many unwritten bytes (encoded, or bodies queued by reference) the driver stops taking
/// commands until the socket drains.
const MAX_PENDING_WRITE: usize = 4 * 1024 * 1024;
/// The most bytes the driver queues by itself in answer to what it reads (flow-ok, close-ok, rejects,
/// acks), net of what it writes meanwhile. A peer past this sends frames that need answers and does not
/// read them: the connection ends, rather than the answers growing without bound. (Reading on, instead
/// of pausing, keeps heartbeats working; a broker that legitimately stops reading, under a resource
/// alarm, needs few answers: its deliveries stop at the prefetch limits.)
const MAX_UNWRITTEN_ANSWERS: usize = 16 * 1024 * 1024;
/// The most slices handed to one vectored write.
const MAX_IO_SLICES: usize = 64;

struct PendingRpc {
    /// A basic.get with no_ack: its message, if the caller is gone, was settled by the broker.
    get_no_ack: bool,
    method: Option<Method>,
    responses: &'static [(u16, u16)],
    reply: oneshot::Sender<Result<RpcReply, Error>>,
    consumer: Option<ConsumerSink>,
}

struct ChannelSlot {
    shared: Arc<ChannelShared>,
    rpcs: VecDeque<PendingRpc>,
    consumers: ConsumerMap<ConsumerSink>,
    confirms: Option<ConfirmTracker<ConfirmWaiter>>,
    /// basic.returns in confirm mode, each with the number of the publish it was matched to
    /// ([`ConfirmTracker::match_return`]), in that order, waiting for the ack that settles it. At most
    /// one per outstanding publish.
    returns: VecDeque<(u64, ReturnedMessage)>,
    close_waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    /// Which delivery tags are settled, for sending a run of acks as one.
    acks: AckCoalescer,
    /// The tag of the last delivery handed to a consumer that acks.
    last_delivered: u64,
    /// The driver promised this incarnation's ack queue a sweep
    /// ([`AckQueue::promise_sweep`](crate::io::ack_queue::AckQueue::promise_sweep)).
    sweep_promised: bool,
    /// The smallest prefetch limit any consumer of this incarnation started under (0: none).
    consumer_prefetch: u16,
    /// Listed in `Driver::fed` since the last dispatched read.
    fed: bool,
    /// Tags of `no_ack` consumers this client cancelled without waiting for cancel-ok (a dropped
    /// [`Consumer`](crate::Consumer), or a consume whose caller gave up): deliveries already on the way
    /// to them were settled by the broker when it sent them, so they are dropped, not rejected (a reject
    /// of a tag the broker does not hold is a 406 that closes the channel). The most recent
    /// [`CANCELLED_NO_ACK_KEPT`]; after cancel-ok, or once the broker has processed the cancel, none
    /// can come.
    cancelled_no_ack: VecDeque<ShortStr>,
    /// How many of this incarnation's channel commands the driver has handled: its
    /// [`AckQueue`](crate::io::ack_queue::AckQueue) is taken only when this has caught up with the
    /// commands queued (see there).
    commands_handled: u64,
}

/// How many cancelled `no_ack` consumer tags a channel remembers (see `ChannelSlot::cancelled_no_ack`).
const CANCELLED_NO_ACK_KEPT: usize = 64;

impl ChannelSlot {
    /// Remembers a `no_ack` consumer cancelled without a cancel-ok to wait for.
    fn cancelled_without_ok(&mut self, tag: ShortStr, no_ack: bool) {
        if !no_ack {
            return;
        }
        if self.cancelled_no_ack.len() == CANCELLED_NO_ACK_KEPT {
            self.cancelled_no_ack.pop_front();
        }
        self.cancelled_no_ack.push_back(tag);
    }

    /// Remembers a delivery handed to a consumer that acks, for [`Driver::promise_sweeps`].
    fn note_delivered(&mut self, tag: u64, channel: u16, fed: &mut Vec<u16>) {
        self.last_delivered = tag;
        if !self.fed {
            self.fed = true;
            fed.push(channel);
        }
    }

    /// Remembers the limit a new consumer started under; the smallest one bounds holding acks.
    fn note_consumer_limit(&mut self, sink: &ConsumerSink) {
        if sink.prefetch != 0
            && (self.consumer_prefetch == 0 || sink.prefetch < self.consumer_prefetch)
        {
            self.consumer_prefetch = sink.prefetch;
        }
    }
}

/// A `connection.update-secret` a handle asked for: waiting behind the one in flight (`update` still
/// `Some`), or sent and waiting for its update-secret-ok (`None`).
struct PendingSecretUpdate {
    update: Option<connection::UpdateSecret>,
    reply: oneshot::Sender<Result<(), Error>>,
}

/// A delivery the driver could not hand over because the consumer's queue was full.
struct Parked {
    /// A clone of the consumer's sender: a consumer cancelled meanwhile still gets the delivery, before
    /// its queue ends.
    queue: DeliverySender,
    delivery: InboundDelivery,
}

pub(crate) struct Driver<R, W> {
    reader: R,
    writer: W,
    proto: proto::Connection,
    read_buf: BytesMut,
    write_buf: ByteQueue,
    commands: mpsc::Receiver<Command>,
    /// Our own sender, for the ackers handed out with deliveries (weak, so it never keeps us alive).
    command_tx: mpsc::WeakSender<Command>,
    shared: Arc<ConnectionShared>,
    channels: ChannelMap<ChannelSlot>,
    ids: ChannelIds,
    next_generation: u64,
    confirm_window: usize,
    parked: Option<Parked>,
    /// Channels whose ack queues were promised a sweep, and when the promise falls due at the latest.
    sweeps: Vec<u16>,
    /// Channels whose acking consumers got deliveries since the last dispatched read.
    fed: Vec<u16>,
    sweep_deadline: Option<Instant>,
    /// Consumer queues pushed to since the last wake: woken once each when the events are dispatched.
    to_wake: Vec<DeliveryHandle>,
    close_waiters: Vec<oneshot::Sender<Result<(), Error>>>,
    /// The update-secrets asked for, in order; only the front one is ever on the wire.
    secret_updates: VecDeque<PendingSecretUpdate>,
    closing_deadline: Option<Instant>,
    /// When each channel.close the client sent (the driver's, or the state machine's 311) stops waiting
    /// for its close-ok, `close_timeout` after it was sent, with the channel's id and incarnation; in
    /// that order, as every wait is as long. An entry goes when its close-ok comes or its time is up.
    channel_close_deadlines: VecDeque<(Instant, u16, u64)>,
    /// What reads made the driver queue, less what it wrote since: see [`MAX_UNWRITTEN_ANSWERS`].
    unwritten_answers: usize,
    /// The last closed incarnation of each channel id, with why it closed: for the commands its
    /// handles queued before they saw the close. At most one entry per id.
    closed_channels: ChannelMap<(u64, Error)>,
    close_timeout: Duration,
    commands_closed: bool,
    /// The read buffer's current growth step, between `READ_CHUNK_MIN` and `READ_CHUNK_MAX`.
    read_chunk: usize,
    /// Reads in a row that used less than a quarter of `read_chunk`.
    small_reads: u32,
    /// Scratch space for settlements taken from a channel's ack queue (kept for its allocation).
    settlements: Vec<Settlement>,
    /// Bytes were written since the last flush. A TLS writer may accept bytes into its own buffer when
    /// the socket is full; flushing pushes them out even while nothing else is written or read.
    needs_flush: bool,
    /// How often each warning the broker can repeat at will has been given.
    warnings: BrokerWarnings,
}

/// A driver dropped before [`Driver::run`] ended the connection (its task panicked, was aborted, or
/// its runtime shut down) still ends it for the handles, as `run` would have: a reason is recorded,
/// every channel, consumer, confirm and waiting call ends with it, and `Connection::closed` waiters are
/// woken, so that nothing waits for a driver that is gone, and no consumer takes the end for a clean
/// cancel.
impl<R, W> Drop for Driver<R, W> {
    fn drop(&mut self) {
        if self.shared.is_ended() {
            return;
        }
        let _ = self.shared.error.set(Error::io(std::io::Error::other(
            "the connection's driver task stopped without closing the connection (it panicked, was \
             aborted, or its runtime shut down)",
        )));
        let error = self.shared.error();
        self.fail_handles(&error);
        while let Ok(cmd) = self.commands.try_recv() {
            fail_command(cmd, &error);
        }
        self.shared.end();
    }
}

impl<R, W> Driver<R, W> {
    /// Ends the connection for its handles with `error` (recorded as the reason unless one was):
    /// closes the command queue, closes every channel and fails what waits on it, answers the close
    /// and update-secret waiters. What is still in the command queue is the caller's to answer, and
    /// then to wake the `Connection::closed` waiters (`shared.end()`), last.
    fn fail_handles(&mut self, error: &Error) {
        let _ = self.shared.error.set(error.clone());
        self.commands.close();
        for (_, mut slot) in self.channels.drain() {
            slot.shared.close(error.clone());
            for w in slot.close_waiters.drain(..) {
                let _ = w.send(Ok(()));
            }
            fail_slot(&mut slot, error);
        }
        // No longer blocked, and publishers waiting for that wake to find their channels closed.
        self.shared.blocked.send_replace(None);
        for w in self.close_waiters.drain(..) {
            let result = match error {
                Error::ClosedByClient(_) => Ok(()),
                e => Err(e.clone()),
            };
            let _ = w.send(result);
        }
        for u in self.secret_updates.drain(..) {
            let _ = u.reply.send(Err(error.clone()));
        }
        // A delivery held back for a full consumer holds a clone of its queue's sender: the consumer
        // ends now, not when the driver is dropped.
        self.parked = None;
    }
}

impl<R, W> Driver<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        reader: R,
        writer: W,
        proto: proto::Connection,
        read_buf: BytesMut,
        commands: mpsc::Receiver<Command>,
        command_tx: mpsc::WeakSender<Command>,
        shared: Arc<ConnectionShared>,
        confirm_window: usize,
        close_timeout: Duration,
    ) -> Self {
        let channel_max = shared.tuned.channel_max;
        Driver {
            reader,
            writer,
            proto,
            read_buf,
            write_buf: ByteQueue::with_capacity(64 * 1024),
            commands,
            command_tx,
            shared,
            channels: ChannelMap::new(),
            ids: ChannelIds::new(channel_max),
            next_generation: 1,
            confirm_window,
            parked: None,
            to_wake: Vec::new(),
            sweeps: Vec::new(),
            fed: Vec::new(),
            sweep_deadline: None,
            close_waiters: Vec::new(),
            secret_updates: VecDeque::new(),
            closing_deadline: None,
            channel_close_deadlines: VecDeque::new(),
            unwritten_answers: 0,
            closed_channels: ChannelMap::new(),
            close_timeout,
            commands_closed: false,
            settlements: Vec::new(),
            read_chunk: READ_CHUNK_MIN,
            small_reads: 0,
            needs_flush: false,
            warnings: BrokerWarnings::default(),
        }
    }

    /// Runs until the connection ends, then fails every waiter with the reason.
    pub(crate) async fn run(mut self) {
        let result = self.run_loop().await;
        let error = match result {
            Ok(()) => Error::ClosedByClient("connection"),
            // Our own close went unanswered (no violation recorded an error first): the connection is
            // closed by the client all the same, which is what its handles and `closed()` must say
            // from now on; only the callers of `Connection::close` learn that no close-ok came.
            Err(timeout @ Error::Timeout { .. })
                if self.closing_deadline.is_some() && self.shared.error.get().is_none() =>
            {
                for w in self.close_waiters.drain(..) {
                    let _ = w.send(Err(timeout.clone()));
                }
                let _ = self.shared.unanswered_close.set(timeout);
                Error::ClosedByClient("connection")
            }
            Err(e) => e,
        };
        debug!(error = %error, "connection ended");
        // The waiters first: the goodbye can take up to close_timeout (waiting for the broker's
        // close-ok after a violation), and nothing it can bring changes their outcome.
        self.fail_all(error.clone()).await;
        self.finish(&error).await;
    }

    /// Counts what a read made the driver queue (the state machine's transmit buffer had `queued` bytes
    /// before it), and ends the connection once the answers the peer leaves unread pass
    /// [`MAX_UNWRITTEN_ANSWERS`].
    fn count_answers(&mut self, queued: usize) -> Result<(), Error> {
        let added = self.proto.transmit().len().saturating_sub(queued);
        self.unwritten_answers = self.unwritten_answers.saturating_add(added);
        if self.unwritten_answers > MAX_UNWRITTEN_ANSWERS {
            return Err(Error::io(std::io::Error::other(format!(
                "the broker sent frames needing {} bytes of answers without reading them",
                self.unwritten_answers
            ))));
        }
        Ok(())
    }

    /// Writes everything the driver and the state machine hold for the socket.
    async fn write_pending(&mut self) -> std::io::Result<()> {
        loop {
            if self.write_buf.is_empty() {
                std::mem::swap(&mut self.write_buf, self.proto.transmit());
            }
            if self.write_buf.is_empty() {
                return Ok(());
            }
            match write_or_flush(&mut self.writer, &self.write_buf).await? {
                Some(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Some(n) => self.write_buf.advance(n),
                None => {}
            }
        }
    }

    /// Says goodbye properly before the socket is dropped, within `close_timeout`: writes what the state
    /// machine queued last (our connection.close after a violation, or close-ok to the broker's close) and,
    /// after our own close, waits for the broker's close-ok.
    ///
    /// spec (connection.close): "the sender of Close ... MUST wait for Close-Ok" and the peer "MUST ... reply
    /// with Close-Ok"; an unanswered close is not allowed to block us past the timeout.
    async fn finish(&mut self, error: &Error) {
        // spec (4.2.7): a peer silent for two heartbeat intervals is dead, and the connection is
        // closed "without following the Connection.Close/Close-Ok handshaking": a dead peer may also
        // have stopped reading, and writing to it would only hold the waiters back.
        if matches!(error, Error::Io(_) | Error::MissedHeartbeats(_)) {
            return;
        }
        let wait_for_close_ok = matches!(error, Error::Protocol { .. }) && !self.proto.is_closed();
        let close_timeout = self.close_timeout;
        let goodbye = async {
            self.write_pending().await?;
            if wait_for_close_ok {
                // The state machine has consumed the frame that broke the protocol, or (if the driver
                // rejected a method) every frame of the read: what is buffered starts a frame, and the
                // broker's close-ok is found behind it. Unless the violation lost the frame boundary:
                // then nothing can be split into frames any more, and each read is decoded afresh in the
                // hope that the broker's close-ok, written after it read our close, starts one.
                if self.proto.lost_frame_boundary() {
                    self.read_buf.clear();
                }
                loop {
                    self.decode_while_closing();
                    if self.proto.is_closed() {
                        break;
                    }
                    if read_into(&mut self.reader, &mut self.read_buf, READ_CHUNK_MIN)
                        .await?
                        .0
                        == 0
                    {
                        break;
                    }
                }
                // spec (connection.close): "The response to receiving a Close after sending Close must
                // be to send Close-Ok": the broker's close crossed ours, and the state machine queued
                // the close-ok.
                self.write_pending().await?;
            }
            self.writer.shutdown().await
        };
        if let Err(e) = tokio::time::timeout(close_timeout, goodbye)
            .await
            .unwrap_or(Ok(()))
        {
            debug!(error = %e, "could not complete the close handshake");
        }
    }

    /// Decodes what is buffered after our connection.close, looking for the broker's close-ok (every
    /// other frame is dropped by the closing state machine). A frame it rejects is skipped; if the
    /// rejection lost the frame boundary, the buffer is dropped (see [`Driver::finish`]).
    fn decode_while_closing(&mut self) {
        loop {
            let before = self.read_buf.len();
            let rejected = self
                .proto
                .handle_input(&mut self.read_buf, std::time::Instant::now())
                .is_err();
            if !rejected || self.proto.is_closed() {
                return;
            }
            if self.proto.lost_frame_boundary() || self.read_buf.len() == before {
                self.read_buf.clear();
                return;
            }
        }
    }

    async fn run_loop(&mut self) -> Result<(), Error> {
        // What the handshake's last read held after open-ok: a broker with an alarm already in force may
        // send connection.blocked right behind open-ok, and then nothing until the alarm ends.
        self.dispatch_events()?;
        let sleep = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(sleep);
        loop {
            // The timer branch is polled last and could be starved by a busy command queue.
            if self.sweep_deadline.is_some_and(|d| d <= Instant::now()) {
                self.sweep_acks(Sweep::Now);
            }
            // A close that could not get into the full command queue (see `Connection::close`).
            if self.closing_deadline.is_none() && self.shared.close_requested.load(Ordering::SeqCst)
            {
                self.start_close(ReplyCode::REPLY_SUCCESS, "closed by client");
            }
            self.expire_channel_closes();
            self.close_dropped_channels();
            self.release_parked()?;
            if self.write_buf.is_empty() && !self.proto.transmit().is_empty() {
                std::mem::swap(&mut self.write_buf, self.proto.transmit());
            }
            if self.proto.is_closed() && self.write_buf.is_empty() {
                // Bounded: a TLS shutdown writes close_notify, which waits while the peer does not read.
                let _ = tokio::time::timeout(self.close_timeout, self.writer.shutdown()).await;
                return match self.shared.error.get() {
                    Some(e) => Err(e.clone()),
                    None => Ok(()),
                };
            }
            let deadline = [
                self.proto.poll_timeout(),
                self.closing_deadline.map(Instant::into_std),
                self.channel_close_deadlines
                    .front()
                    .map(|(at, ..)| at.into_std()),
                self.sweep_deadline.map(Instant::into_std),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some(d) = deadline {
                let d = Instant::from_std(d);
                if sleep.deadline() != d {
                    sleep.as_mut().reset(d);
                }
            }
            let take_commands = !self.commands_closed
                && self.write_buf.len() + self.proto.transmit().len() < MAX_PENDING_WRITE;
            let paused = self.parked.is_some();
            tokio::select! {
                biased;
                res = write_or_flush(&mut self.writer, &self.write_buf), if !self.write_buf.is_empty() || self.needs_flush => {
                    match res.map_err(Error::io)? {
                        Some(0) => return Err(Error::io(std::io::ErrorKind::WriteZero.into())),
                        Some(n) => {
                            self.write_buf.advance(n);
                            self.unwritten_answers = self.unwritten_answers.saturating_sub(n);
                            self.needs_flush = true;
                            self.proto.on_transmit(std::time::Instant::now());
                        }
                        None => self.needs_flush = false,
                    }
                }
                res = read_some(&mut self.reader, &mut self.read_buf, self.read_chunk, &mut self.proto), if !paused => {
                    let read = res.map_err(Error::io)?;
                    if matches!(read, Read::Buffer { n: 0, .. } | Read::Body(0)) {
                        return Err(Error::io(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "broker closed the socket without connection.close",
                        )));
                    }
                    match read {
                        Read::Body(n) => {
                            // Mid-frame: nothing to decode or dispatch until the frame's end arrives.
                            self.proto.handle_body_read(n, std::time::Instant::now());
                            continue;
                        }
                        // A read the state machine limited says nothing about how much is waiting.
                        Read::Buffer { limited: true, .. } => {}
                        Read::Buffer { n, filled, .. } => self.adapt_read_chunk(n, filled),
                    }
                    let queued = self.proto.transmit().len();
                    // Before this read's deliveries: the acks the consumers made since the last one.
                    self.sweep_acks(Sweep::AtRead);
                    let result = self.proto.handle_input(&mut self.read_buf, std::time::Instant::now());
                    let dispatched = self.dispatch_events();
                    // The state machine's error before the driver's: if both rejected frames of this
                    // read, the driver's came from an earlier frame, but the state machine had queued its
                    // connection.close first, and the connection's error is the close on the wire.
                    result.map_err(|e| self.connection_error(e))?;
                    dispatched?;
                    self.count_answers(queued)?;
                }
                room = room_for(&self.parked), if paused => {
                    let Parked { queue, delivery } = self.parked.take().expect("paused means parked");
                    let acker = delivery.acker();
                    let acked = (!acker.no_ack())
                        .then(|| (acker.channel_id(), acker.generation(), delivery.delivery_tag()));
                    let pushed = match room {
                        Ok(()) => queue.handle().push(delivery),
                        Err(()) => Pushed::Closed(delivery),
                    };
                    match pushed {
                        Pushed::Queued => {
                            self.to_wake.push(queue.handle().clone());
                            if let Some((channel, generation, tag)) = acked {
                                self.note_delivered(channel, generation, tag);
                            }
                        }
                        Pushed::Full(delivery) => self.parked = Some(Parked { queue, delivery }),
                        Pushed::Closed(delivery) => self.receiver_gone(delivery),
                    }
                    // Events decoded while paused are still queued in the state machine.
                    self.dispatch_events()?;
                }
                // Only while no commands are taken: otherwise a close comes through the queue, or its
                // flag is seen at the next pass.
                () = self.shared.close_notify.notified(), if !take_commands && self.closing_deadline.is_none() => {}
                cmd = self.commands.recv(), if take_commands => {
                    match cmd {
                        Some(cmd) => {
                            self.handle_command(cmd);
                            for _ in 1..COMMAND_BATCH {
                                match self.commands.try_recv() {
                                    Ok(cmd) => self.handle_command(cmd),
                                    Err(_) => break,
                                }
                            }
                        }
                        None => {
                            // Every handle is gone: close cleanly.
                            self.commands_closed = true;
                            self.start_close(ReplyCode::REPLY_SUCCESS, "all handles dropped");
                        }
                    }
                }
                () = &mut sleep, if deadline.is_some() => {
                    let now = Instant::now();
                    if self.sweep_deadline.is_some_and(|d| d <= now) {
                        self.sweep_acks(Sweep::Now);
                    }
                    if self.closing_deadline.is_some_and(|d| d <= now) {
                        return Err(Error::Timeout { what: "connection.close-ok", after: self.close_timeout });
                    }
                    if let Err(e) = self.proto.handle_timeout(now.into_std(), paused) {
                        return Err(self.connection_error(e));
                    }
                }
            }
        }
    }

    /// Doubles the read buffer's growth step after a read that filled the buffer; halves it again after
    /// `SMALL_READS_TO_SHRINK` reads in a row that used less than a quarter of it, so a connection whose
    /// burst of large messages is over goes back to pinning small buffers.
    fn adapt_read_chunk(&mut self, n: usize, filled: bool) {
        if filled {
            self.read_chunk = (self.read_chunk * 2).min(READ_CHUNK_MAX);
            self.small_reads = 0;
        } else if n < self.read_chunk / 4 && self.read_chunk > READ_CHUNK_MIN {
            self.small_reads += 1;
            if self.small_reads >= SMALL_READS_TO_SHRINK {
                self.read_chunk = (self.read_chunk / 2).max(READ_CHUNK_MIN);
                self.small_reads = 0;
            }
        } else {
            self.small_reads = 0;
        }
    }

    fn connection_error(&mut self, e: ConnectionError) -> Error {
        let error = match e {
            ConnectionError::Violation { code, text } => {
                warn!(%code, %text, "closing connection: protocol violation by the broker");
                Error::Protocol { code, text }
            }
            ConnectionError::ServerClosed(close) => {
                let reason = CloseReason::from(close);
                warn!(%reason, "connection closed by broker");
                Error::ConnectionClosed(reason)
            }
            ConnectionError::HeartbeatTimeout(after) => {
                warn!(?after, "missed heartbeats");
                Error::MissedHeartbeats(after)
            }
            ConnectionError::Handshake(text) => Error::Handshake(text),
        };
        let _ = self.shared.error.set(error.clone());
        error
    }

    /// A delivery held back for a full consumer stops the reads, and with them the close-ok of a close
    /// under way. Once its connection or its channel is closing (or its channel has closed), nobody can
    /// settle it: the broker requeues what was not acked when the channel closes, and a `no_ack`
    /// delivery the consumer had not taken is gone with the close. So it is dropped, and so is each
    /// later one the same way, and reading goes on.
    ///
    /// A delivery held back for a consumer that is being cancelled (see [`requeues_when_full`]) is
    /// requeued, and reading goes on too.
    fn release_parked(&mut self) -> Result<(), Error> {
        while let Some(parked) = &self.parked {
            let acker = parked.delivery.acker();
            let channel = acker.channel_id();
            let slot = self
                .channels
                .get_mut(channel)
                .filter(|slot| slot.shared.generation == acker.generation());
            let usable = self.proto.channel_is_usable(channel);
            match slot {
                Some(slot) if self.closing_deadline.is_none() && usable => {
                    let cancelling = slot
                        .consumers
                        .get(parked.delivery.consumer_tag())
                        .is_some_and(requeues_when_full);
                    if !cancelling {
                        return Ok(());
                    }
                    let tag = parked.delivery.delivery_tag();
                    debug!(
                        channel,
                        tag, "consumer being cancelled is full; held-back delivery requeued"
                    );
                    requeue(&mut self.proto, slot, channel, tag);
                }
                _ => debug!(
                    channel,
                    "closing: a delivery held back for a full consumer is dropped"
                ),
            }
            self.parked = None;
            // Events decoded while paused are still queued in the state machine.
            self.dispatch_events()?;
        }
        Ok(())
    }

    /// Closes the channels whose last handle was dropped while the command queue had no room for the
    /// close (`ChannelShared::close_on_drop`), each once the driver has handled every command it queued
    /// before the drop: those go first (P11), and so do the acks it made (they ride a promised sweep or
    /// wait in its ack queue), as they would ahead of a queued close.
    fn close_dropped_channels(&mut self) {
        // A load first: this runs at every pass, and a swap would write the shared line each time.
        let requested = &self.shared.channel_closes_requested;
        if !requested.load(Ordering::SeqCst) || !requested.swap(false, Ordering::SeqCst) {
            return;
        }
        let dropped: Vec<(u16, u64)> = self
            .channels
            .iter()
            .filter(|(_, slot)| slot.shared.close_on_drop.load(Ordering::SeqCst))
            .map(|(id, slot)| (id, slot.shared.generation))
            .collect();
        let mut again = false;
        let mut settlements = std::mem::take(&mut self.settlements);
        for (channel, generation) in dropped {
            let usable = self.proto.channel_is_usable(channel) && self.closing_deadline.is_none();
            let Some(slot) = self.channels.get_mut(channel) else {
                continue;
            };
            if !slot
                .shared
                .acks
                .take_if_all_handled(slot.commands_handled, &mut settlements)
            {
                // Some of what it queued before the drop is still in the command queue.
                again = true;
                continue;
            }
            slot.sweep_promised = false;
            slot.shared.close_on_drop.store(false, Ordering::SeqCst);
            if usable {
                debug!(
                    channel,
                    "closing a channel dropped while the command queue was full"
                );
                self.send_settlements(channel, &mut settlements);
                self.close_channel(channel, generation);
            }
            settlements.clear();
        }
        self.settlements = settlements;
        if again {
            self.shared
                .channel_closes_requested
                .store(true, Ordering::SeqCst);
        }
    }

    /// Sends channel.close (200) for the client, and starts its wait for close-ok.
    fn close_channel(&mut self, channel: u16, generation: u64) {
        self.proto
            .close_channel(channel, ReplyCode::REPLY_SUCCESS, "closed by client");
        self.channel_close_deadlines.push_back((
            Instant::now() + self.close_timeout,
            channel,
            generation,
        ));
    }

    /// A channel whose close-ok did not come within `close_timeout` of its channel.close has ended for
    /// its handles all the same: its waiters (the close's, pending RPCs and confirms, consumers) fail
    /// with the timeout and it reports itself closed. Its id stays taken until the close-ok comes (or
    /// the connection ends): the broker may still hold the channel, and reusing the id before the
    /// close-ok would be a channel error (spec, channel.close: the peer must not send anything else on
    /// the channel until close-ok).
    fn expire_channel_closes(&mut self) {
        let Some(&(first, ..)) = self.channel_close_deadlines.front() else {
            return;
        };
        let now = Instant::now();
        if first > now {
            return;
        }
        while let Some(&(at, channel, generation)) = self.channel_close_deadlines.front() {
            if at > now {
                break;
            }
            self.channel_close_deadlines.pop_front();
            let Some(slot) = self.channels.get_mut(channel) else {
                continue;
            };
            if slot.shared.generation != generation || slot.shared.is_closed() {
                continue;
            }
            warn!(channel, "no channel.close-ok within close_timeout; the channel's handles end, its id stays taken");
            let error = Error::Timeout {
                what: "channel.close-ok",
                after: self.close_timeout,
            };
            slot.shared.close(error.clone());
            for w in slot.close_waiters.drain(..) {
                let _ = w.send(Err(error.clone()));
            }
            fail_slot(slot, &error);
        }
    }

    fn start_close(&mut self, code: ReplyCode, text: &str) {
        if self.closing_deadline.is_none() {
            // Acks made before the close go out before it. Those made behind a command still queued
            // (behind the close, then, and dropped with it) are not ready and stay.
            self.sweep_acks(Sweep::Now);
            self.proto.close(code, text);
            self.closing_deadline = Some(Instant::now() + self.close_timeout);
        }
    }

    fn handle_command(&mut self, cmd: Command) {
        // Publishes count themselves where their channel is looked up anyway.
        if !matches!(cmd, Command::Publish(_)) {
            self.count_handled(&cmd);
        }
        let closing = self.closing_deadline.is_some();
        match cmd {
            Command::OpenChannel { reply } => {
                if closing {
                    let _ = reply.send(Err(self.shared.error()));
                    return;
                }
                if reply.is_closed() {
                    // The caller gave up before its request got here: open nothing.
                    return;
                }
                let Some(id) = self.ids.allocate() else {
                    let _ =
                        reply.send(Err(Error::ChannelsExhausted(self.shared.tuned.channel_max)));
                    return;
                };
                let generation = self.next_generation;
                self.next_generation += 1;
                let shared = Arc::new(ChannelShared::new(
                    id,
                    generation,
                    self.confirm_window,
                    self.command_tx.clone(),
                    self.shared.rpc_timeout,
                ));
                debug!(channel = id, "opening channel");
                self.proto.open_channel(id);
                // The open-ok is routed like any RPC reply; the waiter converts it.
                let mut slot = ChannelSlot {
                    shared: shared.clone(),
                    rpcs: VecDeque::new(),
                    consumers: ConsumerMap::new(),
                    confirms: None,
                    returns: VecDeque::new(),
                    close_waiters: Vec::new(),
                    acks: AckCoalescer::default(),
                    last_delivered: 0,
                    sweep_promised: false,
                    consumer_prefetch: 0,
                    commands_handled: 0,
                    fed: false,
                    cancelled_no_ack: VecDeque::new(),
                };
                slot.rpcs.push_back(PendingRpc {
                    get_no_ack: false,
                    method: None,
                    responses: crate::spec::method_info(
                        channel::Open::CLASS_ID,
                        channel::Open::METHOD_ID,
                    )
                    .map_or(&[], |i| i.responses),
                    reply,
                    consumer: None,
                });
                self.channels.insert(id, slot);
            }
            Command::Rpc {
                channel,
                generation,
                method,
                reply,
                consumer,
            } => {
                let slot = match self.usable_slot(channel) {
                    Some(slot) if slot.shared.generation == generation => slot,
                    _ => {
                        let _ = reply.send(Err(self.channel_error(channel, generation)));
                        return;
                    }
                };
                track_direct_settlement(&mut slot.acks, &method);
                let responses = method.info().responses;
                // Waiting RPCs whose callers gave up are dropped now rather than when the one in flight
                // is answered: a broker that never answers it must not make a retrying caller's
                // attempts, arguments tables and all, pile up here.
                slot.rpcs
                    .retain(|rpc| rpc.method.is_none() || !rpc.reply.is_closed());
                let idle = slot.rpcs.is_empty();
                slot.rpcs.push_back(PendingRpc {
                    get_no_ack: matches!(&method, Method::BasicGet(get) if get.no_ack),
                    method: Some(method),
                    responses,
                    reply,
                    consumer,
                });
                if idle {
                    self.send_next_rpc(channel);
                }
            }
            Command::Send {
                channel,
                generation,
                method,
                consumer,
            } => {
                let Some(slot) = self.usable_slot(channel) else {
                    return;
                };
                if slot.shared.generation != generation {
                    debug!(
                        channel,
                        method = method.name(),
                        "dropping a method for a closed channel incarnation"
                    );
                    return;
                }
                track_direct_settlement(&mut slot.acks, &method);
                match (consumer, &method) {
                    (Some(sink), Method::BasicConsume(consume)) => {
                        let _ = sink.shared.tag.set(consume.consumer_tag.clone());
                        slot.note_consumer_limit(&sink);
                        slot.consumers.insert(consume.consumer_tag.clone(), sink);
                    }
                    (_, Method::BasicCancel(cancel)) => {
                        if let Some(sink) = slot.consumers.remove(&cancel.consumer_tag) {
                            let _ = sink.shared.ended.set(Error::ClosedByClient("consumer"));
                            slot.cancelled_without_ok(cancel.consumer_tag.clone(), sink.no_ack);
                        }
                    }
                    _ => {}
                }
                trace!(channel, method = method.name(), "send");
                self.proto.send_method(channel, &method);
            }
            Command::Publish(publish) => self.publish(publish),
            Command::FlushAcks {
                channel,
                generation,
            } => {
                let mut settlements = std::mem::take(&mut self.settlements);
                let usable =
                    self.proto.channel_is_usable(channel) && self.closing_deadline.is_none();
                // Taken even when the channel is closing (and then dropped: the broker requeues those
                // deliveries), so the queue never stays marked as flushed with nothing on the way.
                if let Some(slot) = self.channels.get_mut(channel) {
                    if slot.shared.generation == generation {
                        slot.shared
                            .acks
                            .take_for_flush(slot.commands_handled, &mut settlements);
                    }
                }
                if usable {
                    self.send_settlements(channel, &mut settlements);
                }
                settlements.clear();
                self.settlements = settlements;
            }
            Command::Settle {
                channel,
                generation,
                mut settlements,
            } => {
                if self
                    .usable_slot(channel)
                    .is_some_and(|slot| slot.shared.generation == generation)
                {
                    self.send_settlements(channel, &mut settlements);
                }
            }
            Command::CloseChannel {
                channel,
                generation,
                reply,
            } => {
                let usable = self.proto.channel_is_usable(channel);
                match self.channels.get_mut(channel) {
                    Some(slot) if slot.shared.generation == generation => {
                        if let Some(reply) = reply {
                            slot.close_waiters.push(reply);
                        }
                        if usable {
                            self.close_channel(channel, generation);
                        }
                    }
                    _ => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
            }
            Command::Close { reply } => {
                if let Some(reply) = reply {
                    self.close_waiters.push(reply);
                }
                self.start_close(ReplyCode::REPLY_SUCCESS, "closed by client");
            }
            Command::UpdateSecret { update, reply } => {
                if closing {
                    let _ = reply.send(Err(self.shared.error()));
                    return;
                }
                // As for a channel's RPCs: callers that gave up while waiting leave nothing behind.
                self.secret_updates
                    .retain(|u| u.update.is_none() || !u.reply.is_closed());
                let idle = self.secret_updates.is_empty();
                self.secret_updates.push_back(PendingSecretUpdate {
                    update: Some(update),
                    reply,
                });
                if idle {
                    self.send_next_secret_update();
                }
            }
        }
    }

    /// Sends the first waiting update-secret, unless one is in flight.
    ///
    /// spec (update-secret, RabbitMQ's extension): a synchronous method, answered by update-secret-ok,
    /// which names no request: one at a time, so that each answer belongs to the one in flight.
    fn send_next_secret_update(&mut self) {
        while let Some(front) = self.secret_updates.front_mut() {
            let Some(update) = front.update.take() else {
                return;
            };
            if !front.reply.is_closed() && self.proto.update_secret(update) {
                return;
            }
            // Its caller gave up, or the connection is closing (it fails with the close's error).
            let pending = self.secret_updates.pop_front().expect("front");
            let _ = pending.reply.send(Err(self.shared.error()));
        }
    }

    /// An update-secret-ok: answers the update-secret in flight, and sends the next.
    fn secret_update_ok(&mut self, method: Method) -> Result<(), Error> {
        let in_flight = self
            .secret_updates
            .front()
            .is_some_and(|u| u.update.is_none());
        if !in_flight {
            let text = format!("unexpected {} on channel 0", method.name());
            return Err(close_for_violation(
                &mut self.proto,
                &self.shared,
                ReplyCode::COMMAND_INVALID,
                text,
            ));
        }
        let done = self.secret_updates.pop_front().expect("in flight");
        let _ = done.reply.send(Ok(()));
        self.send_next_secret_update();
        Ok(())
    }

    /// Keeps the sweeps promised to ack queues: takes and sends what is ready (see
    /// [`AckQueue`](crate::io::ack_queue::AckQueue)) and retires the promises; later acks of those
    /// channels send their own flush command until a delivery renews the promise.
    ///
    /// `Sweep::AtRead` leaves a promise standing while its queue holds fewer than [`sweep_batch`]
    /// settlements: sent with every read, acks cost a write (and on loopback, the broker's receive
    /// path) per read; the timer set with the promise still bounds how long they wait.
    fn sweep_acks(&mut self, when: Sweep) {
        let deadline = self.sweep_deadline.take();
        let mut channels = std::mem::take(&mut self.sweeps);
        channels.retain(|&channel| !self.sweep_channel(channel, when));
        if !channels.is_empty() {
            self.sweep_deadline = Some(deadline.unwrap_or_else(|| Instant::now() + SWEEP_DELAY));
        }
        self.sweeps = channels;
    }

    /// Keeps the sweep promised to `channel`'s ack queue now, if one is outstanding; `false` if the
    /// promise stands (see [`Driver::sweep_acks`]).
    fn sweep_channel(&mut self, channel: u16, when: Sweep) -> bool {
        let usable = self.proto.channel_is_usable(channel) && self.closing_deadline.is_none();
        let Some(slot) = self.channels.get_mut(channel) else {
            return true;
        };
        if !slot.sweep_promised {
            return true;
        }
        let min_batch = match when {
            Sweep::AtRead if usable => sweep_batch(slot),
            _ => 0,
        };
        let mut settlements = std::mem::take(&mut self.settlements);
        if !slot
            .shared
            .acks
            .sweep(slot.commands_handled, min_batch, &mut settlements)
        {
            self.settlements = settlements;
            return false;
        }
        slot.sweep_promised = false;
        if usable {
            self.send_settlements(channel, &mut settlements);
        }
        settlements.clear();
        self.settlements = settlements;
        true
    }

    /// Encodes and empties `settlements` (taken from a live incarnation of `channel`); runs of in-order
    /// acks go out as one `multiple` ack ([`AckCoalescer`]).
    fn send_settlements(&mut self, channel: u16, settlements: &mut Vec<Settlement>) {
        let Some(slot) = self.channels.get_mut(channel) else {
            settlements.clear();
            return;
        };
        let proto = &mut self.proto;
        slot.acks.coalesce(settlements, |s| {
            trace!(channel, tag = s.tag, settle = ?s.settle, "send");
            proto.send_method(channel, &s.to_method());
        });
    }

    fn usable_slot(&mut self, channel: u16) -> Option<&mut ChannelSlot> {
        if !self.proto.channel_is_usable(channel) || self.closing_deadline.is_some() {
            return None;
        }
        self.channels.get_mut(channel)
    }

    /// Why a command of this incarnation of the channel cannot be done: the connection's end, the
    /// channel's own (while its slot stays, or as [`Driver::closed_channels`] remembers it), or else
    /// the client's close.
    fn channel_error(&self, channel: u16, generation: u64) -> Error {
        if self.closing_deadline.is_some() {
            return self.shared.error();
        }
        match self.channels.get(channel) {
            Some(slot) if slot.shared.generation == generation => slot.shared.error(),
            _ => match self.closed_channels.get(channel) {
                Some((closed, error)) if *closed == generation => error.clone(),
                _ => Error::ClosedByClient("channel"),
            },
        }
    }

    /// [`ChannelSlot::note_delivered`] for a delivery handed over after it was parked.
    fn note_delivered(&mut self, channel: u16, generation: u64, tag: u64) {
        if let Some(slot) = self.channels.get_mut(channel) {
            if slot.shared.generation == generation {
                slot.note_delivered(tag, channel, &mut self.fed);
            }
        }
    }

    /// Counts a channel command in its slot, as its [`AckQueue`](crate::io::ack_queue::AckQueue)
    /// counted it when it was queued.
    fn count_handled(&mut self, cmd: &Command) {
        if let Some((channel, generation)) = cmd.channel_command() {
            if let Some(slot) = self.channels.get_mut(channel) {
                if slot.shared.generation == generation {
                    slot.commands_handled += 1;
                }
            }
        }
    }

    fn publish(&mut self, p: Publish) {
        let usable = self.proto.channel_is_usable(p.channel) && self.closing_deadline.is_none();
        let slot = match self.channels.get_mut(p.channel) {
            Some(slot) if slot.shared.generation == p.generation => {
                slot.commands_handled += 1;
                if usable {
                    Some(slot)
                } else {
                    None
                }
            }
            _ => None,
        };
        let slot = match slot {
            Some(slot) => slot,
            None => {
                let error = self.channel_error(p.channel, p.generation);
                if let Some(waiter) = p.confirm {
                    let _ = waiter.reply.send(Err(error));
                }
                return;
            }
        };
        match (p.confirm, slot.confirms.as_mut()) {
            (Some(waiter), Some(tracker)) => {
                tracker.publish(waiter, return_key(&p.head));
            }
            (Some(waiter), None) => {
                let _ = waiter.reply.send(Ok(Confirmation::NotRequested));
            }
            // Made while the channel was not yet in confirm mode (the publisher looked before this
            // driver sent confirm.select) and sent after it: the broker numbers it all the same.
            (None, Some(tracker)) => {
                tracker.publish_unawaited(return_key(&p.head));
            }
            (None, None) => {}
        }
        self.proto.send_publish(p.channel, &p.head, &p.body);
    }

    fn send_next_rpc(&mut self, channel: u16) {
        // A reply decoded in the same read as the channel's (or the connection's) close is dispatched
        // after the state machine answered that close: nothing more may go out on the channel. The
        // RPC stays queued until the close fails it with the channel's or the connection's error.
        if !self.proto.channel_is_usable(channel) {
            return;
        }
        let Some(slot) = self.channels.get_mut(channel) else {
            return;
        };
        // Its caller gave up (its rpc_timeout ran out while earlier RPCs were answered, or it dropped the
        // future) before it was sent: not sending it keeps a retrying caller's abandoned attempts from
        // piling up behind a slow head, and keeps a consume nobody receives from ever starting.
        while slot
            .rpcs
            .front()
            .is_some_and(|head| head.method.is_some() && head.reply.is_closed())
        {
            if let Some(head) = slot.rpcs.pop_front() {
                debug!(
                    channel,
                    method = head.method.as_ref().map_or("", Method::name),
                    "not sending an rpc whose caller gave up"
                );
            }
        }
        let Some(head) = slot.rpcs.front_mut() else {
            return;
        };
        let Some(method) = head.method.take() else {
            return;
        };
        if let Method::ConfirmSelect(_) = method {
            // The broker numbers publishes from the first one after confirm.select, so start counting now.
            if slot.confirms.is_none() {
                slot.confirms = Some(ConfirmTracker::new());
            }
            slot.shared.confirm_mode.store(true, Ordering::Release);
        }
        if let Method::BasicCancel(cancel) = &method {
            // Its cancel-ok comes behind everything the broker sent the consumer before it read the
            // cancel; see `requeues_when_full`.
            if let Some(sink) = slot.consumers.get_mut(&cancel.consumer_tag) {
                sink.cancelling = true;
            }
        }
        if let Method::BasicQos(qos) = &method {
            // The broker applies it once it reads it, whether or not its caller waits for qos-ok: the
            // consumers started after it and the driver's ack holding must go by it from now on.
            // RabbitMQ: `global: false` sets the limit of each consumer started from now on, `global:
            // true` the limit shared by the channel's consumers; the two are kept apart.
            let limit = match qos.global {
                false => &slot.shared.prefetch,
                true => &slot.shared.global_prefetch,
            };
            limit.store(qos.prefetch_count, Ordering::Release);
        }
        trace!(channel, method = method.name(), "rpc");
        self.proto.send_method(channel, &method);
    }

    /// Routes the events decoded so far, until a full consumer queue parks a delivery; then wakes each
    /// consumer that was handed something, once.
    fn dispatch_events(&mut self) -> Result<(), Error> {
        let mut result = Ok(());
        while self.parked.is_none() {
            let Some(event) = self.proto.poll_event() else {
                break;
            };
            result = self.handle_event(event);
            if result.is_err() {
                break;
            }
        }
        for queue in self.to_wake.drain(..) {
            queue.wake_receiver();
        }
        self.promise_sweeps();
        result
    }

    /// Once per dispatched read, for each channel whose consumers got deliveries they ack: promises
    /// its ack queue a sweep while the broker can keep sending without the acks, and otherwise keeps
    /// an outstanding promise at once (deciding once per read, not per delivery, keeps a channel near
    /// the threshold from taking the ack queue's lock twice per delivery).
    fn promise_sweeps(&mut self) {
        let mut fed = std::mem::take(&mut self.fed);
        for &channel in &fed {
            let Some(slot) = self.channels.get_mut(channel) else {
                continue;
            };
            slot.fed = false;
            let can_wait = sweep_keeps_broker_sending(slot);
            if can_wait && !slot.sweep_promised {
                slot.sweep_promised = true;
                slot.shared.acks.promise_sweep(slot.commands_handled);
                // Still listed if a sweep near the prefetch limit retired its last promise.
                if !self.sweeps.contains(&channel) {
                    self.sweeps.push(channel);
                }
                self.sweep_deadline
                    .get_or_insert_with(|| Instant::now() + SWEEP_DELAY);
            } else if !can_wait && slot.sweep_promised {
                // Too close to the prefetch limit to hold acks back any longer.
                self.sweep_channel(channel, Sweep::Now);
            }
        }
        fed.clear();
        self.fed = fed;
    }

    fn handle_event(&mut self, event: Event) -> Result<(), Error> {
        match event {
            Event::Opened { .. } => {}
            Event::Closed => {
                for w in self.close_waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Event::Blocked(reason) => {
                warn!(%reason, "connection blocked by broker");
                self.shared.blocked.send_replace(Some(reason.to_string()));
            }
            Event::Unblocked => {
                debug!("connection unblocked");
                self.shared.blocked.send_replace(None);
            }
            Event::ChannelClosed { channel, cause } => self.channel_closed(channel, cause),
            Event::ChannelClosing { channel, cause } => self.channel_closing(channel, cause),
            Event::Method { channel, method } => self.handle_method(channel, method)?,
            Event::Content { channel, content } => self.handle_content(channel, content)?,
        }
        Ok(())
    }

    fn channel_closed(&mut self, channel: u16, cause: ChannelCloseCause) {
        self.ids.release(channel);
        let Some(mut slot) = self.channels.remove(channel) else {
            return;
        };
        let generation = slot.shared.generation;
        self.channel_close_deadlines
            .retain(|&(_, c, g)| (c, g) != (channel, generation));
        let error = close_error(channel, cause);
        slot.shared.close(error.clone());
        for w in slot.close_waiters.drain(..) {
            let _ = w.send(Ok(()));
        }
        fail_slot(&mut slot, &error);
        // Commands queued before the handles saw the close fail with its cause, not a generic one.
        self.closed_channels
            .insert(channel, (generation, slot.shared.error()));
    }

    /// The state machine closed a channel itself (311): its handles are done with it at once, and its
    /// close-ok is awaited as for the closes the driver sends.
    fn channel_closing(&mut self, channel: u16, cause: ChannelCloseCause) {
        let error = close_error(channel, cause);
        let Some(slot) = self.channels.get_mut(channel) else {
            return;
        };
        slot.shared.close(error.clone());
        fail_slot(slot, &error);
        let generation = slot.shared.generation;
        self.channel_close_deadlines.push_back((
            Instant::now() + self.close_timeout,
            channel,
            generation,
        ));
    }

    fn handle_method(&mut self, channel: u16, method: Method) -> Result<(), Error> {
        // The state machine answers every connection method but this one itself.
        if channel == 0 {
            return self.secret_update_ok(method);
        }
        let Some(slot) = self.channels.get_mut(channel) else {
            return Ok(());
        };
        match method {
            Method::BasicAck(ack) => {
                self.settle(channel, ack.delivery_tag, ack.multiple, true);
                return Ok(());
            }
            Method::BasicNack(nack) => {
                self.settle(channel, nack.delivery_tag, nack.multiple, false);
                return Ok(());
            }
            Method::BasicCancel(cancel) => {
                // consumer_cancel_notify: the queue went away (or the broker cancelled us for another reason).
                if let Some(sink) = slot.consumers.remove(&cancel.consumer_tag) {
                    warn!(channel, tag = %cancel.consumer_tag, "consumer cancelled by broker");
                    let _ = sink
                        .shared
                        .ended
                        .set(Error::ConsumerCancelled(cancel.consumer_tag.to_string()));
                }
                return Ok(());
            }
            Method::ChannelFlow(flow) => {
                debug!(channel, active = flow.active, "channel.flow");
                slot.shared.flow.send_replace(flow.active);
                return Ok(());
            }
            _ => {}
        }
        let id = (method.class_id(), method.method_id());
        let matches_head = slot
            .rpcs
            .front()
            .is_some_and(|head| head.method.is_none() && head.responses.contains(&id));
        if !matches_head {
            let text = format!("unexpected {} on channel {channel}", method.name());
            return Err(close_for_violation(
                &mut self.proto,
                &self.shared,
                ReplyCode::COMMAND_INVALID,
                text,
            ));
        }
        let head = slot.rpcs.pop_front().expect("matched");
        let reply = match method {
            Method::ChannelOpenOk(_) => {
                if head.reply.is_closed() {
                    // Nobody will hold a handle to close it (its caller timed out or dropped the
                    // future): close it now, or it keeps its id and the broker's channel until the
                    // connection ends. (A caller that leaves after this answer is sent is covered by
                    // `OpenedChannel`'s drop, which asks for the close through the command queue.)
                    debug!(channel, "closing a channel whose opener gave up");
                    let generation = slot.shared.generation;
                    self.close_channel(channel, generation);
                    return Ok(());
                }
                RpcReply::Channel(OpenedChannel::new(slot.shared.clone()))
            }
            Method::BasicConsumeOk(ok) => {
                if head.reply.is_closed() {
                    // Its caller gave up after the consume went out: nobody will receive or cancel it,
                    // so cancel it here, or the broker keeps sending it messages that are requeued
                    // (or, with no-ack, lost) for the channel's life. Deliveries already on the way
                    // find no consumer and are requeued (with no-ack, dropped: see `cancelled_no_ack`).
                    debug!(channel, tag = %ok.consumer_tag, "cancelling a consumer whose caller gave up");
                    if let Some(sink) = &head.consumer {
                        slot.cancelled_without_ok(ok.consumer_tag.clone(), sink.no_ack);
                    }
                    let cancel = basic::Cancel {
                        consumer_tag: ok.consumer_tag,
                        no_wait: true,
                    };
                    self.proto.send_method(channel, &cancel.into());
                    self.send_next_rpc(channel);
                    return Ok(());
                }
                if let Some(sink) = head.consumer {
                    let _ = sink.shared.tag.set(ok.consumer_tag.clone());
                    slot.note_consumer_limit(&sink);
                    slot.consumers.insert(ok.consumer_tag.clone(), sink);
                }
                RpcReply::Method(ok.into())
            }
            Method::BasicCancelOk(ok) => {
                if let Some(sink) = slot.consumers.remove(&ok.consumer_tag) {
                    let _ = sink.shared.ended.set(Error::ClosedByClient("consumer"));
                }
                RpcReply::Method(ok.into())
            }
            Method::BasicGetEmpty(_) => RpcReply::Get(None),
            other => RpcReply::Method(other),
        };
        let _ = head.reply.send(Ok(reply));
        self.send_next_rpc(channel);
        Ok(())
    }

    fn settle(&mut self, channel: u16, tag: u64, multiple: bool, ack: bool) {
        let Some(slot) = self.channels.get_mut(channel) else {
            return;
        };
        let Some(tracker) = slot.confirms.as_mut() else {
            if let Some(count) = self.warnings.confirm_outside_confirm_mode.occur() {
                warn!(
                    channel,
                    tag, count, "broker sent a confirm on a channel not in confirm mode; ignored"
                );
            }
            return;
        };
        let settled = match tracker.settle(tag, multiple) {
            Ok(s) => s,
            Err(tag) => {
                if let Some(count) = self.warnings.confirm_for_no_publish.occur() {
                    warn!(
                        channel,
                        tag, count, "broker confirmed a publish that was never made; ignored"
                    );
                }
                return;
            }
        };
        for (seq, waiter) in settled {
            // The returns are in publish order, and a multiple ack settles in publish order too, so the
            // one for this publish, if any, is usually first.
            let returned = match slot.returns.front() {
                Some((first, _)) if *first == seq => slot.returns.pop_front(),
                Some((first, _)) if *first < seq => slot
                    .returns
                    .binary_search_by_key(&seq, |(s, _)| *s)
                    .ok()
                    .and_then(|at| slot.returns.remove(at)),
                _ => None,
            }
            .map(|(_, message)| message);
            match (waiter, returned) {
                (Some(waiter), Some(message)) => {
                    let _ = waiter
                        .reply
                        .send(Ok(Confirmation::Returned(Box::new(message))));
                }
                (Some(waiter), None) => {
                    let outcome = if ack {
                        Confirmation::Ack
                    } else {
                        Confirmation::Nack
                    };
                    let _ = waiter.reply.send(Ok(outcome));
                }
                // A publish nobody awaits (made before the channel entered confirm mode): its return
                // goes where returns without confirms go.
                (None, Some(message)) => deliver_return(
                    &slot.shared,
                    channel,
                    message,
                    &mut self.warnings.return_dropped,
                ),
                (None, None) => {}
            }
        }
    }

    fn handle_content(&mut self, channel: u16, content: Content) -> Result<(), Error> {
        let Content {
            method,
            header,
            body,
        } = content;
        // A delivery's properties are built by its consumer; a return's or a get-ok's, which the
        // driver hands over itself, here.
        let mut built = match method {
            Method::BasicDeliver(_) => None,
            _ => Some(self.build_properties(&header.properties)?),
        };
        let Some(slot) = self.channels.get_mut(channel) else {
            return Ok(());
        };
        match method {
            Method::BasicDeliver(deliver) => {
                let Some(sink) = slot.consumers.get(&deliver.consumer_tag) else {
                    if slot.cancelled_no_ack.contains(&deliver.consumer_tag) {
                        // Settled by the broker on sending; its tag is a gap the ack prefix cannot cross.
                        debug!(channel, tag = %deliver.consumer_tag, "delivery for a cancelled no-ack consumer; dropped");
                        slot.acks.disable();
                        return Ok(());
                    }
                    if let Some(count) = self.warnings.delivery_for_unknown_consumer.occur() {
                        warn!(channel, tag = %deliver.consumer_tag, count, "delivery for an unknown consumer; requeued");
                    }
                    requeue(&mut self.proto, slot, channel, deliver.delivery_tag);
                    return Ok(());
                };
                if sink.no_ack {
                    // The broker settled it on sending: its tag is a gap the prefix cannot cross.
                    slot.acks.disable();
                }
                let tag = deliver.delivery_tag;
                let delivery = InboundDelivery::new(
                    deliver,
                    header.properties,
                    body,
                    DeliveryAcker::new(slot.shared.clone(), sink.no_ack),
                );
                let queue = sink.tx.handle();
                let acked_by_client = !sink.no_ack;
                match queue.push(delivery) {
                    Pushed::Queued => {
                        if !self.to_wake.last().is_some_and(|q| q.same_queue(queue)) {
                            self.to_wake.push(queue.clone());
                        }
                        if acked_by_client {
                            slot.note_delivered(tag, channel, &mut self.fed);
                        }
                    }
                    Pushed::Full(delivery) if requeues_when_full(sink) => {
                        debug!(
                            channel,
                            tag, "consumer being cancelled is full; delivery requeued"
                        );
                        drop(delivery);
                        requeue(&mut self.proto, slot, channel, tag);
                    }
                    Pushed::Full(delivery) => {
                        trace!(channel, "consumer queue full; pausing reads");
                        self.parked = Some(Parked {
                            queue: sink.tx.clone(),
                            delivery,
                        });
                    }
                    Pushed::Closed(delivery) => self.receiver_gone(delivery),
                }
            }
            Method::BasicReturn(ret) => {
                let message = ReturnedMessage {
                    reply_code: ret.reply_code,
                    reply_text: ret.reply_text.to_string(),
                    exchange: ret.exchange,
                    routing_key: ret.routing_key,
                    properties: built.take().expect("built for everything but deliveries"),
                    body,
                };
                // The publish's key hashes its properties as coney encoded them. The list received
                // with the return may differ in bytes alone (a list without properties is kept as no
                // bytes; a broker may relay unused flag bits or booleans other than 1): the built
                // properties, encoded again, are what the publisher's encoding of them was.
                let mut encoded = BytesMut::new();
                message.properties.encode(&mut encoded);
                let key = ReturnKey::of(
                    message.exchange.as_bytes(),
                    message.routing_key.as_bytes(),
                    header.body_size,
                    &encoded,
                );
                match slot.confirms.as_mut().and_then(|t| t.match_return(key)) {
                    // Resolves the publish's confirm when the broker acks it, right after.
                    Some(seq) => slot.returns.push_back((seq, message)),
                    // Not in confirm mode, or for no outstanding publish (one made before confirm mode,
                    // or a broker's mistake).
                    None => deliver_return(
                        &slot.shared,
                        channel,
                        message,
                        &mut self.warnings.return_dropped,
                    ),
                }
            }
            Method::BasicGetOk(ok) => {
                let is_get = slot.rpcs.front().is_some_and(|h| {
                    h.method.is_none()
                        && h.responses
                            .contains(&(basic::GetOk::CLASS_ID, basic::GetOk::METHOD_ID))
                });
                if !is_get {
                    let text = format!("unexpected basic.get-ok on channel {channel}");
                    return Err(close_for_violation(
                        &mut self.proto,
                        &self.shared,
                        ReplyCode::COMMAND_INVALID,
                        text,
                    ));
                }
                let head = slot.rpcs.pop_front().expect("checked");
                if head.reply.is_closed() {
                    // Its caller gave up after the get went out. Without no_ack the broker holds the
                    // message for this channel: give it back, or nobody gets it until the channel
                    // closes. (With no_ack it was the caller's, and is gone with it.)
                    if !head.get_no_ack {
                        debug!(
                            channel,
                            tag = ok.delivery_tag,
                            "requeueing a get whose caller gave up"
                        );
                        requeue(&mut self.proto, slot, channel, ok.delivery_tag);
                    }
                    self.send_next_rpc(channel);
                    return Ok(());
                }
                let message = GetMessage::new(
                    ok,
                    built.take().expect("built for everything but deliveries"),
                    body,
                    DeliveryAcker::new(slot.shared.clone(), false),
                );
                let _ = head.reply.send(Ok(RpcReply::Get(Some(message))));
                self.send_next_rpc(channel);
            }
            other => {
                if let Some(count) = self.warnings.unexpected_content.occur() {
                    warn!(
                        channel,
                        method = other.name(),
                        count,
                        "unexpected content; ignored"
                    );
                }
            }
        }
        Ok(())
    }

    /// Builds properties checked on receipt. Failing means checking and decoding disagree (a bug, see
    /// [`PropertyList::decode`]); the connection closes as it would have had the check caught it.
    fn build_properties(&mut self, list: &PropertyList) -> Result<Box<BasicProperties>, Error> {
        list.decode().map_err(|e| {
            close_for_violation(
                &mut self.proto,
                &self.shared,
                ReplyCode::SYNTAX_ERROR,
                format!("content header: {e}"),
            )
        })
    }

    /// A delivery whose consumer's receiver is gone. Normally a dropped [`Consumer`](crate::Consumer)
    /// has sent its cancel already, but a consume whose caller gave up between consume-ok and reading
    /// the reply has no `Consumer` to send one, and a dropped one's cancel is best effort (a full
    /// command queue drops it). So the consumer is cancelled here if it is still registered (RabbitMQ
    /// ignores a second cancel of the same tag), and then the delivery is handled as any whose consumer
    /// is gone.
    fn receiver_gone(&mut self, delivery: InboundDelivery) {
        let acker = delivery.acker();
        let channel = acker.channel_id();
        let usable = self.proto.channel_is_usable(channel) && self.closing_deadline.is_none();
        if let Some(slot) = self.channels.get_mut(channel) {
            if usable && slot.shared.generation == acker.generation() {
                let tag = delivery.consumer_tag();
                if let Some(sink) = slot.consumers.remove(tag) {
                    debug!(channel, %tag, "cancelling a consumer nobody receives from");
                    let _ = sink.shared.ended.set(Error::ClosedByClient("consumer"));
                    slot.cancelled_without_ok(tag.clone(), sink.no_ack);
                    let cancel = basic::Cancel {
                        consumer_tag: tag.clone(),
                        no_wait: true,
                    };
                    self.proto.send_method(channel, &cancel.into());
                }
            }
        }
        self.consumer_gone(delivery);
    }

    /// A delivery whose consumer was dropped: give it back to the queue unless it was auto-acked. Only on
    /// the incarnation it came on: its tag means nothing on a later one, and closing the earlier one
    /// requeued the message already.
    fn consumer_gone(&mut self, delivery: InboundDelivery) {
        let acker = delivery.acker();
        let channel = acker.channel_id();
        if acker.no_ack() || !self.proto.channel_is_usable(channel) {
            return;
        }
        let Some(slot) = self.channels.get_mut(channel) else {
            return;
        };
        if slot.shared.generation != acker.generation() {
            return;
        }
        requeue(&mut self.proto, slot, channel, delivery.delivery_tag());
    }

    async fn fail_all(&mut self, error: Error) {
        self.fail_handles(&error);
        // Commands that were queued before we closed the queue: answer them too, and those sent
        // through room reserved before it closed (tokio lets a reserved permit send after the close).
        // `recv` ends once the queue is empty and no permit is outstanding, which is at once: handles
        // send through a permit as soon as they have it, without awaiting anything in between.
        let close_timeout = self.close_timeout;
        let drain = async {
            while let Some(cmd) = self.commands.recv().await {
                fail_command(cmd, &error);
            }
        };
        let _ = tokio::time::timeout(close_timeout, drain).await;
        // Last: a `Connection::closed` waiter finds everything of the connection ended.
        self.shared.end();
    }
}

fn sweep_keeps_broker_sending(slot: &ChannelSlot) -> bool {
    let unsettled = slot
        .acks
        .settled_through()
        .map(|settled| slot.last_delivered.saturating_sub(settled));
    may_hold_acks(unsettled, prefetch_limit(slot))
}

/// Gives delivery `tag` back to its queue (`basic.reject` with `requeue`), for a delivery the driver
/// settles itself: nobody will see it. Its tag is a settlement the ack prefix must account for.
fn requeue(proto: &mut proto::Connection, slot: &mut ChannelSlot, channel: u16, tag: u64) {
    slot.acks.observe(tag, false);
    let reject = basic::Reject {
        delivery_tag: tag,
        requeue: true,
    };
    proto.send_method(channel, &reject.into());
}

/// Whether a delivery that finds `sink`'s queue full is requeued rather than held back.
///
/// A held-back delivery pauses the connection's reads, and a waiting basic.cancel's cancel-ok comes
/// behind everything the broker sent the consumer before it read the cancel: so a cancel of a consumer
/// that is behind waited until the application had read all of that (with no prefetch, or a broker
/// that ignores it, without bound), and then timed out. The Java client returns at cancel-ok. So
/// once that cancel is out, what its queue has no room for goes back to the broker with
/// `basic.reject(requeue)` (the deliveries it holds stay readable, as `basic_cancel` promises). A
/// `no_ack` delivery cannot be given back: it is held back as before, so cancelling a `no_ack`
/// consumer that is behind waits for its reader.
fn requeues_when_full(sink: &ConsumerSink) -> bool {
    sink.cancelling && !sink.no_ack
}

/// The prefetch limit the broker holds the channel's consumers to (0: none): the channel-wide limit
/// (which a later global basic.qos changes) and the smallest one a consumer started under both apply.
/// So does the per-consumer limit last sent: a consumer started while its basic.qos was still queued
/// (`join!`ed with it) recorded none, though the broker holds it to that one.
fn prefetch_limit(slot: &ChannelSlot) -> u16 {
    smaller_limit(
        smaller_limit(
            slot.shared.global_prefetch.load(Ordering::Acquire),
            slot.consumer_prefetch,
        ),
        slot.shared.prefetch.load(Ordering::Acquire),
    )
}

/// Starts closing the connection for the broker's protocol violation and records it as the connection's
/// error, which the returned error also is.
fn close_for_violation(
    proto: &mut proto::Connection,
    shared: &ConnectionShared,
    code: ReplyCode,
    text: String,
) -> Error {
    // Already closing: the state machine rejected a later frame of the same read (its close is the
    // one on the wire, and its error the connection's: the read loop reports it first), or our own
    // close was under way (this violation becomes the connection's error when the driver ends).
    let queued = proto.close(code, &text);
    let error = Error::Protocol { code, text };
    if queued {
        let _ = shared.error.set(error.clone());
    }
    error
}

/// How many settlements a sweep at a read waits for before it sends them (the timer or the prefetch
/// limit sends fewer): an eighth of the prefetch limit, at most [`SWEEP_BATCH_MAX`].
fn sweep_batch(slot: &ChannelSlot) -> usize {
    match usize::from(prefetch_limit(slot)) {
        0 => SWEEP_BATCH_MAX,
        limit => (limit / 8).min(SWEEP_BATCH_MAX),
    }
}

/// How a method sent as it is bears on merging later acks of its channel.
fn track_direct_settlement(acks: &mut AckCoalescer, method: &Method) {
    match method {
        Method::BasicAck(m) => acks.observe(m.delivery_tag, m.multiple),
        Method::BasicNack(m) => acks.observe(m.delivery_tag, m.multiple),
        Method::BasicReject(m) => acks.observe(m.delivery_tag, false),
        // Redelivered messages get new tags while the old ones are forgotten; a no-ack get's tag is
        // settled by the broker.
        Method::BasicRecover(_) | Method::BasicRecoverAsync(_) => acks.disable(),
        // spec (tx.rollback): "abandons all message publications and acknowledgements performed in the
        // current transaction": tags the prefix counts as settled are unsettled again, and a merged ack
        // would settle them.
        Method::TxRollback(_) => acks.disable(),
        Method::BasicGet(get) if get.no_ack => acks.disable(),
        _ => {}
    }
}

/// The error a channel's handles get for a close with `cause`.
fn close_error(channel: u16, cause: ChannelCloseCause) -> Error {
    match cause {
        ChannelCloseCause::Server(close) => {
            let reason = CloseReason::from(close);
            warn!(channel, %reason, "channel closed by broker");
            Error::ChannelClosed(reason)
        }
        ChannelCloseCause::Client { code, text } if code == ReplyCode::REPLY_SUCCESS => {
            debug!(channel, %text, "channel closed");
            Error::ClosedByClient("channel")
        }
        ChannelCloseCause::Client { code, text } => {
            warn!(channel, %code, %text, "channel closed by client after an error");
            Error::ChannelClosed(CloseReason {
                code,
                text,
                class_id: 0,
                method_id: 0,
            })
        }
    }
}

/// What a basic.return for this publish would be matched on; [`ReturnKey::NONE`] if it cannot be returned.
fn return_key(head: &PublishHead) -> ReturnKey {
    match head.returnable() {
        Some(r) => ReturnKey::of(r.exchange, r.routing_key, r.body_size, r.properties),
        None => ReturnKey::NONE,
    }
}

/// Hands a return to the channel's listener without ever waiting: a full or absent listener means the
/// return is logged and dropped (the publisher asked for no confirms, so nobody is owed an answer).
fn deliver_return(
    shared: &ChannelShared,
    channel: u16,
    message: ReturnedMessage,
    dropped: &mut RepeatedWarning,
) {
    let guard = shared.returns.lock().unwrap_or_else(|e| e.into_inner());
    let outcome = match guard.as_ref() {
        Some(tx) => tx.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(m) => ("listener full", m),
            mpsc::error::TrySendError::Closed(m) => ("listener dropped", m),
        }),
        None => Err(("no listener", message)),
    };
    if let Err((why, message)) = outcome {
        if let Some(count) = dropped.occur() {
            warn!(channel, code = %message.reply_code, why, count, "message returned by broker and dropped");
        }
    }
}

fn fail_slot(slot: &mut ChannelSlot, error: &Error) {
    for rpc in slot.rpcs.drain(..) {
        let _ = rpc.reply.send(Err(error.clone()));
    }
    for (_, sink) in slot.consumers.drain() {
        let _ = sink.shared.ended.set(error.clone());
    }
    if let Some(tracker) = slot.confirms.as_mut() {
        for (_, waiter) in tracker.drain() {
            let _ = waiter.reply.send(Err(error.clone()));
        }
    }
    slot.returns.clear();
}

fn fail_command(cmd: Command, error: &Error) {
    match cmd {
        Command::OpenChannel { reply } => {
            let _ = reply.send(Err(error.clone()));
        }
        Command::Rpc { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        Command::UpdateSecret { reply, .. } => {
            let _ = reply.send(Err(error.clone()));
        }
        Command::Publish(p) => {
            if let Some(w) = p.confirm {
                let _ = w.reply.send(Err(error.clone()));
            }
        }
        Command::CloseChannel {
            reply: Some(reply), ..
        }
        | Command::Close { reply: Some(reply) } => {
            let _ = reply.send(Ok(()));
        }
        _ => {}
    }
}

/// Writes from `out` (`Some(n)` bytes taken), vectored where the writer supports it, or, when it is empty,
/// flushes the writer (`None`).
async fn write_or_flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &ByteQueue,
) -> std::io::Result<Option<usize>> {
    if out.is_empty() {
        return writer.flush().await.map(|()| None);
    }
    if !writer.is_write_vectored() {
        return writer.write(out.chunk()).await.map(Some);
    }
    let mut slices = [std::io::IoSlice::new(&[]); MAX_IO_SLICES];
    let n = out.io_slices(&mut slices);
    writer.write_vectored(&slices[..n]).await.map(Some)
}

/// What one read from the socket did.
enum Read {
    /// `n` bytes into the read buffer; `filled`: they took all the room there was (more is probably
    /// waiting); `limited`: the state machine asked for at most a few bytes.
    Buffer {
        n: usize,
        filled: bool,
        limited: bool,
    },
    /// Bytes straight into a message's body ([`ReadTarget::Body`]).
    Body(usize),
}

/// Reads once, where the state machine says ([`Connection::read_target`]).
async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    chunk: usize,
    proto: &mut Connection,
) -> std::io::Result<Read> {
    match proto.read_target() {
        ReadTarget::Body(mut room) => Ok(Read::Body(reader.read_buf(&mut room).await?)),
        ReadTarget::Buffer(None) => {
            let (n, filled) = read_into(reader, buf, chunk).await?;
            Ok(Read::Buffer {
                n,
                filled,
                limited: false,
            })
        }
        ReadTarget::Buffer(Some(limit)) => {
            buf.reserve(limit);
            let n = reader.read_buf(&mut (&mut *buf).limit(limit)).await?;
            Ok(Read::Buffer {
                n,
                filled: false,
                limited: true,
            })
        }
    }
}

/// Reads into `buf`, first making room for `chunk` bytes if less than a quarter of that is free. Returns
/// the bytes read and whether they filled all the room there was (more is probably waiting).
async fn read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    chunk: usize,
) -> std::io::Result<(usize, bool)> {
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
    let room = buf.capacity() - buf.len();
    let n = reader.read_buf(buf).await?;
    Ok((n, n == room))
}

/// Ready when the parked delivery's consumer has room for it (`Ok`) or is gone (`Err`).
async fn room_for(parked: &Option<Parked>) -> Result<(), ()> {
    match parked {
        Some(p) => std::future::poll_fn(|cx| p.queue.handle().poll_room(cx)).await,
        None => std::future::pending().await,
    }
}
