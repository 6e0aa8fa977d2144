//! [`Frame`](crate::frame::Frame) parts → bytes.
//!
//! Separate functions rather than one `encode(Frame)` so the publish path can write a method, a header and
//! body frames straight from borrowed values, without building `Frame`s.

use bytes::{BufMut, BytesMut};

use crate::{
    frame::ContentHeader,
    spec::{self, Method},
};

/// Bytes a frame adds around its payload: 7 header bytes and the end octet.
pub const FRAME_OVERHEAD: usize = 8;

/// Appends a method frame.
pub fn encode_method(buf: &mut BytesMut, channel: u16, method: &Method) {
    framed(buf, spec::FRAME_METHOD, channel, |buf| method.encode(buf));
}

/// Appends a content header frame.
pub fn encode_content_header(buf: &mut BytesMut, channel: u16, header: &ContentHeader) {
    framed(buf, spec::FRAME_HEADER, channel, |buf| header.encode(buf));
}

/// Appends one body frame carrying all of `payload` (the caller splits bodies at `frame_max - 8`).
pub fn encode_body(buf: &mut BytesMut, channel: u16, payload: &[u8]) {
    buf.reserve(FRAME_OVERHEAD + payload.len());
    buf.put_u8(spec::FRAME_BODY);
    buf.put_u16(channel);
    buf.put_u32(payload.len() as u32);
    buf.put_slice(payload);
    buf.put_u8(spec::FRAME_END);
}

/// Appends a heartbeat frame.
pub fn encode_heartbeat(buf: &mut BytesMut) {
    buf.put_slice(&[spec::FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, spec::FRAME_END]);
}

pub(crate) fn framed(
    buf: &mut BytesMut,
    frame_type: u8,
    channel: u16,
    payload: impl FnOnce(&mut BytesMut),
) {
    buf.put_u8(frame_type);
    buf.put_u16(channel);
    let at = buf.len();
    buf.put_u32(0);
    payload(buf);
    let size = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&size.to_be_bytes());
    buf.put_u8(spec::FRAME_END);
}
