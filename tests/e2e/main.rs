//! Cross-role end-to-end tests: real `spreadagg` processes, a real `nats-server` started by
//! the test kit, real WebSocket clients.

mod embedded;
mod isolation;
mod kubernetes;
mod outage;
mod pipeline;
mod recovery;
mod replicas;
mod support;
