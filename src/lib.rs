//! lifecycle-worker: carries out host-offboarding and leaked-activation-code
//! commands from RabbitMQ against the Alibaba Cloud ECS OpenAPI.
//!
//! The crate map. A pure core (no I/O):
//!
//! - [`command`]: bytes + AMQP properties → a validated command or a rejection.
//! - [`domain`]: what ECS resources and errors mean, and the calls a playbook makes.
//! - [`decision`]: **the** decision after a failed attempt or an interrupted wait.
//! - [`playbook`]: which API calls a command makes and what the answers mean.
//! - [`settlement`]: **the** settlement plan: what is published, ack or requeue.
//! - [`event`]: the events the worker publishes.
//! - [`auth`]: signed commands. [`limits`]: blast-radius limits.
//! - [`settings`]: typed, validated configuration.
//!
//! Executors and I/O at the edges:
//!
//! - [`retry`]: carries out a step (rate limit, attempts, backoff) as [`decision`] says.
//! - [`slot`], [`locks`]: concurrency slots lent while waiting; per-target locks.
//! - [`ecs`]: the ECS OpenAPI adapter (signing, wire model, client).
//! - [`credentials`]: where keys come from; STS role sessions per account.
//! - [`broker`]: RabbitMQ connections, topology and confirmed publishing.
//! - [`worker`]: consuming, carrying out, executing the plan (the one ack point), reconnecting.
//! - [`http`], [`health`], [`metrics`], [`telemetry`], [`trace_context`]: operations.
//! - [`app`]: the worker as a value: built from settings, run until a token fires.
//! - [`cli`]: the subcommands of the binary; [`simulator`]: the ECS emulator.
//!
//! Small shared types: [`secret`], [`credentials`].
pub mod app;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod command;
pub mod credentials;
pub mod decision;
pub mod domain;
pub mod ecs;
pub mod event;
pub mod health;
pub mod http;
pub mod limits;
pub mod locks;
pub mod metrics;
pub mod playbook;
pub mod retry;
pub mod secret;
pub mod settings;
pub mod settlement;
pub mod simulator;
pub mod slot;
pub mod telemetry;
pub mod trace_context;
pub mod worker;
