//! Decompression shared by the exchanges that compress their frames (HTX and BingX gzip every
//! frame; deflate is there for exchanges that negotiate it), always under a cap: a small
//! hostile frame must not inflate into gigabytes.

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

/// Decompresses `input` into `out` (cleared first), refusing more than `cap` bytes; a fresh
/// decoder each call. Sessions keep an [`Inflater`] instead, which reuses its state.
///
/// # Errors
/// When the data is corrupt or inflates past `cap`.
pub fn inflate(
    kind: Compression,
    input: &[u8],
    cap: usize,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    Inflater::default().inflate(kind, input, cap, out)
}

/// A decompressor whose inflate state (tens of KiB, which flate2 allocates and initialises
/// per decoder; with miniz_oxide that was about 10 µs, the whole cost of an HTX frame) is
/// reset, not rebuilt, per frame. Gzip's header and trailer (RFC 1952) are read here: the
/// header's optional fields skipped, the trailer's CRC-32 (crc32fast) and length checked.
pub struct Inflater {
    raw: flate2::Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Self {
            raw: flate2::Decompress::new(false),
        }
    }
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

/// Output grows by at most this much per step, so a bomb is caught within one step of the cap.
const STEP: usize = 16 * 1024;

fn corrupt(why: &str) -> CodecError {
    CodecError::Corrupt(why.to_owned())
}

/// The deflate data after a gzip header.
fn gzip_body(input: &[u8]) -> Result<&[u8], CodecError> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    let header = input
        .get(..10)
        .ok_or_else(|| corrupt("gzip header truncated"))?;
    if header[0] != 0x1f || header[1] != 0x8b {
        return Err(corrupt("not gzip (bad magic)"));
    }
    if header[2] != 8 {
        return Err(corrupt("gzip method is not deflate"));
    }
    let flags = header[3];
    if flags & 0xe0 != 0 {
        return Err(corrupt("gzip reserved flags set"));
    }
    let mut rest = &input[10..];
    if flags & FEXTRA != 0 {
        let len = rest
            .get(..2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
            .ok_or_else(|| corrupt("gzip extra field truncated"))?;
        rest = rest
            .get(2 + len..)
            .ok_or_else(|| corrupt("gzip extra field truncated"))?;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let end = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| corrupt("gzip name or comment unterminated"))?;
            rest = &rest[end + 1..];
        }
    }
    if flags & FHCRC != 0 {
        rest = rest
            .get(2..)
            .ok_or_else(|| corrupt("gzip header crc truncated"))?;
    }
    Ok(rest)
}

impl Inflater {
    /// Decompresses `input` into `out` (cleared first; reuse it across frames so the hot path
    /// does not allocate), refusing more than `cap` bytes.
    ///
    /// # Errors
    /// When the data is corrupt, truncated, fails its gzip checksum, or inflates past `cap`.
    pub fn inflate(
        &mut self,
        kind: Compression,
        input: &[u8],
        cap: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        out.clear();
        let body = match kind {
            Compression::Gzip => gzip_body(input)?,
            Compression::Deflate => input,
        };
        self.raw.reset(false);
        let result = self.run(body, cap, out).and_then(|consumed| match kind {
            Compression::Deflate => Ok(()),
            Compression::Gzip => {
                let trailer = body
                    .get(consumed..consumed + 8)
                    .ok_or_else(|| corrupt("gzip trailer truncated"))?;
                let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
                let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
                // crc32fast, not flate2's Crc: with the zlib-rs backend that one copies its
                // input first, a quarter of an HTX frame's cost (measured with perf).
                // ISIZE is the length modulo 2^32.
                if crc32fast::hash(out) != crc || size != out.len() as u32 {
                    return Err(corrupt("gzip checksum mismatch"));
                }
                Ok(())
            }
        });
        if result.is_err() {
            out.clear();
        }
        result
    }

    /// Inflates the raw deflate stream; returns how many input bytes it used.
    fn run(&mut self, body: &[u8], cap: usize, out: &mut Vec<u8>) -> Result<usize, CodecError> {
        loop {
            if out.len() > cap {
                return Err(CodecError::TooLarge(cap));
            }
            out.reserve_exact((cap + 1 - out.len()).clamp(1, STEP));
            let consumed = usize::try_from(self.raw.total_in()).unwrap_or(usize::MAX);
            let produced_before = out.len();
            let input = body.get(consumed..).unwrap_or_default();
            let status = self
                .raw
                .decompress_vec(input, out, flate2::FlushDecompress::None)
                .map_err(|e| CodecError::Corrupt(e.to_string()))?;
            if out.len() > cap {
                return Err(CodecError::TooLarge(cap));
            }
            let now_consumed = usize::try_from(self.raw.total_in()).unwrap_or(usize::MAX);
            match status {
                flate2::Status::StreamEnd => return Ok(now_consumed),
                // No progress although there was room for output: the stream is truncated.
                _ if now_consumed == consumed && out.len() == produced_before => {
                    return Err(corrupt("deflate stream truncated"));
                }
                _ => {}
            }
        }
    }
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
    fn a_reused_inflater_matches_a_fresh_decoder_and_checks_the_trailer() {
        let mut inflater = Inflater::default();
        let mut out = Vec::new();
        for text in [&b"{}"[..], br#"{"ping":1}"#, &[b'x'; 70_000][..], b""] {
            inflater
                .inflate(Compression::Gzip, &gzip(text), MAX_INFLATED_BYTES, &mut out)
                .expect("gzip");
            assert_eq!(out, text);
            inflater
                .inflate(
                    Compression::Deflate,
                    &deflate(text),
                    MAX_INFLATED_BYTES,
                    &mut out,
                )
                .expect("deflate");
            assert_eq!(out, text);
        }
        // A flipped byte in the CRC, or a wrong length, is refused.
        let mut bad = gzip(b"hello");
        let n = bad.len();
        bad[n - 8] ^= 1;
        assert!(
            inflater
                .inflate(Compression::Gzip, &bad, 1024, &mut out)
                .is_err()
        );
        let mut bad = gzip(b"hello");
        bad[n - 1] ^= 1;
        assert!(
            inflater
                .inflate(Compression::Gzip, &bad, 1024, &mut out)
                .is_err()
        );
        // Optional header fields (name, comment, extra) are skipped.
        let mut e = flate2::GzBuilder::new()
            .filename("f.json")
            .comment("c")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::fast());
        e.write_all(b"named").expect("write");
        let named = e.finish().expect("finish");
        inflater
            .inflate(Compression::Gzip, &named, 1024, &mut out)
            .expect("named");
        assert_eq!(out, b"named");
        // And the cap holds with a reused state too.
        let bomb = gzip(&vec![0u8; 8 << 20]);
        assert_eq!(
            inflater.inflate(Compression::Gzip, &bomb, MAX_INFLATED_BYTES, &mut out),
            Err(CodecError::TooLarge(MAX_INFLATED_BYTES))
        );
        assert!(out.is_empty());
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
