//! The content header frame's payload.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

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
    /// The message properties, checked but not built: [`PropertyList::decode`] builds them.
    pub properties: PropertyList,
}

impl ContentHeader {
    /// A header for a body of `body_size` bytes with `properties`.
    pub fn new(class_id: u16, body_size: u64, properties: &BasicProperties) -> ContentHeader {
        ContentHeader {
            class_id,
            body_size,
            properties: PropertyList::encode(properties),
        }
    }

    /// Where the property list starts in the payload: after class-id, weight and body size.
    pub(crate) const PROPERTIES_AT: usize = 12;

    /// Decodes a header frame's payload, checking the property list and copying it.
    pub fn decode(input: &[u8]) -> Result<ContentHeader, CodecError> {
        let (class_id, body_size, len) = Self::check(input)?;
        let list = &input[Self::PROPERTIES_AT..Self::PROPERTIES_AT + len];
        Ok(ContentHeader {
            class_id,
            body_size,
            properties: PropertyList::from_checked(list, Bytes::copy_from_slice),
        })
    }

    /// Decodes the fixed fields and checks the property list, returning the list's length in bytes
    /// from [`ContentHeader::PROPERTIES_AT`] (the flag word and the properties it announces; anything
    /// after them is not kept).
    pub(crate) fn check(input: &[u8]) -> Result<(u16, u64, usize), CodecError> {
        let (input, class_id) = decode::short(input)?;
        let (input, _weight) = decode::short(input)?;
        let (list, body_size) = decode::longlong(input)?;
        let (rest, ()) = BasicProperties::validate(list)?;
        Ok((class_id, body_size, list.len() - rest.len()))
    }

    /// Encodes a header frame's payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16(self.class_id);
        buf.put_u16(0);
        buf.put_u64(self.body_size);
        self.properties.write(buf);
    }
}

/// A property list (the flag word and the properties it announces) in its wire form, checked when it
/// was received or encoded, and built into [`BasicProperties`] on demand.
///
/// Lifecycle: the frame decoder checks a received header's list on arrival, so a malformed one closes the
/// connection there, in order with everything else the peer sent; building it is left to whoever uses
/// the message. For a delivery that is the consumer, on its own thread: the boxed properties (and the
/// strings inside them) are then allocated and freed by the same thread, instead of being made by the
/// connection's driver and freed by the application, which makes two threads contend for the
/// allocator's locks on every message.
///
/// A list with no properties holds no bytes. A received list may share the read buffer it arrived in
/// until it is dropped; the properties built from it never do (message ids and correlation ids outlive
/// their messages in dedup sets and reply maps, and must not pin a read allocation).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PropertyList(Bytes);

impl PropertyList {
    /// Wraps `list`, already checked, with `keep` turning its bytes into `Bytes` (a copy, or a share of
    /// the buffer it lies in); a list without properties keeps nothing.
    pub(crate) fn from_checked(list: &[u8], keep: impl FnOnce(&[u8]) -> Bytes) -> PropertyList {
        if list == [0, 0] {
            return PropertyList::default();
        }
        PropertyList(keep(list))
    }

    /// Encodes `properties`.
    pub fn encode(properties: &BasicProperties) -> PropertyList {
        if properties.flags() == 0 {
            return PropertyList::default();
        }
        let mut buf = BytesMut::new();
        properties.encode(&mut buf);
        PropertyList(buf.freeze())
    }

    /// The list as it goes on the wire (empty for a list without properties).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Builds the properties, boxed (they are over 300 bytes, and travel through several moves to the
    /// user), copying every string out of the list.
    ///
    /// Every list was checked when it was made, with the same rules, so this fails only if checking and
    /// decoding disagree: a bug, reported as the error decoding found rather than a panic.
    pub fn decode(&self) -> Result<Box<BasicProperties>, CodecError> {
        // Decoded in place: built on the stack and boxed after, the properties would be copied whole.
        let mut properties = Box::<BasicProperties>::default();
        if !self.0.is_empty() {
            BasicProperties::decode_into(&self.0, None, &mut properties)?;
        }
        Ok(properties)
    }

    /// Appends the wire form (a zero flag word for a list without properties).
    pub(crate) fn write(&self, buf: &mut BytesMut) {
        if self.0.is_empty() {
            buf.put_u16(0);
        } else {
            buf.put_slice(&self.0);
        }
    }
}

impl fmt::Debug for PropertyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.decode() {
            Ok(properties) => properties.fmt(f),
            Err(e) => write!(f, "PropertyList(undecodable: {e}; {:?})", self.0),
        }
    }
}
