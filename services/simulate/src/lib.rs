//! The simulator role (`spreadagg simulate`): serves the public market-data protocols of every
//! exchange in [`SIMULATED_EXCHANGES`] on local ports, exactly as the exchanges document them,
//! so that any ingest client (ours or anyone's) can connect to it instead of the real exchange.
//!
//! Every exchange quotes from one shared random-walk market (`market/`), so a symbol moves
//! together across exchanges and cross-exchange spreads look real: a few basis points,
//! mean-reverting, occasionally wide. Each exchange has its own folder (`exchange/<id>/`):
//! routes and REST, a pure protocol state machine (`session.rs`) and its wire encoding (`wire.rs`). Every WebSocket session is served by the
//! one driver in `ws/driver.rs`, generic over that state machine. Each exchange has its own
//! listener: exchanges never share a port (MEXC reuses Binance's REST paths).
//!
//! Everything is owned and bounded: every task is on the simulator's [`TaskTracker`] and ends
//! when the `stop` token is cancelled (WebSocket sessions with a Close frame), sessions per
//! exchange are capped, a slow session skips market events (counted in
//! `spreadagg_sim_lagged_events_total`) and never slows the market, and a client that does not
//! read is dropped.
//!
//! # Fault injection
//!
//! Faults test how a client copes with a misbehaving exchange. Each exchange's listener
//! serves an admin API next to the exchange's own routes, and [`Simulator`] has the same in
//! process ([`Simulator::inject`], [`Simulator::clear_faults`], [`Simulator::active_faults`]):
//!
//! | request | answer |
//! |---|---|
//! | `POST /sim/faults` with a [`Fault`] as JSON | `200 {"injected":"<fault>"}`; `400 {"error":".."}` (unknown fault, unknown field, bad JSON, parameter out of range); `413` (body over 4 KiB) |
//! | `GET /sim/faults` | `200 {"exchange":"okx","active":[{"fault":"stall","remaining_ms":4200},{"fault":"refuse_subscription","remaining":2},{"fault":"slow","remaining_ms":900,"delay_ms":300}]}` |
//! | `DELETE /sim/faults` | `200 {"cleared":true}`: every windowed and counted fault ends |
//!
//! | fault (JSON) | effect, on every session of that exchange |
//! |---|---|
//! | `{"fault":"disconnect"}` | every open session is dropped: no Close frame, the TCP connection ends |
//! | `{"fault":"stall","duration_ms":N}` | no market data for N ms (pings, pongs and request replies still flow), also on sessions opened meanwhile |
//! | `{"fault":"garbage","count":K}` | K undecodable frames between data frames: text that is not JSON, or on HTX binary that is not gzip |
//! | `{"fault":"oversized"}` | one frame of [`OVERSIZED_BYTES`] (2 MiB + 64 KiB; Coinbase: [`COINBASE_OVERSIZED_BYTES`], 64 MiB + 64 KiB, over its clients' larger cap): valid padded JSON text, or incompressible binary on HTX |
//! | `{"fault":"refuse_subscription","count":K}` | the next K subscribe requests (any session) get the exchange's error reply: Binance `{"error":{"code":2,..},"id":..}`, OKX `{"event":"error","code":"60014",..}`, HTX `{"status":"error","err-code":"bad-request",..}` |
//! | `{"fault":"close_with_notice"}` | the exchange's notice (Binance `serverShutdown`, OKX `{"event":"notice","code":"64008"}`; HTX documents none) then a Close frame 1001 |
//! | `{"fault":"close_without_notice"}` | a Close frame 1001 with no notice |
//! | `{"fault":"slow","duration_ms":N,"delay_ms":M}` | for N ms every outbound frame is sent M ms late |
//! | `{"fault":"ignore_pongs","duration_ms":N}` | for N ms the client's pongs are ignored, so the server's own pong deadline closes the session (Binance, HTX) |
//!
//! Bounds: durations 1 ms to 1 h, `count` 1..100 for garbage and 1..10000 for refusals, delays
//! 1 ms to 10 s. One-shot faults (disconnect, garbage, oversized, both closes) hit the sessions
//! open at the time; windowed and counted ones (stall, slow, ignore_pongs,
//! refuse_subscription) have one slot per kind, so at most [`MAX_ACTIVE`] are active and a new
//! injection of a kind replaces the old one. Metrics: `spreadagg_sim_faults_total{exchange,fault}`
//! per accepted injection, `spreadagg_sim_admin_rejected_total{exchange,reason}` per refused
//! admin request, `spreadagg_sim_rejected_requests_total{reason="fault_refused"}` per refusal.

mod config;
mod exchange;
mod fault;
mod format;
mod market;
#[cfg(test)]
mod tests;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use spreadagg_model::ExchangeId;
use spreadagg_runtime::net::dialable;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::config::{MAX_SYMBOLS, SIMULATED_EXCHANGES, SimConfig, SimError};
use crate::fault::Faults;
pub use crate::fault::{
    ActiveFault, COINBASE_OVERSIZED_BYTES, Fault, FaultError, MAX_ACTIVE, MAX_DELAY_MS,
    MAX_DURATION_MS, MAX_GARBAGE_FRAMES, MAX_REFUSALS, OVERSIZED_BYTES,
};
use crate::market::{Board, Model, Universe, now_us};
use crate::ws::{ExchangeCtx, MAX_SESSIONS};

/// Market events buffered per symbol on each exchange's broadcast channel (about ten seconds
/// of quotes and trades at the default rate); a session further behind skips the oldest.
const EVENTS_PER_SYMBOL: usize = 128;
/// Bounds on each exchange's broadcast channel, whatever the symbol count.
const EVENT_BUFFER_BOUNDS: (usize, usize) = (1_024, 65_536);

/// Where one simulated exchange is served: the values for `ingest --ws-url` and `--rest-url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub exchange: ExchangeId,
    /// The whole WebSocket endpoint as the exchange publishes it, on our host and port:
    /// `ws://127.0.0.1:PORT/ws` (Binance), `ws://127.0.0.1:PORT/ws/v5/public` (OKX).
    pub ws_url: String,
    /// Scheme and host of the REST API: `http://127.0.0.1:PORT`.
    pub rest_url: String,
}

/// A running simulator: every exchange's listener bound and the market moving.
#[derive(Debug)]
pub struct Simulator {
    endpoints: Vec<Endpoint>,
    tracker: TaskTracker,
    seed: u64,
    /// Each exchange's faults, shared with its sessions and its admin routes.
    faults: Vec<(ExchangeId, Arc<Faults>)>,
    /// The KuCoin listener's state, when KuCoin is simulated (for its token fault).
    kucoin: Option<Arc<exchange::kucoin::KucoinState>>,
    bybit: Option<Arc<exchange::bybit::BybitState>>,
}

impl Simulator {
    /// Binds every exchange's listener and starts the market. Ports are bound before this
    /// returns, so the endpoints can be dialled at once.
    ///
    /// # Errors
    /// An invalid configuration or a port that cannot be bound; nothing keeps running after an error.
    pub async fn start(config: SimConfig, stop: CancellationToken) -> Result<Simulator, SimError> {
        config.validate()?;
        let universe = Arc::new(
            Universe::new(&config.symbols, &config.exchanges).map_err(SimError::InvalidConfig)?,
        );
        // Bind everything first: a port conflict fails the start with nothing running.
        let mut listeners = Vec::with_capacity(config.exchanges.len());
        for &exchange in &config.exchanges {
            let addr = SocketAddr::new(
                config.host,
                config.ports.get(&exchange).copied().unwrap_or(0),
            );
            let bind_error = |source| SimError::Bind {
                exchange,
                addr,
                source,
            };
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            listeners.push((exchange, listener, local));
        }

        let seed = config.seed.unwrap_or_else(rand::random);
        let model = Model::new(
            universe.clone(),
            Duration::from_millis(config.update_interval_ms),
            config.trade_probability,
            seed,
        );
        let board = Arc::new(Board::new(
            universe.instruments.len(),
            model.snapshot(now_us()),
        ));
        let capacity = (universe.instruments.len() * EVENTS_PER_SYMBOL)
            .clamp(EVENT_BUFFER_BOUNDS.0, EVENT_BUFFER_BOUNDS.1);
        let tracker = TaskTracker::new();
        let mut channels = Vec::with_capacity(listeners.len());
        let mut endpoints = Vec::with_capacity(listeners.len());
        let mut routers = Vec::with_capacity(listeners.len());
        let mut fault_sets = Vec::with_capacity(listeners.len());
        let mut kucoin = None;
        let mut bybit = None;
        for (index, (exchange, listener, local)) in listeners.into_iter().enumerate() {
            let (events, _) = broadcast::channel(capacity);
            let faults = Arc::new(Faults::new(exchange));
            fault_sets.push((exchange, faults.clone()));
            channels.push(events.clone());
            let ctx = Arc::new(ExchangeCtx {
                exchange,
                index,
                universe: universe.clone(),
                board: board.clone(),
                events,
                stop: stop.clone(),
                tracker: tracker.clone(),
                sessions: Arc::new(Semaphore::new(MAX_SESSIONS)),
                binance_ping_interval: Duration::from_secs(config.binance_ping_interval_s),
                faults: faults.clone(),
            });
            let (router, ws_path) = match exchange {
                ExchangeId::Binance => (exchange::binance::router(ctx), "/ws"),
                ExchangeId::Okx => (exchange::okx::router(ctx), "/ws/v5/public"),
                ExchangeId::Bybit => {
                    let state = Arc::new(exchange::bybit::BybitState::new(
                        ctx,
                        Duration::from_secs(config.bybit_idle_timeout_s),
                    ));
                    bybit = Some(state.clone());
                    (exchange::bybit::router(state), exchange::bybit::WS_PATH)
                }
                ExchangeId::Htx => (exchange::htx::router(ctx), exchange::htx::WS_PATH),
                ExchangeId::Kucoin => {
                    let state = Arc::new(exchange::kucoin::KucoinState::new(
                        format!("ws://{}{}", dialable(local), exchange::kucoin::WS_PATH),
                        exchange::kucoin::Timing {
                            ping_interval: Duration::from_millis(config.kucoin_ping_interval_ms),
                            ping_timeout: Duration::from_millis(config.kucoin_ping_timeout_ms),
                        },
                    ));
                    kucoin = Some(state.clone());
                    (
                        exchange::kucoin::router(ctx, state),
                        exchange::kucoin::WS_PATH,
                    )
                }
                ExchangeId::Mexc => (exchange::mexc::router(ctx), exchange::mexc::WS_PATH),
                ExchangeId::Kraken => (exchange::kraken::router(ctx), exchange::kraken::WS_PATH),
                ExchangeId::Coinbase => {
                    (exchange::coinbase::router(ctx), exchange::coinbase::WS_PATH)
                }
                ExchangeId::Bitget => (exchange::bitget::router(ctx), exchange::bitget::WS_PATH),
                ExchangeId::Gateio => (exchange::gateio::router(ctx), exchange::gateio::WS_PATH),
                ExchangeId::Bingx => (exchange::bingx::router(ctx), exchange::bingx::WS_PATH),
            };
            let at = dialable(local);
            endpoints.push(Endpoint {
                exchange,
                ws_url: format!("ws://{at}{ws_path}"),
                rest_url: format!("http://{at}"),
            });
            let router = router.merge(fault::admin::router(faults));
            routers.push((exchange, listener, router));
        }
        for (exchange, listener, router) in routers {
            let stop = stop.clone();
            tracker.spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(exchange = exchange.as_str(), error = %e, "simulated exchange stopped serving");
                }
            });
        }
        tracker.spawn(market::run(model, board, channels, stop));
        for e in &endpoints {
            tracing::info!(
                exchange = e.exchange.as_str(),
                ws_url = %e.ws_url,
                rest_url = %e.rest_url,
                "simulated exchange listening"
            );
        }
        tracing::info!(
            seed,
            symbols = universe.instruments.len(),
            "simulated market started"
        );
        Ok(Simulator {
            endpoints,
            tracker,
            seed,
            faults: fault_sets,
            kucoin,
            bybit,
        })
    }

    /// Where each simulated exchange is served, in the order of `exchanges`.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The endpoint of one exchange, if it is simulated here.
    pub fn endpoint(&self, exchange: ExchangeId) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.exchange == exchange)
    }

    /// The market's seed (the configured one, or the one drawn for this run).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Refuses the next `n` KuCoin connections as if their token had expired (KuCoin's
    /// `{"type":"error","code":401,"data":"token is expired"}` in place of the welcome) and
    /// revokes each token so refused: a client recovers only by fetching a fresh token from
    /// bullet-public. Replaces any refusals still pending; no-op when KuCoin is not simulated.
    pub fn kucoin_reject_next_tokens(&self, n: u32) {
        if let Some(state) = &self.kucoin {
            state.reject_next_tokens(n);
        }
    }

    /// KuCoin token refusals still pending from [`Simulator::kucoin_reject_next_tokens`]
    /// (0 when KuCoin is not simulated): a test can see that a refusal actually happened.
    pub fn kucoin_pending_token_rejections(&self) -> u32 {
        self.kucoin
            .as_ref()
            .map_or(0, |state| state.pending_rejections())
    }

    /// Restarts Bybit's market-data service the way Bybit's docs describe it: every
    /// `orderbook.1` sequence starts again, each open session pushes every book it carries as
    /// a snapshot with `u` 1, and later updates count up from there. No-op when Bybit is not
    /// simulated.
    pub fn bybit_restart(&self) {
        if let Some(state) = &self.bybit {
            state.restart();
        }
    }

    fn faults_of(&self, exchange: ExchangeId) -> Result<&Faults, FaultError> {
        self.faults
            .iter()
            .find(|(e, _)| *e == exchange)
            .map(|(_, f)| f.as_ref())
            .ok_or(FaultError::NotSimulated(exchange))
    }

    /// Injects a fault on one exchange, as `POST /sim/faults` does: one-shot faults hit the
    /// sessions open now, windowed and counted ones also those opened while they last.
    ///
    /// # Errors
    /// The exchange is not simulated here, or a parameter is out of range.
    pub fn inject(&self, exchange: ExchangeId, fault: Fault) -> Result<(), FaultError> {
        self.faults_of(exchange)?.inject(fault)
    }

    /// Ends every windowed and counted fault on one exchange (`DELETE /sim/faults`).
    ///
    /// # Errors
    /// The exchange is not simulated here.
    pub fn clear_faults(&self, exchange: ExchangeId) -> Result<(), FaultError> {
        self.faults_of(exchange)?.clear();
        Ok(())
    }

    /// The windowed and counted faults in force on one exchange (`GET /sim/faults`).
    ///
    /// # Errors
    /// The exchange is not simulated here.
    pub fn active_faults(&self, exchange: ExchangeId) -> Result<Vec<ActiveFault>, FaultError> {
        Ok(self
            .faults_of(exchange)?
            .active(tokio::time::Instant::now()))
    }

    /// Waits until `stop` is cancelled and every task has finished: the market, the
    /// listeners, and every WebSocket session (each closed with a Close frame).
    pub async fn join(self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}
