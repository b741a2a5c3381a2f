//! The publisher's one promise (CONTRACT section 6): only the broker's
//! `basic.ack` is a confirm. A publish whose session is lost before its
//! confirm arrives is an error, never a confirm, and never a wait for good;
//! and refusals that last end the session instead of holding commands.
//!
//! The broker here is real; between it and the publisher sits a valve, a TCP
//! relay whose broker-to-client direction the test can shut: the broker
//! stores the message and sends its ack, which the publisher never sees, just
//! as when a node dies between storing a message and the ack's delivery.

use crate::support::{Env, completed, decommission, inst, new_id, seed_instances, until};
use crate::worker_e2e::{refuse_every_event, unblock};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use lifecycle_worker::broker::publisher::{Outgoing, PublishError, Publisher, Routing};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A relay to the broker on 5672 whose broker-to-client direction stops
/// forwarding once `shut` is set (the bytes are read and dropped).
async fn valve() -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let shut = Arc::new(AtomicBool::new(false));
    let shut_flag = shut.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let broker = TcpStream::connect("127.0.0.1:5672").await.expect("broker");
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut broker_rx, mut broker_tx) = broker.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut client_rx, &mut broker_tx).await;
            });
            let shut = shut_flag.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = broker_rx.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !shut.load(Ordering::SeqCst) && client_tx.write_all(&buf[..n]).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (port, shut)
}

#[tokio::test]
async fn an_unconfirmed_publish_of_a_lost_session_is_not_a_confirm() {
    let env = Env::new(seed_instances(0)).await;
    let queue = "test.publisher-target";
    env.chan
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    let (port, shut) = valve().await;
    let url = env.vhost.url().replace(":5672/", &format!(":{port}/"));
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connects through the valve");
    let publisher = Publisher::open(&conn).await.expect("publisher");

    shut.store(true, Ordering::SeqCst);
    let batch = vec![Outgoing {
        exchange: String::new(),
        routing_key: queue.to_owned(),
        body: b"{}".to_vec(),
        properties: BasicProperties::default().with_delivery_mode(2),
        routing: Routing::Required,
    }];
    let waiting = {
        let publisher = publisher.clone();
        tokio::spawn(async move { publisher.publish_all(&batch).await })
    };
    // The broker has the message (and has sent its ack into the valve).
    until(
        "the broker stores the message",
        Duration::from_secs(10),
        || async { (env.queue_len(queue).await == 1).then_some(()) },
    )
    .await;
    assert!(
        !waiting.is_finished(),
        "no confirm reached the publisher, so it is still waiting"
    );

    publisher.session_lost();
    let outcome = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("a lost session ends the wait")
        .expect("join");
    assert!(
        matches!(outcome, Err(PublishError::SessionLost)),
        "an unconfirmed publish is not a confirm: {outcome:?}"
    );
}

/// An outcome refused for longer than the worker waits on one session (a
/// channel the broker nacks for good, as RabbitMQ 3.x can after a quorum
/// leader's node died) makes the worker replace the session; the command is
/// redelivered to the new one and completes once the broker takes outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_refused_for_long_replaces_the_session() {
    let env = Env::new(seed_instances(1)).await;
    let w = env.start_worker(&[]).await;
    let blocker = refuse_every_event(&env).await;
    let id = new_id("stale");
    env.send_json("decommission", &decommission(&id, &inst(0)))
        .await;
    until("a new session", Duration::from_secs(60), || async {
        let (_, body) = w.readyz().await?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["broker"]["reconnects"].as_u64() >= Some(1)).then_some(())
    })
    .await;
    unblock(&env, &blocker).await;
    let evs = env
        .wait_for("completion", Duration::from_secs(30), |e| {
            completed(e, &id, "succeeded")
        })
        .await;
    // Every refused attempt still reached the test's own events queue (the
    // broker nacks when any bound queue refuses): duplicates, never another
    // outcome.
    for outcome in ["failed", "partially_failed"] {
        assert!(!completed(&evs, &id, outcome), "{evs:#?}");
    }
    w.wait_readyz(200, Duration::from_secs(30)).await;
}
