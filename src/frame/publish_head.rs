//! The method and content-header frames of one `basic.publish`, encoded where the message is made.
//!
//! A publish crosses from the publishing task to the connection's driver as a command. Carrying the
//! `basic.publish` fields and the [`BasicProperties`] across costs a large command (the properties alone are
//! over 300 bytes, copied at every move) and drops the properties' strings and tables on the driver's
//! thread. Encoded at the handle instead, the two frames of a typical publish take a few dozen bytes and
//! travel inline in the command; the driver copies them to its write buffer and adds the body frames.

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    frame::encoder::{framed, FRAME_OVERHEAD},
    spec::{self, basic, BasicProperties},
};

/// The encoded method frame and content-header frame of one `basic.publish`: everything but the body frames,
/// which depend on the negotiated frame size and are written by the driver.
///
/// Up to [`PublishHead::INLINE`] bytes are kept inline, with no allocation; a longer head (long names, many
/// properties) is copied once into a [`Bytes`].
#[derive(Clone)]
pub struct PublishHead {
    repr: Repr,
}

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        bytes: [u8; PublishHead::INLINE],
    },
    Shared(Bytes),
}

impl PublishHead {
    /// The longest head kept inline. A method frame with an empty exchange name, a routing key of up to
    /// 40 bytes, and a header frame with a few short properties fit: 39 bytes of framing and fixed fields
    /// plus the names and properties.
    pub const INLINE: usize = 110;

    /// Encodes the method frame for `publish` and the content-header frame for a body of `body_size` bytes
    /// with `properties`, on `channel`. `scratch` is cleared and used as the encoding buffer, and keeps its
    /// capacity for the next call.
    ///
    /// The negotiated frame-max bounds every frame, the content header included (RabbitMQ closes the
    /// connection with 501 frame-error for a larger one). The header frame is checked against `frame_max`
    /// (0: no limit), so a property list too large for it is an error for this publish alone.
    pub fn encode(
        scratch: &mut BytesMut,
        channel: u16,
        publish: &basic::Publish,
        properties: &BasicProperties,
        body_size: u64,
        frame_max: u32,
    ) -> Result<PublishHead, HeaderTooLarge> {
        scratch.clear();
        framed(scratch, spec::FRAME_METHOD, channel, |buf| {
            buf.put_u16(basic::Publish::CLASS_ID);
            buf.put_u16(basic::Publish::METHOD_ID);
            publish.encode(buf);
        });
        let header_at = scratch.len();
        // spec (4.2.6.1): class-id, weight (0), body size, then the property flags and list.
        framed(scratch, spec::FRAME_HEADER, channel, |buf| {
            buf.put_u16(basic::CLASS_ID);
            buf.put_u16(0);
            buf.put_u64(body_size);
            properties.encode(buf);
        });
        let header_frame = scratch.len() - header_at;
        if frame_max != 0 && header_frame > frame_max as usize {
            return Err(HeaderTooLarge {
                payload: header_frame - FRAME_OVERHEAD,
                frame_max,
            });
        }
        Ok(PublishHead::from_encoded(scratch))
    }

    fn from_encoded(encoded: &[u8]) -> PublishHead {
        let repr = if encoded.len() <= PublishHead::INLINE {
            let mut bytes = [0; PublishHead::INLINE];
            bytes[..encoded.len()].copy_from_slice(encoded);
            Repr::Inline {
                len: encoded.len() as u8,
                bytes,
            }
        } else {
            Repr::Shared(Bytes::copy_from_slice(encoded))
        };
        PublishHead { repr }
    }

    /// Whether the head is kept inline (no allocation was made for it).
    pub fn is_inline(&self) -> bool {
        matches!(self.repr, Repr::Inline { .. })
    }

    /// The two frames, ready for the wire.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.repr {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(bytes) => bytes,
        }
    }

    /// For a publish the broker may return (`mandatory` or `immediate` set): its exchange, routing key
    /// and body size, read back from the encoded frames. `None` for one it never returns.
    pub fn returnable(&self) -> Option<Returnable<'_>> {
        // The method frame: type, channel, size (7 bytes); class and method ids, reserved-1 (6 bytes);
        // the exchange and the routing key as short strings; the bits (mandatory, immediate).
        let bytes = self.as_bytes();
        let short_str = |at: usize| -> Option<(&[u8], usize)> {
            let len = usize::from(*bytes.get(at)?);
            Some((bytes.get(at + 1..at + 1 + len)?, at + 1 + len))
        };
        let (exchange, at) = short_str(13)?;
        let (routing_key, at) = short_str(at)?;
        let bits = *bytes.get(at)?;
        if bits & 0b11 == 0 {
            return None;
        }
        // The header frame starts after the bits and the method frame's end octet; its body size
        // follows the frame's type, channel and size (7 bytes), class id and weight (4 bytes).
        let header_at = at + 2;
        let size_at = header_at + 7 + 4;
        let body_size = u64::from_be_bytes(bytes.get(size_at..size_at + 8)?.try_into().ok()?);
        // The property flags and list fill the rest of the header frame's payload.
        let payload = u32::from_be_bytes(bytes.get(header_at + 3..header_at + 7)?.try_into().ok()?);
        let properties = bytes.get(size_at + 8..header_at + 7 + usize::try_from(payload).ok()?)?;
        Some(Returnable {
            exchange,
            routing_key,
            body_size,
            properties,
        })
    }
}

/// What a broker's basic.return repeats of a publish: see [`PublishHead::returnable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Returnable<'a> {
    /// The exchange it was published to.
    pub exchange: &'a [u8],
    /// Its routing key.
    pub routing_key: &'a [u8],
    /// The size of its body.
    pub body_size: u64,
    /// Its encoded property flags and list.
    pub properties: &'a [u8],
}

impl std::fmt::Debug for PublishHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishHead")
            .field("len", &self.as_bytes().len())
            .field("inline", &self.is_inline())
            .finish()
    }
}

/// A content-header frame would exceed the negotiated frame size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderTooLarge {
    /// The header frame's payload: 14 bytes plus the property list.
    pub payload: usize,
    /// The negotiated frame size.
    pub frame_max: u32,
}

impl std::fmt::Display for HeaderTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the content header takes {} bytes, more than frame-max {} allows (frame-max - 8)",
            self.payload, self.frame_max
        )
    }
}
