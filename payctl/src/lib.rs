//! `payctl`: the operators' command line for the charge queue (Redis, apalis-redis 1.0) and
//! the payments (Postgres). apalis-board cannot read apalis-redis 1.0's keys, so this reads
//! them directly, never with KEYS or unbounded reads, and changes them only through atomic
//! Lua scripts.
//!
//! - [`cli`]: the arguments, and `run`, which dispatches to a command and prints its report.
//! - [`commands`]: one module per subcommand, each returning a [`ctx::Report`].
//! - [`ctx`]: settings (the services' own environment), connections, registered workers.
//! - [`keys`]: the queue's Redis key layout, named by apalis-redis' `Config`.
//! - [`queue`]: one task as an operator sees it: place, payload, meta.
//! - [`scan`]: walking whole keys in pages (SSCAN/ZSCAN/HSCAN/LRANGE).
//! - [`scripts`]: the Lua scripts for `retry` and `purge-done`.
//! - [`txdb`]: the Postgres queries.
//! - [`duration`], [`table`]: `30s`/`5m`/`1h`/`2d` and aligned human output.

pub mod cli;
pub mod commands;
pub mod ctx;
pub mod duration;
pub mod keys;
pub mod queue;
pub mod scan;
pub mod scripts;
pub mod table;
pub mod txdb;

pub use cli::{Cli, run};
