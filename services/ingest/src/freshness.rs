//! Per-symbol staleness: how long since each subscribed symbol's last quote, as a gauge per
//! symbol (`spreadagg_ingest_quote_age_seconds{exchange,symbol}`), a count of the symbols
//! quiet for longer than the data watchdog's limit (`spreadagg_ingest_stale_symbols`), and
//! the stalest few in `/health`. A connection's data watchdog sees only that the connection
//! went quiet; this sees one symbol going quiet on a connection that still carries others
//! (a delisting, a halted market, a subscription the exchange silently dropped).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::json;
use spreadagg_model::time::now_ns;
use spreadagg_runtime::Component;
use tokio_util::sync::CancellationToken;

use crate::conflate::Conflator;
use crate::symbols::{SymbolId, SymbolTable};

/// How many of the stalest symbols `/health` names.
const STALEST_SHOWN: usize = 5;

/// What the freshness watch reads.
pub(crate) struct Freshness {
    pub exchange: &'static str,
    pub sink: Arc<Conflator>,
    pub symbols: Arc<RwLock<Arc<SymbolTable>>>,
    /// The symbols subscribed now (re-discovery replaces the list).
    pub selected: Arc<Mutex<Vec<SymbolId>>>,
    /// A symbol quiet for longer than this is stale.
    pub stale_after: Duration,
    pub component: Component,
}

impl Freshness {
    /// Updates the gauges and `/health` every second until `stop`.
    pub(crate) async fn run(self, stop: CancellationToken) {
        // When each selected symbol was selected (bounded by the selection).
        let mut selected_since: HashMap<u32, i64> = HashMap::new();
        let mut gauges: HashMap<u32, metrics::Gauge> = HashMap::new();
        let stale_count =
            metrics::gauge!("spreadagg_ingest_stale_symbols", "exchange" => self.exchange);
        let mut last = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.sink.last_quotes(&mut last);
            let table = self
                .symbols
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let selected = self
                .selected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let now = now_ns();
            let mut ages: Vec<(f64, SymbolId)> = Vec::with_capacity(selected.len());
            for id in selected {
                // Counted from the later of its last quote and when it was (last) selected: a
                // symbol listed by re-discovery, or listed again after a delisting, is not
                // stale before it had the time to be quoted.
                let selected_at = *selected_since.entry(id.0).or_insert(now);
                let since = last.get(id.index()).copied().unwrap_or(0).max(selected_at);
                let age = (now.saturating_sub(since)).max(0) as f64 / 1e9;
                let Some(entry) = table.get(id) else { continue };
                gauges
                    .entry(id.0)
                    .or_insert_with(|| {
                        metrics::gauge!("spreadagg_ingest_quote_age_seconds", "exchange" => self.exchange, "symbol" => entry.symbol.as_str().to_owned())
                    })
                    .set(age);
                ages.push((age, id));
            }
            // Symbols no longer subscribed (re-discovery dropped them) show no age, not a
            // frozen one.
            let live: std::collections::HashSet<u32> = ages.iter().map(|(_, s)| s.0).collect();
            for (id, gauge) in &gauges {
                if !live.contains(id) {
                    gauge.set(f64::NAN);
                }
            }
            selected_since.retain(|id, _| live.contains(id));
            let limit = self.stale_after.as_secs_f64();
            let stale = ages.iter().filter(|(a, _)| *a > limit).count();
            stale_count.set(stale as f64);
            ages.sort_by(|a, b| b.0.total_cmp(&a.0));
            let stalest: Vec<_> = ages
                .iter()
                .take(STALEST_SHOWN)
                .filter_map(|(age, id)| {
                    table
                        .get(*id)
                        .map(|e| json!({"symbol": e.symbol.as_str(), "age_s": (age * 10.0).round() / 10.0}))
                })
                .collect();
            self.component.set(
                true,
                json!({"symbols": ages.len(), "stale": stale, "stale_after_s": limit, "stalest": stalest}),
            );
        }
    }
}
