//! The health registry: each role registers its components (one per exchange connection, one
//! per consumer, ...) and keeps their state current; the admin server reads it for `/readyz`
//! and `/health`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::{Value, json};

#[derive(Debug)]
struct ComponentState {
    ready: bool,
    detail: Value,
}

#[derive(Debug)]
struct Inner {
    started: Instant,
    draining: AtomicBool,
    components: Mutex<BTreeMap<String, ComponentState>>,
}

/// Shared, cheap to clone; one per process.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                started: Instant::now(),
                draining: AtomicBool::new(false),
                components: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    fn components(&self) -> MutexGuard<'_, BTreeMap<String, ComponentState>> {
        // A panic while holding this lock cannot leave the map inconsistent (each write is one
        // insert), so a poisoned lock is still usable.
        self.inner
            .components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a component, not ready until it says so. Its entry is removed when the
    /// returned handle is dropped, so a finished task cannot hold readiness hostage.
    pub fn register(&self, name: impl Into<String>) -> Component {
        let name = name.into();
        self.components().insert(
            name.clone(),
            ComponentState {
                ready: false,
                detail: json!({"state": "starting"}),
            },
        );
        Component {
            health: self.clone(),
            name,
        }
    }

    /// Marks the process as draining: `/readyz` fails from now on.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Ready when not draining and every registered component is ready (and there is one).
    pub fn is_ready(&self) -> bool {
        if self.is_draining() {
            return false;
        }
        let components = self.components();
        !components.is_empty() && components.values().all(|c| c.ready)
    }

    /// The `/health` document.
    pub fn report(&self) -> Value {
        let components: serde_json::Map<String, Value> = self
            .components()
            .iter()
            .map(|(name, c)| (name.clone(), json!({"ready": c.ready, "detail": c.detail})))
            .collect();
        json!({
            "status": if self.is_ready() { "ready" } else if self.is_draining() { "draining" } else { "not_ready" },
            "uptime_s": self.inner.started.elapsed().as_secs_f64(),
            "memory": { "rss_bytes": rss_bytes() },
            "components": components,
        })
    }
}

/// One registered component's handle.
#[derive(Debug)]
pub struct Component {
    health: Health,
    name: String,
}

impl Component {
    /// Sets readiness and a JSON detail shown under `/health` (state, counters, depths).
    pub fn set(&self, ready: bool, detail: Value) {
        if let Some(c) = self.health.components().get_mut(&self.name) {
            c.ready = ready;
            c.detail = detail;
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.health.components().remove(&self.name);
    }
}

/// Resident set size of this process, from /proc (Linux); 0 elsewhere.
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // Every Linux target we ship to uses 4 KiB pages.
    pages * 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let h = Health::new();
        assert!(!h.is_ready(), "nothing registered is not ready");
        let a = h.register("a");
        let b = h.register("b");
        a.set(true, json!({}));
        assert!(!h.is_ready());
        b.set(true, json!({}));
        assert!(h.is_ready());
        drop(b);
        assert!(h.is_ready());
        h.set_draining();
        assert!(!h.is_ready());
        assert_eq!(h.report()["status"], "draining");
        assert!(rss_bytes() > 0);
    }
}
