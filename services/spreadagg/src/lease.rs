//! A duty done by one replica at a time: with `[lease] name` set, the role waits until it
//! holds that Kubernetes Lease (a standby meanwhile: alive, ready, doing nothing), does its
//! duty while renewing, and if the lease is lost drains and exits non-zero (the container
//! restarts as a standby). A clean stop releases the Lease so the standby takes over at once.

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use spreadagg_lease::{Elector, Held, LeaseConfig};
use spreadagg_runtime::Health;
use spreadagg_runtime::config::ConfigError;
use tokio_util::sync::CancellationToken;

use crate::roles::RoleError;

/// `[lease]`: leader election for the archive role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseSettings {
    /// The Lease's name; empty: no election (the role runs at once, as a single replica must).
    pub name: String,
    /// Its namespace; default `POD_NAMESPACE`, else the service account's namespace.
    pub namespace: Option<String>,
    /// This replica's identity; default `HOSTNAME` (the pod's name).
    pub identity: Option<String>,
    /// Seconds a holder's record may stay unchanged before a standby takes over.
    pub duration_s: f64,
    /// Seconds between renewals (and a standby's attempts); at most a third of `duration_s`.
    pub renew_every_s: f64,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            name: String::new(),
            namespace: None,
            identity: None,
            duration_s: 15.0,
            renew_every_s: 5.0,
        }
    }
}

const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl LeaseSettings {
    /// The election's configuration, or `None` when there is no election.
    ///
    /// # Errors
    /// When a value is missing or out of range (named).
    pub fn resolve(&self) -> Result<Option<LeaseConfig>, ConfigError> {
        if self.name.is_empty() {
            return Ok(None);
        }
        let invalid = |m: String| ConfigError::Invalid(format!("[lease] {m}"));
        let namespace = self
            .namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .or_else(|| std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok())
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("namespace: not set, and neither POD_NAMESPACE nor a service account namespace is there".into()))?;
        let identity = self
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| invalid("identity: not set, and HOSTNAME is empty".into()))?;
        let seconds = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .map_err(|_| invalid(format!("{name}: {v} is not a duration")))
        };
        let config = LeaseConfig {
            namespace,
            name: self.name.clone(),
            identity,
            duration: seconds("duration_s", self.duration_s)?,
            renew_every: seconds("renew_every_s", self.renew_every_s)?,
        };
        config.validate().map_err(invalid)?;
        Ok(Some(config))
    }
}

/// Consecutive failed attempts after which a standby reports not ready: it cannot take over,
/// which someone must see.
const NOT_READY_AFTER_ERRORS: u32 = 3;

/// Runs `duty` only while holding the Lease (directly when there is none). Cancelling `stop`
/// stops it either way; the Lease is renewed until the duty has drained, then released. A
/// lost lease cancels `stop` (the process drains) and is an error.
pub async fn run_as_leader<F>(
    config: Option<LeaseConfig>,
    health: Health,
    stop: CancellationToken,
    duty: F,
) -> Result<(), RoleError>
where
    F: Future<Output = Result<(), RoleError>>,
{
    let Some(config) = config else {
        return duty.await;
    };
    let client = kube::Client::try_default()
        .await
        .map_err(|e| RoleError::new("lease", format!("no Kubernetes API: {e}")))?;
    let component = health.register("lease");
    let detail = |state: &str, errors: u32| serde_json::json!({"lease": config.name, "identity": config.identity, "state": state, "api_errors_in_a_row": errors});
    // A standby is ready (healthy; a rollout must not wait for it to lead) while it can reach
    // the API server.
    component.set(true, detail("standby", 0));
    let mut elector = Elector::new(client, config.clone());
    let mut errors = 0u32;
    loop {
        match elector.attempt().await {
            Ok(true) => break,
            Ok(false) => errors = 0,
            Err(e) => {
                errors += 1;
                tracing::warn!(error = %e, errors, "lease not reachable; retrying");
            }
        }
        component.set(errors < NOT_READY_AFTER_ERRORS, detail("standby", errors));
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(config.renew_every) => {}
        }
    }
    tracing::info!(lease = %config.name, identity = %config.identity, "lease acquired; starting the duty");
    component.set(true, detail("leader", 0));
    // Renewing goes on while the duty drains after `stop`, and ends only once it is done.
    let renewing = CancellationToken::new();
    let result = {
        tokio::pin!(duty);
        let hold = elector.hold(&renewing);
        tokio::pin!(hold);
        tokio::select! {
            r = &mut duty => {
                renewing.cancel();
                let _ = hold.await;
                r
            }
            held = &mut hold => match held {
                Held::Stopped => duty.await,
                Held::Lost => {
                    component.set(false, detail("lost", 0));
                    stop.cancel();
                    let _ = duty.await;
                    Err(RoleError::new("lease", format!("lease {} lost; drained and stopping", config.name)))
                }
            },
        }
    };
    elector.release().await;
    result
}
