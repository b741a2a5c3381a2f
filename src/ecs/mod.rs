//! The Alibaba Cloud ECS OpenAPI edge: signing, the wire model, the HTTP client.
//!
//! - [`sign`]: ACS3-HMAC-SHA256 and RPC HMAC-SHA1, signing and verifying.
//! - [`model`]: the API's JSON, tolerant of numbers and booleans sent as strings.
//! - [`error`]: what a failed call means (the contract's classification table).
//! - [`endpoint`]: regional endpoints or one override.
//! - [`transport`]: one signed call over HTTP (shared with STS).
//! - [`client`]: the ECS operations, one attempt per call.

pub mod client;
pub mod endpoint;
pub mod error;
pub mod model;
pub mod rate_limit;
pub mod sign;
pub mod transport;
