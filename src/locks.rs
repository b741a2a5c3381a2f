//! Per-target serialization: two commands for the same instance or activation
//! code never act on it at the same time in this process, and the second acts
//! only after the first's outcome is confirmed by the broker (across
//! processes, the API's ClientToken and not-found-is-done rules keep effects
//! single). Keys are what a command acts on once resolved (`instance:mi-...`,
//! `activation:...`), never how it named its target: a hostname and an
//! instance id of one host are one key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

/// A map of named async locks that forgets a name when nobody holds or waits for it.
#[derive(Default, Clone)]
pub struct KeyedLocks {
    map: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Holding this means holding the target's lock.
pub struct TargetGuard {
    key: String,
    map: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits for the lock of `key`.
    pub async fn lock(&self, key: String) -> TargetGuard {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(map.entry(key.clone()).or_default())
        };
        let guard = mutex.lock_owned().await;
        TargetGuard {
            key,
            map: Arc::clone(&self.map),
            guard: Some(guard),
        }
    }

    /// Names currently held or awaited (for tests).
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when no lock is held or awaited.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TargetGuard {
    /// The locked key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl std::fmt::Debug for TargetGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TargetGuard").field(&self.key).finish()
    }
}

impl Drop for TargetGuard {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it now: nobody waits, forget the name.
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn same_key_serializes_other_keys_do_not() {
        let locks = KeyedLocks::default();
        let a = locks.lock("instance:mi-1".into()).await;
        let other = tokio::time::timeout(
            Duration::from_millis(10),
            locks.lock("instance:mi-2".into()),
        )
        .await;
        assert!(other.is_ok(), "a different target is not blocked");
        drop(other);
        let same = tokio::time::timeout(
            Duration::from_millis(10),
            locks.lock("instance:mi-1".into()),
        )
        .await;
        assert!(same.is_err(), "the same target waits");
        drop(a);
        let again = locks.lock("instance:mi-1".into()).await;
        drop(again);
        assert!(locks.is_empty(), "names are forgotten when free");
    }
}
