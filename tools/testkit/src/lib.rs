//! What the end-to-end tests (`tests/e2e`) and the load tool (`tools/loadtest`)
//! share, so neither copies the other: private RabbitMQ vhosts from a pool,
//! the events queue a harness collects from and a background consumer for it,
//! free ports, `rabbitmqctl` and the broker's connection ids, and reading AMQP
//! headers.

pub mod amqp;
pub mod connections;
pub mod consume;
pub mod vhost;

pub use amqp::{declare_events_queue, declare_private_queue, header_str, header_u64};
pub use connections::connections_named;
pub use consume::for_each_delivery;
pub use vhost::{Vhost, rabbitmqctl};

/// A TCP port free on loopback now (for a listener the caller binds next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
