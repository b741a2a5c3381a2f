//! Consuming a queue in the background, for a harness that watches events.

use futures::StreamExt;
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;

/// Consumes `queue` without acks (a harness's private queue: nothing to
/// redeliver) in a task of its own until the connection closes, handing each
/// delivery to `each` as it arrives (take `Instant::now()` there to time it).
pub async fn for_each_delivery(
    conn: &Connection,
    queue: &str,
    consumer_tag: &str,
    mut each: impl FnMut(Delivery) + Send + 'static,
) {
    let chan = conn.create_channel().await.expect("consumer channel");
    let mut consumer = chan
        .basic_consume(
            queue.into(),
            consumer_tag.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    tokio::spawn(async move {
        // The channel lives as long as its consumer.
        let _chan = chan;
        while let Some(Ok(d)) = consumer.next().await {
            each(d);
        }
    });
}
