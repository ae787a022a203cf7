//! Any frame, to any adapter's session: the first byte picks the exchange, the rest is the
//! frame, given as binary and (when it is UTF-8) as text, several frames to one session so
//! state (sequence gates, pending requests, welcome) is exercised too. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spreadagg_ingest::exchange::{Frame, Output, adapter};
use spreadagg_ingest::symbols::SymbolTable;
use spreadagg_model::ExchangeId;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let id = ExchangeId::ALL[usize::from(pick) % ExchangeId::ALL.len()];
    let Some(adapter) = adapter(id) else {
        return;
    };
    let natives = ["BTCUSDT", "btcusdt", "BTC-USDT", "ETH-USDT", "ethusdt"];
    let symbols = SymbolTable::from_pairs(
        id,
        natives.iter().zip(["BTC-USDT", "BTC-USDT", "BTC-USDT", "ETH-USDT", "ETH-USDT"]).map(|(n, s)| (*n, s)),
    );
    let mut session = adapter.session();
    let mut out = Output::default();
    // Frames separated by a 0xFF byte go to the same session in order.
    for frame in rest.split(|b| *b == 0xFF) {
        out.clear();
        let _ = session.on_frame(Frame::Binary(frame), &symbols, 1, &mut out);
        if let Ok(text) = std::str::from_utf8(frame) {
            out.clear();
            let _ = session.on_frame(Frame::Text(text), &symbols, 1, &mut out);
        }
    }
});
