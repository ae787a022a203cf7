//! Chart windows from the engine: a core NATS request on `md.chart.<symbol>.<A>.<B>`, answered
//! with a `ChartSnapshot` by the engine shard that owns the symbol. Bounded: at most
//! `MAX_IN_FLIGHT` requests at once from this gateway (a flood of chart subscriptions waits
//! its turn or fails, it does not multiply load on the engine), each within a timeout.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use spreadagg_bus::Bus;
use spreadagg_model::Symbol;
use spreadagg_model::subjects;
use spreadagg_model::wire::ChartSnapshot;
use tokio::sync::Semaphore;

use crate::pair::Pair;

/// Chart requests in flight from one gateway.
const MAX_IN_FLIGHT: usize = 32;

/// Why no chart came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChartError {
    #[error("no engine answered for the chart within {0:?}")]
    NoAnswer(Duration),
    #[error("the engine's chart answer does not decode: {0}")]
    Undecodable(String),
}

/// Asks the engine for chart windows.
#[derive(Debug, Clone)]
pub(crate) struct Charts {
    bus: Bus,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

impl Charts {
    pub(crate) fn new(bus: Bus, timeout: Duration) -> Self {
        Self {
            bus,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            timeout,
        }
    }

    /// The pair's chart window (no points when the engine has no such window).
    ///
    /// # Errors
    /// When no engine answers within the timeout (waiting for a turn included), or the answer
    /// does not decode.
    pub(crate) async fn fetch(
        &self,
        symbol: &Symbol,
        pair: Pair,
    ) -> Result<ChartSnapshot, ChartError> {
        let subject = subjects::chart(symbol.as_str(), pair.a().as_str(), pair.b().as_str());
        let asked = async {
            let _turn = self
                .in_flight
                .acquire()
                .await
                .map_err(|_| ChartError::NoAnswer(self.timeout))?;
            self.bus
                .request(&subject, Bytes::new(), self.timeout)
                .await
                .map_err(|_| ChartError::NoAnswer(self.timeout))
        };
        let answer = tokio::time::timeout(self.timeout, asked)
            .await
            .map_err(|_| ChartError::NoAnswer(self.timeout))??;
        let chart =
            ChartSnapshot::decode(answer).map_err(|e| ChartError::Undecodable(e.to_string()))?;
        metrics::counter!("spreadagg_gateway_chart_requests_total", "outcome" => "ok").increment(1);
        Ok(chart)
    }
}
