//! The content header frame's payload.

use bytes::{BufMut, BytesMut};

use crate::{
    codec::{decode, CodecError},
    spec::BasicProperties,
};

/// What precedes a message body: its class, total size and properties.
///
/// spec (4.2.6.1): class-id (short), weight (short, must be zero), body size (longlong), property flags
/// and property list.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContentHeader {
    /// The class of the method the content belongs to (60, `basic`, for all of 0-9-1's content).
    pub class_id: u16,
    /// Total size of the body, summed over its body frames. A claim by the peer: never allocate from it.
    pub body_size: u64,
    /// The message properties, boxed: they are large (over 300 bytes) and travel from the decoder to the
    /// user's `Delivery` through several moves, each of which would otherwise copy them.
    pub properties: Box<BasicProperties>,
}

impl ContentHeader {
    /// Decodes a header frame's payload.
    pub fn decode(input: &[u8]) -> Result<ContentHeader, CodecError> {
        let (input, class_id) = decode::short(input)?;
        let (input, _weight) = decode::short(input)?;
        let (input, body_size) = decode::longlong(input)?;
        // Decoded in place: built on the stack and boxed after, the properties would be copied whole.
        let mut properties = Box::<BasicProperties>::default();
        BasicProperties::decode_into(input, None, &mut properties)?;
        Ok(ContentHeader {
            class_id,
            body_size,
            properties,
        })
    }

    /// Encodes a header frame's payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.class_id);
        buf.put_u16(0);
        buf.put_u64(self.body_size);
        self.properties.encode(buf);
    }
}
