//! Publishing with publisher confirms, pipelined.
//!
//! All messages of one settlement (step events, terminal event, retry copy or
//! dead letter, reply) are sent back to back and their confirms awaited
//! together: one round trip per command instead of one per message. A nack, or
//! the return of a message that must land in a queue, is an error: the caller
//! then does not acknowledge the command.

use futures::FutureExt;
use lapin::options::BasicPublishOptions;
use lapin::options::ConfirmSelectOptions;
use lapin::{BasicProperties, Channel, Confirmation, Connection};

/// What must happen if the broker cannot route a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Must reach a queue (retry copies, dead letters): a return is an error.
    Required,
    /// Events: published `mandatory` so a return is seen and counted, but an
    /// event exchange nobody has bound yet must not hold commands hostage.
    Reported,
    /// `reply_to` answers: the requester may be gone; best effort.
    BestEffort,
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Exchange ("" for the default exchange).
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// Body bytes.
    pub body: Vec<u8>,
    /// AMQP properties.
    pub properties: BasicProperties,
    /// What a return means.
    pub routing: Routing,
}

/// Why a batch was not safely published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel or connection failed.
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker refused a message.
    #[error("broker nacked a message to {exchange:?}/{routing_key:?}")]
    Nacked {
        /// Exchange of the refused message.
        exchange: String,
        /// Routing key of the refused message.
        routing_key: String,
    },
    /// A message that must land in a queue was unroutable.
    #[error("unroutable message to {exchange:?}/{routing_key:?}")]
    Returned {
        /// Exchange of the returned message.
        exchange: String,
        /// Routing key of the returned message.
        routing_key: String,
    },
    /// The session ended (its connections lost) before every confirm came:
    /// unconfirmed is not confirmed.
    #[error("the broker session ended before the publish was confirmed")]
    SessionLost,
}

/// Counts of what was returned but tolerated, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Events nobody was bound to receive.
    pub unroutable_events: u32,
    /// Replies whose queue was gone.
    pub unroutable_replies: u32,
}

/// A confirm-mode channel shared by all tasks of one connection.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    /// Cancelled when the session this publisher belongs to is lost: lapin
    /// may never settle a confirm of a connection that died, and a task
    /// waiting for one would hold its command's lock and slot for good.
    lost: tokio_util::sync::CancellationToken,
    /// Cancelled when a command's outcome has been refused for so long that
    /// the session should be replaced (see [`Publisher::give_up_session`]).
    stale: tokio_util::sync::CancellationToken,
}

impl Publisher {
    /// Opens a channel on `connection` and puts it in confirm mode.
    pub async fn open(connection: &Connection) -> Result<Self, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            lost: tokio_util::sync::CancellationToken::new(),
            stale: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// Ends every wait for a confirm with [`PublishError::SessionLost`]
    /// (the session's connections are gone; their deliveries are redelivered).
    pub fn session_lost(&self) {
        self.lost.cancel();
    }

    /// Asks for a new session: this one's publishes have been refused for
    /// long. On RabbitMQ 3.x a channel opened while a quorum queue's leader
    /// node was going down can be answered `basic.nack` for every message to
    /// that queue for good, while a channel opened a little later is served
    /// (seen in the cluster scenarios: one worker's new channel nacked for
    /// minutes, the other worker's channel on the same node never). New
    /// connections and channels are the cure; held deliveries are redelivered.
    pub fn give_up_session(&self) {
        self.stale.cancel();
    }

    /// Resolves once [`Publisher::give_up_session`] was called.
    pub async fn given_up(&self) {
        self.stale.cancelled().await;
    }

    /// The underlying channel (watched for loss; closed in order at shutdown).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes every message, then waits for every confirm.
    ///
    /// The messages are handed to lapin together, not one write at a time:
    /// lapin queues a message's frames and registers its confirm when its
    /// publish is first polled, so each publish is polled once here, in batch
    /// order (the broker's order: the terminal event last), before any is
    /// awaited. The batch then costs one pass of the I/O loop, not one per
    /// message.
    ///
    /// The batch is borrowed, so a settlement the broker refused can be
    /// published again as it was (same event ids) without redoing its work.
    pub async fn publish_all(&self, batch: &[Outgoing]) -> Result<Published, PublishError> {
        tokio::select! {
            published = self.publish_confirmed(batch) => published,
            () = self.lost.cancelled() => Err(PublishError::SessionLost),
        }
    }

    async fn publish_confirmed(&self, batch: &[Outgoing]) -> Result<Published, PublishError> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let mut sends = Vec::with_capacity(batch.len());
        for m in batch {
            let mut send = Box::pin(self.channel.basic_publish(
                m.exchange.as_str().into(),
                m.routing_key.as_str().into(),
                options,
                &m.body,
                m.properties.clone(),
            ));
            let done = send.as_mut().now_or_never();
            sends.push((send, done));
        }
        let mut confirms = Vec::with_capacity(sends.len());
        for (send, done) in sends {
            confirms.push(match done {
                Some(sent) => sent?,
                None => send.await?,
            });
        }
        let mut published = Published::default();
        let mut first_error = None;
        for (m, confirm) in batch.iter().zip(confirms) {
            let (exchange, routing_key) = (m.exchange.clone(), m.routing_key.clone());
            let routing = m.routing;
            let result = match confirm.await? {
                Confirmation::Ack(None) => Ok(()),
                Confirmation::Ack(Some(_)) => match routing {
                    Routing::Required => Err(PublishError::Returned {
                        exchange,
                        routing_key,
                    }),
                    Routing::Reported => {
                        published.unroutable_events += 1;
                        Ok(())
                    }
                    Routing::BestEffort => {
                        published.unroutable_replies += 1;
                        Ok(())
                    }
                },
                Confirmation::Nack(_) | Confirmation::NotRequested => Err(PublishError::Nacked {
                    exchange,
                    routing_key,
                }),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(published),
        }
    }
}
