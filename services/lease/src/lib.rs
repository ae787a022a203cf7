//! Leader election over a Kubernetes `coordination.k8s.io/v1` Lease, for a duty only one
//! replica may do at a time (the archiver: two writing the same partitions would only
//! duplicate rows, which readers drop by `stream_seq`, but one writer makes fewer, larger files
//! and lets a standby replica take over within a lease duration instead of waiting for a new
//! pod to be scheduled).
//!
//! The protocol is the one client-go's leader election uses. A candidate reads the Lease:
//! absent, it creates it naming itself; held by itself, or by nobody, or by a holder whose
//! record has not changed for a whole lease duration *as this candidate observed it* (its own
//! monotonic clock, never the holder's timestamps, so clock skew between nodes does not
//! matter), it replaces it naming itself. Every write carries the `resourceVersion` it read,
//! so of two candidates writing at once the API server accepts one and answers 409 to the
//! other. The holder renews every `renew_every`; if no renewal attempt that started within
//! `renew_deadline` (two thirds of the duration) has succeeded, it has lost the lease and must
//! stop the duty: a standby dates what it saw from when its read returned, after any write it
//! saw, so it waits a whole duration from a moment no earlier than the holder's last attempt.
//! The duty's own drain after a loss must fit in the remaining third (the binary checks
//! `duration_s / 3 > drain_timeout_s`). Every call is bounded in time. On a clean stop it releases the Lease (no holder), so a
//! standby takes over at its next attempt instead of a duration later.
//!
//! Written here rather than taken from a crate: the few Lease-election crates for kube are
//! thinly maintained, and this is one read-modify-write loop of about a hundred lines over
//! kube's typed `Api<Lease>`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Where the Lease is and who this candidate is.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's name (the pod's name); unique among the candidates.
    pub identity: String,
    /// How long a holder's record may stay unchanged before another candidate takes over.
    pub duration: Duration,
    /// How often the holder renews (and a candidate retries).
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// How long the holder may fail to renew before it must consider the lease lost: two
    /// thirds of the duration, so it stops the duty before any other candidate may start it.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// Checks the timings: renewals well inside the deadline.
    ///
    /// # Errors
    /// Names the field that is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.namespace.is_empty() || self.identity.is_empty() {
            return Err("lease name, namespace and identity must not be empty".into());
        }
        if self.duration < Duration::from_secs(3) {
            return Err(format!(
                "lease duration_s must be at least 3, got {}",
                self.duration.as_secs_f64()
            ));
        }
        if self.renew_every.is_zero() || self.renew_every * 2 > self.renew_deadline() {
            return Err(format!(
                "lease renew_every_s ({}) must be positive and at most a third of duration_s ({})",
                self.renew_every.as_secs_f64(),
                self.duration.as_secs_f64()
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {name}: the API server did not answer in time")]
    Timeout { name: String },
    #[error("lease {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What a candidate last saw of the Lease, and when (by its own clock).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: Option<String>,
    resource_version: Option<String>,
    at: Instant,
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
    /// When the attempt that last took or renewed the Lease started: the holder's deadline
    /// runs from there (its write may have committed at any moment after).
    held_since: Option<Instant>,
    leader: metrics::Gauge,
    errors: metrics::Counter,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How the holding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// `stop` was cancelled while holding.
    Stopped,
    /// Renewal failed for the renew deadline, or another candidate took the Lease: stop the
    /// duty now.
    Lost,
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        let lease = config.name.clone();
        let leader = metrics::gauge!("spreadagg_lease_leader", "lease" => lease.clone());
        leader.set(0.0);
        Self {
            api: Api::namespaced(client, &config.namespace),
            errors: metrics::counter!("spreadagg_lease_errors_total", "lease" => lease),
            leader,
            config,
            observed: None,
            held_since: None,
        }
    }

    /// Tries once to take or renew the Lease. `Ok(true)`: this candidate holds it now.
    ///
    /// # Errors
    /// When the API server cannot be asked (a conflict is not an error: someone else won).
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let started = Instant::now();
        let current = self
            .api
            .get_opt(&self.config.name)
            .await
            .map_err(|e| self.error(e))?;
        // A standby dates what it saw from when the answer arrived, never earlier, so its
        // expiry clock cannot start before the holder's write.
        let now = Instant::now();
        let Some(lease) = current else {
            let created = self
                .api
                .create(&PostParams::default(), &self.record(None, None))
                .await;
            return self.settle(created, started);
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty());
        let seen = Observed {
            holder: holder.clone(),
            resource_version: lease.metadata.resource_version.clone(),
            at: now,
        };
        // The record's age is measured from when this candidate first saw it as it is now.
        let since = match &self.observed {
            Some(o) if o.holder == seen.holder && o.resource_version == seen.resource_version => {
                o.at
            }
            _ => {
                self.observed = Some(seen);
                now
            }
        };
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        let expired = now.duration_since(since) >= self.config.duration;
        if !(mine || holder.is_none() || expired) {
            return Ok(false);
        }
        let replaced = self
            .api
            .replace(
                &self.config.name,
                &PostParams::default(),
                &self.record(Some(&lease), holder.as_deref()),
            )
            .await;
        self.settle(replaced, started)
    }

    /// One attempt, bounded by `renew_every` (an API server that does not answer is an error,
    /// not a wait).
    ///
    /// # Errors
    /// As [`Elector::try_acquire_or_renew`], or [`LeaseError::Timeout`].
    pub async fn attempt(&mut self) -> Result<bool, LeaseError> {
        match tokio::time::timeout(self.config.renew_every, self.try_acquire_or_renew()).await {
            Ok(r) => r,
            Err(_) => {
                self.errors.increment(1);
                Err(LeaseError::Timeout {
                    name: self.config.name.clone(),
                })
            }
        }
    }

    /// Waits until this candidate holds the Lease (`true`), or `stop` is cancelled (`false`).
    /// API failures are logged and retried.
    pub async fn acquire(&mut self, stop: &CancellationToken) -> bool {
        loop {
            match self.attempt().await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "lease not reachable; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(self.config.renew_every) => {}
            }
        }
    }

    /// Renews the Lease until `stop` is cancelled or the lease is lost. Lost means: no renewal
    /// whose attempt started within the renew deadline, so this holder knows before any other
    /// candidate may take over (a whole duration after it last saw the record change).
    pub async fn hold(&mut self, stop: &CancellationToken) -> Held {
        let held = self.hold_inner(stop).await;
        if held == Held::Lost {
            self.leader.set(0.0);
        }
        held
    }

    async fn hold_inner(&mut self, stop: &CancellationToken) -> Held {
        let mut renewed = self.held_since.unwrap_or_else(Instant::now);
        loop {
            let deadline = renewed + self.config.renew_deadline();
            let next = (Instant::now() + self.config.renew_every).min(deadline);
            tokio::select! {
                () = stop.cancelled() => return Held::Stopped,
                () = tokio::time::sleep_until(next) => {}
            }
            let started = Instant::now();
            if started >= deadline {
                tracing::warn!(lease = %self.config.name, deadline_s = self.config.renew_deadline().as_secs_f64(), "lease not renewed within the deadline: lost");
                return Held::Lost;
            }
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed = started,
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %self.config.name, "another replica holds the lease now");
                    return Held::Lost;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
                Err(_) => {
                    self.errors.increment(1);
                    tracing::warn!(lease = %self.config.name, "lease renewal unanswered at the deadline: lost");
                    return Held::Lost;
                }
            }
        }
    }

    /// Gives the Lease up (no holder) if this candidate still holds it, so a standby takes
    /// over at once. Best effort, within one second: a failure only means the standby waits a
    /// lease duration.
    pub async fn release(&mut self) {
        self.leader.set(0.0);
        self.held_since = None;
        if tokio::time::timeout(Duration::from_secs(1), self.release_inner())
            .await
            .is_err()
        {
            tracing::warn!(lease = %self.config.name, "lease release unanswered");
        }
        self.observed = None;
    }

    async fn release_inner(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.config.name, "lease released"),
            Err(e) => tracing::warn!(error = %e, "lease release failed"),
        }
    }

    /// The Lease naming this candidate, built on `current` (keeping its resourceVersion, so a
    /// concurrent writer makes the API server refuse one of the two).
    fn record(&self, current: Option<&Lease>, previous_holder: Option<&str>) -> Lease {
        let now = MicroTime(Timestamp::now());
        let spec = current.and_then(|l| l.spec.clone()).unwrap_or_default();
        let changed = previous_holder != Some(self.config.identity.as_str());
        let transitions = spec.lease_transitions.unwrap_or(0);
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                resource_version: current.and_then(|l| l.metadata.resource_version.clone()),
                ..current.map(|l| l.metadata.clone()).unwrap_or_default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX),
                ),
                acquire_time: if changed {
                    Some(now.clone())
                } else {
                    spec.acquire_time.clone()
                },
                renew_time: Some(now),
                lease_transitions: Some(if changed && current.is_some() {
                    transitions.saturating_add(1)
                } else {
                    transitions
                }),
                ..spec
            }),
        }
    }

    /// A write's outcome: ours (`true`), someone else's (409: `false`), or an error. `at` is
    /// when the attempt started.
    fn settle(
        &mut self,
        written: Result<Lease, kube::Error>,
        at: Instant,
    ) -> Result<bool, LeaseError> {
        match written {
            Ok(lease) => {
                self.observed = Some(Observed {
                    holder: Some(self.config.identity.clone()),
                    resource_version: lease.metadata.resource_version,
                    at,
                });
                self.held_since = Some(at);
                self.leader.set(1.0);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, source: kube::Error) -> LeaseError {
        self.errors.increment(1);
        LeaseError::Api {
            name: self.config.name.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
