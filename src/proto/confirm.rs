//! Publisher-confirm bookkeeping: which publish sequence numbers await an ack or nack.

use std::collections::VecDeque;

/// Tracks the unconfirmed publishes of one channel in confirm mode.
///
/// spec (RabbitMQ confirms extension): "once a channel is in confirm mode, both the broker and the client
/// count messages (counting starts at 1 on the first basic.publish)". The broker acks or nacks by that
/// number, singly or `multiple` (every outstanding number up to and including it).
///
/// Generic over the waiter `W` so this stays sans-IO: the driver stores its reply senders here.
/// Memory is bounded by the number of publishes the caller lets be outstanding (the confirm window).
#[derive(Debug)]
pub struct ConfirmTracker<W> {
    next_seq: u64,
    pending: VecDeque<(u64, W)>,
}

/// How the broker settled one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// basic.ack: the broker took responsibility for the message.
    Ack,
    /// basic.nack: the broker could not take it.
    Nack,
}

impl<W> Default for ConfirmTracker<W> {
    fn default() -> Self {
        ConfirmTracker {
            next_seq: 1,
            pending: VecDeque::new(),
        }
    }
}

impl<W> ConfirmTracker<W> {
    /// A tracker whose first publish is number 1.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a publish and returns its sequence number.
    pub fn publish(&mut self, waiter: W) -> u64 {
        let seq = self.publish_unawaited();
        self.pending.push_back((seq, waiter));
        seq
    }

    /// Counts a publish nobody waits for, so that later publishes keep the broker's numbers: in confirm
    /// mode the broker numbers every basic.publish, including one whose publisher decided, before the
    /// channel entered confirm mode, not to ask for a confirm. Returns the number it took.
    pub fn publish_unawaited(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The number the next publish will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Number of publishes not yet settled.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Settles `tag` (and with `multiple`, every smaller outstanding tag), returning the waiters in order.
    ///
    /// A tag that is not outstanding settles nothing; `Err` says the broker acknowledged a number it was
    /// never given (above the last published), which is a protocol violation by the peer.
    pub fn settle(&mut self, tag: u64, multiple: bool) -> Result<Vec<(u64, W)>, u64> {
        if tag >= self.next_seq {
            return Err(tag);
        }
        let mut settled = Vec::new();
        if multiple {
            while self.pending.front().is_some_and(|(seq, _)| *seq <= tag) {
                settled.extend(self.pending.pop_front());
            }
        } else if let Ok(pos) = self.pending.binary_search_by_key(&tag, |(seq, _)| *seq) {
            settled.extend(self.pending.remove(pos));
        }
        Ok(settled)
    }

    /// Removes every outstanding waiter (the channel or connection is gone).
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, W)> + '_ {
        self.pending.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multiple_acks_settle_in_order() {
        let mut t = ConfirmTracker::new();
        for w in 0..5 {
            t.publish(w);
        }
        assert_eq!(t.settle(3, false).unwrap(), vec![(3, 2)]);
        assert_eq!(t.settle(4, true).unwrap(), vec![(1, 0), (2, 1), (4, 3)]);
        assert_eq!(t.outstanding(), 1);
        assert_eq!(
            t.settle(2, false).unwrap(),
            vec![],
            "already settled: nothing"
        );
        assert_eq!(t.settle(9, true), Err(9), "never published");
        assert_eq!(t.drain().collect::<Vec<_>>(), vec![(5, 4)]);
    }

    #[test]
    fn a_publish_nobody_awaits_keeps_its_number() {
        let mut t = ConfirmTracker::new();
        assert_eq!(t.publish_unawaited(), 1);
        assert_eq!(t.publish("second"), 2);
        assert_eq!(t.settle(1, false).unwrap(), vec![], "nobody to tell");
        assert_eq!(t.settle(2, false).unwrap(), vec![(2, "second")]);
        assert_eq!(t.publish_unawaited(), 3);
        assert_eq!(t.publish("fourth"), 4);
        assert_eq!(
            t.settle(4, true).unwrap(),
            vec![(4, "fourth")],
            "a multiple ack over an unawaited number settles the awaited ones"
        );
    }
}
