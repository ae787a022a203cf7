//! The public tokens `POST /api/v1/bullet-public` hands out, remembered until they expire.
//!
//! KuCoin: a token is valid for 24 hours and may be used for any number of connections in
//! that time; a connection dialled with an expired or unknown token gets
//! `{"id":"<connectId>","type":"error","code":401,"data":"token is expired"}` instead of the
//! welcome (what clients report seeing: knowm/XChange #4740, ccxt #19749).
//!
//! The store is bounded: at most [`MAX_TOKENS`] are remembered, the oldest forgotten first.
//! Every token lives equally long, so issue order is expiry order and one queue serves both.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// How long a token stays valid.
pub(crate) const TOKEN_TTL: Duration = Duration::from_secs(24 * 3_600);
/// Tokens remembered at most; past it the oldest is forgotten (its holder must fetch again).
pub(crate) const MAX_TOKENS: usize = 10_000;
/// Longest token looked up; anything longer is not one of ours.
const MAX_TOKEN_LEN: usize = 256;

/// Why a token does not admit a connection: the `data` of KuCoin's 401 error frame.
pub(crate) const EXPIRED: &str = "token is expired";

/// Issued tokens and when each was issued.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    issued: HashMap<String, Instant>,
    order: VecDeque<(String, Instant)>,
}

impl TokenStore {
    /// Forgets expired tokens (and, past the bound, the oldest).
    fn prune(&mut self, now: Instant) {
        while let Some((token, at)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) >= TOKEN_TTL;
            if !expired && self.order.len() < MAX_TOKENS {
                break;
            }
            // Only remove the map entry if it is this issue (a token is never reissued, but
            // be safe against a random collision).
            if self.issued.get(token) == Some(at) {
                self.issued.remove(token);
            }
            self.order.pop_front();
        }
    }

    /// Issues and remembers a fresh random token.
    pub(crate) fn issue(&mut self, now: Instant) -> String {
        self.prune(now);
        let token = format!(
            "{:032x}{:032x}.sim",
            rand::random::<u128>(),
            rand::random::<u128>()
        );
        self.issued.insert(token.clone(), now);
        self.order.push_back((token.clone(), now));
        token
    }

    /// Whether `token` admits a connection now.
    pub(crate) fn is_valid(&self, token: &str, now: Instant) -> bool {
        token.len() <= MAX_TOKEN_LEN
            && self
                .issued
                .get(token)
                .is_some_and(|at| now.saturating_duration_since(*at) < TOKEN_TTL)
    }

    /// Forgets one token, so that it admits nothing any more (as if it had expired).
    pub(crate) fn revoke(&mut self, token: &str) {
        self.issued.remove(token);
    }

    /// Tokens remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.issued.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokens_are_fresh_and_expire_after_a_day() {
        let mut store = TokenStore::default();
        let t0 = Instant::now();
        let a = store.issue(t0);
        let b = store.issue(t0);
        assert_ne!(a, b, "every call gets its own token");
        assert!(store.is_valid(&a, t0 + TOKEN_TTL - Duration::from_secs(1)));
        assert!(!store.is_valid(&a, t0 + TOKEN_TTL), "expired at 24 h");
        assert!(!store.is_valid("not-a-token", t0));
        assert!(!store.is_valid(&"x".repeat(10_000), t0));
        // Issuing after the expiry forgets the expired ones.
        let c = store.issue(t0 + TOKEN_TTL);
        assert_eq!(store.len(), 1);
        assert!(store.is_valid(&c, t0 + TOKEN_TTL));
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_is_bounded_and_forgets_the_oldest() {
        let mut store = TokenStore::default();
        let t0 = Instant::now();
        let first = store.issue(t0);
        for _ in 0..MAX_TOKENS {
            store.issue(t0);
        }
        assert_eq!(store.len(), MAX_TOKENS);
        assert!(!store.is_valid(&first, t0), "the oldest was forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_revoked_token_admits_nothing() {
        let mut store = TokenStore::default();
        let t0 = Instant::now();
        let a = store.issue(t0);
        store.revoke(&a);
        assert!(!store.is_valid(&a, t0));
    }
}
