//! coney: an AMQP 0-9-1 client for RabbitMQ.

#![warn(missing_docs)]

pub mod client;
pub mod codec;
pub mod config;
mod error;
pub mod frame;
mod io;
pub mod proto;
pub mod spec;

pub use client::{
    options, Channel, Confirmation, Connection, Consumer, Delivery, GetMessage, PublishConfirm,
    ReturnedMessage,
};
pub use codec::{FieldTable, FieldValue, ShortStr};
pub use config::ConnectionConfig;
pub use error::{CloseReason, Error, Result};
pub use spec::{BasicProperties, ReplyCode};

#[doc(hidden)]
pub mod fuzzing;
