//! `longstr`: up to 4 GiB of opaque bytes.

use std::{fmt, ops::Deref};

use bytes::Bytes;

/// An AMQP long string: any bytes (not necessarily UTF-8), shared and cheap to clone.
///
/// `Debug` shows UTF-8 content as a string and anything else as bytes. Where a long string carries a
/// secret (SASL responses), the generated method's `Debug` redacts it.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LongStr(Bytes);

impl LongStr {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The content as a string, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for LongStr {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for LongStr {
    fn from(b: Bytes) -> LongStr {
        LongStr(b)
    }
}

impl From<Vec<u8>> for LongStr {
    fn from(v: Vec<u8>) -> LongStr {
        LongStr(Bytes::from(v))
    }
}

impl From<String> for LongStr {
    fn from(s: String) -> LongStr {
        LongStr(Bytes::from(s.into_bytes()))
    }
}

impl From<&'static str> for LongStr {
    fn from(s: &'static str) -> LongStr {
        LongStr(Bytes::from_static(s.as_bytes()))
    }
}

impl From<&'static [u8]> for LongStr {
    fn from(s: &'static [u8]) -> LongStr {
        LongStr(Bytes::from_static(s))
    }
}

impl fmt::Debug for LongStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            Some(s) => fmt::Debug::fmt(s, f),
            None => fmt::Debug::fmt(&self.0, f),
        }
    }
}
