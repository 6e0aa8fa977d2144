//! Turns the wakes that reach the driver while it is being polled into another pass of its loop, so that
//! the runtime seldom sees them.
//!
//! A handle on another thread that gives the driver work (a publish, an ack flush, an RPC) wakes the
//! driver's task. Very often the driver is running at that moment: it has just handed a delivery to the
//! consumer, whose thread took the reply and published at once. Tokio treats a task woken during its own
//! poll as one that yielded: when the poll returns it puts the task at the back of the worker's queue and,
//! if no worker is searching for work, wakes a parked one to come and steal it. On a machine with few CPUs
//! that worker finds nothing, and the futex wake and the wasted wake-up are paid on most request/reply
//! round trips (see `benches/README.md`, "Where a round trip's time goes").
//!
//! [`WakeGated`] polls the driver with a waker of its own. While the driver is being polled, that waker
//! only records that a wake came; when the driver returns `Pending`, a recorded wake means "poll again",
//! and `WakeGated` does so at once, up to [`MAX_REPOLLS`] times, before it hands the wake to the runtime.
//! Outside a poll the waker wakes the task as usual (so does a wake that lands between the end of a pass
//! and the poller's look at the record: a wasted pass or a wasted wake, never a lost one). No wake is
//! lost: the waker records the wake before it looks at whether a poll is running, and the poller clears
//! "running" before it looks at the record, so (all four operations being sequentially consistent) at
//! least one of them sees the other. Both sides record and take the wake with read-modify-writes, so the
//! pass that takes it synchronizes with every waker that recorded it, not only the last one.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering::SeqCst},
        Arc, Mutex, OnceLock, PoisonError,
    },
    task::{Context, Poll, Wake, Waker},
};

/// Passes of the driver's loop that one poll by the runtime may make for wakes that came during the
/// poll. Bounded, so that a future that wakes itself on every poll cannot keep the worker from its other
/// tasks: after the bound, the wake goes to the runtime, which polls the driver again after them. (Tokio
/// 1.54 defers the wakes of an exhausted cooperative budget and of `yield_now` until the poll is over, so
/// those reach the runtime directly and never count here.)
pub(crate) const MAX_REPOLLS: usize = 4;

/// A future polled with a waker that folds wakes during its poll into another poll (module docs).
pub(crate) struct WakeGated<F> {
    inner: Pin<Box<F>>,
    gate: Arc<Gate>,
    waker: Waker,
}

struct Gate {
    /// Set while the inner future is being polled.
    polling: AtomicBool,
    /// Set by every wake; cleared by the poller before each pass.
    woken: AtomicBool,
    /// The waker of the task that polls [`WakeGated`], for wakes outside a poll: set at the first poll
    /// and read without a lock, because a spawned task keeps its waker.
    task: OnceLock<Waker>,
    /// Set once a poll came with a waker that would not wake `task` (the future was moved to another
    /// task); from then on `moved` holds the current waker and every wake and poll takes its lock.
    was_moved: AtomicBool,
    moved: Mutex<Option<Waker>>,
}

impl<F: Future> WakeGated<F> {
    pub(crate) fn new(inner: F) -> Self {
        let gate = Arc::new(Gate {
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
            task: OnceLock::new(),
            was_moved: AtomicBool::new(false),
            moved: Mutex::new(None),
        });
        WakeGated {
            inner: Box::pin(inner),
            waker: Waker::from(gate.clone()),
            gate,
        }
    }
}

impl Gate {
    fn remember(&self, waker: &Waker) {
        let first = self.task.get_or_init(|| waker.clone());
        if !self.was_moved.load(SeqCst) && first.will_wake(waker) {
            return;
        }
        let mut moved = self.moved.lock().unwrap_or_else(PoisonError::into_inner);
        if !moved.as_ref().is_some_and(|m| m.will_wake(waker)) {
            *moved = Some(waker.clone());
        }
        self.was_moved.store(true, SeqCst);
    }
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A swap, not a store: it continues the release sequence of an earlier waker's record, so the pass
        // that takes the record sees what every waker announced.
        self.woken.swap(true, SeqCst);
        if self.polling.load(SeqCst) {
            // The poller will see `woken` when the pass ends.
            return;
        }
        if self.was_moved.load(SeqCst) {
            let moved = self
                .moved
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(task) = moved {
                task.wake();
            }
        } else if let Some(task) = self.task.get() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future> Future for WakeGated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.gate.remember(cx.waker());
        let this = &mut *self;
        let mut inner_cx = Context::from_waker(&this.waker);
        for _ in 0..=MAX_REPOLLS {
            // A read-modify-write, so that a wake recorded before it is seen with what it announced.
            this.gate.woken.swap(false, SeqCst);
            this.gate.polling.store(true, SeqCst);
            let polled = {
                // Clears `polling` even if the inner poll panics, so later wakes are not swallowed.
                let _pass = Pass(&this.gate.polling);
                this.inner.as_mut().poll(&mut inner_cx)
            };
            if polled.is_ready() {
                return polled;
            }
            if !this.gate.woken.swap(false, SeqCst) {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// One pass of the inner future: `polling` is cleared when it ends, however it ends.
struct Pass<'a>(&'a AtomicBool);

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.0.store(false, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// Counts how often the outer task was woken.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    /// A waker for the outer task, and its count of wakes.
    fn counting_waker() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        (counter, waker)
    }

    fn two_worker_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("runtime")
    }

    /// A future that wakes itself `wakes` times in its polls, and is done at poll `done_at`.
    struct SelfWaking {
        polls: usize,
        wakes: usize,
        done_at: usize,
        saved: Option<Waker>,
    }

    impl Future for SelfWaking {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls == self.done_at {
                return Poll::Ready(self.polls);
            }
            self.saved = Some(cx.waker().clone());
            if self.wakes > 0 {
                self.wakes -= 1;
                cx.waker().wake_by_ref();
            }
            Poll::Pending
        }
    }

    fn gated(wakes: usize, done_at: usize) -> WakeGated<SelfWaking> {
        WakeGated::new(SelfWaking {
            polls: 0,
            wakes,
            done_at,
            saved: None,
        })
    }

    #[test]
    fn a_wake_during_the_poll_is_another_pass_not_a_task_wake() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut fut = gated(2, usize::MAX);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(fut.inner.polls, 3, "two wakes, two more passes");
        assert_eq!(counter.0.load(Relaxed), 0);
    }

    #[test]
    fn a_future_ready_on_a_repoll_is_ready() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut fut = gated(1, 2);
        assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(2));
        assert_eq!(counter.0.load(Relaxed), 0);
    }

    /// The case the gate is for: a wake from another thread while the inner future is being polled.
    #[test]
    fn a_wake_from_another_thread_during_the_poll_is_another_pass() {
        struct WokenFromAfar {
            polls: usize,
        }
        impl Future for WokenFromAfar {
            type Output = ();
            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                self.polls += 1;
                if self.polls == 1 {
                    let waker = cx.waker().clone();
                    std::thread::spawn(move || waker.wake())
                        .join()
                        .expect("waking thread");
                }
                Poll::Pending
            }
        }
        let (counter, waker) = counting_waker();
        let mut fut = WakeGated::new(WokenFromAfar { polls: 0 });
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        assert_eq!(fut.inner.polls, 2);
        assert_eq!(counter.0.load(Relaxed), 0);
    }

    #[test]
    fn endless_self_wakes_go_to_the_runtime_after_the_bound() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut fut = gated(usize::MAX, usize::MAX);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(fut.inner.polls, MAX_REPOLLS + 1);
        assert_eq!(counter.0.load(Relaxed), 1, "the last wake is handed on");
    }

    #[test]
    fn a_wake_between_polls_wakes_the_task() {
        let (counter, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut fut = gated(0, usize::MAX);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        let saved = fut.inner.saved.clone().expect("registered");
        let from_another_thread = std::thread::spawn(move || saved.wake());
        from_another_thread.join().expect("waker thread");
        assert_eq!(counter.0.load(Relaxed), 1);
    }

    /// Wakes from another thread racing the driver's polls: a lost wake would leave the receiver asleep
    /// with messages waiting, and the timeout would fail the test.
    #[test]
    fn no_wake_is_lost_to_a_race_with_the_poll() {
        let runtime = two_worker_runtime();
        const MESSAGES: u64 = 200_000;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(4);
        // Two producers, so that wakes also race each other.
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in (p..MESSAGES).step_by(2) {
                        if tx.blocking_send(i).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let received = runtime.block_on(async move {
            let receiver = tokio::spawn(WakeGated::new(async move {
                let mut sum = 0u64;
                while let Some(i) = rx.recv().await {
                    sum += i;
                }
                sum
            }));
            tokio::time::timeout(std::time::Duration::from_secs(60), receiver).await
        });
        // Dropping the runtime drops a stuck receiver, which lets the producers stop.
        drop(runtime);
        for producer in producers {
            producer.join().expect("producer");
        }
        let sum = received.expect("no lost wake").expect("receiver task");
        assert_eq!(sum, MESSAGES * (MESSAGES - 1) / 2);
    }

    /// `yield_now` inside the gated future: tokio defers its wake until the poll is over, so it reaches
    /// the runtime, and the future still runs to the end.
    #[test]
    fn a_gated_future_that_yields_completes() {
        let runtime = two_worker_runtime();
        let done = runtime.block_on(async {
            let task = tokio::spawn(WakeGated::new(async {
                for _ in 0..10_000 {
                    tokio::task::yield_now().await;
                }
                true
            }));
            tokio::time::timeout(std::time::Duration::from_secs(60), task).await
        });
        assert!(done.expect("no lost wake").expect("task"));
    }

    #[test]
    fn a_wake_after_a_new_task_waker_reaches_the_new_one() {
        let (first, w1) = counting_waker();
        let (second, w2) = counting_waker();
        let mut fut = gated(0, usize::MAX);
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(&w1))
            .is_pending());
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(&w2))
            .is_pending());
        fut.inner.saved.clone().expect("registered").wake();
        assert_eq!((first.0.load(Relaxed), second.0.load(Relaxed)), (0, 1));
        // And back to the first.
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(&w1))
            .is_pending());
        fut.inner.saved.clone().expect("registered").wake();
        assert_eq!((first.0.load(Relaxed), second.0.load(Relaxed)), (1, 1));
    }
}
