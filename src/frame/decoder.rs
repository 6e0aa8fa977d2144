//! Bytes → [`Frame`]s, with the size limit enforced from the header.

use bytes::{Buf, Bytes, BytesMut};

use crate::{
    frame::{ContentHeader, Frame, FrameError, PropertyList},
    spec::{self, Method},
};

/// Splits frames off a read buffer.
///
/// Holds the one piece of state decoding needs: the largest frame the peer may send. Before
/// `connection.tune` that is the spec's minimum, 4096 (spec: "the peer MUST accept frames of up to
/// frame-min-size octets"); after it, the negotiated `frame-max`.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_size: u32,
}

/// Size of the frame header: type, channel, payload size.
const HEADER_LEN: usize = 7;
/// The most [`FrameDecoder::decode`] reserves ahead of a partial frame's bytes.
const RESERVE_STEP: usize = 128 * 1024;

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder {
            max_frame_size: spec::FRAME_MIN_SIZE,
        }
    }
}

impl FrameDecoder {
    /// A decoder that accepts frames of at most `max_frame_size` bytes (header and end octet included).
    pub fn new(max_frame_size: u32) -> FrameDecoder {
        FrameDecoder { max_frame_size }
    }

    /// The limit in force.
    pub fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Changes the limit (after tuning).
    pub fn set_max_frame_size(&mut self, max_frame_size: u32) {
        self.max_frame_size = max_frame_size;
    }

    /// The body frame that `buf` begins with but does not hold in full, if its header is valid:
    /// `(channel, payload size)`. Nothing is consumed. A caller that takes the payload elsewhere (straight
    /// into its message's buffer) drops the header with [`FrameDecoder::skip_body_header`], takes the
    /// payload's bytes, and then owes [`FrameDecoder::take_frame_end`].
    pub fn incomplete_body(&self, buf: &[u8]) -> Option<(u16, usize)> {
        if buf.len() < HEADER_LEN || buf[0] != spec::FRAME_BODY {
            return None;
        }
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
        let total = HEADER_LEN as u64 + size as u64 + 1;
        (total <= self.max_frame_size as u64 && (buf.len() as u64) < total)
            .then_some((channel, size))
    }

    /// Drops the header of the body frame [`FrameDecoder::incomplete_body`] found.
    pub fn skip_body_header(buf: &mut BytesMut) {
        buf.advance(HEADER_LEN.min(buf.len()));
    }

    /// Takes the frame-end octet owed after a payload taken elsewhere: `Ok(false)` if `buf` is empty.
    ///
    /// An octet other than %xCE there is the same error as in [`FrameDecoder::decode`]:
    /// [`FrameError::BadFrameEnd`], a fatal frame error (501).
    pub fn take_frame_end(buf: &mut BytesMut) -> Result<bool, FrameError> {
        match buf.first() {
            None => Ok(false),
            Some(&spec::FRAME_END) => {
                buf.advance(1);
                Ok(true)
            }
            Some(&other) => Err(FrameError::BadFrameEnd(other)),
        }
    }

    /// Drops the whole frame `buf` begins with, which [`FrameDecoder::decode`] rejected with an error that
    /// [keeps the frame boundary](FrameError::keeps_frame_boundary), so that `buf` starts at the next
    /// frame.
    pub fn skip_rejected_frame(buf: &mut BytesMut) {
        if buf.len() < HEADER_LEN {
            return;
        }
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
        buf.advance((HEADER_LEN + size + 1).min(buf.len()));
    }

    /// Takes one frame off the front of `buf`.
    ///
    /// `Ok(None)`: `buf` holds no complete frame yet; nothing was consumed. On `Ok(Some(_))` the frame's
    /// bytes are gone from `buf`; a body frame's payload shares `buf`'s allocation instead of being copied.
    /// On `Err`, the connection must be closed with [`FrameError::reply_code`]; `buf` is left as it was.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.first() == Some(&b'A') {
            // spec (4.2.2): a server that rejects the protocol header answers with its own and closes.
            // Decided from the first 4, then 8 bytes whatever else is buffered, so the error does not
            // depend on how the bytes were split across reads.
            if buf.len() >= 4 && &buf[..4] != b"AMQP" {
                return Err(FrameError::UnknownFrameType(b'A'));
            }
            if buf.len() < 8 {
                return Ok(None);
            }
            let mut header = [0u8; 8];
            header.copy_from_slice(&buf[..8]);
            return Err(FrameError::ProtocolMismatch(header));
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let frame_type = buf[0];
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
        let total = HEADER_LEN as u64 + size as u64 + 1;
        if total > self.max_frame_size as u64 {
            return Err(FrameError::TooLarge {
                size: total,
                max: self.max_frame_size,
            });
        }
        // Validate the type before waiting for the payload, so garbage fails fast rather than stalling.
        match frame_type {
            spec::FRAME_METHOD | spec::FRAME_HEADER | spec::FRAME_BODY | spec::FRAME_HEARTBEAT => {}
            other => return Err(FrameError::UnknownFrameType(other)),
        }
        let total = total as usize;
        if buf.len() < total {
            // Grow towards the frame, but by at most one read chunk: the size is the peer's claim, and the
            // buffer should grow with bytes that actually arrive.
            buf.reserve((total - buf.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        let end = buf[total - 1];
        if end != spec::FRAME_END {
            return Err(FrameError::BadFrameEnd(end));
        }
        let payload = &buf[HEADER_LEN..total - 1];
        let frame = match frame_type {
            spec::FRAME_METHOD => {
                if payload.len() < 4 {
                    return Err(FrameError::TooShort("method"));
                }
                let class_id = u16::from_be_bytes([payload[0], payload[1]]);
                let method_id = u16::from_be_bytes([payload[2], payload[3]]);
                let carries_content =
                    spec::method_info(class_id, method_id).is_some_and(|info| info.content);
                let method = if carries_content {
                    // A deliver's tag, exchange and routing key usually live as long as the message
                    // (whose single-frame body shares the read buffer too): share it rather than
                    // allocate three strings per message. `Delivery`'s docs say what this pins.
                    decode_split(buf, total, |frame| {
                        let args = &frame[HEADER_LEN + 4..total - 1];
                        Method::decode_shared(class_id, method_id, args, Some(frame))
                            .map_err(FrameError::Method)
                    })?
                } else {
                    let method = Method::decode(class_id, method_id, &payload[4..])
                        .map_err(FrameError::Method)?;
                    buf.advance(total);
                    method
                };
                Frame::Method { channel, method }
            }
            spec::FRAME_HEADER => {
                // The property list is checked now and built by whoever uses the message
                // (`PropertyList` says why); until then it shares the read buffer, as a single-frame
                // body does.
                let (class_id, body_size, len) =
                    ContentHeader::check(payload).map_err(FrameError::Header)?;
                let start = HEADER_LEN + ContentHeader::PROPERTIES_AT;
                let end = start + len;
                let properties = if payload[ContentHeader::PROPERTIES_AT..][..len] == [0, 0] {
                    buf.advance(total);
                    PropertyList::default()
                } else {
                    let frame = buf.split_to(total).freeze();
                    PropertyList::from_checked(&frame[start..end], |list| frame.slice_ref(list))
                };
                Frame::Header {
                    channel,
                    header: ContentHeader {
                        class_id,
                        body_size,
                        properties,
                    },
                }
            }
            spec::FRAME_BODY => {
                let mut frame = buf.split_to(total);
                frame.advance(HEADER_LEN);
                frame.truncate(size as usize);
                Frame::Body {
                    channel,
                    payload: frame.freeze(),
                }
            }
            _ => {
                // spec (4.2.7): "Heartbeat frames MUST have a channel number of zero. A peer that receives
                // an invalid heartbeat frame MUST raise a connection exception with reply code 501."
                if channel != 0 {
                    return Err(FrameError::HeartbeatOnChannel(channel));
                }
                buf.advance(total);
                Frame::Heartbeat
            }
        };
        Ok(Some(frame))
    }
}

/// Splits the frame's `total` bytes off `buf` as shared `Bytes` for `decode` to borrow from. On an error
/// the bytes are put back (copied: the error path is rare and the frame is within the size limit), so
/// `buf` is left as it was.
fn decode_split<T>(
    buf: &mut BytesMut,
    total: usize,
    decode: impl FnOnce(&Bytes) -> Result<T, FrameError>,
) -> Result<T, FrameError> {
    let frame = buf.split_to(total).freeze();
    decode(&frame).inspect_err(|_| {
        let mut restored = BytesMut::with_capacity(frame.len() + buf.len());
        restored.extend_from_slice(&frame);
        restored.extend_from_slice(buf);
        *buf = restored;
    })
}
