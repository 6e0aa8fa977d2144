//! Messages received: from a consumer ([`Delivery`]) or from basic.get ([`GetMessage`]).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{
    client::options::BasicNackOptions,
    codec::{CodecError, ShortStr},
    error::Error,
    frame::PropertyList,
    io::{
        ack_queue::{Settle, Settlement},
        command::{ChannelShared, Command},
    },
    spec::{basic, BasicProperties},
};

/// Sends acks for deliveries of one channel incarnation.
///
/// An ack for a delivery whose channel has closed is refused with [`Error::StaleDelivery`] and never
/// reaches the wire (P3): delivery tags are per channel, so on a reopened channel it would ack another
/// message.
///
/// One reference count per delivery (the channel's): the driver clones it on its thread and the consumer
/// drops it on another, so each count is a cache line moving between cores. The command sender lives in
/// the channel's shared state for that reason, rather than as a second count here.
#[derive(Clone)]
pub(crate) struct DeliveryAcker {
    channel: Arc<ChannelShared>,
    no_ack: bool,
}

impl DeliveryAcker {
    pub(crate) fn new(channel: Arc<ChannelShared>, no_ack: bool) -> Self {
        DeliveryAcker { channel, no_ack }
    }

    pub(crate) fn no_ack(&self) -> bool {
        self.no_ack
    }

    pub(crate) fn channel_id(&self) -> u16 {
        self.channel.id
    }

    pub(crate) fn generation(&self) -> u64 {
        self.channel.generation
    }

    /// Queues the settlement in the channel's [`AckQueue`](crate::io::ack_queue::AckQueue); only the
    /// first of a batch costs a command, and none while a sweep the driver promised covers it.
    ///
    /// `Ok` means it is queued with a flush or a promised sweep on its way to the driver; an error means
    /// it was not queued (so retrying cannot ack twice). Cancelling the call while it waits for room
    /// changes nothing.
    async fn settle(&self, tag: u64, settle: Settle) -> Result<(), Error> {
        if self.no_ack {
            // spec (basic.ack): a tag the broker does not hold unacknowledged is a 406 channel error
            // (RabbitMQ: "unknown delivery tag"), which would end every consumer on the channel.
            return Err(Error::InvalidArgument(format!(
                "delivery {tag} came with no_ack: the broker settled it when it sent it"
            )));
        }
        if self.channel.is_closed() {
            return Err(Error::StaleDelivery(tag));
        }
        let Err(settlement) = self.channel.acks.try_push(Settlement { tag, settle }) else {
            // A flush already queued, or a sweep the driver promised, takes this one too.
            return Ok(());
        };
        let Some(tx) = self.channel.commands.upgrade() else {
            return Err(Error::StaleDelivery(tag));
        };
        let permit = match tx.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Closed(())) => return Err(Error::StaleDelivery(tag)),
            Err(mpsc::error::TrySendError::Full(())) => {
                let after = self.channel.ack_timeout;
                match tokio::time::timeout(after, tx.reserve()).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => return Err(Error::StaleDelivery(tag)),
                    Err(_) => {
                        return Err(Error::Timeout {
                            what: "room in the command queue",
                            after,
                        })
                    }
                }
            }
        };
        if self.channel.is_closed() {
            // It closed while this waited for room: the driver would drop the flush unsent.
            return Err(Error::StaleDelivery(tag));
        }
        let (channel, generation) = (self.channel.id, self.channel.generation);
        self.channel.acks.push_with_flush(settlement, || {
            permit.send(Command::FlushAcks {
                channel,
                generation,
            })
        });
        Ok(())
    }

    async fn ack(&self, tag: u64, multiple: bool) -> Result<(), Error> {
        self.settle(tag, Settle::Ack { multiple }).await
    }

    async fn nack(&self, tag: u64, options: BasicNackOptions) -> Result<(), Error> {
        let settle = Settle::Nack {
            multiple: options.multiple,
            requeue: options.requeue,
        };
        self.settle(tag, settle).await
    }

    async fn reject(&self, tag: u64, requeue: bool) -> Result<(), Error> {
        self.settle(tag, Settle::Reject { requeue }).await
    }
}

/// A message pushed to a consumer (basic.deliver).
///
/// Its consumer tag, exchange and routing key share memory with the buffer the message was read into
/// (as a single-frame body does): that saves allocations per message, but keeping one of them long after
/// the delivery keeps that buffer (up to 256 KiB) alive; copy it (`as_str().to_owned()`) to keep it.
///
/// Unless the consumer was started with `no_ack`, settle it with [`Delivery::ack`], [`Delivery::nack`] or
/// [`Delivery::reject`]; an unsettled delivery counts against the prefetch limit until its channel closes,
/// when the broker requeues it. A `no_ack` delivery was settled by the broker when it was sent: settling
/// it is an [`Error::InvalidArgument`] and sends nothing (the broker would close the channel with 406).
pub struct Delivery {
    /// The consumer it was delivered to.
    pub consumer_tag: ShortStr,
    /// Identifies the delivery on its channel, for acks.
    pub delivery_tag: u64,
    /// The broker delivered it before (to this or another consumer) without an ack.
    pub redelivered: bool,
    /// Exchange it was published to.
    pub exchange: ShortStr,
    /// Routing key it was published with.
    pub routing_key: ShortStr,
    /// Message properties (boxed: they are large, and a delivery moves several times on its way to you).
    pub properties: Box<BasicProperties>,
    /// Message body.
    pub body: Bytes,
    acker: DeliveryAcker,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("consumer_tag", &self.consumer_tag)
            .field("delivery_tag", &self.delivery_tag)
            .field("redelivered", &self.redelivered)
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("properties", &self.properties)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A delivery on its way from the driver to its consumer, with its properties still in wire form.
///
/// The driver checked them when the header frame arrived; the consumer builds them
/// ([`InboundDelivery::into_delivery`]) when it hands the delivery to the user, so the box they live in
/// is allocated and freed on the consumer's thread (see [`PropertyList`]).
pub(crate) struct InboundDelivery {
    deliver: basic::Deliver,
    properties: PropertyList,
    body: Bytes,
    acker: DeliveryAcker,
}

impl InboundDelivery {
    pub(crate) fn new(
        deliver: basic::Deliver,
        properties: PropertyList,
        body: Bytes,
        acker: DeliveryAcker,
    ) -> InboundDelivery {
        InboundDelivery {
            deliver,
            properties,
            body,
            acker,
        }
    }

    pub(crate) fn acker(&self) -> &DeliveryAcker {
        &self.acker
    }

    pub(crate) fn delivery_tag(&self) -> u64 {
        self.deliver.delivery_tag
    }

    pub(crate) fn consumer_tag(&self) -> &ShortStr {
        &self.deliver.consumer_tag
    }

    /// Builds the properties and the user's [`Delivery`]. Fails only if the properties, checked on
    /// receipt, do not decode after all (a bug: see [`PropertyList::decode`]).
    pub(crate) fn into_delivery(self) -> Result<Delivery, CodecError> {
        let properties = self.properties.decode()?;
        let d = self.deliver;
        Ok(Delivery {
            consumer_tag: d.consumer_tag,
            delivery_tag: d.delivery_tag,
            redelivered: d.redelivered,
            exchange: d.exchange,
            routing_key: d.routing_key,
            properties,
            body: self.body,
            acker: self.acker,
        })
    }
}

impl Delivery {
    /// The delivery tag.
    pub fn delivery_tag(&self) -> u64 {
        self.delivery_tag
    }

    /// Acknowledges this delivery.
    ///
    /// Acks are queued per channel and written in batches; a batch of acks that settles every delivery
    /// of the channel up to its last one, in order, goes on the wire as one `basic.ack` with `multiple`
    /// set (the same messages settled, one frame for the broker to process instead of one per message).
    ///
    /// While deliveries stream in and the channel is well inside its prefetch limit, the driver is not
    /// woken for acks: it sends them with one of its next reads once an eighth of the prefetch limit
    /// (at most 64) has piled up, and at the latest about a millisecond after the deliveries came.
    /// Closer to the limit, and for channels without a stream of deliveries, acks are sent as soon as
    /// the driver gets to them. A close of the channel or connection sends acks made before it first.
    ///
    /// Errors: [`Error::InvalidArgument`] for a `no_ack` delivery (the broker settled it when it sent it;
    /// nothing is sent), [`Error::StaleDelivery`] once its channel has closed. The same holds for
    /// [`Delivery::ack_multiple`], [`Delivery::nack`] and [`Delivery::reject`].
    pub async fn ack(&self) -> Result<(), Error> {
        self.acker.ack(self.delivery_tag, false).await
    }

    /// Acknowledges this delivery and every earlier unacknowledged one on the channel.
    pub async fn ack_multiple(&self) -> Result<(), Error> {
        self.acker.ack(self.delivery_tag, true).await
    }

    /// Negative acknowledgement (RabbitMQ extension): requeue, discard or dead-letter.
    pub async fn nack(&self, options: BasicNackOptions) -> Result<(), Error> {
        self.acker.nack(self.delivery_tag, options).await
    }

    /// Rejects this delivery: requeued if `requeue`, else discarded or dead-lettered.
    pub async fn reject(&self, requeue: bool) -> Result<(), Error> {
        self.acker.reject(self.delivery_tag, requeue).await
    }
}

/// A message fetched with [`Channel::basic_get`](crate::Channel::basic_get).
pub struct GetMessage {
    /// Identifies the delivery on its channel, for acks.
    pub delivery_tag: u64,
    /// Delivered before without an ack.
    pub redelivered: bool,
    /// Exchange it was published to.
    pub exchange: ShortStr,
    /// Routing key it was published with.
    pub routing_key: ShortStr,
    /// Messages left in the queue.
    pub message_count: u32,
    /// Message properties (boxed: they are large, and a delivery moves several times on its way to you).
    pub properties: Box<BasicProperties>,
    /// Message body.
    pub body: Bytes,
    acker: DeliveryAcker,
}

impl std::fmt::Debug for GetMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetMessage")
            .field("delivery_tag", &self.delivery_tag)
            .field("message_count", &self.message_count)
            .field("routing_key", &self.routing_key)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl GetMessage {
    pub(crate) fn new(
        ok: basic::GetOk,
        properties: Box<BasicProperties>,
        body: Bytes,
        acker: DeliveryAcker,
    ) -> GetMessage {
        GetMessage {
            delivery_tag: ok.delivery_tag,
            redelivered: ok.redelivered,
            exchange: ok.exchange,
            routing_key: ok.routing_key,
            message_count: ok.message_count,
            properties,
            body,
            acker,
        }
    }

    /// The message was fetched with `no_ack`: the broker settled it, and settling it again is refused.
    pub(crate) fn settled_by_broker(mut self) -> GetMessage {
        self.acker.no_ack = true;
        self
    }

    /// Acknowledges the message. One fetched with `no_ack` was settled by the broker when it was sent:
    /// settling it is an [`Error::InvalidArgument`], and nothing is sent.
    pub async fn ack(&self) -> Result<(), Error> {
        self.acker.ack(self.delivery_tag, false).await
    }

    /// Negative acknowledgement.
    pub async fn nack(&self, options: BasicNackOptions) -> Result<(), Error> {
        self.acker.nack(self.delivery_tag, options).await
    }

    /// Rejects the message.
    pub async fn reject(&self, requeue: bool) -> Result<(), Error> {
        self.acker.reject(self.delivery_tag, requeue).await
    }
}
