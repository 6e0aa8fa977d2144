//! The low-level client: [`Connection`], [`Channel`], [`Consumer`], [`Delivery`], [`PublishConfirm`].

mod channel;
mod connection;
mod consumer;
mod deadline;
mod delivery;
pub mod options;
mod publish;
pub(crate) mod tls;

pub use channel::{Channel, ReturnedMessages};
pub(crate) use connection::open_unspawned;
pub use connection::Connection;
pub use consumer::Consumer;
pub(crate) use deadline::Deadline;
pub use delivery::{Delivery, GetMessage};
pub(crate) use delivery::{DeliveryAcker, InboundDelivery};
pub use publish::{Confirmation, PublishConfirm, ReturnedMessage};
pub use tls::TlsConfig;
