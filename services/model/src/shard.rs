//! Symbol shards: `--shard I/N` gives a replica the symbols whose stable hash is `I` modulo
//! `N`. Ingestors and engine shards use the same hash, so every replica agrees without
//! coordination.

use serde::{Deserialize, Serialize};

/// This replica's share of the symbols: `index` of `count` (`--shard I/N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// `I/N` with `I < N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("shard {s:?}: expected I/N"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("shard {s:?}: bad index"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("shard {s:?}: bad count"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {s:?}: need 0 <= I < N"));
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Whether the shard is valid (`index < count`); deserialized values are checked with it.
    pub fn is_valid(&self) -> bool {
        self.count > 0 && self.index < self.count
    }

    /// Whether this shard owns the symbol (its canonical text): FNV-1a, stable across
    /// processes, versions and machines.
    pub fn owns(&self, symbol: &str) -> bool {
        if self.count <= 1 {
            return true;
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in symbol.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % u64::from(self.count) == u64::from(self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_symbol_has_exactly_one_owner_and_the_hash_is_stable() {
        for n in 1..6 {
            for sym in ["BTC-USDT", "ETH-USDT", "X-Y", "PEPE-USDC"] {
                let owners = (0..n)
                    .filter(|&i| Shard { index: i, count: n }.owns(sym))
                    .count();
                assert_eq!(owners, 1, "{sym} over {n}");
            }
        }
        // Pinned: a change of hash would move symbols between running replicas.
        let owner = |sym: &str| (0..4).find(|&i| Shard { index: i, count: 4 }.owns(sym));
        assert_eq!(
            [owner("BTC-USDT"), owner("ETH-USDT")],
            [Some(fnv_mod("BTC-USDT", 4)), Some(fnv_mod("ETH-USDT", 4))]
        );
    }

    /// FNV-1a by its published definition (offset basis 14695981039346656037, prime
    /// 1099511628211), written independently of `owns`.
    fn fnv_mod(s: &str, n: u64) -> u32 {
        let h = s.bytes().fold(14_695_981_039_346_656_037_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(1_099_511_628_211)
        });
        u32::try_from(h % n).unwrap_or(0)
    }

    #[test]
    fn parses_i_of_n() {
        assert_eq!("1/3".parse(), Ok(Shard { index: 1, count: 3 }));
        assert!("3/3".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
        assert_eq!(Shard { index: 2, count: 5 }.to_string(), "2/5");
    }
}
