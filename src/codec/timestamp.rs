//! `timestamp`: seconds since the Unix epoch.

/// An AMQP timestamp: a 64-bit count of seconds since 1970-01-01 UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl From<u64> for Timestamp {
    fn from(secs: u64) -> Timestamp {
        Timestamp(secs)
    }
}
