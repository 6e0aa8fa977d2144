//! What handles ask the driver to do, and what they share with it.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU16, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};

use crate::{
    client::{Confirmation, GetMessage, ReturnedMessage},
    codec::{FieldTable, ShortStr},
    error::Error,
    frame::PublishHead,
    io::{
        ack_queue::{AckQueue, Settlement},
        delivery_queue::DeliverySender,
    },
    proto::Tuned,
    spec::{connection, Method},
};

/// A request from a handle to the driver. The driver handles them strictly in the order they were sent
/// (per-channel order, P11).
///
/// `Publish` is inline, not boxed: a box would be allocated by the publishing task and freed by the driver
/// on another thread for every message (unboxing took fake-broker 16 B publishes from 1.47M to 2.11M
/// msg/s, `benches/compare --only fake-publish`). It stays small because its method and header frames are
/// encoded by the publishing task ([`PublishHead`]), which also keeps every command under 200 bytes.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    OpenChannel {
        /// Answered with `RpcReply::Channel` on channel.open-ok.
        reply: oneshot::Sender<Result<RpcReply, Error>>,
    },
    /// A synchronous method: sent when every earlier RPC on the channel has its answer.
    Rpc {
        channel: u16,
        /// The channel incarnation; an RPC from a handle of a closed incarnation must not run on a
        /// reopened channel with the same id.
        generation: u64,
        method: Method,
        reply: oneshot::Sender<Result<RpcReply, Error>>,
        /// For basic.consume: where deliveries go once consume-ok names the tag.
        consumer: Option<ConsumerSink>,
    },
    /// A method nobody waits for (ack, nack, reject, no-wait declarations).
    Send {
        channel: u16,
        /// The channel incarnation the method belongs to; a mismatch means it is stale and is dropped.
        generation: u64,
        method: Method,
        /// For basic.consume with no-wait: registered at once under the client-chosen tag.
        consumer: Option<ConsumerSink>,
    },
    Publish(Publish),
    /// Acks, nacks and rejects are waiting in the channel's [`AckQueue`]: sent by the first settlement
    /// after the driver last took the queue (or after the channel's last command), unless a sweep the
    /// driver promised covers it. Not a channel command in the [`AckQueue`]'s count.
    FlushAcks {
        channel: u16,
        generation: u64,
    },
    /// Settlements a channel command took from the [`AckQueue`] to go out before it.
    Settle {
        channel: u16,
        generation: u64,
        settlements: Vec<Settlement>,
    },
    CloseChannel {
        channel: u16,
        generation: u64,
        reply: Option<oneshot::Sender<Result<(), Error>>>,
    },
    Close {
        reply: Option<oneshot::Sender<Result<(), Error>>>,
    },
    /// `connection.update-secret`: sent when every earlier one has its update-secret-ok.
    UpdateSecret {
        update: connection::UpdateSecret,
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

// Every command is moved through the queue by value: a publish must not make them large again.
const _: () = assert!(std::mem::size_of::<Command>() <= 200);

impl Command {
    /// The channel incarnation of a command a handle queued through the channel's submit path, and
    /// counted in its [`AckQueue`] (the driver counts these the same way).
    pub(crate) fn channel_command(&self) -> Option<(u16, u64)> {
        match self {
            Command::Rpc {
                channel,
                generation,
                ..
            }
            | Command::Send {
                channel,
                generation,
                ..
            }
            | Command::Settle {
                channel,
                generation,
                ..
            }
            | Command::CloseChannel {
                channel,
                generation,
                ..
            } => Some((*channel, *generation)),
            Command::Publish(p) => Some((p.channel, p.generation)),
            Command::OpenChannel { .. }
            | Command::FlushAcks { .. }
            | Command::Close { .. }
            | Command::UpdateSecret { .. } => None,
        }
    }
}

pub(crate) struct Publish {
    pub channel: u16,
    pub generation: u64,
    /// The method and content-header frames, encoded for `channel`.
    pub head: PublishHead,
    pub body: Bytes,
    /// Set in confirm mode: resolved when the broker acks, nacks or returns the message.
    pub confirm: Option<ConfirmWaiter>,
}

pub(crate) struct ConfirmWaiter {
    pub reply: oneshot::Sender<Result<Confirmation, Error>>,
    /// A slot of the confirm window, given back when this resolves.
    pub _permit: OwnedSemaphorePermit,
}

// Moved once per RPC; boxing the large variant would cost an allocation for every basic.get.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RpcReply {
    Method(Method),
    Get(Option<GetMessage>),
    Channel(OpenedChannel),
}

/// A channel the broker opened, on its way to the caller of `open_channel`: until the caller turns it
/// into a [`Channel`](crate::Channel) handle ([`OpenedChannel::into_shared`]), dropping it closes the
/// channel, so a caller that gave up after the driver answered (its future dropped before it read the
/// reply) leaves no channel open.
pub(crate) struct OpenedChannel(Option<Arc<ChannelShared>>);

impl OpenedChannel {
    pub fn new(shared: Arc<ChannelShared>) -> Self {
        OpenedChannel(Some(shared))
    }

    pub fn into_shared(mut self) -> Arc<ChannelShared> {
        self.0.take().expect("taken once")
    }
}

impl Drop for OpenedChannel {
    fn drop(&mut self) {
        let Some(shared) = self.0.take() else {
            return;
        };
        if let Some(commands) = shared.commands.upgrade() {
            // Best effort, like a dropped handle's close: with the queue full, the channel stays open
            // until the connection closes.
            let _ = commands.try_send(Command::CloseChannel {
                channel: shared.id,
                generation: shared.generation,
                reply: None,
            });
        }
    }
}

/// Where a consumer's deliveries go.
pub(crate) struct ConsumerSink {
    pub tx: DeliverySender,
    pub shared: Arc<ConsumerShared>,
    pub no_ack: bool,
    /// The prefetch limit the consumer started under (0: none, and always 0 for `no_ack`, which the
    /// broker does not limit): the smaller of the channel's per-consumer and channel-wide limits.
    /// RabbitMQ keeps a per-consumer limit with the consumers started under it, whatever later
    /// basic.qos calls set.
    pub prefetch: u16,
    /// A basic.cancel that waits for its cancel-ok went out for it (set by the driver).
    pub cancelling: bool,
}

/// The tighter of two prefetch limits, where 0 is no limit.
pub(crate) fn smaller_limit(a: u16, b: u16) -> u16 {
    match (a, b) {
        (0, b) => b,
        (a, 0) => a,
        (a, b) => a.min(b),
    }
}

/// State a consumer shares with the driver: why it ended.
#[derive(Default)]
pub(crate) struct ConsumerShared {
    pub tag: OnceLock<ShortStr>,
    pub ended: OnceLock<Error>,
}

/// State the connection's handles share with the driver.
pub(crate) struct ConnectionShared {
    pub server_properties: FieldTable,
    pub tuned: Tuned,
    /// `Some(reason)` while the broker has the connection blocked.
    pub blocked: watch::Sender<Option<String>>,
    /// Why the connection ended, set once before the driver lets go of any waiter.
    pub error: OnceLock<Error>,
    /// A close asked for without the command queue, which stayed full: the driver stops taking
    /// commands while the peer does not read its writes (a broker's resource alarm, a dead path), and a
    /// close must not wait for that to end. Set before `close_notify` is notified; the driver reads it
    /// at every pass of its loop and waits on `close_notify` only while it takes no commands.
    pub close_requested: AtomicBool,
    pub close_notify: Notify,
    /// A channel handle was dropped while the command queue had no room for its close: the driver
    /// closes the channels whose `close_on_drop` is set, once the commands queued before the drop are
    /// taken. Set before `close_notify` is notified.
    pub channel_closes_requested: AtomicBool,
    /// The client's connection.close went unanswered: the `Timeout` that `Connection::close` returns,
    /// while `error` says `ClosedByClient`. Set before the command queue is closed.
    pub unanswered_close: OnceLock<Error>,
    /// `rpc_timeout`: how long a handle's operation may wait in all. The driver gives it to each channel
    /// it opens, for its deliveries' acks.
    pub rpc_timeout: Duration,
    /// Set once the driver has ended every channel and answered every waiter, with `error` set first;
    /// then `ended_notify` is notified (all waiters), for [`Connection::closed`](crate::Connection::closed).
    pub ended: AtomicBool,
    pub ended_notify: Notify,
}

impl ConnectionShared {
    pub fn error(&self) -> Error {
        self.error
            .get()
            .cloned()
            .unwrap_or(Error::ClosedByClient("connection"))
    }

    /// Marks the connection ended and wakes every [`ConnectionShared::wait_ended`]. The driver calls it
    /// last, once its reason is recorded and its channels are closed.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.ended_notify.notify_waiters();
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Waits until the driver has ended the connection, and says why.
    pub async fn wait_ended(&self) -> Error {
        wait_for_flag(&self.ended, &self.ended_notify).await;
        self.error()
    }
}

/// Waits until `flag` is set, for a `notify` that is notified (all waiters) after every store of it.
/// The waiter is registered before the flag is read, so a store between the read and the wait still
/// wakes it.
async fn wait_for_flag(flag: &AtomicBool, notify: &Notify) {
    let mut notified = std::pin::pin!(notify.notified());
    notified.as_mut().enable();
    if !flag.load(Ordering::Acquire) {
        notified.await;
    }
}

/// State one channel's handles share with the driver.
pub(crate) struct ChannelShared {
    pub id: u16,
    /// Distinguishes this incarnation of the channel id from earlier and later ones.
    pub generation: u64,
    pub closed: AtomicBool,
    pub error: OnceLock<Error>,
    /// `channel.flow`: false while the broker asked us to stop publishing.
    pub flow: watch::Sender<bool>,
    pub confirm_mode: AtomicBool,
    /// Slots of the confirm window.
    pub confirm_window: Arc<Semaphore>,
    /// The prefetch count of the last basic.qos with `global: false`: the limit of each consumer started
    /// from then on (sizes their buffers).
    pub prefetch: AtomicU16,
    /// The prefetch count of the last basic.qos with `global: true`: RabbitMQ's limit shared by all the
    /// channel's consumers, which also bounds what any one of them can be sent.
    pub global_prefetch: AtomicU16,
    /// Where basic.return goes on a channel without confirms, once someone listens.
    pub returns: std::sync::Mutex<Option<mpsc::Sender<ReturnedMessage>>>,
    /// Settlements of this incarnation's deliveries on their way to the driver.
    pub acks: AckQueue,
    /// The driver's command queue, for the ackers of this incarnation's deliveries (weak: they never
    /// keep the driver alive).
    pub commands: mpsc::WeakSender<Command>,
    /// How long an ack may wait for room in the command queue (the connection's `rpc_timeout`).
    pub ack_timeout: Duration,
    /// Notified (all waiters) once `closed` is set, for [`Channel::closed`](crate::Channel::closed).
    pub closed_notify: Notify,
    /// Its last handle was dropped while the command queue had no room for its close (see
    /// `ConnectionShared::channel_closes_requested`).
    pub close_on_drop: AtomicBool,
}

impl ChannelShared {
    pub fn new(
        id: u16,
        generation: u64,
        confirm_window: usize,
        commands: mpsc::WeakSender<Command>,
        ack_timeout: Duration,
    ) -> ChannelShared {
        ChannelShared {
            id,
            generation,
            closed: AtomicBool::new(false),
            error: OnceLock::new(),
            flow: watch::channel(true).0,
            confirm_mode: AtomicBool::new(false),
            confirm_window: Arc::new(Semaphore::new(confirm_window)),
            prefetch: AtomicU16::new(0),
            global_prefetch: AtomicU16::new(0),
            returns: std::sync::Mutex::new(None),
            acks: AckQueue::default(),
            commands,
            ack_timeout,
            closed_notify: Notify::new(),
            close_on_drop: AtomicBool::new(false),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the channel closed with `error` (the first cause wins).
    pub fn close(&self, error: Error) {
        let _ = self.error.set(error);
        self.closed.store(true, Ordering::Release);
        self.confirm_window.close();
        // Wakes publishers waiting for the flow to resume: they find the channel closed.
        self.flow.send_replace(true);
        // Ends the returns listener once it has read what was already returned.
        self.returns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        self.closed_notify.notify_waiters();
    }

    /// Waits until the channel is closed, and says why.
    pub async fn wait_closed(&self) -> Error {
        wait_for_flag(&self.closed, &self.closed_notify).await;
        self.error()
    }

    pub fn error(&self) -> Error {
        self.error
            .get()
            .cloned()
            .unwrap_or(Error::ClosedByClient("channel"))
    }
}
