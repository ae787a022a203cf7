//! Starting roles. Each role runs on the process's shutdown token; in `all` they run side by
//! side and the first to fail stops the others (one supervisor, as in Loki and Mimir).

use std::time::Duration;

use spreadagg_bus::Bus;
use spreadagg_runtime::{Health, Shutdown};
use spreadagg_simulate::Simulator;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::announce;
use crate::cli::Role;
use crate::lease;
use crate::settings::Settings;

/// The role names, as `spreadagg roles` lists them.
pub const ROLES: [&str; 6] = ["ingest", "engine", "archive", "gateway", "simulate", "all"];

/// A role's failure, with the role named.
#[derive(Debug, thiserror::Error)]
#[error("{role}: {message}")]
pub struct RoleError {
    role: &'static str,
    message: String,
}

impl RoleError {
    pub fn new(role: &'static str, message: impl Into<String>) -> Self {
        RoleError {
            role,
            message: message.into(),
        }
    }

    pub fn drain_timeout() -> Self {
        RoleError {
            role: "shutdown",
            message: "roles still draining at the drain timeout".into(),
        }
    }
}

fn fail(role: &'static str) -> impl Fn(&dyn std::fmt::Display) -> RoleError {
    move |e| RoleError {
        role,
        message: e.to_string(),
    }
}

/// Connects the bus: in-process without a URL, JetStream with one (retried until it answers
/// or shutdown starts, so a role may start before NATS does).
async fn bus(
    settings: &Settings,
    health: &Health,
    stop: &CancellationToken,
) -> Result<Option<Bus>, RoleError> {
    let Some(url) = &settings.nats_url else {
        return Ok(Some(Bus::in_process(&settings.streams)));
    };
    let component = health.register("bus");
    let mut delay = Duration::from_millis(200);
    loop {
        match Bus::connect(url, &settings.streams).await {
            Ok(bus) => return Ok(Some(bus)),
            Err(e) => {
                tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64, "bus not reachable");
                component.set(
                    false,
                    serde_json::json!({"kind": "jetstream", "error": e.to_string()}),
                );
                tokio::select! {
                    () = stop.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the chosen role(s) until shutdown.
pub async fn run(
    role: Role,
    settings: Settings,
    health: Health,
    shutdown: Shutdown,
) -> Result<(), RoleError> {
    let stop = shutdown.token();
    if matches!(role, Role::Simulate(_)) {
        let sim = Simulator::start(settings.simulate.clone(), stop.clone())
            .await
            .map_err(|e| fail("simulate")(&e))?;
        announce_simulator(&sim);
        let ready = health.register("simulate");
        ready.set(
            true,
            serde_json::json!({"endpoints": sim.endpoints().len()}),
        );
        sim.join().await;
        return Ok(());
    }
    let Some(bus) = bus(&settings, &health, &stop).await? else {
        return Ok(());
    };
    let mut roles: JoinSet<Result<(), RoleError>> = JoinSet::new();
    let (h, st) = (&health, &stop);
    spawn_bus_watch(&mut roles, &bus, h, st);
    match role {
        Role::Ingest(_) => spawn_ingest(&mut roles, settings.ingest.clone(), &bus, h, st),
        Role::Engine(_) => spawn_role(
            &mut roles,
            "engine",
            spreadagg_engine::run(settings.engine.clone(), bus.clone(), h.clone(), st.clone()),
        ),
        Role::Archive(_) => {
            let lease = settings.lease.resolve().map_err(|e| fail("lease")(&e))?;
            let archive = spreadagg_archive::run(
                settings.archive.clone(),
                bus.clone(),
                h.clone(),
                st.clone(),
            );
            spawn_role(
                &mut roles,
                "archive",
                lease::run_as_leader(lease, h.clone(), st.clone(), async move {
                    archive.await.map_err(|e| fail("archive")(&e))
                }),
            );
        }
        Role::Gateway(_) => spawn_gateway(&mut roles, &settings, &bus, h, st).await?,
        Role::All(_) => {
            let sim = Simulator::start(settings.simulate.clone(), stop.clone())
                .await
                .map_err(|e| fail("simulate")(&e))?;
            announce_simulator(&sim);
            for endpoint in sim.endpoints() {
                let mut ingest = settings.ingest.clone();
                ingest.exchange = Some(endpoint.exchange);
                ingest.ws_url = Some(endpoint.ws_url.clone());
                ingest.rest_url = Some(endpoint.rest_url.clone());
                spawn_ingest(&mut roles, ingest, &bus, h, st);
            }
            spawn_role(
                &mut roles,
                "engine",
                spreadagg_engine::run(settings.engine.clone(), bus.clone(), h.clone(), st.clone()),
            );
            spawn_role(
                &mut roles,
                "archive",
                spreadagg_archive::run(
                    settings.archive.clone(),
                    bus.clone(),
                    h.clone(),
                    st.clone(),
                ),
            );
            spawn_gateway(&mut roles, &settings, &bus, h, st).await?;
            spawn_role(&mut roles, "simulate", async move {
                sim.join().await;
                Ok::<(), RoleError>(())
            });
        }
        Role::Simulate(_) | Role::Roles | Role::Drain(_) | Role::Streams(_) | Role::Replay(_) => {}
    }
    // The first role to fail stops the rest; every role is joined before returning.
    let mut first_error = None;
    while let Some(joined) = roles.join_next().await {
        let result = joined.map_err(|e| fail("task")(&e)).and_then(|r| r);
        if let Err(e) = result {
            tracing::error!(error = %e, "role failed; stopping the others");
            stop.cancel();
            first_error.get_or_insert(e);
        }
    }
    if let Err(e) = bus.flush().await {
        tracing::warn!(error = %e, "final bus flush failed");
    }
    first_error.map_or(Ok(()), Err)
}

fn announce_simulator(sim: &Simulator) {
    for e in sim.endpoints() {
        announce(&format!(
            "simulating {} {} {}",
            e.exchange, e.ws_url, e.rest_url
        ));
    }
}

/// Keeps the `bus` health component current: not ready while NATS is unreachable (the
/// client reconnects by itself; this only reports it).
fn spawn_bus_watch(
    roles: &mut JoinSet<Result<(), RoleError>>,
    bus: &Bus,
    health: &Health,
    stop: &CancellationToken,
) {
    let (bus, component, stop) = (bus.clone(), health.register("bus"), stop.clone());
    spawn_role(roles, "bus", async move {
        loop {
            let connected = bus.is_connected();
            component.set(
                connected,
                serde_json::json!({"kind": bus.kind(), "connected": connected}),
            );
            tokio::select! {
                () = stop.cancelled() => return Ok::<(), RoleError>(()),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}

/// Runs a role on the set, naming it in its error.
fn spawn_role<E, F>(roles: &mut JoinSet<Result<(), RoleError>>, name: &'static str, role: F)
where
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
{
    roles.spawn(async move { role.await.map_err(|e| fail(name)(&e)) });
}

fn spawn_ingest(
    roles: &mut JoinSet<Result<(), RoleError>>,
    config: spreadagg_ingest::IngestConfig,
    bus: &Bus,
    health: &Health,
    stop: &CancellationToken,
) {
    tracing::info!(
        exchange = config.exchange.map_or("none", |e| e.as_str()),
        "ingest starting"
    );
    spawn_role(
        roles,
        "ingest",
        spreadagg_ingest::run(config, bus.clone(), health.clone(), stop.clone()),
    );
}

async fn spawn_gateway(
    roles: &mut JoinSet<Result<(), RoleError>>,
    settings: &Settings,
    bus: &Bus,
    health: &Health,
    stop: &CancellationToken,
) -> Result<(), RoleError> {
    let gateway = spreadagg_gateway::Gateway::bind(settings.gateway.clone())
        .await
        .map_err(|e| fail("gateway")(&e))?;
    announce(&format!("listening gateway {}", gateway.local_addr()));
    if let Some(grpc) = gateway.grpc_addr() {
        announce(&format!("listening gateway-grpc {grpc}"));
    }
    spawn_role(
        roles,
        "gateway",
        gateway.run(bus.clone(), health.clone(), stop.clone()),
    );
    Ok(())
}
