//! The Alibaba Cloud ECS OpenAPI edge: signing, the wire model, the HTTP client.

pub mod model;
pub mod sign;
