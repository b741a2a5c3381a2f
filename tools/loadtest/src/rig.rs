//! What every run stands on: a private vhost (from the testkit's pool, so
//! runs never see each other's queues), a simulator of its own, and the
//! tool's connection with an events queue bound to every event.

use crate::sim::Sim;
use lapin::{Connection, ConnectionProperties};
use lifecycle_testkit::{Vhost, declare_events_queue};

/// The worker's event exchange, which the events queue is bound to.
pub const EVENTS: &str = "lifecycle.events";

pub struct Rig {
    pub vhost: Vhost,
    pub sim: Sim,
    /// The vhost's AMQP URL.
    pub url: String,
    /// The simulator's base URL.
    pub endpoint: String,
    /// The tool's consuming connection (events, topology).
    pub conn: Connection,
    /// The events queue's name.
    pub events: String,
}

impl Rig {
    /// A fresh vhost around `sim`, connected, with the events queue declared.
    pub async fn new(sim: Sim) -> Rig {
        let vhost = Vhost::create().await;
        let url = vhost.url();
        let endpoint = sim.endpoint();
        let conn = connect(&url, "harness").await;
        let events = declare_events_queue(&conn, EVENTS).await;
        Rig {
            vhost,
            sim,
            url,
            endpoint,
            conn,
            events,
        }
    }

    /// Another connection to the vhost. Commands go out on one of their own:
    /// flow control the broker applies to a publishing connection must not
    /// delay the collector's deliveries (RabbitMQ's advice: separate
    /// publishing and consuming connections).
    pub async fn connect(&self, who: &str) -> Connection {
        connect(&self.url, who).await
    }

    /// Closes the connection, stops the simulator, gives the vhost back.
    pub async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
        self.sim.shutdown();
        drop(self.vhost);
    }
}

async fn connect(url: &str, who: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("{who} connects: {e}"))
}
