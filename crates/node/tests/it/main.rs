//! Integration tests of the node: real HTTP on loopback, real services, real stores.

mod admin;
mod api;
mod chain;
mod cli;
mod docker;
mod heartbeat;
mod outage;
mod limits;
mod openapi;
mod pipelines;
mod store;
mod streaming;
mod subscriptions;
mod support;
