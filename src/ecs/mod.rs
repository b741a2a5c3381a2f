//! The Alibaba Cloud ECS OpenAPI edge: an adapter from [`crate::domain`] to
//! HTTP (signing, the wire model, the client). Nothing here decides anything.
//!
//! - [`sign`]: ACS3-HMAC-SHA256 and RPC HMAC-SHA1, signing and verifying.
//! - [`model`]: the API's JSON answers (the resources themselves are in
//!   [`crate::domain`], as is what a failed call means).
//! - [`endpoint`]: regional endpoints or one override.
//! - [`transport`]: one signed call over HTTP (shared with STS).
//! - [`client`]: the ECS operations, one attempt per call.

pub mod client;
pub mod endpoint;
pub mod model;
pub mod rate_limit;
pub mod sign;
pub mod transport;
