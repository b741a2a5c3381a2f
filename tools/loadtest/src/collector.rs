//! The event collector: consumes the run's events queue (no-ack, on the
//! connection the commands are not published on, with the testkit's consumer) and records, per command,
//! when its first terminal `command.completed` arrived, which outcome it had,
//! and how many duplicates followed.

use lapin::Connection;
use lifecycle_testkit::for_each_delivery;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

pub const COMPLETED: &str = "command.completed";

/// What the publisher sent and the collector saw, indexed by command number.
pub struct Tally {
    pub n: usize,
    pub sent: Vec<Option<Instant>>,
    pub done: Vec<Option<Instant>>,
    /// Wall clock (unix µs) at publish, at the terminal event's `occurred_at`
    /// (when the system built it), and at its arrival: where the latency goes.
    pub sent_us: Vec<i64>,
    pub built_us: Vec<Option<i64>>,
    pub done_us: Vec<i64>,
    pub completions: Vec<u32>,
    pub completed: usize,
    pub duplicates: usize,
    pub outcomes: BTreeMap<String, usize>,
    pub events: usize,
    pub foreign: usize,
}

/// The tally, and a wake-up for whoever waits for the last terminal event.
pub type Shared = Arc<(Mutex<Tally>, Notify)>;

pub fn tally(n: usize) -> Shared {
    Arc::new((
        Mutex::new(Tally {
            n,
            sent: vec![None; n],
            done: vec![None; n],
            sent_us: vec![0; n],
            built_us: vec![None; n],
            done_us: vec![0; n],
            completions: vec![0; n],
            completed: 0,
            duplicates: 0,
            outcomes: BTreeMap::new(),
            events: 0,
            foreign: 0,
        }),
        Notify::new(),
    ))
}

/// Milliseconds from each command's publish to its first terminal event, sorted.
pub fn latencies_ms(t: &Tally) -> Vec<f64> {
    let mut lat: Vec<f64> = t
        .sent
        .iter()
        .zip(&t.done)
        .filter_map(|(s, d)| Some(d.as_ref()?.duration_since(*s.as_ref()?).as_secs_f64() * 1e3))
        .collect();
    lat.sort_by(f64::total_cmp);
    lat
}

pub fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// An RFC 3339 time as unix microseconds.
fn rfc3339_us(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

#[derive(Deserialize)]
struct Terminal<'a> {
    #[serde(borrow)]
    command_id: Option<&'a str>,
    #[serde(borrow, default)]
    outcome: Option<&'a str>,
    #[serde(borrow, default)]
    occurred_at: Option<&'a str>,
}

/// Collects the terminal events of the run's commands into `shared`.
pub async fn spawn_collector(conn: &Connection, queue: &str, shared: Shared) {
    for_each_delivery(conn, queue, "bench-collector", move |d| {
        let now = Instant::now();
        let (lock, notify) = &*shared;
        let mut t = lock.lock().expect("tally");
        t.events += 1;
        if d.routing_key.as_str() != COMPLETED {
            return;
        }
        let parsed: Option<Terminal<'_>> = serde_json::from_slice(&d.data).ok();
        let Some(i) = parsed
            .as_ref()
            .and_then(|p| p.command_id)
            .and_then(crate::publisher::index_of)
            .filter(|i| *i < t.n)
        else {
            t.foreign += 1;
            return;
        };
        // The relay's events carry the command itself: no outcome, no time.
        let outcome = parsed
            .as_ref()
            .and_then(|p| p.outcome)
            .unwrap_or("relayed")
            .to_owned();
        *t.outcomes.entry(outcome).or_default() += 1;
        t.completions[i] += 1;
        if t.done[i].is_none() {
            t.done[i] = Some(now);
            t.done_us[i] = unix_micros();
            t.built_us[i] = parsed
                .as_ref()
                .and_then(|p| p.occurred_at)
                .and_then(rfc3339_us);
            t.completed += 1;
            if t.completed == t.n {
                notify.notify_one();
            }
        } else {
            t.duplicates += 1;
        }
    })
    .await;
}

/// Until every command has a terminal event (true) or `timeout` passed.
pub async fn wait_all(shared: &Shared, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        {
            let t = shared.0.lock().expect("tally");
            if t.completed == t.n {
                return true;
            }
        }
        tokio::select! {
            () = shared.1.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = tokio::time::sleep_until(deadline) => return false,
        }
    }
}
