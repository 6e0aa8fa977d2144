//! The only layer with sockets: the connection driver task and what handles send it.

pub(crate) mod command;
pub(crate) mod driver;
