//! Integration tests of the node: real HTTP on loopback, real services, real stores.

mod api;
mod chain;
mod cli;
mod connections;
mod docker;
mod pipelines;
mod secrets;
mod store;
mod streaming;
mod subscriptions;
mod support;
