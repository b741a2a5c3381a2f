//! A command's claim on one of the worker's concurrency slots.
//!
//! `worker.concurrency` bounds the commands being carried out at once: parsed,
//! resolved, calling the API. A command gives its slot back while it only
//! waits (for a backoff to pass, for another command on the same target to
//! finish, for the broker to confirm its events), so a waiting command never
//! keeps a ready one from running. How many commands are held in all, waiting
//! or not, is bounded by the prefetch: every one is an unacknowledged delivery.
//!
//! Without this, a transient error rate turns straight into lost throughput
//! (each backoff sleep idles a slot), and a burst of commands for one host
//! fills every slot with commands queued behind its lock.

use std::future::Future;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One command's slot: held while it works, given back while it waits.
#[derive(Debug)]
pub struct Slot {
    semaphore: Option<Arc<Semaphore>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Slot {
    /// A slot already taken from the worker's semaphore.
    pub fn held(permit: OwnedSemaphorePermit) -> Self {
        Self {
            semaphore: Some(Arc::clone(permit.semaphore())),
            permit: Some(permit),
        }
    }

    /// No limit at all (unit tests, one-off tools): waiting gives nothing back.
    pub fn unbounded() -> Self {
        Self {
            semaphore: None,
            permit: None,
        }
    }

    /// Awaits `wait` without holding the slot, then takes a slot again
    /// (queued fairly behind commands that asked first).
    ///
    /// A wait that is over at once (an uncontended lock, cached credentials)
    /// keeps the slot: giving it back would only send the command to the end
    /// of the queue for nothing.
    pub async fn wait_out<F: Future>(&mut self, wait: F) -> F::Output {
        let mut wait = std::pin::pin!(wait);
        if let Some(out) = futures::FutureExt::now_or_never(wait.as_mut()) {
            return out;
        }
        let Some(semaphore) = &self.semaphore else {
            return wait.await;
        };
        self.permit = None;
        let out = wait.await;
        // The worker never closes its semaphore; were it closed, the command
        // would go on without a slot rather than stall.
        self.permit = Arc::clone(semaphore).acquire_owned().await.ok();
        out
    }

    /// Whether the slot is held now.
    pub fn is_held(&self) -> bool {
        self.permit.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_waiting_command_lends_its_slot() {
        let semaphore = Arc::new(Semaphore::new(1));
        let permit = Arc::clone(&semaphore)
            .acquire_owned()
            .await
            .expect("a permit");
        let mut slot = Slot::held(permit);
        assert_eq!(semaphore.available_permits(), 0);
        let other = Arc::clone(&semaphore);
        let (lent, out) = tokio::join!(
            async move {
                // Another command runs while the first one waits.
                let p = other.acquire_owned().await.expect("the lent slot");
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(p);
                true
            },
            slot.wait_out(async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                7
            })
        );
        assert!(lent);
        assert_eq!(out, 7);
        assert!(slot.is_held(), "the slot is taken back after the wait");
        assert_eq!(semaphore.available_permits(), 0);
        drop(slot);
        assert_eq!(semaphore.available_permits(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_slot_comes_back_only_when_free() {
        let semaphore = Arc::new(Semaphore::new(1));
        let mut slot = Slot::held(Arc::clone(&semaphore).acquire_owned().await.expect("p"));
        let other = Arc::clone(&semaphore);
        let holder = tokio::spawn(async move {
            let p = other.acquire_owned().await.expect("p");
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(p);
        });
        let start = tokio::time::Instant::now();
        slot.wait_out(tokio::time::sleep(Duration::from_millis(1)))
            .await;
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "waited for the other command to give the slot back"
        );
        holder.await.expect("joins");
    }

    /// A wait that is over at once keeps the slot (no trip to the back of the queue).
    #[tokio::test(start_paused = true)]
    async fn a_wait_over_at_once_keeps_the_slot() {
        let semaphore = Arc::new(Semaphore::new(1));
        let mut slot = Slot::held(Arc::clone(&semaphore).acquire_owned().await.expect("p"));
        // Another command is queued for the slot: had ours been given back,
        // it would have to queue behind that one.
        let other = Arc::clone(&semaphore);
        let queued = tokio::spawn(async move { other.acquire_owned().await.map(drop) });
        tokio::task::yield_now().await;
        assert_eq!(slot.wait_out(async { 5 }).await, 5);
        assert!(slot.is_held());
        assert!(
            !queued.is_finished(),
            "the queued command did not get our slot"
        );
        drop(slot);
        assert!(queued.await.is_ok());
    }

    #[tokio::test]
    async fn unbounded_never_waits_for_a_slot() {
        let mut slot = Slot::unbounded();
        assert_eq!(slot.wait_out(async { 3 }).await, 3);
        assert!(!slot.is_held());
    }
}
