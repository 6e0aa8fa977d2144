//! coney's code generator: the AMQP 0-9-1 XML specification in, Rust codecs out.
//!
//! `coney`'s `build.rs` calls [`generate`] with the vendored spec and RabbitMQ's additions; the output is
//! `include!`d by `src/spec.rs`. The pipeline is [`parse`] (XML → [`model::Spec`]), [`model::Spec::merge`]
//! and [`model::Spec::validate`], then [`emit`] (model → text). [`emit_strategies`] writes a second file
//! from the same model: proptest strategies for every method, which `coney`'s round-trip tests include.
//!
//! The emitted code expects the including crate to provide `crate::codec` (field types, `decode::*` nom
//! parsers, `encode::*` writers, `CodecError`) and the hand-written types `ReplyCode`, `ErrorClass` and
//! `MethodInfo` in the including module.

pub mod emit;
pub mod model;
pub mod parse;

pub use emit::{emit, emit_strategies};
pub use parse::parse;

/// Parses each XML text in order, merges them (the first is the base), validates and emits Rust.
///
/// `source` is a human-readable description of the inputs, written into the generated file's header.
pub fn generate(xmls: &[&str], source: &str) -> Result<String, String> {
    Ok(emit(&load(xmls)?, source))
}

/// Like [`generate`], but emits the proptest strategies of [`emit_strategies`] instead of the codecs.
pub fn generate_strategies(xmls: &[&str], source: &str) -> Result<String, String> {
    Ok(emit_strategies(&load(xmls)?, source))
}

/// Parses each XML text in order, merges them (the first is the base) and validates the result.
pub fn load(xmls: &[&str]) -> Result<model::Spec, String> {
    let mut iter = xmls.iter();
    let first = iter.next().ok_or("no XML given")?;
    let mut spec = parse(first)?;
    for xml in iter {
        spec.merge(parse(xml)?)?;
    }
    spec.validate()?;
    Ok(spec)
}
