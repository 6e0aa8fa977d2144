//! Per-channel state indexed by channel id.

/// A map from channel id to `T`, stored as a vector indexed by the id.
///
/// Channel ids are small and dense (the driver allocates them from 1 up to the negotiated `channel-max`),
/// so indexing beats hashing on the per-frame path: a lookup is a bounds check. The vector only grows to
/// the highest id inserted, never to an id a peer merely names in a frame.
#[derive(Debug)]
pub struct ChannelMap<T> {
    slots: Vec<Option<T>>,
    len: usize,
}

impl<T> Default for ChannelMap<T> {
    fn default() -> Self {
        ChannelMap {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ChannelMap<T> {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value for channel `id`.
    pub fn get(&self, id: u16) -> Option<&T> {
        self.slots.get(usize::from(id)).and_then(Option::as_ref)
    }

    /// The value for channel `id`, mutably.
    pub fn get_mut(&mut self, id: u16) -> Option<&mut T> {
        self.slots.get_mut(usize::from(id)).and_then(Option::as_mut)
    }

    /// Whether channel `id` has a value.
    pub fn contains(&self, id: u16) -> bool {
        self.get(id).is_some()
    }

    /// Sets the value for channel `id`, returning the old one.
    pub fn insert(&mut self, id: u16, value: T) -> Option<T> {
        let index = usize::from(id);
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        let old = self.slots[index].replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes and returns the value for channel `id`.
    pub fn remove(&mut self, id: u16) -> Option<T> {
        let old = self.slots.get_mut(usize::from(id)).and_then(Option::take);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// How many channels have a value.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no channel has a value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every channel with a value and the value, in channel order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(id, slot)| slot.as_ref().map(|value| (id as u16, value)))
    }

    /// Removes every value, in channel order.
    pub fn drain(&mut self) -> impl Iterator<Item = (u16, T)> + '_ {
        self.len = 0;
        self.slots
            .drain(..)
            .enumerate()
            .filter_map(|(id, slot)| slot.map(|value| (id as u16, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map() {
        let mut map = ChannelMap::new();
        assert!(map.get(0).is_none() && map.get(u16::MAX).is_none());
        assert_eq!(map.insert(3, "c"), None);
        assert_eq!(map.insert(1, "a"), None);
        assert_eq!(map.insert(3, "C"), Some("c"));
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(3), Some(&"C"));
        assert!(map.contains(1) && !map.contains(2) && !map.contains(4));
        *map.get_mut(1).unwrap() = "A";
        assert_eq!(map.remove(1), Some("A"));
        assert_eq!(map.remove(1), None);
        assert_eq!(map.len(), 1);
        map.insert(2, "b");
        assert_eq!(map.drain().collect::<Vec<_>>(), vec![(2, "b"), (3, "C")]);
        assert!(map.is_empty() && map.get(3).is_none());
    }
}
