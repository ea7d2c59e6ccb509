//! Exit codes (sysexits.h where one fits). A leaf: `main` maps results to
//! these; nothing in the library exits the process.

/// Done, or stopped by SIGTERM/SIGINT after draining.
pub const OK: i32 = 0;
/// A runtime failure (a check failed, storage unusable in `--once`).
pub const FAILURE: i32 = 1;
/// Bad command-line usage (clap).
pub const USAGE: i32 = 2;
/// EX_DATAERR: `decode` was given a message it cannot decode.
pub const DATA_ERR: i32 = 65;
/// EX_UNAVAILABLE: the credential could not get a token at start-up.
pub const UNAVAILABLE: i32 = 69;
/// EX_CONFIG: the configuration is invalid.
pub const CONFIG: i32 = 78;
