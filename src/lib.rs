//! lifecycle-worker: carries out host-offboarding and leaked-activation-code
//! commands from RabbitMQ against the Alibaba Cloud ECS OpenAPI.
//!
//! The crate map. A pure core (no I/O):
//!
//! - [`command`]: bytes + AMQP properties → a validated command or a rejection.
//! - [`playbook`]: which API calls a command makes and what the answers mean.
//! - [`retry`]: immediate retries, backoff, the retry budget.
//! - [`slot`]: a command's concurrency slot, given back while it waits.
//! - [`event`]: the events the worker publishes.
//! - [`auth`]: signed commands.
//! - [`settings`]: typed, validated configuration.
//!
//! I/O at the edges:
//!
//! - [`ecs`]: the ECS OpenAPI client (signing, model, classification).
//! - [`broker`]: RabbitMQ topology and confirmed publishing.
//! - [`worker`]: consuming, carrying out, settling (the one ack point), reconnecting.
//! - [`http`], [`health`], [`metrics`], [`telemetry`], [`trace_context`]: operations.
//! - [`cli`]: the subcommands of the binary.
//!
//! Small shared types: [`secret`], [`credentials`].
pub mod auth;
pub mod broker;
pub mod cli;
pub mod command;
pub mod credentials;
pub mod domain;
pub mod ecs;
pub mod event;
pub mod health;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod playbook;
pub mod retry;
pub mod secret;
pub mod settings;
pub mod simulator;
pub mod slot;
pub mod telemetry;
pub mod trace_context;
pub mod worker;
