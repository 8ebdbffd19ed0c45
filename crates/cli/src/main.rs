//! The `infernet` command line.

fn main() {}
