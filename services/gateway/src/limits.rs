//! Admission: the cap on connected clients (WebSocket sessions and gRPC streams alike), the
//! cap per client IP address, and each session's request rate.
//!
//! Written here rather than taken from a crate: tower's `ConcurrencyLimit` counts requests,
//! not long-lived sessions per peer address, and a rate-limiting crate (governor) would bring
//! a keyed store we do not need for one bucket owned by one session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::hub::queue::lock;

/// Why a client was refused at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("too many clients")]
    Full,
    #[error("too many connections from this address")]
    PerIp,
    #[error("this address was closed for abuse a moment ago; retry later")]
    Penalized,
}

impl Refused {
    /// The `reason` label of `spreadagg_gateway_rejected_total`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refused::Full => "max_clients",
            Refused::PerIp => "max_connections_per_ip",
            Refused::Penalized => "penalized",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Addresses refused until a moment (their client was closed for flooding or huge
    /// frames), so that a reconnect loop costs an HTTP refusal, not a session.
    penalized: HashMap<IpAddr, Instant>,
}

/// Addresses remembered in the penalty box at most (expired ones make room; past it, no more
/// are added).
const MAX_PENALIZED: usize = 10_000;
/// How long an address is refused after its client was closed for abuse.
pub(crate) const PENALTY: Duration = Duration::from_secs(10);

/// Counts connected clients, in all and per address.
#[derive(Debug)]
pub(crate) struct Admission {
    counts: Mutex<Counts>,
    max_total: usize,
    /// 0: no cap per address.
    max_per_ip: usize,
}

/// A client's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = lock(&self.admission.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// IPv6 clients are counted per /64, the block one subscriber usually holds, so that one
/// host cannot take every slot by cycling through its addresses.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(Counts::default()),
            max_total,
            max_per_ip,
        })
    }

    /// Takes a place for a client from `ip`.
    ///
    /// # Errors
    /// When the gateway or this address is at its cap.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refused> {
        let ip = key(ip);
        let mut c = lock(&self.counts);
        if let Some(until) = c.penalized.get(&ip) {
            if Instant::now() < *until {
                return Err(Refused::Penalized);
            }
            c.penalized.remove(&ip);
        }
        if c.total >= self.max_total {
            return Err(Refused::Full);
        }
        let n = c.per_ip.get(&ip).copied().unwrap_or(0);
        if self.max_per_ip > 0 && n >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        c.total += 1;
        c.per_ip.insert(ip, n + 1);
        Ok(Permit {
            admission: Arc::clone(self),
            ip,
        })
    }

    /// Refuses new clients from `ip` for [`PENALTY`].
    pub(crate) fn penalize(&self, ip: IpAddr) {
        let (ip, now) = (key(ip), Instant::now());
        let mut c = lock(&self.counts);
        if c.penalized.len() >= MAX_PENALIZED {
            c.penalized.retain(|_, until| *until > now);
        }
        if c.penalized.len() < MAX_PENALIZED || c.penalized.contains_key(&ip) {
            c.penalized.insert(ip, now + PENALTY);
        }
    }

    /// Connected clients.
    pub(crate) fn connected(&self) -> usize {
        lock(&self.counts).total
    }
}

/// A token bucket: `rate` requests a second on average, `burst` at once. Owned by one session.
#[derive(Debug)]
pub(crate) struct RateLimit {
    /// Requests refused within the current second ...
    refused_in_window: u32,
    window_start: Instant,
    /// ... past which the client counts as flooding.
    flood_after: u32,
    tokens: f64,
    burst: f64,
    rate: f64,
    at: Instant,
}

impl RateLimit {
    /// `flood_after`: refusals in a row that make a flood; set it above anything a client can
    /// have pipelined in good faith before it read its first refusal.
    pub(crate) fn new(rate: f64, burst: u32, flood_after: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            refused_in_window: 0,
            window_start: now,
            flood_after: flood_after.max(1),
            tokens: burst,
            burst,
            rate,
            at: now,
        }
    }

    /// Takes `n` tokens if there are so many (a cost above the burst is capped to it).
    pub(crate) fn allow_n(&mut self, n: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let n = f64::from(n).min(self.burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
                self.window_start = now;
                self.refused_in_window = 0;
            }
            self.refused_in_window = self.refused_in_window.saturating_add(1);
            false
        }
    }

    /// Whether the client keeps sending past its refusals: more refused within a second than
    /// `flood_after` (allowed requests in between do not excuse them, so a flood just above
    /// the rate is caught too). Such a client is closed rather than answered forever.
    pub(crate) fn flooding(&self) -> bool {
        self.refused_in_window > self.flood_after
    }

    /// Takes a token if there is one.
    #[cfg(test)]
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        self.allow_n(1, now)
    }

    /// How long until `n` tokens are there (for messages).
    pub(crate) fn wait(&self, n: u32) -> Duration {
        let n = f64::from(n).min(self.burst);
        if self.tokens >= n || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64((n - self.tokens) / self.rate).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_all_and_per_address_and_places_come_back() {
        let a = Admission::new(3, 2);
        let one: IpAddr = "10.0.0.1".parse().expect("ip");
        let two: IpAddr = "10.0.0.2".parse().expect("ip");
        let p1 = a.admit(one).expect("first");
        let p2 = a.admit(one).expect("second");
        assert_eq!(a.admit(one).err(), Some(Refused::PerIp));
        let p3 = a.admit(two).expect("another address");
        assert_eq!(a.admit(two).err(), Some(Refused::Full));
        drop(p1);
        assert_eq!(a.connected(), 2);
        let _p4 = a.admit(one).expect("a place came back");
        drop((p2, p3));
        assert_eq!(a.connected(), 1);
    }

    #[test]
    fn a_penalized_address_is_refused_and_others_are_not() {
        let a = Admission::new(10, 0);
        let bad: IpAddr = "10.0.0.9".parse().expect("ip");
        let fine: IpAddr = "10.0.0.8".parse().expect("ip");
        a.penalize(bad);
        assert_eq!(a.admit(bad).err(), Some(Refused::Penalized));
        assert!(a.admit(fine).is_ok());
    }

    #[test]
    fn ipv6_addresses_of_one_block_share_a_cap() {
        let a = Admission::new(10, 1);
        let x: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let y: IpAddr = "2001:db8:1:2::ffff".parse().expect("ip");
        let z: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        let _px = a.admit(x).expect("first");
        assert_eq!(a.admit(y).err(), Some(Refused::PerIp));
        let _pz = a.admit(z).expect("another /64");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        let _pm = a.admit(mapped).expect("v4-mapped");
        assert_eq!(
            a.admit("10.0.0.1".parse().expect("ip")).err(),
            Some(Refused::PerIp)
        );
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10.0, 5, 11, t0);
        assert_eq!((0..8).filter(|_| r.allow(t0)).count(), 5, "the burst");
        assert!(r.wait(1) > Duration::ZERO);
        assert!(r.wait(5) > r.wait(1));
        let later = t0 + Duration::from_millis(300);
        assert_eq!((0..3).filter(|_| r.allow(later)).count(), 3, "10 a second");
        for _ in 0..8 {
            assert!(!r.allow(later));
        }
        assert!(
            !r.flooding(),
            "eleven refused this second (3 + 8): not more than allowed"
        );
        assert!(
            r.allow(later + Duration::from_millis(150)),
            "a token came back"
        );
        assert!(!r.allow(later + Duration::from_millis(150)));
        assert!(
            r.flooding(),
            "twelve refused within a second, allowed ones between or not"
        );
        let calm = later + Duration::from_secs(2);
        for _ in 0..5 {
            assert!(r.allow(calm));
        }
        assert!(!r.allow(calm));
        assert!(
            !r.flooding(),
            "a refusal a calm second later opens a new window"
        );
        let much_later = later + Duration::from_secs(60);
        assert_eq!(
            (0..8).filter(|_| r.allow(much_later)).count(),
            5,
            "never above the burst"
        );
    }
}
