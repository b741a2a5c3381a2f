//! RabbitMQ edges: the topology and confirmed publishing. Consuming and
//! reconnecting live in [`crate::worker`], next to the ack point they serve.

pub mod connect;
pub mod publisher;
pub mod topology;
