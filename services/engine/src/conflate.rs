//! Output conflation (`publish_min_interval_ms`): at most one published point per pair per
//! interval, always ending on the pair's latest. Every point still enters its window (bands,
//! charts and snapshots are unchanged); only what goes to `MD_SPREADS` thins out.
//!
//! A point arriving at least an interval after its pair's last published one goes out at
//! once (the leading edge); one arriving sooner is held as the pair's pending point, replacing
//! any held before it (counted as conflated), and goes out when its interval has passed (the
//! trailing edge, checked every `interval / 4`). The held point's tick is acknowledged without
//! waiting for it: with conflation on, `MD_SPREADS` is a sample by design, and a held point
//! lost to a crash is followed by the pair's next point (the window, rebuilt by the warm
//! start, keeps it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use spreadagg_bus::OutMessage;

/// Pairs remembered at most; past it idle entries are dropped, and when every entry holds a
/// point a new pair's point goes out unconflated.
const MAX_PAIRS: usize = 100_000;

#[derive(Debug)]
pub(crate) struct Conflator {
    interval: Duration,
    /// Per pair subject: when its last point went out, and the point held since, if any.
    pairs: HashMap<String, (Instant, Option<OutMessage>)>,
}

impl Conflator {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            pairs: HashMap::new(),
        }
    }

    pub fn check_every(&self) -> Duration {
        (self.interval / 4).max(Duration::from_millis(5))
    }

    /// The point to publish now, if any; otherwise it is held. The `bool` is true when a
    /// held point was replaced (conflated away).
    pub fn offer(&mut self, msg: OutMessage, now: Instant) -> (Option<OutMessage>, bool) {
        if let Some((last, held)) = self.pairs.get_mut(&msg.subject) {
            if now.duration_since(*last) >= self.interval {
                *last = now;
                let replaced = held.take().is_some();
                return (Some(msg), replaced);
            }
            let replaced = held.replace(msg).is_some();
            return (None, replaced);
        }
        if self.pairs.len() >= MAX_PAIRS {
            self.forget_idle(now);
            if self.pairs.len() >= MAX_PAIRS {
                // Full of pairs with held points: this one goes out unconflated.
                return (Some(msg), false);
            }
        }
        self.pairs.insert(msg.subject.clone(), (now, None));
        (Some(msg), false)
    }

    /// Held points whose interval has passed, to publish now.
    pub fn due(&mut self, now: Instant) -> Vec<OutMessage> {
        let mut out = Vec::new();
        for (last, held) in self.pairs.values_mut() {
            if held.is_some() && now.duration_since(*last) >= self.interval {
                *last = now;
                out.extend(held.take());
            }
        }
        self.forget_idle(now);
        out
    }

    /// Drops pairs with nothing held and nothing published for an interval: their next point
    /// goes out at once either way.
    fn forget_idle(&mut self, now: Instant) {
        let interval = self.interval;
        self.pairs
            .retain(|_, (last, held)| held.is_some() || now.duration_since(*last) < interval);
    }

    /// Holds a point again that could not be sent (stop came first), unless the pair holds a
    /// newer one.
    pub fn hold_again(&mut self, msg: OutMessage) {
        let now = Instant::now();
        let entry = self.pairs.entry(msg.subject.clone()).or_insert((now, None));
        if entry.1.is_none() {
            entry.1 = Some(msg);
        }
    }

    /// Every held point, whatever its interval (at stop).
    pub fn take_all(&mut self) -> Vec<OutMessage> {
        self.pairs
            .values_mut()
            .filter_map(|(_, h)| h.take())
            .collect()
    }

    pub fn held(&self) -> usize {
        self.pairs.values().filter(|(_, h)| h.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(subject: &str, id: u32) -> OutMessage {
        OutMessage {
            subject: subject.into(),
            msg_id: id.to_string(),
            payload: bytes::Bytes::new(),
        }
    }

    #[test]
    fn leading_edge_at_once_then_the_latest_at_the_end_of_the_interval() {
        let mut c = Conflator::new(Duration::from_millis(100));
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            c.offer(msg("p", 1), t).0.map(|m| m.msg_id),
            Some("1".into())
        );
        assert_eq!(c.offer(msg("p", 2), t + ms(10)), (None, false));
        assert_eq!(
            c.offer(msg("p", 3), t + ms(20)),
            (None, true),
            "2 conflated away"
        );
        assert_eq!(
            c.offer(msg("q", 4), t + ms(20)).0.map(|m| m.msg_id),
            Some("4".into()),
            "pairs are independent"
        );
        assert!(c.due(t + ms(99)).is_empty());
        let due: Vec<String> = c.due(t + ms(100)).into_iter().map(|m| m.msg_id).collect();
        assert_eq!(due, ["3"], "the latest held point goes out");
        // The next point within the new interval is held again.
        assert_eq!(c.offer(msg("p", 5), t + ms(150)), (None, false));
        let (out, replaced) = c.offer(msg("p", 6), t + ms(250));
        assert_eq!((out.map(|m| m.msg_id), replaced), (Some("6".into()), true));
        assert_eq!(c.held(), 0, "6 went out and the held 5 was dropped with it");
    }

    #[test]
    fn idle_pairs_are_forgotten() {
        let mut c = Conflator::new(Duration::from_millis(100));
        let t = Instant::now();
        for i in 0..10 {
            c.offer(msg(&format!("p{i}"), i), t);
        }
        c.due(t + Duration::from_millis(200));
        assert!(c.pairs.is_empty());
    }
}
