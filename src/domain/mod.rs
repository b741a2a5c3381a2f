//! What the worker's world *means*, free of any wire or broker: the ECS
//! resources ([`resource`]), what a failed call means ([`error`]: the
//! contract's classification table), the calls a playbook makes ([`cloud`]),
//! and the API's leniency about scalars ([`lenient`]).
//!
//! Pure: no I/O. `ecs` adapts it to HTTP, `playbook` and `decision` reason with
//! it, so neither depends on the other.

pub mod cloud;
pub mod error;
pub mod lenient;
pub mod resource;
