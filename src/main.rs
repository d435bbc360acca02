//! The `kcptun-rs` binary: parse the command line, load the configuration, run the event loop.
fn main() {}
