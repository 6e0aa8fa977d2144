//! Acks, nacks and rejects on their way from deliveries to the driver, batched per channel.

use std::sync::{Mutex, MutexGuard, PoisonError};

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

/// The most settlements queued before a push must wait for room in the driver's command queue.
pub(crate) const ACK_QUEUE_MAX: usize = 4096;

/// A channel's settlements not yet taken by the driver.
///
/// Acking one delivery at a time would cost a command, a queue hand-off and a driver dispatch per
/// message. Instead an ack is appended here, and only the first one after the driver last took the queue
/// sends a command ([`Command::FlushAcks`](crate::io::command::Command)): the driver takes everything that
/// piled up meanwhile in one go and encodes it into one write.
///
/// Every change that must be paired with a command happens under the lock together with the send of
/// that command, through a permit the caller reserved in the driver's queue beforehand. So a settlement is
/// either queued with a flush on its way, or not queued at all (the caller got an error), and a caller
/// cancelled while waiting for room has changed nothing.
///
/// Order (P11): settlements keep their order among themselves, and against the channel's other commands
/// too. A channel command first takes whatever is queued here and sends it ahead of itself, in the same
/// critical section; that starts a new *epoch*, so a flush command already in the driver's queue for the
/// old epoch finds nothing to take and cannot pull later settlements ahead of the command. A command with
/// nothing to take still checks that under the lock and sends inside it ([`AckQueue::send_if_empty`]):
/// otherwise another task's flush could be queued between the check and the send, ahead of the command,
/// and a settlement made after the command would ride it.
///
/// Bounded: at most [`ACK_QUEUE_MAX`] settlements are queued without a command of their own; above that,
/// each push needs room in the (bounded) command queue, so a driver that takes no commands stops the
/// pushes too.
#[derive(Debug, Default)]
pub(crate) struct AckQueue {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    pending: Vec<Settlement>,
    epoch: u64,
    /// A flush command for `epoch` is in the driver's queue. Invariant: only set together with a push,
    /// and cleared whenever `pending` is emptied, so an empty `pending` means no flush of the current
    /// epoch is on its way ([`AckQueue::send_if_empty`] relies on it).
    flush_queued: bool,
}

impl AckQueue {
    /// Appends `s` if a flush command that will take it is already queued (and the queue is below its
    /// limit). Otherwise hands `s` back: the caller reserves room for a command and calls
    /// [`AckQueue::push_with_flush`].
    pub(crate) fn try_push(&self, s: Settlement) -> Result<(), Settlement> {
        let mut inner = self.lock();
        if !inner.flush_queued || inner.pending.len() >= ACK_QUEUE_MAX {
            return Err(s);
        }
        inner.pending.push(s);
        Ok(())
    }

    /// Appends `s` and, unless a flush is already queued for it, calls `send_flush(epoch)`, which must
    /// queue the flush command for `epoch` (with a permit reserved before; it cannot fail).
    pub(crate) fn push_with_flush(&self, s: Settlement, send_flush: impl FnOnce(u64)) {
        let mut inner = self.lock();
        let needs_flush = !inner.flush_queued || inner.pending.len() >= ACK_QUEUE_MAX;
        inner.pending.push(s);
        if needs_flush {
            inner.flush_queued = true;
            send_flush(inner.epoch);
        }
    }

    /// For the driver, on the flush command for `epoch`: moves what is queued into `out`, unless it was
    /// taken since (a newer epoch). Starts a new epoch, so other flush commands of this one still in the
    /// driver's queue (sent past the limit) cannot take later settlements ahead of later commands.
    pub(crate) fn take_for_flush(&self, epoch: u64, out: &mut Vec<Settlement>) {
        let mut inner = self.lock();
        if inner.epoch != epoch {
            return;
        }
        out.append(&mut inner.pending);
        inner.epoch += 1;
        inner.flush_queued = false;
    }

    /// For a channel command holding one reserved permit: if nothing is queued, calls `send()` (which
    /// queues the command) under the lock and returns `true`; otherwise does nothing and returns `false`
    /// (the caller reserves two permits and uses [`AckQueue::take_and_send`]). Nothing queued means no
    /// flush command of the current epoch is on its way, so a settlement made after the command needs a
    /// flush of its own, behind it.
    pub(crate) fn send_if_empty(&self, send: impl FnOnce()) -> bool {
        let inner = self.lock();
        if !inner.pending.is_empty() {
            return false;
        }
        debug_assert!(!inner.flush_queued, "a flush is queued for an empty queue");
        send();
        true
    }

    /// For a channel command: takes what is queued (starting a new epoch if anything was) and calls
    /// `send(taken)`, which must queue the settlements (if any) and then the command, with permits
    /// reserved before; both sends happen before anyone else can see the queue empty.
    pub(crate) fn take_and_send(&self, send: impl FnOnce(Vec<Settlement>)) {
        let mut inner = self.lock();
        let taken = std::mem::take(&mut inner.pending);
        if !taken.is_empty() {
            inner.epoch += 1;
            inner.flush_queued = false;
        }
        send(taken);
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

    /// Pushes like `DeliveryAcker::settle`, recording the flush commands it would send.
    fn push(q: &AckQueue, s: Settlement, flushes: &mut Vec<u64>) {
        if let Err(s) = q.try_push(s) {
            q.push_with_flush(s, |epoch| flushes.push(epoch));
        }
    }

    #[test]
    fn one_flush_command_per_batch() {
        let q = AckQueue::default();
        let mut flushes = Vec::new();
        push(&q, ack(1), &mut flushes);
        push(&q, ack(2), &mut flushes);
        push(&q, ack(3), &mut flushes);
        assert_eq!(flushes, vec![0]);
        let mut out = Vec::new();
        q.take_for_flush(0, &mut out);
        assert_eq!(out, vec![ack(1), ack(2), ack(3)]);
        assert!(q.send_if_empty(|| {}), "nothing left queued");
        push(&q, ack(4), &mut flushes);
        assert_eq!(
            flushes,
            vec![0, 1],
            "the next push queues a flush of a new epoch"
        );
    }

    #[test]
    fn a_channel_command_takes_the_queue_and_retires_the_old_flush() {
        let q = AckQueue::default();
        let mut flushes = Vec::new();
        push(&q, ack(1), &mut flushes);
        assert!(!q.send_if_empty(|| panic!("ack 1 is queued")));
        // A publish (say) goes out now: ack 1 must precede it, in the same critical section.
        let mut sent = Vec::new();
        q.take_and_send(|taken| sent = taken);
        assert_eq!(sent, vec![ack(1)]);
        assert!(q.send_if_empty(|| {}));
        q.take_and_send(|taken| assert!(taken.is_empty()));
        // An ack after the publish queues a flush for the new epoch ...
        push(&q, ack(2), &mut flushes);
        assert_eq!(flushes, vec![0, 1]);
        // ... and the old flush, which the driver sees first, must not pull it ahead of the publish.
        let mut out = Vec::new();
        q.take_for_flush(0, &mut out);
        assert!(out.is_empty());
        q.take_for_flush(1, &mut out);
        assert_eq!(out, vec![ack(2)]);
    }

    #[test]
    fn above_the_limit_every_push_needs_a_command() {
        let q = AckQueue::default();
        let mut flushes = Vec::new();
        for tag in 0..ACK_QUEUE_MAX as u64 {
            push(&q, ack(tag), &mut flushes);
        }
        assert_eq!(flushes.len(), 1);
        push(&q, ack(9999), &mut flushes);
        push(&q, ack(10000), &mut flushes);
        assert_eq!(
            flushes.len(),
            3,
            "each push past the limit waits for room for its own flush"
        );
        let mut out = Vec::new();
        q.take_for_flush(0, &mut out);
        assert_eq!(out.len(), ACK_QUEUE_MAX + 2);
        // The two extra flushes of epoch 0 are still in the driver's queue; an ack made after a later
        // command must not be taken by them.
        push(&q, ack(10001), &mut flushes);
        assert_eq!(flushes.last(), Some(&1));
        out.clear();
        q.take_for_flush(0, &mut out);
        q.take_for_flush(0, &mut out);
        assert!(out.is_empty());
        q.take_for_flush(1, &mut out);
        assert_eq!(out, vec![ack(10001)]);
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
