//! Warnings a broker can make the driver log once per frame it sends, logged ever more rarely.

/// How many occurrences of one kind are logged before the rest thin out.
const LOGGED_IN_FULL: u64 = 10;

/// One kind of broker behaviour worth a warning that the broker can repeat at will (a confirm for a
/// publish never made, a delivery for a consumer that does not exist, ...). The first
/// [`LOGGED_IN_FULL`] occurrences are logged, then only the 2^k-th, each with the count so far: a broker
/// that does it for every frame leaves a few dozen lines in the log, not one per frame. Counted per
/// connection, for its whole life.
#[derive(Debug, Default)]
pub(crate) struct RepeatedWarning {
    seen: u64,
}

impl RepeatedWarning {
    /// Counts one more occurrence: `Some(count so far)` if this one is to be logged.
    pub(crate) fn occur(&mut self) -> Option<u64> {
        self.seen = self.seen.saturating_add(1);
        (self.seen <= LOGGED_IN_FULL || self.seen.is_power_of_two()).then_some(self.seen)
    }
}

/// The driver's counts of the warnings a broker can repeat, one per kind.
#[derive(Debug, Default)]
pub(crate) struct BrokerWarnings {
    /// basic.ack or basic.nack on a channel that is not in confirm mode.
    pub confirm_outside_confirm_mode: RepeatedWarning,
    /// A confirm for a sequence number no publish had.
    pub confirm_for_no_publish: RepeatedWarning,
    /// basic.deliver for a consumer tag the channel does not have (the message is rejected with requeue).
    pub delivery_for_unknown_consumer: RepeatedWarning,
    /// A content-carrying method a client is never sent (basic.publish from the broker).
    pub unexpected_content: RepeatedWarning,
    /// basic.return with no listener to take it, or a full one.
    pub return_dropped: RepeatedWarning,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ten_are_logged_then_the_powers_of_two() {
        let mut warning = RepeatedWarning::default();
        let logged: Vec<u64> = (0..100_000).filter_map(|_| warning.occur()).collect();
        let mut expected: Vec<u64> = (1..=10).collect();
        expected.extend((4..17).map(|k| 1u64 << k));
        assert_eq!(logged, expected);
    }
}
