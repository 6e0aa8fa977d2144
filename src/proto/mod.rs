//! Sans-IO protocol state machines: the connection (handshake, tuning, heartbeats, close), channel states,
//! content assembly, confirm tracking, channel id allocation.
//!
//! Nothing here touches a socket or reads the clock: time comes in as `Instant` arguments, bytes come in as
//! buffers, and what must be sent accumulates in a buffer the driver drains. That is what lets
//! `tests` drive every path with scripted frames and fake time.

mod byte_queue;
mod channel_ids;
mod channel_map;
mod confirm;
mod connection;
mod content;
mod handshake;

pub use byte_queue::ByteQueue;
pub use channel_ids::ChannelIds;
pub use channel_map::ChannelMap;
pub use confirm::{ConfirmTracker, ReturnKey, Settlement};
pub use connection::{
    ChannelCloseCause, Connection, ConnectionError, Event, HandshakeParams, ReadTarget,
};
pub use content::{Content, ContentError, PartialContent};
pub use handshake::{client_properties, negotiate, Mechanism, TunePreferences, Tuned};
