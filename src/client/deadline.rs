//! [`Deadline`]: the one end shared by every wait an operation makes.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

use crate::Error;

/// When an operation's waits must be over: a fixed instant, taken when the operation started waiting.
///
/// An operation can wait more than once: a publish for the broker to allow publishing, for a slot in the
/// confirm window and for room in the command queue; a synchronous method for room (twice, when acks
/// must go ahead of it) and then for its reply. Each wait is bounded by the same deadline, so the
/// operation as a whole ends within its `rpc_timeout`, not within a multiple of it. (A channel's close
/// is the exception: its wait for room takes one `close_timeout`, and the driver times the close-ok
/// from when it sends channel.close.)
///
/// A wait that runs out reports [`Error::Timeout`] with its own `what` and the operation's whole
/// timeout as `after`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    at: Instant,
    after: Duration,
}

impl Deadline {
    /// The deadline `after` from now.
    pub(crate) fn after(after: Duration) -> Self {
        Deadline {
            at: Instant::now() + after,
            after,
        }
    }

    /// The instant it runs out.
    pub(crate) fn at(self) -> Instant {
        self.at
    }

    /// The timeout error for the wait called `what`.
    pub(crate) fn expired(self, what: &'static str) -> Error {
        Error::Timeout {
            what,
            after: self.after,
        }
    }

    /// Runs `wait` until it ends or the deadline passes. A future that is ready when first polled
    /// never arms the timer.
    pub(crate) async fn wait<F: Future>(
        self,
        what: &'static str,
        wait: F,
    ) -> Result<F::Output, Error> {
        tokio::time::timeout_at(self.at, wait)
            .await
            .map_err(|_| self.expired(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_wait_ends_at_the_same_instant() {
        let deadline = Deadline::after(Duration::from_secs(1));
        let start = Instant::now();
        // The first wait ends on its own, the second would take 10 s: it ends at the deadline instead.
        let first = deadline
            .wait("first", tokio::time::sleep(Duration::from_millis(300)))
            .await;
        assert!(first.is_ok(), "{first:?}");
        let second = deadline
            .wait("second", tokio::time::sleep(Duration::from_secs(10)))
            .await;
        match second {
            Err(Error::Timeout { what, after }) => {
                assert_eq!(what, "second");
                assert_eq!(
                    after,
                    Duration::from_secs(1),
                    "the operation's whole timeout"
                );
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(5),
            "ended at the deadline, not after the second wait's 10 s: {took:?}"
        );
    }

    #[tokio::test]
    async fn a_ready_wait_succeeds_after_the_deadline_too() {
        let deadline = Deadline::after(Duration::from_millis(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // timeout_at polls the future before the timer: what needs no waiting is not refused.
        assert_eq!(deadline.wait("ready", async { 5 }).await.ok(), Some(5));
    }
}
