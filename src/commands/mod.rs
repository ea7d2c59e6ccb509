//! The commands other than `run`: `check`, `send` and `poison`. Edges: they
//! may use `anyhow` and print; the library layers below them do neither.

pub mod check;
pub mod poison;
pub mod send;
