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
/// While deliveries stream in, even that command is saved: the driver *promises* the queue a sweep when it
/// hands a consumer deliveries ([`AckQueue::promise_sweep`]) and keeps the promise at one of its next
/// reads, once a batch has piled up, or after a short timer ([`AckQueue::sweep`]), and pushes made
/// meanwhile need no command at all. That
/// saves a wake of the driver (a context switch on each side) per batch; [`may_hold_acks`] says when
/// the broker's prefetch credit allows it.
///
/// Every change that must be paired with a command happens under the lock together with the send of
/// that command, through a permit the caller reserved in the driver's queue beforehand. So a settlement is
/// either queued with a flush or a promised sweep on its way, or not queued at all (the caller got an
/// error), and a caller cancelled while waiting for room has changed nothing.
///
/// Order (P11): settlements keep their order among themselves, and against the channel's other commands
/// too. Every command of the channel is queued under this lock, and counted ([`Inner::commands`]):
///
/// - A command first takes whatever is queued here and sends it ahead of itself, in the same critical
///   section ([`AckQueue::take_and_send`]), or checks under the lock that nothing is queued and sends
///   inside it ([`AckQueue::send_if_empty`]). So whatever is queued here was pushed after the last
///   counted command, and must not reach the wire before it.
/// - The driver counts the channel's commands it has handled and takes the queue only when that count
///   has reached [`Inner::commands`] (read under the lock): then every command the queued settlements
///   follow has been handled, so the settlements go out in the same place a flush command queued right
///   behind those commands would put them. (Handled is not always written: a synchronous method waits
///   for the replies to the channel's earlier ones, and acks and publishes do not wait for it, as the
///   `Channel` docs say. Awaiting the method before acking orders the two.)
/// - A flush command or sweep that comes too early takes nothing, and need not: a settlement pushed
///   behind a command the driver has not handled yet has a flush command of its own behind that command
///   (a promise made before the command does not cover it, and a flush queued before it cannot be
///   ridden).
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
    /// The channel commands queued through this queue (all of them: see [`AckQueue`]), settlements a
    /// command took along included.
    commands: u64,
    /// A flush command queued after the last of `commands` is in the driver's queue, so a push may ride
    /// it. Invariant: only set together with a push, and cleared whenever `pending` is emptied or a
    /// command is counted, so an empty `pending` means no such flush is on its way.
    flush_queued: bool,
    /// `Some(n)`: the driver promised to take the queue soon on its own, having handled `n` of the
    /// channel's commands then. It covers pushes only while `commands` is still `n`: a promise made
    /// with a command still in the driver's queue, or before a command, would have the driver's sweep
    /// find the queue not ready, and nothing would take it.
    promised_at: Option<u64>,
}

impl Inner {
    /// Whether a push may go without a command of its own.
    fn covered(&self) -> bool {
        self.pending.len() < ACK_QUEUE_MAX
            && (self.flush_queued || self.promised_at == Some(self.commands))
    }

    /// Moves what is queued into `out` if the driver, having handled `handled` of the channel's
    /// commands, has handled every command the queued settlements follow.
    fn take_if_ready(&mut self, handled: u64, out: &mut Vec<Settlement>) {
        debug_assert!(
            handled <= self.commands,
            "the driver handled more commands than were queued"
        );
        if handled >= self.commands {
            out.append(&mut self.pending);
            self.flush_queued = false;
        }
    }
}

impl AckQueue {
    /// Appends `s` if a flush command or a promised sweep will take it (and the queue is below its
    /// limit). Otherwise hands `s` back: the caller reserves room for a command and calls
    /// [`AckQueue::push_with_flush`].
    pub(crate) fn try_push(&self, s: Settlement) -> Result<(), Settlement> {
        let mut inner = self.lock();
        if !inner.covered() {
            return Err(s);
        }
        inner.pending.push(s);
        Ok(())
    }

    /// Appends `s` and, unless a flush or promised sweep already covers it (things may have changed
    /// while the caller waited for room), calls `send_flush()`, which must queue a flush command (with
    /// a permit reserved before; it cannot fail).
    pub(crate) fn push_with_flush(&self, s: Settlement, send_flush: impl FnOnce()) {
        let mut inner = self.lock();
        let needs_flush = !inner.covered();
        inner.pending.push(s);
        if needs_flush {
            inner.flush_queued = true;
            send_flush();
        }
    }

    /// For the driver, having handled `handled` of the channel's commands: it will take the queue with
    /// [`AckQueue::sweep`] soon without being asked (on its next read, or after a short timer), so
    /// settlements until then need no flush command of their own, unless a command of the channel
    /// comes between.
    pub(crate) fn promise_sweep(&self, handled: u64) {
        self.lock().promised_at = Some(handled);
    }

    /// For the driver, keeping its promise: takes what is queued if it is ready (see [`AckQueue`]) and
    /// retires the promise; later settlements need a flush command again. What is not ready was pushed
    /// behind a command the promise did not cover, and has a flush command of its own.
    ///
    /// With fewer than `min_batch` settlements queued, all of them ready and covered by the promise,
    /// takes nothing and returns `false`: the promise stands, for the driver to keep later.
    pub(crate) fn sweep(&self, handled: u64, min_batch: usize, out: &mut Vec<Settlement>) -> bool {
        let mut inner = self.lock();
        if inner.pending.len() < min_batch
            && handled >= inner.commands
            && inner.promised_at == Some(inner.commands)
        {
            return false;
        }
        inner.promised_at = None;
        inner.take_if_ready(handled, out);
        true
    }

    /// For the driver, closing a channel whose last handle was dropped without room for its close: if
    /// every command the channel queued has been handled (`handled`), takes what is queued, which goes
    /// out before the close, retires any promised sweep, and returns `true`.
    pub(crate) fn take_if_all_handled(&self, handled: u64, out: &mut Vec<Settlement>) -> bool {
        let mut inner = self.lock();
        if handled < inner.commands {
            return false;
        }
        inner.take_if_ready(handled, out);
        inner.promised_at = None;
        true
    }

    /// For the driver, on a flush command, having handled `handled` of the channel's commands: takes
    /// what is queued if it is ready. A flush queued before a later command of the channel finds the
    /// settlements pushed after that command not ready, and leaves them to their own flush.
    pub(crate) fn take_for_flush(&self, handled: u64, out: &mut Vec<Settlement>) {
        self.lock().take_if_ready(handled, out);
    }

    /// For a channel command holding one reserved permit: if nothing is queued, counts the command and
    /// calls `send()` (which queues it) under the lock, and returns `true`; otherwise does nothing and
    /// returns `false` (the caller reserves two permits and uses [`AckQueue::take_and_send`]).
    pub(crate) fn send_if_empty(&self, send: impl FnOnce()) -> bool {
        let mut inner = self.lock();
        if !inner.pending.is_empty() {
            return false;
        }
        debug_assert!(!inner.flush_queued, "a flush is queued for an empty queue");
        inner.commands += 1;
        send();
        true
    }

    /// For a channel command: takes what is queued and calls `send(taken)`, which must queue the
    /// settlements as one command (if there are any) and then the command, with permits reserved
    /// before; both are counted, and both sends happen before anyone else can see the queue empty.
    pub(crate) fn take_and_send(&self, send: impl FnOnce(Vec<Settlement>)) {
        let mut inner = self.lock();
        let taken = std::mem::take(&mut inner.pending);
        inner.flush_queued = false;
        inner.commands += if taken.is_empty() { 1 } else { 2 };
        send(taken);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether the driver may hold a channel's acks until its next read (and promise the queue a sweep),
/// given how many deliveries it has handed out and not yet seen settled (`None`: unknown) and the
/// channel's prefetch count (0: unlimited).
///
/// Holding must not stall the broker: it has to keep prefetch credit to send the deliveries whose read
/// brings the acks out. With a quarter of the limit to spare it has; when its queue is empty instead,
/// nothing waits on the acks and the driver's sweep timer sends them. Unknown means no.
pub(crate) fn may_hold_acks(unsettled: Option<u64>, prefetch: u16) -> bool {
    match (unsettled, u64::from(prefetch)) {
        (None, _) => false,
        (Some(_), 0) => true,
        // The tags are the broker's: saturating, so a peer's huge tag means "no", not an overflow.
        (Some(unsettled), prefetch) => unsettled.saturating_mul(4) < prefetch * 3,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    fn ack(tag: u64) -> Settlement {
        Settlement {
            tag,
            settle: Settle::Ack { multiple: false },
        }
    }

    /// Pushes like `DeliveryAcker::settle`; returns whether it queued a flush command.
    fn push(q: &AckQueue, s: Settlement) -> bool {
        let mut flushed = false;
        if let Err(s) = q.try_push(s) {
            q.push_with_flush(s, || flushed = true);
        }
        flushed
    }

    fn pending(q: &AckQueue) -> usize {
        q.lock().pending.len()
    }

    #[test]
    fn one_flush_command_per_batch() {
        let q = AckQueue::default();
        assert!(push(&q, ack(1)));
        assert!(!push(&q, ack(2)));
        assert!(!push(&q, ack(3)));
        let mut out = Vec::new();
        q.take_for_flush(0, &mut out);
        assert_eq!(out, vec![ack(1), ack(2), ack(3)]);
        assert!(q.send_if_empty(|| {}), "nothing left queued");
        assert!(push(&q, ack(4)), "the next push queues a flush again");
    }

    #[test]
    fn a_channel_command_takes_the_queue_and_an_earlier_flush_cannot_pull_later_acks_ahead() {
        let q = AckQueue::default();
        assert!(push(&q, ack(1)));
        assert!(!q.send_if_empty(|| panic!("ack 1 is queued")));
        // A publish (say) goes out now: ack 1 must precede it, in the same critical section (two
        // commands: the settlements, then the publish).
        let mut sent = Vec::new();
        q.take_and_send(|taken| sent = taken);
        assert_eq!(sent, vec![ack(1)]);
        // An ack after the publish needs a flush of its own, behind the publish ...
        assert!(push(&q, ack(2)));
        // ... and the old flush, which the driver handles before the two commands, takes nothing.
        let mut out = Vec::new();
        q.take_for_flush(0, &mut out);
        assert!(out.is_empty());
        assert_eq!(pending(&q), 1);
        q.take_for_flush(2, &mut out);
        assert_eq!(out, vec![ack(2)]);
    }

    #[test]
    fn above_the_limit_every_push_needs_a_command() {
        let q = AckQueue::default();
        let mut flushes = 0;
        for tag in 0..ACK_QUEUE_MAX as u64 + 2 {
            flushes += usize::from(push(&q, ack(tag)));
        }
        assert_eq!(
            flushes, 3,
            "each push past the limit waits for room for its own flush"
        );
        q.promise_sweep(0);
        assert!(push(&q, ack(9999)), "a promise does not lift the limit");
    }

    #[test]
    fn acks_are_held_only_with_prefetch_credit_to_spare() {
        assert!(may_hold_acks(Some(10_000), 0), "no prefetch limit");
        assert!(may_hold_acks(Some(749), 1000));
        assert!(!may_hold_acks(Some(750), 1000));
        assert!(
            !may_hold_acks(Some(1), 1),
            "prefetch 1 needs every ack at once"
        );
        assert!(!may_hold_acks(Some(3), 4));
        assert!(may_hold_acks(Some(2), 4));
        assert!(!may_hold_acks(None, 0), "settlement state unknown");
        // The broker chooses the tags: a huge gap is "no", not an overflow.
        assert!(!may_hold_acks(Some(u64::MAX / 2), 1000));
        assert!(!may_hold_acks(Some(u64::MAX), u16::MAX));
    }

    #[test]
    fn a_promised_sweep_takes_pushes_without_commands_until_it_is_kept() {
        let q = AckQueue::default();
        q.promise_sweep(0);
        assert!(!push(&q, ack(1)), "the promised sweep will take it");
        assert!(!push(&q, ack(2)));
        let mut out = Vec::new();
        q.sweep(0, 0, &mut out);
        assert_eq!(out, vec![ack(1), ack(2)]);
        assert!(
            push(&q, ack(3)),
            "after the sweep a push needs its own flush"
        );
    }

    #[test]
    fn a_sweep_at_a_read_waits_for_a_batch_while_the_promise_covers_it() {
        let q = AckQueue::default();
        q.promise_sweep(0);
        assert!(!push(&q, ack(1)));
        let mut out = Vec::new();
        assert!(
            !q.sweep(0, 2, &mut out),
            "one is not a batch: the promise stands"
        );
        assert!(out.is_empty());
        assert!(!push(&q, ack(2)), "still covered");
        assert!(q.sweep(0, 2, &mut out));
        assert_eq!(out, vec![ack(1), ack(2)]);
        // Behind a command the promise covers nothing, and a sweep retires it at once.
        q.promise_sweep(0);
        assert!(q.send_if_empty(|| {}));
        assert!(push(&q, ack(3)));
        out.clear();
        assert!(q.sweep(1, 64, &mut out));
        assert_eq!(out, vec![ack(3)]);
    }

    #[test]
    fn a_promise_does_not_cover_pushes_behind_a_later_command() {
        let q = AckQueue::default();
        q.promise_sweep(0);
        assert!(q.send_if_empty(|| {}));
        assert!(
            push(&q, ack(1)),
            "behind the command, the ack needs a flush behind it"
        );
        let mut out = Vec::new();
        q.sweep(0, 0, &mut out);
        assert!(out.is_empty(), "the command is not handled yet");
        q.take_for_flush(1, &mut out);
        assert_eq!(out, vec![ack(1)]);
    }

    #[test]
    fn a_promise_made_with_a_command_still_queued_covers_nothing() {
        let q = AckQueue::default();
        assert!(q.send_if_empty(|| {}));
        q.promise_sweep(0);
        assert!(push(&q, ack(1)));
    }

    /// One step of a single-threaded model of the handles and the driver around one channel's queue.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Ack,
        Command,
        DriverHandles,
        DriverPromises,
        DriverSweeps,
        /// A sweep at a read, which leaves the promise standing below a batch of 2.
        DriverSweepsAtRead,
        Close,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Ack),
            2 => Just(Step::Command),
            4 => Just(Step::DriverHandles),
            1 => Just(Step::DriverPromises),
            1 => Just(Step::DriverSweeps),
            1 => Just(Step::DriverSweepsAtRead),
            1 => Just(Step::Close),
        ]
    }

    enum Queued {
        Flush,
        Settle(Vec<Settlement>),
        Command(u64),
        Close,
    }

    #[derive(Debug, PartialEq, Clone, Copy)]
    enum Wire {
        Settle(u64),
        Command(u64),
    }

    proptest! {
        /// Whatever the interleaving: every settlement reaches the wire once (unless it was made after
        /// the close was queued), after every channel command queued before it and before every one
        /// queued after it; and when the driver has handled everything and kept its promise, nothing
        /// is left behind.
        #[test]
        fn settlements_keep_their_place_among_commands_and_are_never_stranded(
            steps in proptest::collection::vec(step(), 1..200)
        ) {
            let q = AckQueue::default();
            let mut fifo = VecDeque::new();
            let mut wire = Vec::new();
            let (mut handled, mut promised, mut closing, mut closed) = (0u64, false, false, false);
            let (mut next_tag, mut next_command) = (0u64, 0u64);
            // Per settlement: the number of commands queued before it, and whether the close was.
            let mut made = Vec::new();
            let mut settlements = Vec::new();
            let drive = |fifo: &mut VecDeque<Queued>, wire: &mut Vec<Wire>, handled: &mut u64,
                         promised: &mut bool, closed: &mut bool, settlements: &mut Vec<Settlement>| {
                if let Some(queued) = fifo.pop_front() {
                    drive_one(&q, queued, closed, promised, handled, settlements, wire);
                }
            };
            for step in steps {
                match step {
                    Step::Ack => {
                        made.push((next_command, closing));
                        if push(&q, ack(next_tag)) {
                            fifo.push_back(Queued::Flush);
                        }
                        next_tag += 1;
                    }
                    Step::Command if !closing => {
                        let id = next_command;
                        next_command += 1;
                        if !q.send_if_empty(|| fifo.push_back(Queued::Command(id))) {
                            q.take_and_send(|taken| {
                                if !taken.is_empty() {
                                    fifo.push_back(Queued::Settle(taken));
                                }
                                fifo.push_back(Queued::Command(id));
                            });
                        }
                    }
                    Step::Command => {}
                    Step::DriverHandles => drive(&mut fifo, &mut wire, &mut handled,
                        &mut promised, &mut closed, &mut settlements),
                    Step::DriverPromises if !closed => {
                        if !promised {
                            promised = true;
                            q.promise_sweep(handled);
                        }
                    }
                    Step::DriverPromises => {}
                    Step::DriverSweeps => {
                        if std::mem::take(&mut promised) && !closed {
                            q.sweep(handled, 0, &mut settlements);
                            wire.extend(settlements.drain(..).map(|s| Wire::Settle(s.tag)));
                        }
                    }
                    Step::DriverSweepsAtRead => {
                        if promised && !closed {
                            promised = !q.sweep(handled, 2, &mut settlements);
                            wire.extend(settlements.drain(..).map(|s| Wire::Settle(s.tag)));
                        }
                    }
                    Step::Close if !closing => {
                        closing = true;
                        fifo.push_back(Queued::Close);
                    }
                    Step::Close => {}
                }
            }
            while !fifo.is_empty() {
                drive(&mut fifo, &mut wire, &mut handled, &mut promised, &mut closed,
                      &mut settlements);
            }
            if !closed {
                if std::mem::take(&mut promised) {
                    q.sweep(handled, 0, &mut settlements);
                    wire.extend(settlements.drain(..).map(|s| Wire::Settle(s.tag)));
                }
                prop_assert_eq!(pending(&q), 0, "settlements stranded");
            }
            let position = |w: &Wire| wire.iter().position(|x| x == w);
            for (tag, &(commands_before, after_close)) in made.iter().enumerate() {
                let tag = tag as u64;
                let at = position(&Wire::Settle(tag));
                prop_assert_eq!(wire.iter().filter(|w| **w == Wire::Settle(tag)).count() <= 1, true);
                let Some(at) = at else {
                    prop_assert!(after_close, "settlement {} made before the close was lost", tag);
                    continue;
                };
                if commands_before > 0 {
                    let last_before = position(&Wire::Command(commands_before - 1));
                    prop_assert!(last_before.is_some_and(|c| c < at),
                        "settlement {} overtook command {}", tag, commands_before - 1);
                }
                if let Some(first_after) = position(&Wire::Command(commands_before)) {
                    prop_assert!(at < first_after,
                        "settlement {} fell behind command {}", tag, commands_before);
                }
            }
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum SplitStep {
        Actor(usize),
        Handle,
        Promise,
        Sweep,
        Close,
    }
    fn split_step() -> impl Strategy<Value = SplitStep> {
        prop_oneof![
            6 => (0usize..3).prop_map(SplitStep::Actor),
            4 => Just(SplitStep::Handle),
            1 => Just(SplitStep::Promise),
            1 => Just(SplitStep::Sweep),
            1 => Just(SplitStep::Close),
        ]
    }
    #[derive(Clone, Copy, Debug)]
    enum TaskState {
        Idle,
        AckWaiting(u64),
        CmdWaiting(u64),
    }
    /// The driver handling one queued item, as `Driver::handle_command` does: everything behind a close
    /// is dropped.
    fn drive_one(
        q: &AckQueue,
        x: Queued,
        closed: &mut bool,
        promised: &mut bool,
        handled: &mut u64,
        out: &mut Vec<Settlement>,
        wire: &mut Vec<Wire>,
    ) {
        if *closed {
            return;
        }
        match x {
            Queued::Flush => q.take_for_flush(*handled, out),
            Queued::Settle(t) => {
                *handled += 1;
                out.extend(t);
            }
            Queued::Command(id) => {
                *handled += 1;
                wire.extend(out.drain(..).map(|s| Wire::Settle(s.tag)));
                wire.push(Wire::Command(id));
            }
            Queued::Close => {
                if std::mem::take(promised) {
                    q.sweep(*handled, 0, out);
                }
                *closed = true;
            }
        }
        wire.extend(out.drain(..).map(|s| Wire::Settle(s.tag)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// Like the model above, with three tasks whose acks and commands can stop at the point where
        /// they wait for room in the command queue (or, for a command, be cancelled there by a close),
        /// letting the others and the driver run in between: an ack still lands after every command
        /// queued before it and before its own task's later commands, and nothing is stranded.
        #[test]
        fn tasks_waiting_for_room_keep_order_and_strand_nothing(steps in proptest::collection::vec(split_step(), 1..120), kinds in proptest::collection::vec(0u8..4, 120)) {
            let q = AckQueue::default();
            let mut fifo: VecDeque<Queued> = VecDeque::new();
            let mut wire = Vec::new();
            let (mut handled, mut promised, mut closing, mut closed) = (0u64, false, false, false);
            let mut st = [TaskState::Idle; 3];
            let mut next_tag = 0u64; let mut next_cmd = 0u64;
            let mut made: Vec<(usize, Vec<u64>, usize, bool)> = Vec::new();
            let mut cmds_by: [Vec<u64>; 3] = Default::default();
            let mut cmd_order: Vec<u64> = Vec::new();
            let mut ki = 0usize;
            let mut out = Vec::new();
            for s in steps {
                match s {
                    SplitStep::Actor(a) => match st[a] {
                        TaskState::Idle => {
                            let k = kinds[ki % kinds.len()]; ki += 1;
                            if k < 2 {
                                let tag = next_tag; next_tag += 1;
                                made.push((a, cmds_by[a].clone(), cmd_order.len(), closing));
                                if q.try_push(ack(tag)).is_err() { st[a] = TaskState::AckWaiting(tag); }
                            } else if k == 2 && !closing {
                                let id = next_cmd; next_cmd += 1;
                                if q.send_if_empty(|| fifo.push_back(Queued::Command(id))) {
                                    cmds_by[a].push(id); cmd_order.push(id);
                                } else { st[a] = TaskState::CmdWaiting(id); }
                            }
                        }
                        TaskState::AckWaiting(tag) => {
                            made[tag as usize].3 = closing;
                            q.push_with_flush(ack(tag), || fifo.push_back(Queued::Flush));
                            st[a] = TaskState::Idle;
                        }
                        TaskState::CmdWaiting(id) => {
                            if !closing {
                                q.take_and_send(|taken| {
                                    if !taken.is_empty() { fifo.push_back(Queued::Settle(taken)); }
                                    fifo.push_back(Queued::Command(id));
                                });
                                cmds_by[a].push(id); cmd_order.push(id);
                            }
                            st[a] = TaskState::Idle;
                        }
                    },
                    SplitStep::Handle => if let Some(x) = fifo.pop_front() { drive_one(&q, x, &mut closed, &mut promised, &mut handled, &mut out, &mut wire) },
                    SplitStep::Promise => if !closed && !promised { promised = true; q.promise_sweep(handled); },
                    SplitStep::Sweep => if std::mem::take(&mut promised) && !closed { q.sweep(handled, 0, &mut out); wire.extend(out.drain(..).map(|s| Wire::Settle(s.tag))); },
                    SplitStep::Close => if !closing { closing = true; fifo.push_back(Queued::Close); },
                }
            }
            for state in st { if let TaskState::AckWaiting(tag) = state { made[tag as usize].3 = closing; q.push_with_flush(ack(tag), || fifo.push_back(Queued::Flush)); } }
            while let Some(x) = fifo.pop_front() { drive_one(&q, x, &mut closed, &mut promised, &mut handled, &mut out, &mut wire) }
            if !closed {
                if std::mem::take(&mut promised) { q.sweep(handled, 0, &mut out); wire.extend(out.drain(..).map(|s| Wire::Settle(s.tag))); }
                prop_assert_eq!(q.lock().pending.len(), 0, "stranded");
            }
            let pos = |w: Wire| wire.iter().position(|x| *x == w);
            for (tag, (a, before_mine, global_before, after_close)) in made.iter().enumerate() {
                let Some(at) = pos(Wire::Settle(tag as u64)) else { prop_assert!(*after_close, "lost {}", tag); continue; };
                for &c in &cmd_order[..*global_before] {
                    let p = pos(Wire::Command(c));
                    prop_assert!(p.is_some_and(|p| p < at), "ack {} overtook cmd {}", tag, c);
                }
                for &c in &cmds_by[*a] { if !before_mine.contains(&c) { if let Some(p) = pos(Wire::Command(c)) { prop_assert!(at < p, "ack {} behind own later cmd {}", tag, c); } } }
            }
        }
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
