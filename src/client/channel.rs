//! The channel handle: every AMQP method of the exchange, queue, basic, tx and confirm classes.

use std::{
    sync::{atomic::Ordering, Arc},
    task::Poll,
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tracing::debug;

use crate::{
    client::{
        connection::ConnectionInner,
        options::*,
        publish::{PublishConfirm, ReturnedMessage},
        Consumer, Deadline, GetMessage,
    },
    codec::{FieldTable, ShortStr, MAX_NESTING},
    error::Error,
    frame::{encode_method, PublishHead},
    io::{
        command::{
            smaller_limit, ChannelShared, Command, ConfirmWaiter, ConsumerShared, ConsumerSink,
            Publish, RpcReply,
        },
        delivery_queue::delivery_queue,
    },
    spec::{basic, channel, confirm, exchange, queue, tx, BasicProperties, Method},
};

/// Messages returned by the broker on a channel without confirms; see [`Channel::returned_messages`].
#[derive(Debug)]
pub struct ReturnedMessages {
    rx: mpsc::Receiver<ReturnedMessage>,
}

impl ReturnedMessages {
    /// The next returned message; `None` once the channel has closed and every return was read.
    pub async fn next(&mut self) -> Option<ReturnedMessage> {
        self.rx.recv().await
    }
}

/// Consumer buffer size when the channel has no prefetch limit.
const UNLIMITED_PREFETCH_BUFFER: usize = 256;

/// A channel: a cheap, cloneable handle for one AMQP channel on a [`Connection`](crate::Connection).
///
/// Synchronous methods (declarations, bindings, qos, consume, get, tx, confirm.select) wait for the
/// broker's reply, at most `rpc_timeout` in all (the wait for room in the command queue included); on one
/// channel they are sent one at a time, in call order (the spec's rule), while publishes and acks go out
/// immediately. A soft error from the broker (404, 406, ...) closes the channel: the failing call and
/// every pending one get [`Error::ChannelClosed`] with the reply code; the connection and other channels
/// carry on.
///
/// The channel closes when [`Channel::close`] is called, when the broker closes it, or when the last
/// handle (including its consumers) is dropped. A [`Delivery`](crate::Delivery) does not keep the channel
/// open: once it closes, acking the delivery returns [`Error::StaleDelivery`] and sends nothing.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<ChannelInner>,
}

struct ChannelInner {
    conn: Arc<ConnectionInner>,
    shared: Arc<ChannelShared>,
    /// What encoding a publish's head reuses: the last exchange and routing key (a publisher usually
    /// repeats them, and sharing the last `ShortStr`s saves an allocation per publish) and the buffer.
    publish_scratch: std::sync::Mutex<PublishScratch>,
}

/// Where a publish that could not be done at once waits: for publishing to be allowed and a confirm slot
/// (`Start`), or for room in the command queue (`Queue`).
enum PublishStage {
    Start(PublishHead, Bytes),
    Queue(Command, PublishConfirm),
}

type PublishWaiting<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<PublishConfirm, Error>> + Send + 'a>>;

/// The largest publish scratch buffer a channel keeps between publishes.
const SCRATCH_KEPT: usize = 4096;

#[derive(Default)]
struct PublishScratch {
    exchange: ShortStr,
    routing_key: ShortStr,
    buf: BytesMut,
}

impl ChannelInner {
    /// Queues a command of this channel behind the acks, nacks and rejects made before it (P11: they may
    /// still be waiting in the channel's ack queue). Cancel-safe: nothing is taken from the ack queue
    /// before room for both commands is reserved.
    ///
    /// The check that nothing is queued and the send happen under the ack queue's lock: checked before
    /// and sent after, another task's ack could queue a flush command in between, ahead of this command,
    /// and a settlement this task makes after the command could then ride that flush ahead of it.
    ///
    /// With acks queued, the one slot first reserved is given back and two are reserved together (holding
    /// one while waiting for another could deadlock two tasks on a queue of two), so a command can wait
    /// for room twice, both waits bounded by `deadline` (the operation's; without one, each wait gets
    /// `rpc_timeout` from when it starts).
    ///
    /// A queue with room takes the command at once; only the wait for room is a boxed future (as in
    /// `ConnectionInner::reserve`), which keeps the future of every publish small.
    async fn submit(&self, cmd: Command, deadline: Option<Deadline>) -> Result<(), Error> {
        match self.try_submit(cmd) {
            Ok(()) => Ok(()),
            // Full or closed: the waiting path tells them apart.
            Err(cmd) => Box::pin(self.submit_waiting(cmd, deadline)).await,
        }
    }

    async fn submit_waiting(&self, cmd: Command, deadline: Option<Deadline>) -> Result<(), Error> {
        let deadline = deadline.unwrap_or_else(|| Deadline::after(self.conn.config.rpc_timeout));
        let mut cmd = Some(cmd);
        {
            let mut permits = self.conn.reserve(1, Some(deadline)).await?;
            let Some(permit) = permits.next() else {
                unreachable!("one permit was reserved");
            };
            if self
                .shared
                .acks
                .send_if_empty(|| permit.send(cmd.take().expect("sent once")))
            {
                return Ok(());
            }
        }
        let permits = self.conn.reserve(2, Some(deadline)).await?;
        self.send_behind_settlements(permits, cmd.take().expect("not sent yet"));
        Ok(())
    }

    /// [`ChannelInner::submit`] without waiting (and for drop paths): the command back if the command queue
    /// is full (or has one free slot while acks wait to go ahead of the command) or closed; then nothing was
    /// taken or sent.
    // The command comes back by value: boxing it would cost the allocation that commands avoid.
    #[allow(clippy::result_large_err)]
    fn try_submit(&self, cmd: Command) -> Result<(), Command> {
        let mut cmd = Some(cmd);
        {
            let Ok(permit) = self.conn.commands.try_reserve() else {
                return Err(cmd.take().expect("not sent"));
            };
            if self
                .shared
                .acks
                .send_if_empty(|| permit.send(cmd.take().expect("sent once")))
            {
                return Ok(());
            }
        }
        let Ok(permits) = self.conn.commands.try_reserve_many(2) else {
            return Err(cmd.take().expect("not sent"));
        };
        self.send_behind_settlements(permits, cmd.take().expect("not sent yet"));
        Ok(())
    }

    /// Sends what the ack queue holds, then `cmd`, through two reserved permits, in one critical section
    /// of the ack queue.
    fn send_behind_settlements(
        &self,
        mut permits: mpsc::PermitIterator<'_, Command>,
        cmd: Command,
    ) {
        let (Some(first), Some(second)) = (permits.next(), permits.next()) else {
            unreachable!("two permits were reserved");
        };
        self.shared.acks.take_and_send(|settlements| {
            if settlements.is_empty() {
                first.send(cmd);
                return;
            }
            first.send(Command::Settle {
                channel: self.shared.id,
                generation: self.shared.generation,
                settlements,
            });
            second.send(cmd);
        });
    }
}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        if !self.shared.is_closed() {
            let cmd = Command::CloseChannel {
                channel: self.shared.id,
                generation: self.shared.generation,
                reply: None,
            };
            if self.try_submit(cmd).is_err() {
                // The queue is full (the driver is not taking commands while the broker does not
                // read): a flag the driver sees without taking a command, or the channel would stay
                // open on the broker, its id taken, until the connection closes (P12).
                debug!(
                    channel = self.shared.id,
                    "no room to queue the channel's close on drop; the driver is told past the queue"
                );
                let conn = &self.conn.shared;
                self.shared.close_on_drop.store(true, Ordering::SeqCst);
                conn.channel_closes_requested.store(true, Ordering::SeqCst);
                conn.close_notify.notify_one();
            }
        }
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("id", &self.id())
            .field("open", &self.is_open())
            .finish()
    }
}

fn short(what: &str, s: &str) -> Result<ShortStr, Error> {
    ShortStr::new(s).map_err(|_| Error::InvalidArgument(format!("{what} is longer than 255 bytes")))
}

impl Channel {
    pub(crate) fn new(conn: Arc<ConnectionInner>, shared: Arc<ChannelShared>) -> Channel {
        Channel {
            inner: Arc::new(ChannelInner {
                conn,
                shared,
                publish_scratch: Default::default(),
            }),
        }
    }

    /// The channel number.
    pub fn id(&self) -> u16 {
        self.inner.shared.id
    }

    /// Whether the channel is still open.
    pub fn is_open(&self) -> bool {
        !self.inner.shared.is_closed()
    }

    /// Why the channel closed, if it has.
    pub fn close_reason(&self) -> Option<Error> {
        self.inner.shared.error.get().cloned()
    }

    /// Waits until the channel has closed, and says why: [`Error::ClosedByClient`] after
    /// [`Channel::close`], [`Error::ChannelClosed`] when the broker closed it (a 404 or 406, say),
    /// or the connection's error when the connection ended. The same error
    /// [`Channel::close_reason`] returns from then on.
    ///
    /// Any number of callers may wait. The channel's consumers, confirms and pending calls end with the
    /// same reason. The future holds no handle (it borrows nothing and is `'static`), so it does not
    /// keep the channel open: made before the channel's last handle is dropped, it resolves once the
    /// drop has closed it. (A clone of the channel moved into a task to call `closed` there is a
    /// handle, and keeps it open.)
    pub fn closed(&self) -> impl std::future::Future<Output = Error> + Send + 'static {
        let shared = self.inner.shared.clone();
        async move { shared.wait_closed().await }
    }

    /// Closes the channel (channel.close with 200, waits for close-ok). Pending calls fail with
    /// [`Error::ClosedByClient`]; unacked deliveries are requeued by the broker.
    ///
    /// Waits up to `close_timeout` for room in the command queue, then up to `close_timeout` from
    /// sending channel.close for the close-ok. Without one, the channel ends all the same: this returns
    /// [`Error::Timeout`], pending calls, confirms and consumers fail with it, and
    /// [`is_open`](Self::is_open) is false; the channel's id stays taken until the close-ok comes or
    /// the connection ends.
    pub async fn close(&self) -> Result<(), Error> {
        if self.inner.shared.is_closed() {
            return Ok(());
        }
        let close_timeout = self.inner.conn.config.close_timeout;
        let deadline = Deadline::after(close_timeout);
        let (tx, rx) = oneshot::channel();
        let cmd = Command::CloseChannel {
            channel: self.id(),
            generation: self.inner.shared.generation,
            reply: Some(tx),
        };
        match self.inner.submit(cmd, Some(deadline)).await {
            Ok(()) => {}
            // The command queue stayed full: no channel.close went out.
            Err(e @ Error::Timeout { .. }) => return Err(e),
            // The connection is gone, and the channel with it.
            Err(_) => return Ok(()),
        }
        // The driver answers within `close_timeout` of sending channel.close: with the close-ok, or
        // with a timeout once it has ended the channel's waiters. The extra second only guards
        // against a driver that does neither.
        let timeout = close_timeout + Duration::from_secs(1);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(Error::Timeout {
                what: "channel.close-ok",
                after: timeout,
            }),
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.inner.shared.is_closed() {
            return Err(self.inner.shared.error());
        }
        Ok(())
    }

    /// A method carrying a user's arguments table must fit one frame.
    ///
    /// spec (frame-max): the largest frame the peer accepts; RabbitMQ answers a larger one by closing the
    /// whole connection with 501 frame-error, so one oversized binding's arguments would end every channel.
    /// Only methods with a non-empty table are encoded to find out: without one a method is far below the
    /// smallest frame-max (4096).
    fn check_method_fits(&self, method: &Method) -> Result<(), Error> {
        let arguments = match method {
            Method::QueueDeclare(m) => &m.arguments,
            Method::QueueBind(m) => &m.arguments,
            Method::QueueUnbind(m) => &m.arguments,
            Method::ExchangeDeclare(m) => &m.arguments,
            Method::ExchangeBind(m) => &m.arguments,
            Method::ExchangeUnbind(m) => &m.arguments,
            Method::BasicConsume(m) => &m.arguments,
            _ => return Ok(()),
        };
        let frame_max = self.inner.conn.shared.tuned.frame_max;
        if arguments.is_empty() || frame_max == 0 {
            return Ok(());
        }
        let mut frame = BytesMut::new();
        encode_method(&mut frame, self.id(), method);
        if frame.len() > frame_max as usize {
            return Err(Error::InvalidArgument(format!(
                "{} with its arguments is a {}-byte frame, over the negotiated frame-max of {frame_max}",
                method.name(),
                frame.len()
            )));
        }
        Ok(())
    }

    async fn rpc_with(
        &self,
        method: Method,
        consumer: Option<ConsumerSink>,
    ) -> Result<RpcReply, Error> {
        self.check_open()?;
        self.check_method_fits(&method)?;
        let deadline = Deadline::after(self.inner.conn.config.rpc_timeout);
        let (tx, rx) = oneshot::channel();
        let name = method.name();
        self.inner
            .submit(
                Command::Rpc {
                    channel: self.id(),
                    generation: self.inner.shared.generation,
                    method,
                    reply: tx,
                    consumer,
                },
                Some(deadline),
            )
            .await?;
        match deadline.wait(name, rx).await? {
            Ok(result) => result,
            Err(_) => Err(self.inner.shared.error()),
        }
    }

    async fn rpc(&self, method: Method) -> Result<Method, Error> {
        match self.rpc_with(method, None).await? {
            RpcReply::Method(m) => Ok(m),
            _ => Err(Error::Protocol {
                code: crate::spec::ReplyCode::INTERNAL_ERROR,
                text: "unexpected reply kind".into(),
            }),
        }
    }

    async fn send(&self, method: Method) -> Result<(), Error> {
        self.check_open()?;
        self.check_method_fits(&method)?;
        let cmd = Command::Send {
            channel: self.id(),
            generation: self.inner.shared.generation,
            method,
            consumer: None,
        };
        self.inner.submit(cmd, None).await
    }

    async fn call(&self, method: Method, no_wait: bool) -> Result<(), Error> {
        if no_wait {
            self.send(method).await
        } else {
            self.rpc(method).await.map(drop)
        }
    }

    /// exchange.declare: creates the exchange `name` of type `kind` (`direct`, `fanout`, `topic`,
    /// `headers`, or a plugin's) or checks that it exists with the same settings (406 if not).
    ///
    /// An `arguments` table that makes the method frame larger than the negotiated frame-max is an
    /// [`Error::InvalidArgument`], and nothing is sent (RabbitMQ would close the connection with 501).
    pub async fn exchange_declare(
        &self,
        name: &str,
        kind: &str,
        options: ExchangeDeclareOptions,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let m = exchange::Declare {
            exchange: short("exchange name", name)?,
            kind: short("exchange type", kind)?,
            passive: options.passive,
            durable: options.durable,
            auto_delete: options.auto_delete,
            internal: options.internal,
            no_wait: options.no_wait,
            arguments,
        };
        self.call(m.into(), options.no_wait).await
    }

    /// exchange.delete.
    pub async fn exchange_delete(
        &self,
        name: &str,
        options: ExchangeDeleteOptions,
    ) -> Result<(), Error> {
        let m = exchange::Delete {
            exchange: short("exchange name", name)?,
            if_unused: options.if_unused,
            no_wait: options.no_wait,
        };
        self.call(m.into(), options.no_wait).await
    }

    /// exchange.bind (RabbitMQ extension): routes messages from `source` to `destination`.
    ///
    /// An `arguments` table that makes the method frame larger than the negotiated frame-max is an
    /// [`Error::InvalidArgument`], and nothing is sent (RabbitMQ would close the connection with 501).
    pub async fn exchange_bind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        options: BindOptions,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let m = exchange::Bind {
            destination: short("destination", destination)?,
            source: short("source", source)?,
            routing_key: short("routing key", routing_key)?,
            no_wait: options.no_wait,
            arguments,
        };
        self.call(m.into(), options.no_wait).await
    }

    /// exchange.unbind (RabbitMQ extension).
    ///
    /// An `arguments` table that makes the method frame larger than the negotiated frame-max is an
    /// [`Error::InvalidArgument`], and nothing is sent (RabbitMQ would close the connection with 501).
    pub async fn exchange_unbind(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
        options: BindOptions,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let m = exchange::Unbind {
            destination: short("destination", destination)?,
            source: short("source", source)?,
            routing_key: short("routing key", routing_key)?,
            no_wait: options.no_wait,
            arguments,
        };
        self.call(m.into(), options.no_wait).await
    }

    /// queue.declare: creates the queue or checks it. An empty `name` asks the broker to name it; the
    /// answer carries the name and the queue's message and consumer counts.
    ///
    /// An `arguments` table that makes the method frame larger than the negotiated frame-max is an
    /// [`Error::InvalidArgument`], and nothing is sent (RabbitMQ would close the connection with 501).
    pub async fn queue_declare(
        &self,
        name: &str,
        options: QueueDeclareOptions,
        arguments: FieldTable,
    ) -> Result<queue::DeclareOk, Error> {
        let m = declare(name, options, arguments, false)?;
        match self.rpc(m.into()).await? {
            Method::QueueDeclareOk(ok) => Ok(ok),
            other => Err(unexpected(other)),
        }
    }

    /// queue.declare with no-wait: nothing comes back, so the name must be given and no counts are known.
    ///
    /// An `arguments` table that makes the method frame larger than the negotiated frame-max is an
    /// [`Error::InvalidArgument`], and nothing is sent (RabbitMQ would close the connection with 501).
    pub async fn queue_declare_nowait(
        &self,
        name: &str,
        options: QueueDeclareOptions,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "a no-wait queue.declare needs a queue name".into(),
            ));
        }
        self.send(declare(name, options, arguments, true)?.into())
            .await
    }

    /// queue.bind: routes messages from `exchange` with `routing_key` to `queue`.
    ///
    /// An `arguments` table that makes the method frame larger than the negotiated frame-max is an
    /// [`Error::InvalidArgument`], and nothing is sent (RabbitMQ would close the connection with 501).
    pub async fn queue_bind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        options: BindOptions,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let m = queue::Bind {
            queue: short("queue name", queue)?,
            exchange: short("exchange name", exchange)?,
            routing_key: short("routing key", routing_key)?,
            no_wait: options.no_wait,
            arguments,
        };
        self.call(m.into(), options.no_wait).await
    }

    /// queue.unbind (always synchronous: the spec gives it no no-wait flag).
    ///
    /// An `arguments` table that makes the method frame larger than the negotiated frame-max is an
    /// [`Error::InvalidArgument`], and nothing is sent (RabbitMQ would close the connection with 501).
    pub async fn queue_unbind(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
        arguments: FieldTable,
    ) -> Result<(), Error> {
        let m = queue::Unbind {
            queue: short("queue name", queue)?,
            exchange: short("exchange name", exchange)?,
            routing_key: short("routing key", routing_key)?,
            arguments,
        };
        self.rpc(m.into()).await.map(drop)
    }

    /// queue.purge: removes every ready message; returns how many.
    pub async fn queue_purge(&self, queue: &str) -> Result<u32, Error> {
        let m = queue::Purge {
            queue: short("queue name", queue)?,
            no_wait: false,
        };
        match self.rpc(m.into()).await? {
            Method::QueuePurgeOk(ok) => Ok(ok.message_count),
            other => Err(unexpected(other)),
        }
    }

    /// queue.delete: returns how many messages it held.
    pub async fn queue_delete(
        &self,
        queue: &str,
        options: QueueDeleteOptions,
    ) -> Result<u32, Error> {
        let m = queue::Delete {
            queue: short("queue name", queue)?,
            if_unused: options.if_unused,
            if_empty: options.if_empty,
            no_wait: false,
        };
        match self.rpc(m.into()).await? {
            Method::QueueDeleteOk(ok) => Ok(ok.message_count),
            other => Err(unexpected(other)),
        }
    }

    /// basic.qos: at most `prefetch_count` unacknowledged deliveries (0 = no limit). As RabbitMQ reads
    /// it, `global: false` (the default) limits each consumer started afterwards on the channel, and
    /// `global: true` limits all the channel's consumers together. A consumer started afterwards
    /// buffers at most the smaller of the two limits set client-side (256 if neither is). Neither
    /// limits a `no_ack` consumer: the broker sends it as fast as it can, and one that falls behind
    /// pauses the connection's reads (see [`Consumer`]).
    pub async fn basic_qos(
        &self,
        prefetch_count: u16,
        options: BasicQosOptions,
    ) -> Result<(), Error> {
        let m = basic::Qos {
            prefetch_size: options.prefetch_size,
            prefetch_count,
            global: options.global,
        };
        // The driver records the limit when it sends the method (a caller that stops waiting for
        // qos-ok does not leave the channel's consumers sized by the old one).
        self.rpc(m.into()).await.map(drop)
    }

    /// basic.consume: subscribes to `queue`. An empty `consumer_tag` lets the broker pick one.
    ///
    /// An `arguments` table that makes the method frame larger than the negotiated frame-max is an
    /// [`Error::InvalidArgument`], and nothing is sent (RabbitMQ would close the connection with 501).
    pub async fn basic_consume(
        &self,
        queue: &str,
        consumer_tag: &str,
        options: BasicConsumeOptions,
        arguments: FieldTable,
    ) -> Result<Consumer, Error> {
        let m = basic::Consume {
            queue: short("queue name", queue)?,
            consumer_tag: short("consumer tag", consumer_tag)?,
            no_local: options.no_local,
            no_ack: options.no_ack,
            exclusive: options.exclusive,
            no_wait: false,
            arguments,
        };
        // The broker sends a consumer at most its own limit and the channel-wide one; nothing limits
        // a no_ack consumer (RabbitMQ: "prefetch ... ignored if the no-ack option is set").
        let prefetch = match options.no_ack {
            true => 0,
            false => smaller_limit(
                self.inner.shared.prefetch.load(Ordering::Acquire),
                self.inner.shared.global_prefetch.load(Ordering::Acquire),
            ),
        };
        let capacity = match prefetch {
            0 => UNLIMITED_PREFETCH_BUFFER,
            n => n as usize,
        };
        let (tx, rx) = delivery_queue(capacity);
        let shared = Arc::new(ConsumerShared::default());
        let sink = ConsumerSink {
            tx,
            shared: shared.clone(),
            no_ack: options.no_ack,
            prefetch,
            cancelling: false,
        };
        self.rpc_with(m.into(), Some(sink)).await?;
        Ok(Consumer::new(rx, shared, self.clone()))
    }

    /// basic.cancel: ends the consumer with tag `consumer_tag`; deliveries already buffered stay
    /// readable, then the consumer ends.
    ///
    /// The broker's cancel-ok comes behind whatever it sent the consumer before it read the cancel.
    /// Once the cancel is out, a delivery that finds the consumer's buffer full is requeued
    /// (`basic.reject` with `requeue`), so a consumer that is behind does not hold the cancel (or the
    /// connection's reads) up. A `no_ack` consumer's deliveries cannot be given back: cancelling one
    /// whose buffer is full waits until its reader makes room, up to `rpc_timeout`; read it while
    /// cancelling, or cancel with `no_wait`.
    ///
    /// With `no_wait` the call returns at once, and a delivery already held back for the full buffer
    /// is kept for the reader, after the buffered ones; until the consumer is read to its end (or
    /// dropped, which requeues what it holds), that delivery keeps the connection's reads paused.
    pub async fn basic_cancel(
        &self,
        consumer_tag: &str,
        options: BasicCancelOptions,
    ) -> Result<(), Error> {
        let m = basic::Cancel {
            consumer_tag: short("consumer tag", consumer_tag)?,
            no_wait: options.no_wait,
        };
        self.call(m.into(), options.no_wait).await
    }

    /// Requeues a delivery nobody will see; best effort (a full command queue means the channel's close
    /// will requeue it instead).
    pub(crate) fn reject_on_drop(&self, delivery_tag: u64) {
        let m = basic::Reject {
            delivery_tag,
            requeue: true,
        };
        let cmd = Command::Send {
            channel: self.id(),
            generation: self.inner.shared.generation,
            method: m.into(),
            consumer: None,
        };
        let _ = self.inner.try_submit(cmd);
    }

    pub(crate) fn cancel_on_drop(&self, tag: ShortStr) {
        let m = basic::Cancel {
            consumer_tag: tag,
            no_wait: true,
        };
        let cmd = Command::Send {
            channel: self.id(),
            generation: self.inner.shared.generation,
            method: m.into(),
            consumer: None,
        };
        let _ = self.inner.try_submit(cmd);
    }

    /// basic.publish: sends a message. Waits while the broker has the connection blocked or the channel
    /// flow-stopped, in confirm mode while the confirm window is full, and while the command queue is
    /// full (all of it bounded by one `rpc_timeout`, and ended at once by the channel's or the
    /// connection's end, with its error). A wait past `rpc_timeout` while the connection is blocked
    /// fails with [`Error::Blocked`] (the broker's reason; not `is_recoverable`, since retrying at once
    /// meets the same alarm), any other with [`Error::Timeout`]. The returned [`PublishConfirm`]
    /// resolves exactly once with the broker's verdict.
    ///
    /// The method and header frames are encoded when this is called, so the future borrows neither the
    /// names nor the properties; nothing is sent until it is polled. Names longer than 255 bytes,
    /// properties too large for the negotiated frame-max, or headers nesting tables and arrays more than
    /// [`MAX_NESTING`](crate::codec::MAX_NESTING) levels deep (which no consumer of this crate could
    /// receive), are an [`Error::InvalidArgument`] from the future.
    #[allow(clippy::result_large_err)] // `try_publish`'s stage, by value
    pub fn basic_publish(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        properties: BasicProperties,
        body: impl Into<Bytes>,
    ) -> impl std::future::Future<Output = Result<PublishConfirm, Error>> + Send + '_ {
        let body = body.into();
        let mut start = Some(
            self.publish_head(exchange, routing_key, options, &properties, &body)
                .map(|head| (head, body)),
        );
        // A publish that need not wait is done at its first poll, with no future of its own: the future
        // here is the encoded head and a pointer, where an `async` body would hold its timers, waiters and
        // moved-from commands, several hundred bytes copied at every move of the future. Only a publish
        // that must wait makes the (boxed) future that waits.
        let mut waiting: Option<PublishWaiting<'_>> = None;
        std::future::poll_fn(move |cx| {
            if let Some(start) = start.take() {
                // Checked at the first poll, not at the call: a future made while the channel was open
                // and polled after it closed must fail, not queue a publish the driver drops unseen.
                let start =
                    start.and_then(|head_and_body| self.check_open().map(|()| head_and_body));
                let stage = match start.map(|(head, body)| self.try_publish(head, body)) {
                    Err(e) => return Poll::Ready(Err(e)),
                    Ok(Ok(confirm)) => return Poll::Ready(Ok(confirm)),
                    Ok(Err(stage)) => stage,
                };
                waiting = Some(Box::pin(self.publish_waiting(stage)));
            }
            let Some(future) = waiting.as_mut() else {
                return Poll::Ready(Err(Error::InvalidArgument(
                    "a publish future polled after it completed".into(),
                )));
            };
            let done = std::task::ready!(future.as_mut().poll(cx));
            waiting = None;
            Poll::Ready(done)
        })
    }

    /// The publish done without waiting, or the stage at which it has to wait (by value, as in `try_submit`).
    #[allow(clippy::result_large_err)]
    fn try_publish(&self, head: PublishHead, body: Bytes) -> Result<PublishConfirm, PublishStage> {
        if !self.is_publishable() {
            return Err(PublishStage::Start(head, body));
        }
        let shared = &self.inner.shared;
        let confirm = if shared.confirm_mode.load(Ordering::Acquire) {
            match shared.confirm_window.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                // Closed: the waiting path reports the channel's error.
                Err(_) => return Err(PublishStage::Start(head, body)),
            }
        } else {
            None
        };
        let (cmd, result) = self.publish_command(head, body, confirm);
        match self.inner.try_submit(cmd) {
            Ok(()) => Ok(result),
            Err(cmd) => Err(PublishStage::Queue(cmd, result)),
        }
    }

    /// The publish's waits, all bounded by one `rpc_timeout` from when the first began.
    async fn publish_waiting(&self, stage: PublishStage) -> Result<PublishConfirm, Error> {
        let deadline = Deadline::after(self.inner.conn.config.rpc_timeout);
        let (cmd, result) = match stage {
            PublishStage::Queue(cmd, result) => (cmd, result),
            PublishStage::Start(head, body) => {
                self.wait_until_publishable(deadline).await?;
                let shared = &self.inner.shared;
                let permit = if shared.confirm_mode.load(Ordering::Acquire) {
                    let window = shared.confirm_window.clone();
                    match deadline
                        .wait("room in the confirm window", window.acquire_owned())
                        .await?
                    {
                        Ok(p) => Some(p),
                        Err(_) => return Err(shared.error()),
                    }
                } else {
                    None
                };
                self.publish_command(head, body, permit)
            }
        };
        self.inner.submit(cmd, Some(deadline)).await?;
        Ok(result)
    }

    /// The command for a publish and the confirm its caller gets: with a slot of the confirm window in
    /// confirm mode, resolved by the broker's verdict; without, resolved at once as not requested.
    fn publish_command(
        &self,
        head: PublishHead,
        body: Bytes,
        permit: Option<OwnedSemaphorePermit>,
    ) -> (Command, PublishConfirm) {
        let (confirm, result) = match permit {
            Some(permit) => {
                let (tx, rx) = oneshot::channel();
                (
                    Some(ConfirmWaiter {
                        reply: tx,
                        _permit: permit,
                    }),
                    PublishConfirm::new(rx),
                )
            }
            None => (None, PublishConfirm::not_requested()),
        };
        let shared = &self.inner.shared;
        let cmd = Command::Publish(Publish {
            channel: shared.id,
            generation: shared.generation,
            head,
            body,
            confirm,
        });
        (cmd, result)
    }

    /// Encodes the publish's method and header frames here, on the publishing task's thread, so the command
    /// to the driver stays small and the properties are dropped where they were made. The exchange and
    /// routing key share the previous publish's `ShortStr`s where they are the same.
    fn publish_head(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        properties: &BasicProperties,
        body: &Bytes,
    ) -> Result<PublishHead, Error> {
        // A message whose headers the client's own decoder would refuse could never be received back
        // (as a delivery, a get or a return) without closing the connection.
        if let Some(headers) = &properties.headers {
            if headers.nests_deeper_than(MAX_NESTING) {
                return Err(Error::InvalidArgument(format!(
                    "the headers nest tables or arrays more than {MAX_NESTING} levels deep, more than \
                     a consumer's decoder accepts"
                )));
            }
        }
        let mut scratch = self
            .inner
            .publish_scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let scratch = &mut *scratch;
        if scratch.exchange.as_bytes() != exchange.as_bytes() {
            scratch.exchange = short("exchange name", exchange)?;
        }
        if scratch.routing_key.as_bytes() != routing_key.as_bytes() {
            scratch.routing_key = short("routing key", routing_key)?;
        }
        let publish = basic::Publish {
            exchange: scratch.exchange.clone(),
            routing_key: scratch.routing_key.clone(),
            mandatory: options.mandatory,
            immediate: options.immediate,
        };
        let head = PublishHead::encode(
            &mut scratch.buf,
            self.inner.shared.id,
            &publish,
            properties,
            body.len() as u64,
            self.inner.conn.shared.tuned.frame_max,
        )
        .map_err(|e| Error::InvalidArgument(e.to_string()));
        // One publish with large properties must not pin its buffer for the channel's lifetime.
        if scratch.buf.capacity() > SCRATCH_KEPT {
            scratch.buf = BytesMut::new();
        }
        head
    }

    /// Neither blocked nor flow-stopped: two uncontended read locks; a receiver (and its wake-up
    /// bookkeeping) is made only when there is something to wait for.
    fn is_publishable(&self) -> bool {
        self.inner.conn.shared.blocked.borrow().is_none() && *self.inner.shared.flow.borrow()
    }

    /// Waits while the broker has the connection blocked or this channel flow-stopped, at most `timeout`.
    /// Ends early with the channel's error when the channel or the connection ends meanwhile: closing a
    /// channel sets its flow back to active and the connection's end clears the blocked state, so the
    /// wait wakes and finds the channel closed.
    async fn wait_until_publishable(&self, deadline: Deadline) -> Result<(), Error> {
        if self.is_publishable() {
            return Ok(());
        }
        let mut blocked = self.inner.conn.shared.blocked.subscribe();
        let mut flow = self.inner.shared.flow.subscribe();
        loop {
            self.check_open()?;
            let reason = blocked.borrow_and_update().clone();
            let active = *flow.borrow_and_update();
            if reason.is_none() && active {
                return Ok(());
            }
            tokio::select! {
                // The senders live as long as the channel's and the connection's shared state, which
                // this handle holds: `changed` ends only with a change.
                _ = blocked.changed() => {}
                _ = flow.changed() => {}
                () = tokio::time::sleep_until(deadline.at()) => {
                    return Err(match reason {
                        Some(reason) => Error::Blocked(reason),
                        None => deadline.expired("channel.flow to resume"),
                    });
                }
            }
        }
    }

    /// Listens for messages the broker returns (basic.return) on this channel when it is **not** in
    /// confirm mode. (In confirm mode a return resolves the publish's [`PublishConfirm`] as
    /// [`Confirmation::Returned`](crate::Confirmation::Returned) instead; only one that matches no
    /// outstanding publish comes here.)
    ///
    /// Bounded: at most `capacity` returns wait in the listener (at least 1, at most
    /// [`ConnectionConfig::MAX_CAPACITY`](crate::ConnectionConfig::MAX_CAPACITY)); when it is full, or
    /// after it is dropped, further returns are logged and dropped, never allowed to stall the
    /// connection. A second call replaces the first listener. On a closed channel the listener ends
    /// at once (and replaces nothing).
    pub fn returned_messages(&self, capacity: usize) -> ReturnedMessages {
        let capacity = capacity.clamp(1, crate::ConnectionConfig::MAX_CAPACITY);
        let (tx, rx) = mpsc::channel(capacity);
        let mut returns = self
            .inner
            .shared
            .returns
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // A closed channel's listener ends at once: its close took the sender already (under this
        // lock, after setting the flag), and nothing would take this one.
        if !self.inner.shared.is_closed() {
            *returns = Some(tx);
        }
        ReturnedMessages { rx }
    }

    /// basic.get: fetches one message, or `None` if the queue is empty.
    pub async fn basic_get(&self, queue: &str, no_ack: bool) -> Result<Option<GetMessage>, Error> {
        let m = basic::Get {
            queue: short("queue name", queue)?,
            no_ack,
        };
        match self.rpc_with(m.into(), None).await? {
            RpcReply::Get(message) if no_ack => Ok(message.map(GetMessage::settled_by_broker)),
            RpcReply::Get(message) => Ok(message),
            RpcReply::Method(other) => Err(unexpected(other)),
            RpcReply::Channel(_) => Err(Error::Protocol {
                code: crate::spec::ReplyCode::COMMAND_INVALID,
                text: "unexpected reply to basic.get".into(),
            }),
        }
    }

    /// basic.ack by tag (see also [`Delivery::ack`](crate::Delivery::ack)).
    pub async fn basic_ack(&self, delivery_tag: u64, multiple: bool) -> Result<(), Error> {
        self.send(
            basic::Ack {
                delivery_tag,
                multiple,
            }
            .into(),
        )
        .await
    }

    /// basic.nack by tag (RabbitMQ extension).
    pub async fn basic_nack(
        &self,
        delivery_tag: u64,
        options: BasicNackOptions,
    ) -> Result<(), Error> {
        self.send(
            basic::Nack {
                delivery_tag,
                multiple: options.multiple,
                requeue: options.requeue,
            }
            .into(),
        )
        .await
    }

    /// basic.reject by tag.
    pub async fn basic_reject(&self, delivery_tag: u64, requeue: bool) -> Result<(), Error> {
        self.send(
            basic::Reject {
                delivery_tag,
                requeue,
            }
            .into(),
        )
        .await
    }

    /// basic.recover: redeliver every unacknowledged message of this channel (requeued if `requeue`).
    pub async fn basic_recover(&self, requeue: bool) -> Result<(), Error> {
        self.rpc(basic::Recover { requeue }.into()).await.map(drop)
    }

    /// confirm.select: puts the channel in confirm mode; from now on every publish's
    /// [`PublishConfirm`] resolves with the broker's ack, nack or return.
    pub async fn confirm_select(&self) -> Result<(), Error> {
        self.rpc(confirm::Select { nowait: false }.into())
            .await
            .map(drop)
    }

    /// Whether the channel is in confirm mode.
    pub fn is_confirm_mode(&self) -> bool {
        self.inner.shared.confirm_mode.load(Ordering::Acquire)
    }

    /// tx.select: makes the channel transactional.
    pub async fn tx_select(&self) -> Result<(), Error> {
        self.rpc(tx::Select.into()).await.map(drop)
    }

    /// tx.commit: publishes and acks since the last commit or rollback take effect.
    pub async fn tx_commit(&self) -> Result<(), Error> {
        self.rpc(tx::Commit.into()).await.map(drop)
    }

    /// tx.rollback: publishes and acks since the last commit or rollback are discarded.
    pub async fn tx_rollback(&self) -> Result<(), Error> {
        self.rpc(tx::Rollback.into()).await.map(drop)
    }

    /// channel.flow from the client: asks the broker to pause (`false`) or resume deliveries. RabbitMQ
    /// answers `false` by closing the whole connection (540 NOT_IMPLEMENTED, an
    /// [`Error::ConnectionClosed`]); prefetch limits are the way to pause it.
    pub async fn channel_flow(&self, active: bool) -> Result<bool, Error> {
        match self.rpc(channel::Flow { active }.into()).await? {
            Method::ChannelFlowOk(ok) => Ok(ok.active),
            other => Err(unexpected(other)),
        }
    }
}

fn declare(
    name: &str,
    o: QueueDeclareOptions,
    arguments: FieldTable,
    no_wait: bool,
) -> Result<queue::Declare, Error> {
    Ok(queue::Declare {
        queue: short("queue name", name)?,
        passive: o.passive,
        durable: o.durable,
        exclusive: o.exclusive,
        auto_delete: o.auto_delete,
        no_wait,
        arguments,
    })
}

fn unexpected(m: Method) -> Error {
    Error::Protocol {
        code: crate::spec::ReplyCode::COMMAND_INVALID,
        text: format!("unexpected reply {}", m.name()),
    }
}
