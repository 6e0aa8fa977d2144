//! Merging a run of in-order acks into one `basic.ack` with `multiple` set.

use crate::io::ack_queue::{Settle, Settlement};

/// What the driver knows about the settled delivery tags of one channel incarnation, so that a batch of
/// acks taken from the [`AckQueue`](crate::io::ack_queue::AckQueue) can go out as one frame.
///
/// spec (basic.ack, multiple): "If set to 1, the delivery tag is treated as "up to and including", so
/// that multiple messages can be acknowledged with a single method." A consumer that acks every delivery
/// in order sends, per batch, acks of tags `t, t+1, ..., t+n`; when every tag below `t` is already
/// settled, `basic.ack(t+n, multiple)` settles exactly the same messages with one frame instead of
/// `n + 1` (the broker parses and answers one method, not one per message).
///
/// The invariant: every delivery tag up to `settled_through` has been settled on the wire (acked,
/// nacked, rejected, or covered by a `multiple`), so a multiple ack of the run's last tag covers only
/// tags the application settled. The prefix only moves on a settlement of `settled_through + 1` or a
/// `multiple` one above it; a settlement this type does not see (sent some other way) can only stop
/// the prefix from moving, never move it wrongly.
///
/// Conservative by design: anything it cannot follow turns merging off for the rest of the incarnation
/// (acks then go out one per settlement, as sent): an out-of-order settlement (two consumers on one
/// channel acked from different tasks, say), a delivery with no ack expected (a `no_ack` consumer or
/// get, whose tags are settled by the broker), `basic.recover`, or `multiple` with tag 0. Delivery tags
/// are per channel incarnation, and so is this state: a reopened channel starts afresh.
#[derive(Debug, Clone)]
pub(crate) struct AckCoalescer {
    settled_through: u64,
    enabled: bool,
}

impl Default for AckCoalescer {
    fn default() -> Self {
        // spec (basic.deliver, delivery-tag): the server numbers deliveries of a channel from 1.
        AckCoalescer {
            settled_through: 0,
            enabled: true,
        }
    }
}

impl AckCoalescer {
    /// Stops merging for the rest of the incarnation.
    pub(crate) fn disable(&mut self) {
        self.enabled = false;
    }

    /// The highest tag below which every delivery is known to be settled, while merging is on.
    pub(crate) fn settled_through(&self) -> Option<u64> {
        self.enabled.then_some(self.settled_through)
    }

    /// Records a settlement that goes out as it is (`basic.ack`/`nack`/`reject` sent directly).
    pub(crate) fn observe(&mut self, tag: u64, multiple: bool) {
        if !self.enabled {
            return;
        }
        if multiple {
            if tag == 0 {
                // "all outstanding": which tags that covers is the broker's knowledge, not ours.
                self.enabled = false;
            } else if tag > self.settled_through {
                self.settled_through = tag;
            }
        } else if self.settled_through.checked_add(1) == Some(tag) {
            self.settled_through = tag;
        } else if tag > self.settled_through {
            self.enabled = false;
        }
        // A single tag at or below the prefix settles nothing new (the broker rejects it as unknown).
    }

    /// Empties `settlements` into `emit`, in order, with each run of in-order acks as one settlement.
    pub(crate) fn coalesce(
        &mut self,
        settlements: &mut Vec<Settlement>,
        mut emit: impl FnMut(Settlement),
    ) {
        // The last tag of the run being merged, and whether it is more than one plain ack.
        let mut run: Option<(u64, bool)> = None;
        for s in settlements.drain(..) {
            if let Settle::Ack { multiple } = s.settle {
                let in_order = if multiple {
                    s.tag > self.settled_through
                } else {
                    self.settled_through.checked_add(1) == Some(s.tag)
                };
                if self.enabled && in_order {
                    self.settled_through = s.tag;
                    run = Some((s.tag, multiple || run.is_some()));
                    continue;
                }
            }
            if let Some((tag, multiple)) = run.take() {
                emit(ack(tag, multiple));
            }
            let multiple = match s.settle {
                Settle::Ack { multiple } | Settle::Nack { multiple, .. } => multiple,
                Settle::Reject { .. } => false,
            };
            self.observe(s.tag, multiple);
            emit(s);
        }
        if let Some((tag, multiple)) = run {
            emit(ack(tag, multiple));
        }
    }
}

fn ack(tag: u64, multiple: bool) -> Settlement {
    Settlement {
        tag,
        settle: Settle::Ack { multiple },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nack(tag: u64) -> Settlement {
        Settlement {
            tag,
            settle: Settle::Nack {
                multiple: false,
                requeue: true,
            },
        }
    }

    fn run(c: &mut AckCoalescer, mut input: Vec<Settlement>) -> Vec<Settlement> {
        let mut out = Vec::new();
        c.coalesce(&mut input, |s| out.push(s));
        assert!(input.is_empty());
        out
    }

    #[test]
    fn in_order_acks_become_one_multiple_ack() {
        let mut c = AckCoalescer::default();
        assert_eq!(
            run(&mut c, (1..=5).map(|t| ack(t, false)).collect()),
            vec![ack(5, true)]
        );
        // The next batch continues from the prefix; a run of one stays a plain ack.
        assert_eq!(run(&mut c, vec![ack(6, false)]), vec![ack(6, false)]);
        assert_eq!(
            run(&mut c, vec![ack(7, false), ack(9, true), ack(10, false)]),
            vec![ack(10, true)]
        );
    }

    #[test]
    fn a_nack_splits_the_run_and_keeps_its_place() {
        let mut c = AckCoalescer::default();
        let out = run(
            &mut c,
            vec![
                ack(1, false),
                ack(2, false),
                nack(3),
                ack(4, false),
                ack(5, false),
            ],
        );
        assert_eq!(out, vec![ack(2, true), nack(3), ack(5, true)]);
    }

    #[test]
    fn the_first_batch_must_start_at_tag_one() {
        // Tag 1 is still outstanding: acking 2..=3 as "up to 3" would ack it too.
        let mut c = AckCoalescer::default();
        let input = vec![ack(2, false), ack(3, false)];
        assert_eq!(run(&mut c, input.clone()), input);
        // And the coalescer has given up for this incarnation: it no longer knows the prefix.
        let input = vec![ack(1, false), ack(4, false), ack(5, false)];
        assert_eq!(run(&mut c, input.clone()), input);
    }

    #[test]
    fn out_of_order_acks_go_out_as_sent() {
        let mut c = AckCoalescer::default();
        assert_eq!(run(&mut c, vec![ack(1, false)]), vec![ack(1, false)]);
        let input = vec![ack(3, false), ack(2, false), ack(4, false), ack(5, false)];
        assert_eq!(run(&mut c, input.clone()), input);
    }

    #[test]
    fn the_last_tag_there_is_does_not_overflow_the_prefix() {
        // The broker chooses the tags; an app may ack the largest one with multiple set.
        let mut c = AckCoalescer::default();
        c.observe(u64::MAX, true);
        assert_eq!(c.settled_through(), Some(u64::MAX));
        let input = vec![ack(u64::MAX, false), ack(3, false)];
        assert_eq!(run(&mut c, input.clone()), input);
        c.observe(u64::MAX, false);
    }

    #[test]
    fn settlements_sent_directly_move_the_prefix() {
        let mut c = AckCoalescer::default();
        c.observe(1, false);
        c.observe(4, true);
        assert_eq!(
            run(&mut c, vec![ack(5, false), ack(6, false)]),
            vec![ack(6, true)]
        );
        // A direct settlement this type cannot place stops merging.
        c.observe(9, false);
        let input = vec![ack(7, false), ack(8, false)];
        assert_eq!(run(&mut c, input.clone()), input);
    }

    #[test]
    fn disabled_and_tag_zero_multiple_stop_merging() {
        let mut c = AckCoalescer::default();
        c.disable();
        let input = vec![ack(1, false), ack(2, false)];
        assert_eq!(run(&mut c, input.clone()), input);

        let mut c = AckCoalescer::default();
        c.observe(0, true);
        let input = vec![ack(1, false), ack(2, false)];
        assert_eq!(run(&mut c, input.clone()), input);
    }

    /// Whatever the input, the merged frames settle exactly the tags the input settles, as the broker
    /// would apply them (a multiple ack settles every outstanding tag up to it).
    #[test]
    fn merging_never_settles_a_tag_the_input_did_not() {
        use std::collections::BTreeSet;
        // A small deterministic generator; every settlement of 40 deliveries, in many orders.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2000 {
            let mut tags: Vec<u64> = (1..=40).collect();
            // Mostly in order, with a few swaps.
            for _ in 0..next(4) {
                let (a, b) = (next(40) as usize, next(40) as usize);
                tags.swap(a, b);
            }
            let input: Vec<Settlement> = tags
                .iter()
                .map(|&t| match next(10) {
                    0 => nack(t),
                    1 => ack(t, true),
                    _ => ack(t, false),
                })
                .collect();
            let apply = |frames: &[Settlement]| {
                let mut outstanding: BTreeSet<u64> = (1..=40).collect();
                let mut order = Vec::new();
                for f in frames {
                    let multiple = matches!(
                        f.settle,
                        Settle::Ack { multiple: true } | Settle::Nack { multiple: true, .. }
                    );
                    let hit: Vec<u64> = if multiple {
                        outstanding.range(..=f.tag).copied().collect()
                    } else {
                        outstanding.get(&f.tag).into_iter().copied().collect()
                    };
                    for t in hit {
                        outstanding.remove(&t);
                        order.push((t, matches!(f.settle, Settle::Ack { .. })));
                    }
                }
                order.sort_unstable();
                (outstanding, order)
            };
            let mut c = AckCoalescer::default();
            let mut split = input.clone();
            let second = split.split_off(next(40) as usize);
            let mut out = run(&mut c, split);
            out.extend(run(&mut c, second));
            assert_eq!(
                apply(&out),
                apply(&input),
                "input {input:?}, output {out:?}"
            );
        }
    }
}
