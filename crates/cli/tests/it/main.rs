//! End-to-end tests of the `infernet` binary.

mod client;
mod devnet;
mod operator;
mod wallet;
