//! The latest quote of every (exchange, symbol).

use std::sync::{Mutex, MutexGuard};

use super::{Quote, Step};

/// The latest state of one (exchange, symbol), for REST and for a new subscriber's first push.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SlotView {
    pub quote: Quote,
    pub last_trade_ts_us: Option<i64>,
}

/// The latest quote of every (exchange, symbol), shared with the REST handlers and sessions.
/// One short lock per market step; readers copy out what they need.
#[derive(Debug)]
pub(crate) struct Board {
    n_symbols: usize,
    slots: Mutex<Vec<SlotView>>,
}

impl Board {
    pub fn new(n_symbols: usize, views: Vec<SlotView>) -> Self {
        Self {
            n_symbols,
            slots: Mutex::new(views),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<SlotView>> {
        // Each write replaces one Copy value, so a poisoned lock still holds consistent data.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The latest view of one (exchange, symbol).
    pub fn get(&self, exchange: usize, symbol: usize) -> Option<SlotView> {
        self.lock().get(exchange * self.n_symbols + symbol).copied()
    }

    /// Every symbol's view on one exchange, in symbol order.
    pub fn exchange(&self, exchange: usize) -> Vec<SlotView> {
        let start = exchange * self.n_symbols;
        self.lock()
            .get(start..start + self.n_symbols)
            .map(<[SlotView]>::to_vec)
            .unwrap_or_default()
    }

    pub(super) fn apply(&self, step: &Step) {
        let mut slots = self.lock();
        if let Some(view) = slots.get_mut(step.exchange * self.n_symbols + step.quote.symbol) {
            view.quote = step.quote;
            if let Some(t) = step.trade {
                view.last_trade_ts_us = Some(t.ts_us);
            }
        }
    }
}
