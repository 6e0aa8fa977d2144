//! A subscription to a queue.

use std::{
    future::Future,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::task::JoinHandle;

use crate::{
    client::{Channel, Delivery},
    codec::ShortStr,
    error::Error,
    io::{command::ConsumerShared, delivery_queue::DeliveryReceiver},
};

/// The deliveries of one `basic.consume`, in the order the broker sent them.
///
/// Bounded: it buffers at most the prefetch limit it started under ([`Channel::basic_qos`]), or 256
/// when there is none, and always for a `no_ack` consumer, which the broker does not limit. Then the
/// driver stops reading from the socket while the buffer is full. Poll it with
/// [`Consumer::next`], or hand it a callback with [`Consumer::run`].
///
/// Where it is polled matters for CPU, not for correctness. The driver hands over each socket read's
/// deliveries with one wake. A consumer polled in a task on the runtime (as [`Consumer::run`] does)
/// usually runs on the driver's own worker thread after that wake, with no thread hop. One polled from
/// `block_on` on another thread costs a wake and a park between two threads per batch: in
/// `benches/README.md` ("Where the consumer loop runs", and the later VMs' tables of the three runtimes)
/// that was 31–67% more CPU per message than the same loop in a task.
///
/// It ends when it is cancelled (by [`Channel::basic_cancel`], or by the broker when its queue is
/// deleted), or when its channel or connection closes; the reason is the last item, as an `Err`, unless the
/// client itself cancelled or closed. Dropping it cancels the subscription; deliveries still in flight are
/// requeued (unless `no_ack`).
pub struct Consumer {
    rx: DeliveryReceiver,
    shared: Arc<ConsumerShared>,
    channel: Channel,
    reported: bool,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("tag", &self.tag())
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) fn new(
        rx: DeliveryReceiver,
        shared: Arc<ConsumerShared>,
        channel: Channel,
    ) -> Consumer {
        Consumer {
            rx,
            shared,
            channel,
            reported: false,
        }
    }

    /// The consumer tag (the broker's, if the client asked for none).
    pub fn tag(&self) -> &str {
        self.shared.tag.get().map(ShortStr::as_str).unwrap_or("")
    }

    /// The channel the consumer lives on.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The next delivery; `Some(Err(_))` once if the consumer ended for a reason other than the client's
    /// own cancel or close, then `None`.
    ///
    /// The delivery's properties are built here, on the caller's thread, from the bytes the driver checked
    /// when they arrived. Should that fail (checking and building disagreeing would be a bug in coney),
    /// this yields the error for that delivery, which stays unacked and goes back to its queue when the
    /// channel closes, and the stream goes on.
    pub async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Poll form of [`Consumer::next`], for adapting into a `Stream`.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Delivery, Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(d)) => Poll::Ready(Some(d.into_delivery().map_err(Error::Codec))),
            Poll::Ready(None) => {
                if self.reported {
                    return Poll::Ready(None);
                }
                self.reported = true;
                match self.shared.ended.get() {
                    Some(Error::ClosedByClient(_)) | None => Poll::Ready(None),
                    Some(e) => Poll::Ready(Some(Err(e.clone()))),
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Why the consumer ended, once it has.
    pub fn end_reason(&self) -> Option<Error> {
        self.shared.ended.get().cloned()
    }

    /// Runs `handler` for each delivery on a new task; the task ends with the consumer and returns why
    /// (`None` for the client's own cancel or close). The handler runs on the caller's runtime, never on the
    /// connection's driver.
    pub fn run<F, Fut>(mut self, mut handler: F) -> JoinHandle<Option<Error>>
    where
        F: FnMut(Delivery) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        tokio::spawn(async move {
            while let Some(item) = self.next().await {
                match item {
                    Ok(delivery) => handler(delivery).await,
                    Err(e) => return Some(e),
                }
            }
            None
        })
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.shared.ended.get().is_none() {
            if let Some(tag) = self.shared.tag.get() {
                self.channel.cancel_on_drop(tag.clone());
            }
        }
        // Deliveries already buffered were never seen by the user: give them back to the queue now rather
        // than leaving them unacked until the channel closes. (Later arrivals are rejected by the driver.)
        for delivery in self.rx.close() {
            if !delivery.acker().no_ack() {
                self.channel.reject_on_drop(delivery.delivery_tag());
            }
        }
    }
}
