//! A durable consumer's outstanding deliveries and their redelivery deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// A durable consumer's outstanding deliveries, indexed both ways so that every operation a
/// poll or an acknowledgement makes is O(log n) in the number outstanding (up to
/// `max_ack_pending`, 100,000 for the archiver): by stream sequence (acknowledgements, the ack
/// floor, messages the limits removed) and by redelivery deadline (the next one due).
#[derive(Debug, Default)]
pub(super) struct Pending {
    by_seq: BTreeMap<u64, Instant>,
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl Pending {
    pub(super) fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub(super) fn contains(&self, seq: u64) -> bool {
        self.by_seq.contains_key(&seq)
    }

    /// Delivers (or redelivers) `seq`, due again at `deadline`.
    pub(super) fn insert(&mut self, seq: u64, deadline: Instant) {
        if let Some(old) = self.by_seq.insert(seq, deadline) {
            self.by_deadline.remove(&(old, seq));
        }
        self.by_deadline.insert((deadline, seq));
    }

    /// Forgets `seq`; whether it was outstanding.
    pub(super) fn remove(&mut self, seq: u64) -> bool {
        match self.by_seq.remove(&seq) {
            Some(deadline) => {
                self.by_deadline.remove(&(deadline, seq));
                true
            }
            None => false,
        }
    }

    /// Forgets every sequence below `first` (removed from the stream by its limits).
    pub(super) fn drop_below(&mut self, first: u64) {
        while let Some((&seq, _)) = self.by_seq.first_key_value() {
            if seq >= first {
                break;
            }
            self.remove(seq);
        }
    }

    /// The outstanding delivery whose deadline passed first, if any.
    pub(super) fn due(&self, now: Instant) -> Option<u64> {
        self.by_deadline
            .first()
            .filter(|(deadline, _)| *deadline <= now)
            .map(|(_, seq)| *seq)
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    pub(super) fn lowest(&self) -> Option<u64> {
        self.by_seq.first_key_value().map(|(seq, _)| *seq)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn pending_deliveries_come_due_by_deadline_and_are_indexed_both_ways() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut p = Pending::default();
        p.insert(5, at(30));
        p.insert(3, at(20));
        p.insert(9, at(10));
        assert_eq!((p.len(), p.lowest()), (3, Some(3)));
        assert_eq!(p.next_deadline(), Some(at(10)));
        assert_eq!(p.due(at(9)), None, "nothing is due before its deadline");
        assert_eq!(
            p.due(at(25)),
            Some(9),
            "the earliest deadline first, not the lowest seq"
        );
        // A redelivery moves the deadline; the old one is forgotten.
        p.insert(9, at(40));
        assert_eq!(p.len(), 3);
        assert_eq!(p.due(at(25)), Some(3));
        p.remove(3);
        assert_eq!(p.due(at(35)), Some(5));
        p.remove(42);
        assert_eq!(p.len(), 2, "removing an unknown sequence changes nothing");
        p.drop_below(9);
        assert_eq!(
            (p.len(), p.lowest(), p.next_deadline()),
            (1, Some(9), Some(at(40)))
        );
        p.drop_below(100);
        assert_eq!(
            (p.len(), p.lowest(), p.next_deadline(), p.due(at(99))),
            (0, None, None, None)
        );
    }
}
