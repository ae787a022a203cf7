//! Decompression shared by the exchanges that compress their frames (HTX and BingX gzip every
//! frame; deflate is there for exchanges that negotiate it), always under a cap: a small
//! hostile frame must not inflate into gigabytes.

use std::io::Read;

/// Largest decompressed frame accepted; market-data frames are a few hundred bytes.
pub const MAX_INFLATED_BYTES: usize = 1 << 20;

/// Why a frame could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("corrupt compressed data: {0}")]
    Corrupt(String),
    #[error("inflates past {0} bytes")]
    TooLarge(usize),
}

impl CodecError {
    pub fn label(&self) -> &'static str {
        match self {
            CodecError::Corrupt(_) => "corrupt_compression",
            CodecError::TooLarge(_) => "inflated_too_large",
        }
    }
}

/// Which compression a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    /// Raw deflate (RFC 1951), as permessage-deflate and some exchanges send it.
    Deflate,
}

/// Decompresses `input` into `out` (cleared first; reuse it across frames so the hot path
/// does not allocate), refusing more than `cap` bytes.
///
/// # Errors
/// When the data is corrupt or inflates past `cap`.
pub fn inflate(
    kind: Compression,
    input: &[u8],
    cap: usize,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    out.clear();
    // Read one byte past the cap: if it arrives, the frame is too large.
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    let read = match kind {
        Compression::Gzip => flate2::read::GzDecoder::new(input)
            .take(limit)
            .read_to_end(out),
        Compression::Deflate => flate2::read::DeflateDecoder::new(input)
            .take(limit)
            .read_to_end(out),
    };
    read.map_err(|e| CodecError::Corrupt(e.to_string()))?;
    if out.len() > cap {
        out.clear();
        return Err(CodecError::TooLarge(cap));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    #[test]
    fn round_trips_both_kinds() {
        let text = br#"{"ping":1492420473027}"#;
        let mut out = Vec::new();
        inflate(Compression::Gzip, &gzip(text), 1024, &mut out).expect("gzip");
        assert_eq!(out, text);
        inflate(Compression::Deflate, &deflate(text), 1024, &mut out).expect("deflate");
        assert_eq!(out, text);
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        // 64 MiB of zeros compress to about 64 KiB.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let mut out = Vec::new();
        assert_eq!(
            inflate(Compression::Gzip, &bomb, MAX_INFLATED_BYTES, &mut out),
            Err(CodecError::TooLarge(MAX_INFLATED_BYTES))
        );
        assert!(out.is_empty());
        // Exactly at the cap is fine.
        inflate(Compression::Gzip, &gzip(&[7u8; 100]), 100, &mut out).expect("at cap");
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        for bad in [&b""[..], b"\x1f\x8b", b"not gzip at all", &gzip(b"x")[..5]] {
            assert!(
                inflate(Compression::Gzip, bad, 1024, &mut out).is_err(),
                "{bad:?}"
            );
        }
    }
}
