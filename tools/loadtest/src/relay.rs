//! `loadtest relay`: the broker's ceiling as a system under test.
//!
//! A bare lapin consumer on the worker's decommission queue (declared by the
//! worker's own topology code, so it is the same queue) that publishes two
//! persistent events with confirms per command, then acks. It publishes the
//! way the worker does (a connection of its own, both events handed to lapin
//! before either write is awaited) and does nothing else, so no worker can be
//! faster: the worker's throughput over the relay's is the share of the
//! broker's ceiling it reaches.
//!
//! A separate process, as the worker is: in the tool's own process it would
//! share a runtime and CPU accounting with the publisher and the collector.

use crate::args::RelayArgs;
use crate::collector::COMPLETED;
use crate::rig::EVENTS;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use lifecycle_worker::broker::topology::Topology;
use lifecycle_worker::settings::Settings;
use std::io::Write as _;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Relays until the connection closes (the benchmark stops it with SIGTERM).
pub async fn relay(args: RelayArgs) {
    let url = args.url;
    // A consuming and a publishing connection, as the worker has.
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("relay connects");
    let publishing = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("relay publisher connects");
    let settings =
        Settings::load(&[], [("LIFECYCLE__AMQP__URL".to_owned(), url.clone())]).expect("settings");
    Topology::from_settings(&settings)
        .declare(&publishing)
        .await
        .expect("topology");
    let pubchan = publishing.create_channel().await.expect("channel");
    pubchan
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let chan = conn.create_channel().await.expect("channel");
    chan.basic_qos(args.prefetch, BasicQosOptions { global: false })
        .await
        .expect("qos");
    let mut consumer = chan
        .basic_consume(
            settings.topology.decommission_queue.as_str().into(),
            "relay".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    // The benchmark waits for this line in the log.
    println!("relay ready");
    let _ = std::io::stdout().flush();
    let permits = Arc::new(Semaphore::new(args.concurrency as usize));
    while let Some(Ok(d)) = consumer.next().await {
        let permit = Arc::clone(&permits).acquire_owned().await.expect("permit");
        let pubchan = pubchan.clone();
        tokio::spawn(async move {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into());
            let opts = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            // Both publishes handed to lapin before either write is awaited (as
            // the worker does): `try_join` polls them in order, so the broker
            // sees them in order, in one pass of the I/O loop.
            let publish = |key: &'static str| {
                pubchan.basic_publish(EVENTS.into(), key.into(), opts, &d.data, props.clone())
            };
            let (first, last) =
                futures::future::try_join(publish("instance.deregistered"), publish(COMPLETED))
                    .await
                    .expect("publish");
            for c in [first, last] {
                c.await.expect("confirm");
            }
            d.ack(BasicAckOptions::default()).await.expect("ack");
            drop(permit);
        });
    }
}
