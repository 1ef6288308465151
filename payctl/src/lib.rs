//! `payctl`: the operators' command line for the charge queue (Redis, apalis-redis 1.0) and
//! the payments (Postgres). apalis-board cannot read apalis-redis 1.0's keys, so this reads
//! them directly, never with KEYS or unbounded reads, and changes them only through atomic
//! Lua scripts.
//!
//! - [`cli`]: the arguments, and `run`, which dispatches to a command and prints its report.
//! - [`commands`]: one module per subcommand, each returning a [`ctx::Report`].
//! - [`ctx`]: settings (the services' own environment), connections, registered workers.
//! - [`duration`], [`table`]: `30s`/`5m`/`1h`/`2d` and aligned human output.

pub mod cli;
pub mod commands;
pub mod ctx;
pub mod duration;
pub mod table;

pub use cli::{Cli, run};
