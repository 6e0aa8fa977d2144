//! The same scenarios written against each client library, each in its idiomatic form.
//!
//! Every scenario connects and sets up before `Meter::start` and tears down after `Meter::stop`.
//! `publish` ends with a synchronous round trip on the same channel (or the last confirm), so the time
//! includes the broker having read every message. `consume` acks each delivery individually unless
//! `no_ack`. `round_trip` runs a responder and a requester, both with the library under test.

pub mod amqprs;
pub mod coney;
pub mod floor;
pub mod lapin;

/// Publishes between two deadline checks.
pub const CHECK_EVERY: u64 = 16;
