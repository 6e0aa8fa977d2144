//! A channel's consumers, by consumer tag.

use std::collections::HashMap;

use crate::codec::ShortStr;

/// Above this many consumers on one channel, lookups hash instead of scanning.
const SCAN_MAX: usize = 8;

/// The consumers of one channel, looked up once per delivery.
///
/// Almost every channel has one consumer or a handful, so they are kept in a vector and found by comparing
/// tags (a short `memcmp`), which costs a fraction of hashing a 31-byte `amq.ctag-…` with SipHash. A
/// channel with more than [`SCAN_MAX`] consumers switches to a hash map, so lookups never degrade to a
/// long scan.
pub(crate) struct ConsumerMap<T> {
    entries: Entries<T>,
}

enum Entries<T> {
    Few(Vec<(ShortStr, T)>),
    Many(HashMap<ShortStr, T>),
}

impl<T> ConsumerMap<T> {
    pub(crate) fn new() -> Self {
        ConsumerMap {
            entries: Entries::Few(Vec::new()),
        }
    }

    pub(crate) fn get(&self, tag: &ShortStr) -> Option<&T> {
        match &self.entries {
            Entries::Few(v) => v.iter().find(|(t, _)| t == tag).map(|(_, value)| value),
            Entries::Many(m) => m.get(tag),
        }
    }

    pub(crate) fn get_mut(&mut self, tag: &ShortStr) -> Option<&mut T> {
        match &mut self.entries {
            Entries::Few(v) => v.iter_mut().find(|(t, _)| t == tag).map(|(_, value)| value),
            Entries::Many(m) => m.get_mut(tag),
        }
    }

    /// Registers `value` under `tag`, replacing (and returning) an earlier one with the same tag.
    pub(crate) fn insert(&mut self, tag: ShortStr, value: T) -> Option<T> {
        match &mut self.entries {
            Entries::Few(v) => {
                if let Some(slot) = v.iter_mut().find(|(t, _)| *t == tag) {
                    return Some(std::mem::replace(&mut slot.1, value));
                }
                if v.len() < SCAN_MAX {
                    v.push((tag, value));
                    return None;
                }
                let mut m: HashMap<ShortStr, T> = v.drain(..).collect();
                m.insert(tag, value);
                self.entries = Entries::Many(m);
                None
            }
            Entries::Many(m) => m.insert(tag, value),
        }
    }

    pub(crate) fn remove(&mut self, tag: &ShortStr) -> Option<T> {
        match &mut self.entries {
            Entries::Few(v) => {
                let at = v.iter().position(|(t, _)| t == tag)?;
                Some(v.swap_remove(at).1)
            }
            Entries::Many(m) => m.remove(tag),
        }
    }

    /// Removes every consumer.
    pub(crate) fn drain(&mut self) -> Vec<(ShortStr, T)> {
        match std::mem::replace(&mut self.entries, Entries::Few(Vec::new())) {
            Entries::Few(v) => v,
            Entries::Many(m) => m.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_inserts_and_removes_below_and_above_the_scan_limit() {
        let mut map = ConsumerMap::new();
        let tag = |i: usize| ShortStr::new(&format!("amq.ctag-{i}")).unwrap();
        for i in 0..3 * SCAN_MAX {
            assert_eq!(map.insert(tag(i), i), None);
            for j in 0..=i {
                assert_eq!(map.get(&tag(j)), Some(&j), "{j} of {i}");
            }
            assert_eq!(map.get(&tag(i + 1)), None);
        }
        assert_eq!(map.insert(tag(2), 200), Some(2));
        assert_eq!(map.remove(&tag(2)), Some(200));
        assert_eq!(map.remove(&tag(2)), None);
        let mut left: Vec<usize> = map.drain().into_iter().map(|(_, v)| v).collect();
        left.sort_unstable();
        assert_eq!(left.len(), 3 * SCAN_MAX - 1);
        assert!(map.get(&tag(0)).is_none());

        let mut few = ConsumerMap::new();
        few.insert(tag(1), 1);
        few.insert(tag(2), 2);
        assert_eq!(few.insert(tag(1), 10), Some(1));
        assert_eq!(few.remove(&tag(1)), Some(10));
        assert_eq!(few.get(&tag(2)), Some(&2));
    }
}
