//! The body of every command, one file each: `run`, `check` (with
//! `check_projects`, its Custom Vision part), `decode`, `send`, `poison`,
//! `schema` (`config schema`) and `setup` (a folder, one file per step).
//! `main.rs` parses the command line and calls their `exec`. What they
//! share: `edge` (loading the configuration, `--queue`, printing errors,
//! the runtime) and [`lines`] (the `ok`/`FAIL` lines of `check` and
//! `setup`). Edges: they may use `anyhow` and print; the library layers
//! below them do neither.

pub mod check;
pub mod check_projects;
pub mod decode;
mod edge;
pub mod lines;
pub mod poison;
pub mod run;
pub mod schema;
pub mod send;
pub mod setup;
