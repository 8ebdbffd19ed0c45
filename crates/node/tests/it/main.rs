//! Integration tests of the node: real HTTP on loopback, real services, real stores.

mod admin;
mod api;
mod chain;
mod cli;
mod connections;
mod docker;
mod heartbeat;
mod limits;
mod openapi;
mod outage;
mod pipelines;
mod secrets;
mod store;
mod streaming;
mod subscriptions;
mod support;
