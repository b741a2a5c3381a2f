//! The end-to-end suite: one test binary (one link against lapin, reqwest,
//! axum and OpenTelemetry instead of one per file), one module per family of
//! guarantees. Tests talk to the real RabbitMQ on 127.0.0.1:5672 (each in a
//! private vhost from `lifecycle_testkit`'s pool) and to the ECS simulator over
//! HTTP. The worker runs in this process ([`support::Env::start_worker`], an
//! `App` on port 0 stopped by a token) unless the process itself is the
//! subject (signals, SIGKILL, exit codes, logs on stderr, the CLI), where
//! [`support::Env::start_process`] runs the binary.
//!
//! One test lives elsewhere, because it needs a process of its own:
//! `tests/otel_trace.rs` installs the global tracing subscriber. The cluster
//! scenarios (`cluster`) are here but `#[ignore]`d: they need the three-node
//! cluster `tests/cluster/run.sh` starts, and run as CI's own step.

mod corpus;
mod support;

// Pure parts against independent evidence (no broker).
mod command_props;
mod command_schemas;
mod ecs_client;
mod hostile_commands;
mod signing;
mod simulator;

// The worker against RabbitMQ and the simulator.
mod accounts;
mod amqps;
mod broker_restart;
mod credential_chain;
mod event_schemas;
mod hostile_live;
mod metrics;
mod publisher;
mod secret_hygiene;
mod signed_commands;
mod topology;
mod worker_e2e;

// The CLI and the deployment files.
mod bulk_send;
mod check;
mod cluster;
mod deploy;
