//! The protocol as the XML states it: constants, domains, classes, methods and fields.
//!
//! The model keeps the XML's own names (`declare-ok`, `reply-code`); turning them into Rust identifiers is
//! the emitter's job, so that a test can compare the model against the spec text directly.

/// A whole protocol description: one XML file, or several merged (the spec plus RabbitMQ's additions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub major: u8,
    pub minor: u8,
    pub revision: u8,
    pub port: u16,
    pub constants: Vec<Constant>,
    pub domains: Vec<Domain>,
    pub classes: Vec<Class>,
}

/// `<constant name=".." value=".." class=".."/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constant {
    pub name: String,
    pub value: u32,
    /// `soft-error` or `hard-error` for reply codes, absent otherwise.
    pub class: Option<String>,
}

/// `<domain name=".." type=".."/>`: a named alias for one of the primitive types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub ty: Primitive,
}

/// The wire types of AMQP 0-9-1 method and property fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primitive {
    Bit,
    Octet,
    Short,
    Long,
    LongLong,
    ShortStr,
    LongStr,
    Timestamp,
    Table,
}

impl Primitive {
    /// Parses the XML's type name.
    pub fn from_xml(name: &str) -> Option<Primitive> {
        Some(match name {
            "bit" => Primitive::Bit,
            "octet" => Primitive::Octet,
            "short" => Primitive::Short,
            "long" => Primitive::Long,
            "longlong" => Primitive::LongLong,
            "shortstr" => Primitive::ShortStr,
            "longstr" => Primitive::LongStr,
            "timestamp" => Primitive::Timestamp,
            "table" => Primitive::Table,
            _ => return None,
        })
    }
}

/// `<class>`: its methods and, for content classes, its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub name: String,
    pub index: u16,
    /// Content properties (`<field>` directly under `<class>`), in flag-bit order.
    pub properties: Vec<Field>,
    pub methods: Vec<Method>,
}

/// `<method>` with the metadata a client needs to drive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    pub name: String,
    pub index: u16,
    pub synchronous: bool,
    /// Followed by a content header and body frames.
    pub content: bool,
    pub deprecated: bool,
    /// Names of the methods (same class) that answer this one.
    pub responses: Vec<String>,
    /// `<chassis name="server">`: the server implements it, so a client may send it.
    pub client_sends: bool,
    /// `<chassis name="client">`: the client implements it, so a server may send it.
    pub server_sends: bool,
    pub fields: Vec<Field>,
}

/// `<field>`, with its domain already resolved to a primitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The domain the field was declared with, if any (`reply-code`), before resolution.
    pub domain: Option<String>,
    pub ty: Primitive,
    /// `reserved="1"`: on the wire with a default value, never in the public API.
    pub reserved: bool,
}
