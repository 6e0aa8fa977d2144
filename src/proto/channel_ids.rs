//! Channel number allocation.

use std::collections::BTreeSet;

/// Hands out channel numbers 1..=max, lowest free first, and takes them back when a channel is closed.
///
/// spec: "channel-max: the maximum total number of channels that the client will use per connection"; 0 is
/// the connection itself and never allocated.
#[derive(Debug)]
pub struct ChannelIds {
    max: u16,
    next_fresh: u32,
    freed: BTreeSet<u16>,
}

impl ChannelIds {
    /// Ids from 1 to `max` inclusive.
    pub fn new(max: u16) -> ChannelIds {
        ChannelIds {
            max,
            next_fresh: 1,
            freed: BTreeSet::new(),
        }
    }

    /// The lowest free id, or `None` when all `max` are in use.
    pub fn allocate(&mut self) -> Option<u16> {
        if let Some(id) = self.freed.pop_first() {
            return Some(id);
        }
        if self.next_fresh > self.max as u32 {
            return None;
        }
        let id = self.next_fresh as u16;
        self.next_fresh += 1;
        Some(id)
    }

    /// Returns `id` for reuse.
    pub fn release(&mut self, id: u16) {
        if id != 0 && (id as u32) < self.next_fresh {
            self.freed.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_up_to_max_and_reuses() {
        let mut ids = ChannelIds::new(3);
        assert_eq!(
            (ids.allocate(), ids.allocate(), ids.allocate()),
            (Some(1), Some(2), Some(3))
        );
        assert_eq!(ids.allocate(), None);
        ids.release(2);
        assert_eq!(ids.allocate(), Some(2));
        let mut full = ChannelIds::new(u16::MAX);
        for _ in 0..u16::MAX {
            assert!(full.allocate().is_some());
        }
        assert_eq!(full.allocate(), None, "no overflow past 65535");
    }
}
