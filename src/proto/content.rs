//! Reassembling a message from its method, header and body frames.

use bytes::{Bytes, BytesMut};

use crate::{frame::ContentHeader, spec::Method};

/// How far ahead of the bytes received a multi-frame body's buffer may grow (never past the declared size).
const GROWTH: usize = 4;

/// A content-carrying method whose header or body is still arriving.
///
/// spec (4.2.6): "Content is a method frame, a content header frame, and zero or more content body frames
/// ... sent consecutively on the channel". The body is collected as bytes arrive and never pre-allocated
/// from `body-size`, which is only the peer's claim.
#[derive(Debug)]
pub struct PartialContent {
    method: Method,
    header: Option<ContentHeader>,
    received: u64,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Empty,
    /// A single body frame: kept as the `Bytes` split off the read buffer, no copy.
    One(Bytes),
    /// Several frames, copied together as they arrive.
    Many(BytesMut),
}

/// A whole message: its method (deliver, return or get-ok), header and body.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// The method that announced the content.
    pub method: Method,
    /// Properties and class.
    pub header: ContentHeader,
    /// The body.
    pub body: Bytes,
}

/// Why a content frame cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentError {
    /// The header declares more than the configured maximum message size.
    TooLarge {
        /// The header's body size.
        declared: u64,
        /// The configured limit.
        max: u64,
    },
    /// A second header, or a header for another class.
    UnexpectedHeader,
    /// A body frame before the header.
    BodyBeforeHeader,
    /// More body bytes than the header declared.
    BodyOverrun,
}

impl PartialContent {
    /// Starts collecting content for `method`.
    pub fn new(method: Method) -> PartialContent {
        PartialContent {
            method,
            header: None,
            received: 0,
            body: Body::Empty,
        }
    }

    /// Takes the header frame: `Ok(true)` when the message is whole (a body size of 0) and
    /// [`PartialContent::finish`] gives it, `Ok(false)` while body frames are still expected.
    ///
    /// The content is completed in place (`&mut self`), not passed through by value: it is large, and
    /// each move of it was a copy on the path of every delivery.
    pub fn header(&mut self, header: ContentHeader, max_size: u64) -> Result<bool, ContentError> {
        if self.header.is_some() || header.class_id != self.method.class_id() {
            return Err(ContentError::UnexpectedHeader);
        }
        if header.body_size > max_size {
            return Err(ContentError::TooLarge {
                declared: header.body_size,
                max: max_size,
            });
        }
        let whole = header.body_size == 0;
        self.header = Some(header);
        Ok(whole)
    }

    /// Takes a body frame: `Ok(true)` once the body is whole.
    pub fn body(&mut self, payload: Bytes) -> Result<bool, ContentError> {
        let Some(header) = &self.header else {
            return Err(ContentError::BodyBeforeHeader);
        };
        let size = header.body_size;
        self.received += payload.len() as u64;
        if self.received > size {
            return Err(ContentError::BodyOverrun);
        }
        if matches!(self.body, Body::Empty) {
            self.body = Body::One(payload);
        } else {
            self.extend_body(&payload);
        }
        Ok(self.received == size)
    }

    /// The body size the header declared, once it has arrived.
    pub fn declared_size(&self) -> Option<u64> {
        self.header.as_ref().map(|h| h.body_size)
    }

    /// Starts a body frame of `size` payload bytes that will arrive piecemeal, appended with
    /// [`PartialContent::extend_body`] or written into [`PartialContent::body_room`], instead of being
    /// handed over whole with [`PartialContent::body`]. Checked against the header as `body` checks a whole
    /// frame; on `Err` nothing changed.
    pub fn begin_body_frame(&mut self, size: usize) -> Result<(), ContentError> {
        let Some(header) = &self.header else {
            return Err(ContentError::BodyBeforeHeader);
        };
        let received = self.received + size as u64;
        if received > header.body_size {
            return Err(ContentError::BodyOverrun);
        }
        self.received = received;
        Ok(())
    }

    /// Appends bytes of the frame begun with [`PartialContent::begin_body_frame`].
    pub fn extend_body(&mut self, bytes: &[u8]) {
        self.reserve_body(bytes.len(), bytes.len())
            .extend_from_slice(bytes);
    }

    /// The body so far, with room for at least `want` more bytes of the frame begun with
    /// [`PartialContent::begin_body_frame`] that have not arrived yet: bytes written into its spare
    /// capacity (and the length advanced) are part of the body. `want` is the peer's claim (the rest of
    /// its frame), so the caller keeps it to a read's worth.
    pub fn body_room(&mut self, want: usize) -> &mut BytesMut {
        self.reserve_body(want, 0)
    }

    /// Room for `need` more bytes, `in_hand` of which have arrived.
    ///
    /// A body of more than one frame is copied together, not kept as slices of the read buffer: a peer
    /// interleaving small body frames with other traffic could make each slice pin a whole read
    /// allocation. It grows to four times what has arrived (never past the declared size), or just
    /// enough for `need` if that is more: a 1 MiB body of 128 KiB frames gets its room in one or two
    /// steps instead of doubling (and copying) its way there, while what a peer's claims can make us
    /// allocate stays within four times what it sent plus what the caller lets it claim.
    fn reserve_body(&mut self, need: usize, in_hand: usize) -> &mut BytesMut {
        let size = self.header.as_ref().map_or(0, |h| h.body_size) as usize;
        let room = |len: usize| {
            (len + in_hand)
                .saturating_mul(GROWTH)
                .min(size)
                .max(len + need)
        };
        if !matches!(self.body, Body::Many(_)) {
            let first = match std::mem::replace(&mut self.body, Body::Empty) {
                Body::One(first) => first,
                _ => Bytes::new(),
            };
            let mut many = BytesMut::with_capacity(room(first.len()));
            many.extend_from_slice(&first);
            self.body = Body::Many(many);
        }
        let Body::Many(many) = &mut self.body else {
            unreachable!("made Many just above")
        };
        if many.capacity() - many.len() < need {
            many.reserve(room(many.len()) - many.len());
        }
        many
    }

    /// Whether every declared body byte has arrived (after the last frame begun is complete).
    pub fn is_whole(&self) -> bool {
        let len = match &self.body {
            Body::Empty => 0,
            Body::One(b) => b.len(),
            Body::Many(m) => m.len(),
        };
        self.header
            .as_ref()
            .is_some_and(|h| h.body_size == self.received && len as u64 == self.received)
    }

    /// The message, once [`PartialContent::header`] or [`PartialContent::body`] said it is whole.
    pub fn finish(self) -> Content {
        let body = match self.body {
            Body::Empty => Bytes::new(),
            Body::One(b) => b,
            Body::Many(m) => m.freeze(),
        };
        Content {
            method: self.method,
            // Always set by then; a default rather than a panic if a caller got the order wrong.
            header: self.header.unwrap_or_default(),
            body,
        }
    }
}
