//! `shortstr`: at most 255 bytes of UTF-8.

use std::{
    borrow::Borrow,
    fmt,
    hash::{Hash, Hasher},
    ops::Deref,
};

use bytes::Bytes;

use crate::codec::CodecError;

/// An AMQP short string: UTF-8, at most 255 bytes, checked when it is built.
///
/// Received from the network, bytes that are not UTF-8 are decoded lossily rather than refused (see
/// `ShortStr::from_wire`'s rule, in the source): each invalid sequence becomes U+FFFD, as in the Java client.
///
/// Cheap to clone (it shares its bytes). Queue names, exchange names, routing keys and consumer tags are
/// short strings.
///
/// ```
/// use coney::codec::ShortStr;
/// let q = ShortStr::new("orders").unwrap();
/// assert_eq!(q, "orders");
/// assert_eq!("orders", q); // and with `String`, either way round
/// assert!(ShortStr::new(&"x".repeat(256)).is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShortStr(Bytes);

impl ShortStr {
    /// The longest short string, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Copies `s` into a short string, or fails if it is longer than 255 bytes.
    pub fn new(s: &str) -> Result<ShortStr, CodecError> {
        if s.len() > Self::MAX_LEN {
            return Err(CodecError::ShortStrTooLong(s.len()));
        }
        Ok(ShortStr(Bytes::copy_from_slice(s.as_bytes())))
    }

    /// Wraps a static string without copying.
    ///
    /// # Panics
    /// If `s` is longer than 255 bytes: a static string is the programmer's, so this is a bug in the caller,
    /// like `http::HeaderValue::from_static`. Use [`ShortStr::new`] for data that arrives at run time.
    pub const fn from_static(s: &'static str) -> ShortStr {
        assert!(
            s.len() <= Self::MAX_LEN,
            "a short string is at most 255 bytes"
        );
        ShortStr(Bytes::from_static(s.as_bytes()))
    }

    /// Bytes received from the network (at most 255).
    ///
    /// spec: a short string carries "up to 255 octets of UTF-8 data". But RabbitMQ relays routing keys
    /// and header-table keys from other clients unchecked (a Go string or an Erlang binary can hold any
    /// bytes), and refusing one would close the whole connection over one message, which the broker
    /// requeues and delivers again after every reconnect. So bytes that are not UTF-8 are decoded
    /// lossily, as the Java client decodes them: each invalid sequence becomes U+FFFD, and the result
    /// is cut to 255 bytes on a character boundary.
    pub(crate) fn from_wire(bytes: &[u8]) -> ShortStr {
        debug_assert!(bytes.len() <= Self::MAX_LEN);
        if is_utf8(bytes) {
            return ShortStr(Bytes::copy_from_slice(bytes));
        }
        ShortStr::lossy(bytes)
    }

    /// Like [`ShortStr::from_wire`], for bytes that lie inside `shared`: a UTF-8 string shares its
    /// allocation (a reference count) instead of being copied. Bytes outside `shared` are copied.
    pub(crate) fn from_wire_shared(shared: &Bytes, bytes: &[u8]) -> ShortStr {
        debug_assert!(bytes.len() <= Self::MAX_LEN);
        if !is_utf8(bytes) {
            return ShortStr::lossy(bytes);
        }
        if bytes.is_empty() {
            return ShortStr::default();
        }
        let base = shared.as_ptr() as usize;
        let start = bytes.as_ptr() as usize;
        if start < base || start + bytes.len() > base + shared.len() {
            return ShortStr(Bytes::copy_from_slice(bytes));
        }
        ShortStr(shared.slice_ref(bytes))
    }

    fn lossy(bytes: &[u8]) -> ShortStr {
        let text = String::from_utf8_lossy(bytes);
        let mut end = text.len().min(Self::MAX_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        ShortStr(Bytes::copy_from_slice(&text.as_bytes()[..end]))
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // Every constructor checks UTF-8; re-checking is cheap for at most 255 bytes and keeps the crate
        // free of `unsafe`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The bytes as they go on the wire (without the length octet).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<&'static str> for ShortStr {
    /// Same as [`ShortStr::from_static`], including its panic on more than 255 bytes.
    fn from(s: &'static str) -> ShortStr {
        ShortStr::from_static(s)
    }
}

impl TryFrom<String> for ShortStr {
    type Error = CodecError;
    fn try_from(s: String) -> Result<ShortStr, CodecError> {
        if s.len() > Self::MAX_LEN {
            return Err(CodecError::ShortStrTooLong(s.len()));
        }
        Ok(ShortStr(Bytes::from(s.into_bytes())))
    }
}

impl TryFrom<&String> for ShortStr {
    type Error = CodecError;
    fn try_from(s: &String) -> Result<ShortStr, CodecError> {
        ShortStr::new(s)
    }
}

impl Deref for ShortStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for ShortStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for ShortStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for ShortStr {
    /// Hashes as the `str` it holds, as `Borrow<str>` requires: a map keyed by short strings can be
    /// looked up with a `&str`. (Deriving it would hash the bytes as a `[u8]`, which differs.) Equality
    /// and order, derived from the bytes, already agree with `str`'s.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for ShortStr {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

// The same comparisons written the other way round (`"orders" == name`), as `String` offers them.

impl PartialEq<ShortStr> for str {
    fn eq(&self, other: &ShortStr) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ShortStr> for &str {
    fn eq(&self, other: &ShortStr) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<ShortStr> for String {
    fn eq(&self, other: &ShortStr) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether wire bytes are UTF-8. Names, tags and keys are nearly always ASCII, which `is_ascii`
/// confirms a word at a time; only the rest takes `from_utf8`'s full walk.
fn is_utf8(bytes: &[u8]) -> bool {
    bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()
}
