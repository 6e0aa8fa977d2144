//! coney: an AMQP 0-9-1 client for RabbitMQ.

#![warn(missing_docs)]

pub mod codec;
pub mod frame;
pub mod spec;
