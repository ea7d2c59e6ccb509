//! The commands other than `run`: `check` (with `check_projects`, its
//! Custom Vision part), `send`, `poison` and `setup`. Edges: they may use
//! `anyhow` and print; the library layers below them do neither.

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
