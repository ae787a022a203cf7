//! Symbol interning: the state keys its maps by a small integer per symbol instead of its text,
//! so a tick costs one string hash (here) and integer hashes after. Entries are reference
//! counted by the ticks and windows that use them and freed when neither is left, so a rotating
//! symbol set does not grow this table past the tick and window bounds.

use std::collections::HashMap;
use std::sync::Arc;

use spreadagg_model::ExchangeId;

use super::signal::SignalState;

/// Index of an interned symbol.
pub(super) type SymbolId = u32;

/// Exchanges known to the contract; the width of a symbol's latest-tick row.
pub(super) const EXCHANGES: usize = ExchangeId::ALL.len();

/// The row of an exchange in [`SymbolEntry::latest`].
pub(super) const fn slot(exchange: ExchangeId) -> usize {
    exchange as usize
}

/// What the engine remembers of a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Latest {
    pub bid: f64,
    pub ask: f64,
    pub ts_ns: i64,
}

/// One symbol's latest tick per exchange (a bit of `present` per held tick), its window count
/// and its signal state.
#[derive(Debug)]
pub(super) struct SymbolEntry {
    pub name: Arc<str>,
    pub latest: [Latest; EXCHANGES],
    pub present: u16,
    pub windows: u32,
    pub signal: SignalState,
}

impl SymbolEntry {
    pub fn has(&self, exchange: ExchangeId) -> bool {
        self.present & (1 << slot(exchange)) != 0
    }
}

#[derive(Debug, Default)]
pub(super) struct Symbols {
    index: HashMap<Arc<str>, SymbolId>,
    entries: Vec<Option<SymbolEntry>>,
    free: Vec<SymbolId>,
}

impl Symbols {
    /// The symbol's id, interning it when new.
    pub fn intern(&mut self, name: &str) -> SymbolId {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let entry = SymbolEntry {
            name: name.clone(),
            latest: [Latest::default(); EXCHANGES],
            present: 0,
            windows: 0,
            signal: SignalState::default(),
        };
        let id = if let Some(id) = self.free.pop() {
            self.entries[id as usize] = Some(entry);
            id
        } else {
            // Bounded by ticks + windows (each entry holds one), far below u32::MAX.
            let id = SymbolId::try_from(self.entries.len()).unwrap_or(SymbolId::MAX);
            self.entries.push(Some(entry));
            id
        };
        self.index.insert(name, id);
        id
    }

    pub fn lookup(&self, name: &str) -> Option<SymbolId> {
        self.index.get(name).copied()
    }

    /// # Panics
    /// Never for an id this table handed out and has not freed (a bug otherwise).
    pub fn get(&self, id: SymbolId) -> &SymbolEntry {
        self.entries[id as usize]
            .as_ref()
            .expect("a live symbol id")
    }

    /// # Panics
    /// As [`Symbols::get`].
    pub fn get_mut(&mut self, id: SymbolId) -> &mut SymbolEntry {
        self.entries[id as usize]
            .as_mut()
            .expect("a live symbol id")
    }

    /// Frees the symbol when no tick and no window refers to it any more.
    pub fn release_if_unused(&mut self, id: SymbolId) {
        let unused = self.entries[id as usize]
            .as_ref()
            .is_some_and(|e| e.present == 0 && e.windows == 0);
        if unused && let Some(entry) = self.entries[id as usize].take() {
            self.index.remove(&entry.name);
            self.free.push(id);
        }
    }

    pub fn count_where(&self, mut f: impl FnMut(&SymbolEntry) -> bool) -> usize {
        self.entries.iter().flatten().filter(|e| f(e)).count()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }
}
