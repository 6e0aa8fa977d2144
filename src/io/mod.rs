//! The only layer with sockets: the transport (TCP, TLS), the connection driver task and what handles
//! send it.

mod ack_coalescer;
pub(crate) mod ack_queue;
pub(crate) mod command;
mod consumer_map;
pub(crate) mod delivery_queue;
pub(crate) mod driver;
mod repeated_warning;
pub(crate) mod transport;
pub(crate) mod wake_gate;
