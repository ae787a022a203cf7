//! The symbols an ingestor carries, interned: each gets a small [`SymbolId`] at discovery, and
//! everything per message (lookup by the exchange's spelling, subjects, message ids) is
//! resolved through it instead of formatting or hashing strings again.
//!
//! The table only grows (re-discovery appends), so an id handed out stays valid for the life
//! of the process; it is bounded by [`MAX_SYMBOLS`].

use std::collections::HashMap;

use spreadagg_model::{ExchangeId, Symbol, subjects};

/// Most symbols one ingestor interns over its life; discovery refuses more.
pub const MAX_SYMBOLS: usize = 20_000;

/// Index of a symbol in the [`SymbolTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymbolId(pub u32);

impl SymbolId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// One interned symbol with what the publisher needs for it.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolEntry {
    pub symbol: Symbol,
    /// The exchange's spelling, as frames carry it.
    pub native: String,
    pub tick_subject: String,
    pub trade_subject: String,
}

/// Native spelling -> id, and id -> entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolTable {
    exchange: ExchangeId,
    entries: Vec<SymbolEntry>,
    by_native: HashMap<String, SymbolId>,
}

impl SymbolTable {
    pub fn new(exchange: ExchangeId) -> Self {
        Self {
            exchange,
            entries: Vec::new(),
            by_native: HashMap::new(),
        }
    }

    /// Builds a table from (native, canonical) pairs; for tests and benchmarks.
    pub fn from_pairs<'a>(
        exchange: ExchangeId,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let mut t = Self::new(exchange);
        for (native, canonical) in pairs {
            if let Ok(symbol) = canonical.parse() {
                t.intern(native, &symbol);
            }
        }
        t
    }

    /// The id of this native symbol, interning it when new. `None` when the table is full or
    /// the native spelling already maps to another canonical symbol (two products must never
    /// collapse onto one symbol, cryptofeed #928).
    pub fn intern(&mut self, native: &str, symbol: &Symbol) -> Option<SymbolId> {
        if let Some(&id) = self.by_native.get(native) {
            return (self.entries[id.index()].symbol == *symbol).then_some(id);
        }
        if self.entries.len() >= MAX_SYMBOLS {
            return None;
        }
        let exchange = self.exchange;
        let id = SymbolId(u32::try_from(self.entries.len()).ok()?);
        self.entries.push(SymbolEntry {
            symbol: symbol.clone(),
            native: native.to_owned(),
            tick_subject: subjects::tick(exchange, symbol.as_str()),
            trade_subject: subjects::trade(exchange, symbol.as_str()),
        });
        self.by_native.insert(native.to_owned(), id);
        Some(id)
    }

    /// The id of a native spelling seen in a frame.
    pub fn lookup(&self, native: &str) -> Option<SymbolId> {
        self.by_native.get(native).copied()
    }

    /// The entry of an id handed out by this table (or an earlier snapshot of it).
    pub fn get(&self, id: SymbolId) -> Option<&SymbolEntry> {
        self.entries.get(id.index())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_refuses_collisions() {
        let mut t = SymbolTable::new(ExchangeId::Okx);
        let btc: Symbol = "BTC-USDT".parse().expect("symbol");
        let eth: Symbol = "ETH-USDT".parse().expect("symbol");
        let a = t.intern("BTC-USDT", &btc).expect("interned");
        assert_eq!(t.intern("BTC-USDT", &btc), Some(a), "same pair, same id");
        assert_eq!(t.intern("BTC-USDT", &eth), None, "one native, two symbols");
        let b = t.intern("ETH-USDT", &eth).expect("interned");
        assert_ne!(a, b);
        assert_eq!(t.lookup("ETH-USDT"), Some(b));
        let entry = t.get(b).expect("entry");
        assert_eq!(entry.tick_subject, "md.tick.okx.ETH-USDT");
        assert_eq!(entry.trade_subject, "md.trade.okx.ETH-USDT");
        assert_eq!(t.lookup("XRP-USDT"), None);
    }
}
