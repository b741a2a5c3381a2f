//! lifecycle-worker: carries out host-offboarding and leaked-activation-code
//! commands from RabbitMQ against the Alibaba Cloud ECS OpenAPI.
//!
//! The crate map (a pure core in the middle, I/O at the edges):
//!
//! - [`secret`]: a string type that never prints itself.
pub mod secret;
