//! lifecycle-worker: carries out host-offboarding and leaked-activation-code
//! commands from RabbitMQ against the Alibaba Cloud ECS OpenAPI.
//!
//! The crate map (a pure core in the middle, I/O at the edges):
//!
//! - [`secret`]: a string type that never prints itself.
//! - [`credentials`]: the identity requests are signed with.
//! - [`ecs`]: the ECS OpenAPI edge (signing, wire model, client).
//! - [`simulator`]: a local, stateful ECS Cloud Assistant emulator (`simulate`).
pub mod credentials;
pub mod ecs;
pub mod secret;
pub mod simulator;
