//! Frames: the unit AMQP 0-9-1 moves over a connection.
//!
//! spec (2.3.5): "all frames consist of a header (7 octets), a payload of arbitrary size, and a 'frame-end'
//! octet": type (1), channel (2), size (4), payload, 0xCE.
//!
//! Sans-IO: [`FrameDecoder::decode`] takes bytes already read into a `BytesMut` and returns `Ok(None)`
//! when it needs more; [`Frame::encode`] appends to a `BytesMut`. The declared size is checked against the
//! limit from the 7-byte header, before anything is allocated or copied for the payload.

mod content_header;
mod decoder;
mod encoder;
mod error;
mod publish_head;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use content_header::{ContentHeader, PropertyList};
pub use decoder::FrameDecoder;
pub use encoder::{
    encode_body, encode_content_header, encode_heartbeat, encode_method, FRAME_OVERHEAD,
};
pub use error::FrameError;
pub use publish_head::{HeaderTooLarge, PublishHead, Returnable};

use crate::spec::Method;

/// One decoded frame.
///
/// The header variant is large (all properties inline); frames are short-lived values moved once from the
/// decoder to the state machine, and boxing it would cost an allocation per message.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Frame {
    /// A method frame.
    Method {
        /// The channel it was sent on (0 for the connection class).
        channel: u16,
        /// The decoded method.
        method: Method,
    },
    /// A content header frame: what follows a content-carrying method.
    Header {
        /// The channel.
        channel: u16,
        /// Class, body size and properties.
        header: ContentHeader,
    },
    /// A content body frame: a slice of the message body, shared with the read buffer (not copied).
    Body {
        /// The channel.
        channel: u16,
        /// The bytes.
        payload: Bytes,
    },
    /// A heartbeat (always on channel 0).
    Heartbeat,
}

impl Frame {
    /// The channel the frame belongs to.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. } => *channel,
            Frame::Heartbeat => 0,
        }
    }

    /// Appends the frame's wire form to `buf`.
    pub fn encode(&self, buf: &mut bytes::BytesMut) {
        match self {
            Frame::Method { channel, method } => encode_method(buf, *channel, method),
            Frame::Header { channel, header } => encode_content_header(buf, *channel, header),
            Frame::Body { channel, payload } => encode_body(buf, *channel, payload),
            Frame::Heartbeat => encode_heartbeat(buf),
        }
    }
}
