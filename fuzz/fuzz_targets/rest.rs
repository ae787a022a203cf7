//! Discovery bodies (instrument lists, 24 h volumes) of any adapter: never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spreadagg_ingest::exchange::adapter;
use spreadagg_model::ExchangeId;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(body) = std::str::from_utf8(rest) else {
        return;
    };
    let id = ExchangeId::ALL[usize::from(pick) % ExchangeId::ALL.len()];
    if let Some(a) = adapter(id) {
        let _ = a.parse_instruments(body);
        let _ = a.parse_volumes(body);
    }
});
