//! The bounded queue between the driver and one consumer, handing deliveries over in batches.
//!
//! A queue that wakes its receiver on every push makes a fast consumer on another thread sleep and wake
//! once per message: it takes the one delivery there is, finds the queue empty and parks, and the next push
//! a microsecond later wakes it again. Here the driver pushes everything one read decoded without waking
//! anyone and wakes each consumer it fed once, when the read is dispatched ([`DeliveryHandle::wake_receiver`]);
//! the consumer takes the whole batch under one lock and works through it without touching the queue
//! again. In the other direction, a driver waiting for room ([`DeliveryHandle::poll_room`]) is woken once the
//! consumer has worked the queue down to half, not once per delivery taken.
//!
//! Lifecycle: the driver's [`DeliverySender`] lives in the consumer's entry in the driver (and a clone
//! with a delivery parked for room); dropping the last one (cancel, channel or connection end) ends the
//! queue, and the receiver reads what was pushed before and then `None`. Dropping or closing the
//! [`DeliveryReceiver`] makes every later push fail with [`Pushed::Closed`], so the driver can give
//! those deliveries back to the broker.
//!
//! Cost: the driver takes the queue's lock once per push (uncontended except while the consumer swaps a
//! batch out) and the consumer once per batch.
//!
//! Bound: at most `capacity` deliveries are pushed and not yet handed to the user, counting the batch the
//! receiver is working through.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll, Waker},
};

use crate::client::InboundDelivery;

/// Creates a queue holding at most `capacity` (at least 1) deliveries.
pub(crate) fn delivery_queue(capacity: usize) -> (DeliverySender, DeliveryReceiver) {
    let shared = Arc::new(Shared {
        capacity: capacity.max(1),
        senders: AtomicUsize::new(1),
        len: AtomicUsize::new(0),
        sender_waiting: AtomicBool::new(false),
        state: Mutex::new(State {
            items: VecDeque::new(),
            receiver: None,
            sender: None,
            receiver_closed: false,
            sender_closed: false,
        }),
    });
    (
        DeliverySender {
            handle: DeliveryHandle {
                shared: shared.clone(),
            },
        },
        DeliveryReceiver {
            shared,
            batch: VecDeque::new(),
        },
    )
}

struct Shared {
    capacity: usize,
    /// Live [`DeliverySender`]s; the last one to go ends the queue.
    senders: AtomicUsize,
    /// Deliveries pushed and not yet handed to the user, in `State::items` or in the receiver's batch.
    /// Raised by the sender under the lock, lowered by the receiver without it.
    len: AtomicUsize,
    /// The sender is waiting for room: set before it checks `len` again, so that a receiver lowering
    /// `len` either is seen by that check or sees this flag.
    sender_waiting: AtomicBool,
    state: Mutex<State>,
}

struct State {
    items: VecDeque<InboundDelivery>,
    receiver: Option<Waker>,
    sender: Option<Waker>,
    receiver_closed: bool,
    sender_closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What became of a push.
pub(crate) enum Pushed {
    Queued,
    /// The queue holds `capacity` deliveries: wait with [`DeliveryHandle::poll_room`].
    Full(InboundDelivery),
    /// The consumer is gone (or the queue was ended): nobody will read this delivery.
    Closed(InboundDelivery),
}

/// The driver's end of a consumer's queue. Dropping the last clone ends the queue.
pub(crate) struct DeliverySender {
    handle: DeliveryHandle,
}

impl DeliverySender {
    /// A handle on the same queue that does not keep it open.
    pub(crate) fn handle(&self) -> &DeliveryHandle {
        &self.handle
    }
}

impl Clone for DeliverySender {
    fn clone(&self) -> Self {
        self.handle.shared.senders.fetch_add(1, Ordering::Relaxed);
        DeliverySender {
            handle: self.handle.clone(),
        }
    }
}

impl Drop for DeliverySender {
    fn drop(&mut self) {
        if self.handle.shared.senders.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let waker = {
            let mut state = self.handle.shared.lock();
            state.sender_closed = true;
            state.receiver.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Pushes into a consumer's queue, for the driver; does not keep the queue open.
#[derive(Clone)]
pub(crate) struct DeliveryHandle {
    shared: Arc<Shared>,
}

impl DeliveryHandle {
    /// Queues `delivery` without waking the consumer: call [`DeliveryHandle::wake_receiver`] once the
    /// batch is complete.
    pub(crate) fn push(&self, delivery: InboundDelivery) -> Pushed {
        let mut state = self.shared.lock();
        if state.receiver_closed || state.sender_closed {
            return Pushed::Closed(delivery);
        }
        // Only the receiver lowers `len` meanwhile, so a stale value errs towards full.
        if self.shared.len.load(Ordering::Acquire) >= self.shared.capacity {
            return Pushed::Full(delivery);
        }
        state.items.push_back(delivery);
        self.shared.len.fetch_add(1, Ordering::AcqRel);
        Pushed::Queued
    }

    /// Wakes the consumer if it waits and something is queued.
    pub(crate) fn wake_receiver(&self) {
        let waker = {
            let mut state = self.shared.lock();
            if state.items.is_empty() {
                return;
            }
            state.receiver.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Ready once there is room for a push (`Ok`) or the consumer is gone (`Err`).
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let shared = &*self.shared;
        {
            let mut state = shared.lock();
            if state.receiver_closed || state.sender_closed {
                return Poll::Ready(Err(()));
            }
            if shared.len.load(Ordering::SeqCst) < shared.capacity {
                return Poll::Ready(Ok(()));
            }
            match &mut state.sender {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        shared.sender_waiting.store(true, Ordering::SeqCst);
        if shared.len.load(Ordering::SeqCst) < shared.capacity {
            shared.sender_waiting.store(false, Ordering::SeqCst);
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    /// Whether both handles are on the same queue.
    pub(crate) fn same_queue(&self, other: &DeliveryHandle) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// The consumer's end of the queue.
pub(crate) struct DeliveryReceiver {
    shared: Arc<Shared>,
    /// The batch taken from the queue, handed out one by one.
    batch: VecDeque<InboundDelivery>,
}

impl DeliveryReceiver {
    /// The next delivery; `None` once the sender is gone and everything it pushed was taken.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<InboundDelivery>> {
        if self.batch.is_empty() {
            let mut state = self.shared.lock();
            if state.items.is_empty() {
                if state.sender_closed {
                    return Poll::Ready(None);
                }
                match &mut state.receiver {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
            // The emptied batch's allocation goes back to the queue for the next pushes.
            std::mem::swap(&mut state.items, &mut self.batch);
        }
        let delivery = self.batch.pop_front().expect("batch is not empty");
        self.taken();
        Poll::Ready(Some(delivery))
    }

    /// One delivery left the queue: the sender may be waiting for room.
    fn taken(&self) {
        let shared = &*self.shared;
        let left = shared.len.fetch_sub(1, Ordering::SeqCst) - 1;
        if left <= shared.capacity / 2
            && shared.sender_waiting.load(Ordering::SeqCst)
            && shared.sender_waiting.swap(false, Ordering::SeqCst)
        {
            let waker = shared.lock().sender.take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Ends the queue from this side and returns what it still held, in order; later pushes fail with
    /// [`Pushed::Closed`].
    pub(crate) fn close(&mut self) -> VecDeque<InboundDelivery> {
        let (items, waker) = {
            let mut state = self.shared.lock();
            state.receiver_closed = true;
            (std::mem::take(&mut state.items), state.sender.take())
        };
        if let Some(w) = waker {
            w.wake();
        }
        let mut rest = std::mem::take(&mut self.batch);
        rest.extend(items);
        rest
    }
}

impl Drop for DeliveryReceiver {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::AtomicUsize,
        task::{Wake, Waker},
        time::Duration,
    };

    use bytes::Bytes;
    use tokio::sync::mpsc;

    use super::*;
    use crate::{client::DeliveryAcker, io::command::ChannelShared, spec::basic};

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker::default());
        (counter.clone(), Waker::from(counter))
    }

    fn delivery(tag: u64) -> InboundDelivery {
        let (tx, _rx) = mpsc::channel(1);
        let deliver = basic::Deliver {
            delivery_tag: tag,
            ..Default::default()
        };
        let acker = DeliveryAcker::new(
            Arc::new(ChannelShared::new(
                1,
                1,
                1,
                tx.downgrade(),
                Duration::from_secs(30),
            )),
            false,
        );
        InboundDelivery::new(deliver, Default::default(), Bytes::new(), acker)
    }

    fn recv(rx: &mut DeliveryReceiver, w: &Waker) -> Poll<Option<u64>> {
        rx.poll_recv(&mut Context::from_waker(w))
            .map(|d| d.map(|d| d.delivery_tag()))
    }

    #[test]
    fn a_batch_wakes_the_receiver_once_and_arrives_in_order() {
        let (tx, mut rx) = delivery_queue(10);
        let (count, w) = waker();
        assert_eq!(recv(&mut rx, &w), Poll::Pending);
        for tag in 1..=5 {
            assert!(matches!(tx.handle().push(delivery(tag)), Pushed::Queued));
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "pushes do not wake");
        tx.handle().wake_receiver();
        tx.handle().wake_receiver();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake per batch");
        for tag in 1..=5 {
            assert_eq!(recv(&mut rx, &w), Poll::Ready(Some(tag)));
        }
        assert_eq!(recv(&mut rx, &w), Poll::Pending);
    }

    #[test]
    fn capacity_counts_the_batch_in_hand_and_room_wakes_the_sender_at_half() {
        let (tx, mut rx) = delivery_queue(4);
        let q = tx.handle();
        for tag in 1..=4 {
            assert!(matches!(q.push(delivery(tag)), Pushed::Queued));
        }
        assert!(matches!(q.push(delivery(5)), Pushed::Full(_)));
        let (sender_wakes, sw) = waker();
        assert!(q.poll_room(&mut Context::from_waker(&sw)).is_pending());
        let (_, rw) = waker();
        // The receiver takes all four as its batch; they count until handed out, and the waiting sender
        // is woken only once half of them have been.
        assert_eq!(recv(&mut rx, &rw), Poll::Ready(Some(1)));
        assert_eq!(
            sender_wakes.0.load(Ordering::SeqCst),
            0,
            "3 left is above half"
        );
        assert_eq!(recv(&mut rx, &rw), Poll::Ready(Some(2)));
        assert_eq!(sender_wakes.0.load(Ordering::SeqCst), 1, "woken at half");
        assert_eq!(recv(&mut rx, &rw), Poll::Ready(Some(3)));
        assert_eq!(sender_wakes.0.load(Ordering::SeqCst), 1, "woken once");
        assert!(q.poll_room(&mut Context::from_waker(&sw)).is_ready());
        assert!(matches!(q.push(delivery(5)), Pushed::Queued));
    }

    #[test]
    fn dropping_the_sender_ends_the_queue_after_what_was_pushed() {
        let (tx, mut rx) = delivery_queue(4);
        let (count, w) = waker();
        assert!(matches!(tx.handle().push(delivery(1)), Pushed::Queued));
        let handle = tx.handle().clone();
        drop(tx);
        assert!(matches!(handle.push(delivery(2)), Pushed::Closed(_)));
        assert_eq!(recv(&mut rx, &w), Poll::Ready(Some(1)));
        assert_eq!(recv(&mut rx, &w), Poll::Ready(None));
        let (tx, mut rx) = delivery_queue(4);
        assert_eq!(recv(&mut rx, &w), Poll::Pending);
        drop(tx);
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the waiting receiver is woken"
        );
        assert_eq!(recv(&mut rx, &w), Poll::Ready(None));
    }

    #[test]
    fn a_clone_keeps_the_queue_open_until_it_is_dropped_too() {
        let (tx, mut rx) = delivery_queue(4);
        let (_, w) = waker();
        let parked = tx.clone();
        drop(tx);
        assert!(matches!(parked.handle().push(delivery(1)), Pushed::Queued));
        assert_eq!(recv(&mut rx, &w), Poll::Ready(Some(1)));
        assert_eq!(recv(&mut rx, &w), Poll::Pending, "still open");
        drop(parked);
        assert_eq!(recv(&mut rx, &w), Poll::Ready(None));
    }

    #[test]
    fn closing_the_receiver_returns_the_rest_and_refuses_pushes() {
        let (tx, mut rx) = delivery_queue(2);
        let q = tx.handle();
        assert!(matches!(q.push(delivery(1)), Pushed::Queued));
        assert!(matches!(q.push(delivery(2)), Pushed::Queued));
        let (sender_wakes, sw) = waker();
        assert!(q.poll_room(&mut Context::from_waker(&sw)).is_pending());
        let (_, rw) = waker();
        assert_eq!(recv(&mut rx, &rw), Poll::Ready(Some(1)));
        assert!(matches!(q.push(delivery(3)), Pushed::Queued));
        let rest: Vec<u64> = rx
            .close()
            .iter()
            .map(InboundDelivery::delivery_tag)
            .collect();
        assert_eq!(rest, [2, 3]);
        assert!(sender_wakes.0.load(Ordering::SeqCst) >= 1);
        assert!(matches!(
            q.poll_room(&mut Context::from_waker(&sw)),
            Poll::Ready(Err(()))
        ));
        assert!(matches!(q.push(delivery(4)), Pushed::Closed(_)));
    }

    /// A sender and a receiver on two threads: everything arrives, in order, and neither side is left
    /// waiting (the test would hang) however their wakes interleave.
    #[test]
    fn threads_hand_over_everything_in_order() {
        const N: u64 = 20_000;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (tx, mut rx) = delivery_queue(7);
            let producer = tokio::spawn(async move {
                let q = tx.handle().clone();
                for tag in 1..=N {
                    let mut d = delivery(tag);
                    loop {
                        match q.push(d) {
                            Pushed::Queued => break,
                            Pushed::Full(back) => {
                                d = back;
                                q.wake_receiver();
                                std::future::poll_fn(|cx| q.poll_room(cx))
                                    .await
                                    .expect("receiver alive");
                            }
                            Pushed::Closed(_) => panic!("receiver closed"),
                        }
                    }
                    if tag % 3 == 0 {
                        q.wake_receiver();
                    }
                }
                q.wake_receiver();
                drop(tx);
            });
            let mut next = 1;
            while let Some(d) = std::future::poll_fn(|cx| rx.poll_recv(cx)).await {
                assert_eq!(d.delivery_tag(), next);
                next += 1;
            }
            assert_eq!(next, N + 1);
            producer.await.expect("producer");
        });
    }
}
