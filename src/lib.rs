//! coney: an AMQP 0-9-1 client for RabbitMQ.
//!
//! ```no_run
//! use coney::{options::BasicPublishOptions, BasicProperties, Confirmation, Connection};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), coney::Error> {
//! let connection = Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let channel = connection.open_channel().await?;
//! channel.confirm_select().await?;
//! let confirm = channel
//!     .basic_publish("", "my-queue", BasicPublishOptions::default(), BasicProperties::default(), "hello")
//!     .await?;
//! assert_eq!(confirm.await?, Confirmation::Ack);
//! connection.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Layers, from the bottom: [`codec`] (field types), [`spec`] (generated from the XML spec), [`frame`],
//! [`proto`] (sans-IO state machines), the driver task, and [`client`] ([`Connection`], [`Channel`],
//! [`Consumer`], [`Delivery`], [`PublishConfirm`]).

#![warn(missing_docs)]
#![warn(missing_debug_implementations)]

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
    ReturnedMessage, ReturnedMessages, TlsConfig,
};
pub use codec::{FieldTable, FieldValue, ShortStr};
pub use config::ConnectionConfig;
pub use error::{CloseReason, Error, Result, TlsErrorKind};
/// The `rustls` crate coney uses, for building a [`TlsConfig::with_rustls_config`] of the matching version.
pub use rustls;
pub use spec::{BasicProperties, ReplyCode};

#[doc(hidden)]
pub mod fuzzing;

/// Compiles the README's examples as doc tests, so the front door stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
