//! End-to-end tests of the `infernet` binary.

mod client;
mod devnet;
mod gateway;
mod operator;
mod wallet;
