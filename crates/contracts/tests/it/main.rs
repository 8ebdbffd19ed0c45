//! Contract behaviour on a real anvil, driven through the Rust bindings. Each test starts its own devnet.

mod abi;
mod callback;
mod delegated;
mod deploy;
mod payments;
mod subscription;
mod support;
