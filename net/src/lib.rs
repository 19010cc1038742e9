//! ringlog-net: ringlog's binary protocol, server and client.
//!
//! - [`frame`]: how requests and responses are delimited on the byte stream.
//! - [`api`]: api ids and supported versions; [`error_code`]: the error codes.
//! - [`protocol`]: the flatbuffers code generated from `net/protocol.fbs` (the public spec).
//! - [`message`]: typed builders and verified readers for every request and response.
//! - [`client`]: a blocking client (connection, admin calls, producer, consumer).
//! - [`byte_size`]: byte sizes as users type them (`64KiB`), for command lines.
//!
//! `net/PROTOCOL.md` describes the protocol for implementers in other languages.

pub mod api;
pub mod byte_size;
pub mod client;
pub mod error_code;
pub mod frame;
pub mod message;
pub mod server;

#[allow(
    unused_imports,
    dead_code,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    deprecated,
    unsafe_op_in_unsafe_fn,
    missing_docs,
    clippy::all,
    clippy::pedantic
)]
#[rustfmt::skip]
mod protocol_generated;

/// Flatbuffers types generated from `net/protocol.fbs` (namespace `ringlog.protocol`).
///
/// Views (`FooRequest<'buf>`, `FooResponse<'buf>`) are obtained verified through
/// [`message::Decode`]; builders are wrapped by the [`message`] modules.
pub use protocol_generated::ringlog::protocol;
