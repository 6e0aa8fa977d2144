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

    /// Validates bytes received from the network.
    pub(crate) fn from_wire(bytes: &[u8]) -> Result<ShortStr, CodecError> {
        debug_assert!(bytes.len() <= Self::MAX_LEN);
        check_utf8(bytes)?;
        Ok(ShortStr(Bytes::copy_from_slice(bytes)))
    }

    /// Checks bytes received from the network as [`ShortStr::from_wire`] does, without building one.
    pub(crate) fn check_wire(bytes: &[u8]) -> Result<(), CodecError> {
        debug_assert!(bytes.len() <= Self::MAX_LEN);
        check_utf8(bytes)
    }

    /// Validates bytes received from the network that lie inside `shared`, sharing its allocation (a
    /// reference count) instead of copying. Bytes outside `shared` are copied.
    pub(crate) fn from_wire_shared(shared: &Bytes, bytes: &[u8]) -> Result<ShortStr, CodecError> {
        debug_assert!(bytes.len() <= Self::MAX_LEN);
        check_utf8(bytes)?;
        if bytes.is_empty() {
            return Ok(ShortStr::default());
        }
        let base = shared.as_ptr() as usize;
        let start = bytes.as_ptr() as usize;
        if start < base || start + bytes.len() > base + shared.len() {
            return Ok(ShortStr(Bytes::copy_from_slice(bytes)));
        }
        Ok(ShortStr(shared.slice_ref(bytes)))
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

/// Checks that wire bytes are UTF-8. Names, tags and keys are nearly always ASCII, which `is_ascii`
/// confirms a word at a time; only the rest takes `from_utf8`'s full walk.
fn check_utf8(bytes: &[u8]) -> Result<(), CodecError> {
    if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
        return Ok(());
    }
    Err(CodecError::InvalidUtf8)
}
