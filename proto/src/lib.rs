//! Shared library of silica-cron: everything the daemon and the client must agree on.
//!
//! - [`frame`]: length-prefixed frames with a hard size limit, and the hello exchange.
//! - [`codec`]: the payload encoding (bincode), behind two functions so it can be swapped.
//! - [`message`]: requests, streamed replies, typed errors.
//! - [`cli`]: the command definitions both binaries parse, so a one-shot `silica-crond migrate …`
//!   understands exactly what `silica-cron migrate …` accepted.
//! - [`paths`] and [`config`]: where the database, socket and lock live.
//!
//! No sockets, no SQLite, no runtime here.

pub mod cli;
pub mod codec;
pub mod config;
pub mod frame;
pub mod message;
pub mod paths;
pub mod records;

/// Version of the wire protocol; bumped on any incompatible change of [`message`].
pub const PROTOCOL_VERSION: u32 = 2;

/// Version of the product, shown by `status` and `--version`.
pub const PRODUCT_VERSION: &str = env!("CARGO_PKG_VERSION");
