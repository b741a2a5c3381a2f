//! Every row of CONTRACT sections 4 to 6 that the decision covers, as a table:
//! each class of what happened, at the first, a middle and the last retry
//! stage (and past it), with and without shutdown.

use super::*;

const STAGES: usize = 3;
const MAX_ELAPSED: u64 = 30_000;
const BACKOFF: u64 = 400;
const FULL: u32 = 500;

fn transient(retry_after_ms: Option<u64>) -> ErrorClass {
    ErrorClass::Transient {
        throttled: false,
        retry_after: retry_after_ms.map(Duration::from_millis),
    }
}

fn throttled(retry_after_ms: Option<u64>) -> ErrorClass {
    ErrorClass::Transient {
        throttled: true,
        retry_after: retry_after_ms.map(Duration::from_millis),
    }
}

const PERMANENT: ErrorClass = ErrorClass::Permanent;
const CREDENTIAL: ErrorClass = ErrorClass::Credential;
const ALREADY: ErrorClass = ErrorClass::AlreadyDone;

fn retry(wait_ms: u64, cost: u32) -> Next {
    Next::RetryAfter {
        wait: Duration::from_millis(wait_ms),
        cost,
    }
}

fn redeliver(stage: usize) -> Next {
    Next::Stop(Stop::Redeliver { stage })
}

fn park(stage: usize) -> Next {
    Next::Stop(Stop::Park { stage })
}

const REQUEUE: Next = Next::Stop(Stop::Requeue);

/// One row: what happened, time spent, budget left, (redeliveries, parks),
/// shutting down, and the expected decision.
struct Row {
    name: &'static str,
    class: ErrorClass,
    elapsed_ms: u64,
    budget: u32,
    counters: (u32, u32),
    shutdown: bool,
    expect: Next,
}

#[allow(clippy::too_many_lines)]
fn rows() -> Vec<Row> {
    let row = |name, class, elapsed_ms, budget, counters, shutdown, expect| Row {
        name,
        class,
        elapsed_ms,
        budget,
        counters,
        shutdown,
        expect,
    };
    let mut rows = vec![
        // Already-done ends the step, whatever else holds.
        row(
            "already done",
            ALREADY,
            0,
            FULL,
            (0, 0),
            false,
            Next::AlreadyDone,
        ),
        row(
            "already done at shutdown",
            ALREADY,
            0,
            FULL,
            (2, 0),
            true,
            Next::AlreadyDone,
        ),
        // Transient: retry within the budgets.
        row(
            "transient, first try",
            transient(None),
            0,
            FULL,
            (0, 0),
            false,
            retry(BACKOFF, RETRY_COST),
        ),
        row(
            "transient, time almost spent",
            transient(None),
            MAX_ELAPSED - BACKOFF,
            FULL,
            (0, 0),
            false,
            retry(BACKOFF, RETRY_COST),
        ),
        // Throttled: costlier; retry-after honoured (never shortened) ...
        row(
            "throttled, no retry-after",
            throttled(None),
            0,
            FULL,
            (0, 0),
            false,
            retry(BACKOFF, THROTTLE_RETRY_COST),
        ),
        row(
            "throttled, retry-after longer than backoff",
            throttled(Some(2_500)),
            0,
            FULL,
            (0, 0),
            false,
            retry(2_500, THROTTLE_RETRY_COST),
        ),
        row(
            "throttled, retry-after shorter than backoff",
            throttled(Some(100)),
            0,
            FULL,
            (0, 0),
            false,
            retry(BACKOFF, THROTTLE_RETRY_COST),
        ),
        row(
            "transient with retry-after",
            transient(Some(1_000)),
            0,
            FULL,
            (0, 0),
            false,
            retry(1_000, RETRY_COST),
        ),
        // ... and one longer than what is left goes to delayed redelivery.
        row(
            "retry-after past the time budget",
            throttled(Some(60_000)),
            0,
            FULL,
            (0, 0),
            false,
            redeliver(0),
        ),
        row(
            "retry-after past the budget, last stage",
            throttled(Some(60_000)),
            0,
            FULL,
            (2, 0),
            false,
            redeliver(2),
        ),
        // The shared retry budget: empty means no immediate retry.
        row(
            "retry budget empty",
            transient(None),
            0,
            RETRY_COST - 1,
            (0, 0),
            false,
            redeliver(0),
        ),
        row(
            "retry budget enough for transient only",
            throttled(None),
            0,
            RETRY_COST,
            (0, 0),
            false,
            redeliver(0),
        ),
        // Parks do not use up transient stages.
        row(
            "transient after parks",
            transient(None),
            MAX_ELAPSED,
            FULL,
            (0, 7),
            false,
            redeliver(0),
        ),
    ];
    // Immediate retries spent: each stage in turn, then failure.
    for (stage, counters, expect) in [
        ("first", (0, 0), redeliver(0)),
        ("middle", (1, 0), redeliver(1)),
        ("last", (2, 0), redeliver(2)),
        ("past the last", (3, 0), Next::Fail),
        ("far past the last", (u32::MAX, 0), Next::Fail),
    ] {
        rows.push(row(
            stage,
            transient(None),
            MAX_ELAPSED,
            FULL,
            counters,
            false,
            expect,
        ));
        // Shutdown never fails a command nor uses up a stage.
        rows.push(row(
            stage,
            transient(None),
            MAX_ELAPSED,
            FULL,
            counters,
            true,
            REQUEUE,
        ));
        rows.push(row(
            stage,
            transient(None),
            0,
            FULL,
            counters,
            true,
            REQUEUE,
        ));
        // Permanent fails the step at any stage, shutdown or not.
        rows.push(row(stage, PERMANENT, 0, FULL, counters, false, Next::Fail));
        rows.push(row(stage, PERMANENT, 0, FULL, counters, true, Next::Fail));
    }
    // Credentials park, staying on the last stage, never failing.
    for (stage, parks, expect) in [
        ("first", 0, park(0)),
        ("middle", 1, park(1)),
        ("last", 2, park(2)),
        ("past the last", 3, park(2)),
        ("far past the last", u32::MAX, park(2)),
    ] {
        rows.push(row(stage, CREDENTIAL, 0, FULL, (0, parks), false, expect));
        rows.push(row(stage, CREDENTIAL, 0, FULL, (5, parks), true, expect));
    }
    rows
}

#[test]
fn the_contract_table() {
    let stages = NonZeroUsize::new(STAGES).unwrap_or(NonZeroUsize::MIN);
    for r in rows() {
        let s = Situation {
            class: r.class,
            elapsed: Duration::from_millis(r.elapsed_ms),
            backoff: Duration::from_millis(BACKOFF),
            max_elapsed: Duration::from_millis(MAX_ELAPSED),
            budget: r.budget,
            counters: Counters {
                redeliveries: r.counters.0,
                parks: r.counters.1,
            },
            stages,
            shutting_down: r.shutdown,
        };
        assert_eq!(
            decide(&s),
            r.expect,
            "{} ({:?}, counters {:?}, shutdown {})",
            r.name,
            r.class,
            r.counters,
            r.shutdown
        );
    }
}

#[test]
fn one_stage_is_first_and_last() {
    let s = Situation {
        class: transient(None),
        elapsed: Duration::from_millis(MAX_ELAPSED),
        backoff: Duration::from_millis(BACKOFF),
        max_elapsed: Duration::from_millis(MAX_ELAPSED),
        budget: FULL,
        counters: Counters::default(),
        stages: NonZeroUsize::MIN,
        shutting_down: false,
    };
    assert_eq!(decide(&s), redeliver(0));
    let again = Situation {
        counters: Counters {
            redeliveries: 1,
            parks: 0,
        },
        ..s
    };
    assert_eq!(decide(&again), Next::Fail);
    let parked = Situation {
        class: CREDENTIAL,
        counters: Counters {
            redeliveries: 0,
            parks: 9,
        },
        ..s
    };
    assert_eq!(decide(&parked), park(0));
}

/// A wait that shutdown cut short (backoff, rate limit, lock, republish pause).
#[test]
fn an_interrupted_wait_requeues() {
    assert_eq!(interrupted(), Stop::Requeue);
}
