//! The protocol as the XML spec states it: constants, reply codes, every method, content properties.
//!
//! Almost everything here is generated at build time by `coney-codegen` from `spec/` (see `build.rs`); the
//! few hand-written types below are the ones the generated code is written against.

use std::fmt;

include!(concat!(env!("OUT_DIR"), "/spec.rs"));

/// Generated proptest strategies for every method and for the content properties.
#[cfg(test)]
pub(crate) mod strategies {
    include!(concat!(env!("OUT_DIR"), "/spec_strategies.rs"));
}

#[cfg(test)]
mod tests;

/// A reply code from `connection.close`, `channel.close` or `basic.return`.
///
/// An open newtype: codes the spec does not name survive decoding unchanged. The named ones are associated
/// constants (`ReplyCode::NOT_FOUND`), generated from the spec's `<constant>`s together with their
/// soft/hard classification.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode(pub u16);

/// The spec's two kinds of error reply code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Closes the channel; the connection stays usable.
    Soft,
    /// Closes the whole connection.
    Hard,
}

impl ReplyCode {
    /// The code as a number.
    pub fn code(self) -> u16 {
        self.0
    }
}

impl fmt::Debug for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{}({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What the spec says of one method, beyond its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// Class id.
    pub class_id: u16,
    /// Method id.
    pub method_id: u16,
    /// Dotted name, e.g. `basic.consume-ok`.
    pub name: &'static str,
    /// The sender waits for one of `responses` (unless the method's `no-wait` bit is set).
    pub synchronous: bool,
    /// A content header and body frames follow the method frame.
    pub content: bool,
    /// Marked deprecated in the spec.
    pub deprecated: bool,
    /// The (class id, method id) of each method that may answer this one.
    pub responses: &'static [(u16, u16)],
    /// A client may send it (the server's chassis implements it).
    pub client_sends: bool,
    /// A server may send it (the client's chassis implements it).
    pub server_sends: bool,
}
