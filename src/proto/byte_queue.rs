//! The bytes waiting to be written, where large bodies are shared with the caller rather than copied.

use std::{collections::VecDeque, io::IoSlice};

use bytes::{Buf, Bytes, BytesMut};

/// The connection's write queue: a growing buffer (the tail) for small pieces, and shared `Bytes` segments
/// for large ones.
///
/// Methods, headers and short bodies are encoded into the tail; a body slice of at least [`ByteQueue::SHARE_MIN`] bytes is not copied: the tail is cut off as one
/// segment and the caller's `Bytes` (a reference count) becomes the next, so a 1 MiB publish costs a few
/// vectored `writev` entries instead of a 1 MiB copy into a freshly mapped buffer.
/// [`ByteQueue::io_slices`] and [`ByteQueue::advance`] give a writer everything in order.
///
/// Bounded by whoever fills it: the driver stops taking commands while [`ByteQueue::len`] is above its
/// limit.
#[derive(Default)]
pub struct ByteQueue {
    /// Finished segments, written before `tail`.
    segments: VecDeque<Bytes>,
    tail: BytesMut,
    /// Bytes in `segments`.
    segment_len: usize,
}

/// Sizes only: the bytes waiting to go out include the SASL response with the password (P10).
impl std::fmt::Debug for ByteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteQueue")
            .field("len", &self.len())
            .field("segments", &self.segments.len())
            .finish()
    }
}

impl ByteQueue {
    /// Body slices at least this long are shared, not copied. Below it a copy is cheaper than a segment
    /// (cutting the tail, one more `iovec`); measured with `benches/compare` at 1 KiB and 64 KiB.
    pub const SHARE_MIN: usize = 8 * 1024;

    /// An empty queue whose tail starts with `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> ByteQueue {
        ByteQueue {
            segments: VecDeque::new(),
            tail: BytesMut::with_capacity(capacity),
            segment_len: 0,
        }
    }

    /// The buffer to encode small frames into; what is appended goes out after everything queued before.
    pub fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queues `bytes` after everything already queued, without copying them.
    pub fn push_shared(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if !self.tail.is_empty() {
            let head = self.tail.split().freeze();
            self.segment_len += head.len();
            self.segments.push_back(head);
        }
        self.segment_len += bytes.len();
        self.segments.push_back(bytes);
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.segment_len + self.tail.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.segment_len == 0 && self.tail.is_empty()
    }

    /// Fills `dst` with the queued bytes in order, as many slices as fit; returns how many were filled.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for segment in &self.segments {
            if n == dst.len() {
                return n;
            }
            dst[n] = IoSlice::new(segment);
            n += 1;
        }
        if n < dst.len() && !self.tail.is_empty() {
            dst[n] = IoSlice::new(&self.tail);
            n += 1;
        }
        n
    }

    /// The first contiguous run of queued bytes (for writers that take one slice).
    pub fn chunk(&self) -> &[u8] {
        match self.segments.front() {
            Some(segment) => segment,
            None => &self.tail,
        }
    }

    /// Drops the first `n` queued bytes (they were written).
    ///
    /// # Panics
    /// If `n` is more than [`ByteQueue::len`]: the writer reported bytes it was never given.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                self.tail.advance(n);
                break;
            };
            let step = n.min(front.len());
            front.advance(step);
            self.segment_len -= step;
            n -= step;
            if front.is_empty() {
                self.segments.pop_front();
            }
        }
        if self.tail.is_empty() {
            // Lets the next `reserve` reuse the allocation (once no segment still points into it) instead
            // of mapping fresh pages per message.
            self.tail.clear();
        }
    }

    /// Takes everything queued as one contiguous buffer (copying shared segments into it, if any). For the
    /// handshake, which writes before the driver starts, and for tests.
    pub fn split(&mut self) -> BytesMut {
        if self.segments.is_empty() {
            return self.tail.split();
        }
        let mut all = BytesMut::with_capacity(self.len());
        for segment in self.segments.drain(..) {
            all.extend_from_slice(&segment);
        }
        all.extend_from_slice(&self.tail);
        self.segment_len = 0;
        self.tail.clear();
        all
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.segments.clear();
        self.segment_len = 0;
        self.tail.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(queue: &mut ByteQueue, max_slices: usize, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while !queue.is_empty() {
            let mut slices = vec![IoSlice::new(&[]); max_slices];
            let n = queue.io_slices(&mut slices);
            let mut taken = 0;
            for s in &slices[..n] {
                let want = (step - taken).min(s.len());
                out.extend_from_slice(&s[..want]);
                taken += want;
                if taken == step {
                    break;
                }
            }
            queue.advance(taken);
        }
        out
    }

    #[test]
    fn shared_and_copied_bytes_come_out_in_order_whatever_the_write_sizes() {
        for max_slices in [1, 2, 3, 64] {
            for step in [1, 3, 7, 100, 1 << 20] {
                let mut queue = ByteQueue::with_capacity(16);
                queue.tail().extend_from_slice(b"abc");
                queue.push_shared(Bytes::from_static(b"defg"));
                queue.push_shared(Bytes::new());
                queue.tail().extend_from_slice(b"h");
                queue.push_shared(Bytes::from_static(b"ij"));
                queue.push_shared(Bytes::from_static(b"k"));
                queue.tail().extend_from_slice(b"lmn");
                assert_eq!(queue.len(), 14);
                assert_eq!(
                    written(&mut queue, max_slices, step),
                    b"abcdefghijklmn",
                    "{max_slices} slices, writes of {step}"
                );
                assert_eq!(queue.len(), 0);
            }
        }
    }

    #[test]
    fn chunk_is_the_front_run() {
        let mut queue = ByteQueue::default();
        assert!(queue.chunk().is_empty());
        queue.tail().extend_from_slice(b"ab");
        assert_eq!(queue.chunk(), b"ab");
        queue.push_shared(Bytes::from_static(b"cd"));
        assert_eq!(queue.chunk(), b"ab");
        queue.advance(3);
        assert_eq!(queue.chunk(), b"d");
        queue.tail().extend_from_slice(b"e");
        assert_eq!(&queue.split()[..], b"de");
        queue.tail().extend_from_slice(b"f");
        queue.clear();
        assert!(queue.is_empty());
    }
}
