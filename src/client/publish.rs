//! Publish outcomes.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::{
    codec::ShortStr,
    error::Error,
    spec::{BasicProperties, ReplyCode},
};

/// How the broker settled a publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirmation {
    /// basic.ack: the broker is responsible for the message (routed queues have it; persistent messages on
    /// durable queues are on disk).
    Ack,
    /// basic.nack: the broker could not take the message.
    Nack,
    /// A mandatory message no queue took: basic.return came back, then the ack.
    Returned(Box<ReturnedMessage>),
    /// The channel is not in confirm mode: nothing will be said about the message.
    NotRequested,
}

impl Confirmation {
    /// Whether the message is safely with the broker and routed.
    pub fn is_ack(&self) -> bool {
        matches!(self, Confirmation::Ack)
    }
}

/// A message the broker handed back with basic.return.
#[derive(Debug, Clone, PartialEq)]
pub struct ReturnedMessage {
    /// Why (312 NO_ROUTE for unroutable mandatory messages).
    pub reply_code: ReplyCode,
    /// The broker's explanation.
    pub reply_text: String,
    /// Exchange it was published to.
    pub exchange: ShortStr,
    /// Routing key it was published with.
    pub routing_key: ShortStr,
    /// Its properties.
    pub properties: Box<BasicProperties>,
    /// Its body.
    pub body: Bytes,
}

/// Resolves once, when the broker settles the publish (P1: exactly one outcome per publish).
///
/// Outcomes: `Ok(Ack | Nack | Returned)` in confirm mode; `Ok(NotRequested)` at once without confirm mode;
/// `Err` if the channel or connection died before the broker answered (the message may or may not have
/// been taken). Dropping it does not cancel the publish; the message was already handed to the driver.
#[must_use = "a publish confirm says whether the broker took the message"]
pub struct PublishConfirm {
    inner: Option<oneshot::Receiver<Result<Confirmation, Error>>>,
}

impl PublishConfirm {
    pub(crate) fn new(rx: oneshot::Receiver<Result<Confirmation, Error>>) -> PublishConfirm {
        PublishConfirm { inner: Some(rx) }
    }

    pub(crate) fn not_requested() -> PublishConfirm {
        PublishConfirm { inner: None }
    }
}

impl std::fmt::Debug for PublishConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishConfirm")
            .field("requested", &self.inner.is_some())
            .finish()
    }
}

impl Future for PublishConfirm {
    type Output = Result<Confirmation, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(rx) = self.inner.as_mut() else {
            return Poll::Ready(Ok(Confirmation::NotRequested));
        };
        match Pin::new(rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            // The driver answers every waiter before it lets go; a dropped sender means it was torn down.
            Poll::Ready(Err(_)) => Poll::Ready(Err(Error::ClosedByClient("connection"))),
            Poll::Pending => Poll::Pending,
        }
    }
}
