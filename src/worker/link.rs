//! A session's two broker connections: opening them over the nodes of
//! `amqp.url`, telling where they landed, noticing when they go, and
//! following the broker's flow control (`connection.blocked`).
//!
//! Everything here ends in one of two signals the session acts on: "lost"
//! (the session is replaced: new connections, possibly on other nodes) and
//! "blocked" (the broker will not take publishes: no new commands are taken,
//! nothing unconfirmed is acknowledged, readiness is false, until unblocked).

use crate::broker::connect::{ConnectError, Connected, connect_any};
use crate::health::Health;
use crate::metrics::{ConnectionLabel, Metrics};
use crate::settings::AmqpSettings;
use futures::StreamExt;
use lapin::{Channel, Connection, Event};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

/// How often a session checks that both its connections are still open.
const CONNECTION_CHECK: Duration = Duration::from_millis(250);

/// Longest wait for the broker's answer to a connection close. A connection
/// whose socket failed may never answer (lapin then waits forever), and the
/// reconnect loop must not wait with it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connection names, as `rabbitmqctl list_connections` shows them.
pub const CONSUMING: &str = "lifecycle-worker";
/// See [`CONSUMING`].
pub const PUBLISHING: &str = "lifecycle-worker-publisher";

/// The two connections of one broker session. RabbitMQ advises two: flow
/// control the broker applies to a publishing connection then never holds up
/// deliveries and acks, and the reverse. Each may be on any node.
pub struct Connections {
    pub consuming: Connection,
    pub publishing: Connection,
    /// Nodes (1-based positions in `amqp.url`) of each.
    pub consuming_node: usize,
    pub publishing_node: usize,
}

impl Connections {
    /// Opens both, each with one round over the nodes in a fresh order.
    pub async fn open(amqp: &AmqpSettings) -> Result<Self, ConnectError> {
        let consuming = connect_any(amqp, CONSUMING).await?;
        match connect_any(amqp, PUBLISHING).await {
            Ok(publishing) => Ok(Self {
                consuming_node: consuming.node,
                publishing_node: publishing.node,
                consuming: consuming.connection,
                publishing: publishing.connection,
            }),
            Err(e) => {
                let Connected { connection, .. } = consuming;
                let _ = tokio::time::timeout(
                    CLOSE_TIMEOUT,
                    connection.close(320, "reconnecting".into()),
                )
                .await;
                Err(e)
            }
        }
    }

    /// Closes whatever is still open, each close bounded.
    pub async fn close(&self, code: u16, reason: &str) {
        for connection in [&self.consuming, &self.publishing] {
            if connection.status().connected() {
                let close = connection.close(code, reason.into());
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
            }
        }
    }

    /// Tells `/readyz` and the metrics where the session is (`None`: nowhere).
    pub fn report(this: Option<&Self>, health: &Health, metrics: &Metrics) {
        let (consuming, publishing) =
            this.map_or((0, 0), |c| (c.consuming_node, c.publishing_node));
        health.set_link(|l| {
            l.consuming_node = consuming;
            l.publishing_node = publishing;
        });
        for (connection, node) in [("consuming", consuming), ("publishing", publishing)] {
            metrics
                .broker_node
                .get_or_create(&ConnectionLabel { connection })
                .set(i64::try_from(node).unwrap_or(0));
        }
    }
}

/// Resolves when either connection, or the publishing channel, is no longer
/// open. Consumers notice a lost consuming connection on their own; this also
/// covers an idle one, and the publishing side, which nothing else is reading
/// from: a channel the broker closed (say, a publish to an exchange deleted by
/// hand) takes no more outcomes, so the session must be replaced. A node that
/// hangs without closing its sockets shows here too, once lapin has missed
/// two heartbeats (`amqp.heartbeat_s`) and closed the connection.
pub async fn lost(connections: &Connections, publishing: &Channel) -> String {
    loop {
        tokio::time::sleep(CONNECTION_CHECK).await;
        for (name, connection) in [
            (CONSUMING, &connections.consuming),
            (PUBLISHING, &connections.publishing),
        ] {
            if !connection.status().connected() {
                return format!("the {name} connection closed");
            }
        }
        if !publishing.status().connected() {
            return "the publishing channel closed".to_owned();
        }
    }
}

/// Follows `connection.blocked` / `connection.unblocked` on the publishing
/// connection until it closes: the receiver holds the broker's reason while
/// blocked. Readiness says so meanwhile. Dropping the handle stops following
/// (the session ended) and clears the state.
pub fn follow_blocking(
    publishing: &Connection,
    health: Health,
) -> (watch::Receiver<Option<String>>, Following) {
    let initially = publishing
        .status()
        .blocked()
        .then(|| "blocked before the session started".to_owned());
    let (tx, rx) = watch::channel(initially.clone());
    health.set_blocked(initially);
    let mut events = publishing.events_listener();
    let follower = health.clone();
    let task = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let now = match event {
                Event::ConnectionBlocked(reason) => Some(reason),
                Event::ConnectionUnblocked => None,
                _ => continue,
            };
            match &now {
                Some(reason) => {
                    warn!(%reason, "the broker blocks publishing; taking no new commands until it unblocks")
                }
                None => info!("the broker unblocked publishing; taking commands again"),
            }
            follower.set_blocked(now.clone());
            if tx.send(now).is_err() {
                break;
            }
        }
    });
    let following = Following {
        _task: AbortOnDropHandle::new(task),
        health,
    };
    (rx, following)
}

/// Stops following a session's flow control when dropped.
pub struct Following {
    _task: AbortOnDropHandle<()>,
    health: Health,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.health.set_blocked(None);
    }
}
