//! Field tables and arrays.

use crate::codec::{FieldValue, ShortStr};

/// An AMQP field table: named values, in insertion order.
///
/// Used for queue/exchange arguments, message headers, and peer properties. Keys are unique: inserting a
/// key that is present replaces its value in place.
///
/// ```
/// use coney::codec::{FieldTable, FieldValue};
/// let mut args = FieldTable::new();
/// args.insert("x-max-length", 10_000i32);
/// assert_eq!(args.get("x-max-length"), Some(&FieldValue::I32(10_000)));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldTable(Vec<(ShortStr, FieldValue)>);

impl FieldTable {
    /// An empty table.
    pub fn new() -> FieldTable {
        FieldTable(Vec::new())
    }

    /// Sets `key` to `value`, replacing any value it had.
    pub fn insert(&mut self, key: impl Into<ShortStr>, value: impl Into<FieldValue>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Builder form of [`FieldTable::insert`].
    pub fn with(mut self, key: impl Into<ShortStr>, value: impl Into<FieldValue>) -> FieldTable {
        self.insert(key, value);
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&FieldValue> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<FieldValue> {
        let pos = self.0.iter().position(|(k, _)| k.as_str() == key)?;
        Some(self.0.remove(pos).1)
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&ShortStr, &FieldValue)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends without looking for an existing key; decoding keeps what the peer sent, duplicates and all.
    pub(crate) fn push_decoded(&mut self, key: ShortStr, value: FieldValue) {
        self.0.push((key, value));
    }

    /// Whether this table and the tables and arrays nested in it are more than `max` levels deep, the
    /// table itself being the first (a table holding a table is two), as the decoder counts them. The
    /// decoder refuses more than [`MAX_NESTING`](crate::codec::MAX_NESTING), so a table for which this
    /// is true with that `max` cannot be received back. Looks no deeper than `max + 1` levels, so a
    /// hostile depth costs no more stack than the decoder's limit.
    pub fn nests_deeper_than(&self, max: usize) -> bool {
        fn deeper(value: &FieldValue, level: usize, max: usize) -> bool {
            match value {
                FieldValue::Table(t) => {
                    level > max || t.0.iter().any(|(_, v)| deeper(v, level + 1, max))
                }
                FieldValue::Array(a) => {
                    level > max || a.0.iter().any(|v| deeper(v, level + 1, max))
                }
                _ => false,
            }
        }
        max == 0 || self.0.iter().any(|(_, v)| deeper(v, 2, max))
    }
}

impl<K: Into<ShortStr>, V: Into<FieldValue>> FromIterator<(K, V)> for FieldTable {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> FieldTable {
        let mut table = FieldTable::new();
        for (k, v) in iter {
            table.insert(k, v);
        }
        table
    }
}

/// An AMQP field array: values of any type, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldArray(pub Vec<FieldValue>);

impl FieldArray {
    /// The values.
    pub fn iter(&self) -> impl Iterator<Item = &FieldValue> {
        self.0.iter()
    }
}

impl<V: Into<FieldValue>> FromIterator<V> for FieldArray {
    fn from_iter<I: IntoIterator<Item = V>>(iter: I) -> FieldArray {
        FieldArray(iter.into_iter().map(Into::into).collect())
    }
}
