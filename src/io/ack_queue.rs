//! Acks, nacks and rejects on their way from deliveries to the driver, batched per channel.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex, MutexGuard, PoisonError,
};

use crate::spec::{basic, Method};

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack { multiple: bool },
    Nack { multiple: bool, requeue: bool },
    Reject { requeue: bool },
}

/// One settlement: a delivery tag and what to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settlement {
    pub tag: u64,
    pub settle: Settle,
}

impl Settlement {
    pub(crate) fn to_method(self) -> Method {
        let delivery_tag = self.tag;
        match self.settle {
            Settle::Ack { multiple } => basic::Ack {
                delivery_tag,
                multiple,
            }
            .into(),
            Settle::Nack { multiple, requeue } => basic::Nack {
                delivery_tag,
                multiple,
                requeue,
            }
            .into(),
            Settle::Reject { requeue } => basic::Reject {
                delivery_tag,
                requeue,
            }
            .into(),
        }
    }
}

/// A channel's settlements not yet taken by the driver.
///
/// Acking one delivery at a time would cost a command, a queue hand-off and a driver dispatch per
/// message. Instead an ack is appended here, and only the first one after the driver last took the queue
/// sends a command ([`Command::FlushAcks`](crate::io::command::Command)): the driver takes everything that
/// piled up meanwhile in one go and encodes it into one write.
///
/// Order (P11): settlements keep their order among themselves, and against the channel's other commands
/// too. A channel command (publish, RPC, close, ...) first takes whatever is queued here and sends it ahead
/// of itself; that starts a new *epoch*, so the flush command already in the queue for the old epoch
/// finds nothing to take and cannot pull later settlements ahead of the command.
///
/// Bounded: a delivery is settled at most once by a well-behaved caller, and unsettled deliveries are
/// bounded by the prefetch count; every flush empties the queue.
#[derive(Debug, Default)]
pub(crate) struct AckQueue {
    /// Whether `inner.pending` may be non-empty: lets the publish path skip the lock.
    pending: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pending: Vec<Settlement>,
    epoch: u64,
    /// A flush command for `epoch` is in the driver's queue (or being queued).
    flush_queued: bool,
}

impl AckQueue {
    /// Appends `s`. Returns the epoch of the flush command the caller must now queue, or `None` when one
    /// is already queued.
    pub(crate) fn push(&self, s: Settlement) -> Option<u64> {
        let mut inner = self.lock();
        inner.pending.push(s);
        self.pending.store(true, Ordering::Release);
        if inner.flush_queued {
            return None;
        }
        inner.flush_queued = true;
        Some(inner.epoch)
    }

    /// The caller could not queue the flush command for `epoch`: let the next push try again.
    pub(crate) fn flush_not_queued(&self, epoch: u64) {
        let mut inner = self.lock();
        if inner.epoch == epoch {
            inner.flush_queued = false;
        }
    }

    /// For the driver, on the flush command for `epoch`: moves what is queued into `out`, unless a channel
    /// command has taken it since (a newer epoch).
    pub(crate) fn take_for_flush(&self, epoch: u64, out: &mut Vec<Settlement>) {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        out.append(&mut inner.pending);
        inner.flush_queued = false;
        self.pending.store(false, Ordering::Release);
    }

    /// For a channel command about to be queued: what must be sent before it. Starts a new epoch if
    /// anything was queued.
    pub(crate) fn take_before_command(&self) -> Vec<Settlement> {
        if !self.pending.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.flush_queued = false;
        self.pending.store(false, Ordering::Release);
        std::mem::take(&mut inner.pending)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(tag: u64) -> Settlement {
        Settlement {
            tag,
            settle: Settle::Ack { multiple: false },
        }
    }

    #[test]
    fn one_flush_command_per_batch() {
        let q = AckQueue::default();
        assert_eq!(q.push(ack(1)), Some(0));
        assert_eq!(q.push(ack(2)), None);
        assert_eq!(q.push(ack(3)), None);
        let mut out = Vec::new();
        q.take_for_flush(0, &mut out);
        assert_eq!(out, vec![ack(1), ack(2), ack(3)]);
        assert_eq!(q.push(ack(4)), Some(0), "the next push queues a new flush");
    }

    #[test]
    fn a_channel_command_takes_the_queue_and_retires_the_old_flush() {
        let q = AckQueue::default();
        assert_eq!(q.push(ack(1)), Some(0));
        // A publish (say) goes out now: ack 1 must precede it.
        assert_eq!(q.take_before_command(), vec![ack(1)]);
        assert!(q.take_before_command().is_empty());
        // An ack after the publish queues a flush for the new epoch ...
        assert_eq!(q.push(ack(2)), Some(1));
        // ... and the old flush, which the driver sees first, must not pull it ahead of the publish.
        let mut out = Vec::new();
        q.take_for_flush(0, &mut out);
        assert!(out.is_empty());
        q.take_for_flush(1, &mut out);
        assert_eq!(out, vec![ack(2)]);
    }

    #[test]
    fn a_flush_that_could_not_be_queued_is_retried_by_the_next_push() {
        let q = AckQueue::default();
        assert_eq!(q.push(ack(1)), Some(0));
        q.flush_not_queued(0);
        assert_eq!(q.push(ack(2)), Some(0));
        let mut out = Vec::new();
        q.take_for_flush(0, &mut out);
        assert_eq!(out, vec![ack(1), ack(2)]);
    }

    #[test]
    fn settlements_become_their_methods() {
        let nack = Settlement {
            tag: 9,
            settle: Settle::Nack {
                multiple: true,
                requeue: false,
            },
        };
        assert_eq!(
            nack.to_method(),
            basic::Nack {
                delivery_tag: 9,
                multiple: true,
                requeue: false
            }
            .into()
        );
        let reject = Settlement {
            tag: 3,
            settle: Settle::Reject { requeue: true },
        };
        assert_eq!(
            reject.to_method(),
            basic::Reject {
                delivery_tag: 3,
                requeue: true
            }
            .into()
        );
    }
}
