//! Decompression of hostile input: never panics, never returns more than the cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spreadagg_ingest::codec::{Compression, inflate};

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    for kind in [Compression::Gzip, Compression::Deflate] {
        for cap in [0, 64, 1 << 20] {
            if inflate(kind, data, cap, &mut out).is_ok() {
                assert!(out.len() <= cap);
            }
        }
    }
});
