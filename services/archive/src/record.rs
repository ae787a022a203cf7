//! What an archived message becomes: why a payload can never be archived ([`Rejection`],
//! counted), the partition and sort order of each wire message ([`Record`]), and the encoding
//! of a flush into one Parquet file per partition.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use bytes::Bytes;
use object_store::path::Path;
use spreadagg_model::wire::{Spread, Tick, Trade};

use crate::partition::{Partition, StreamKind, file_name, valid_exchange};
use crate::schema::{self, EncodeError, Row};

/// Why a payload can never be archived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("payload is not a valid protobuf message: {0}")]
    Decode(String),
    #[error("exchange id {0:?} cannot name a partition")]
    Exchange(String),
    #[error("symbol is empty")]
    Symbol,
}

impl Rejection {
    /// The `reason` label of `spreadagg_archive_rejected_total`.
    pub const fn label(&self) -> &'static str {
        match self {
            Rejection::Decode(_) => "decode",
            Rejection::Exchange(_) => "exchange",
            Rejection::Symbol => "symbol",
        }
    }
}

/// A wire message that is archived: where its rows go and how they become a batch.
pub(crate) trait Record: prost::Message + Default + Send + Sync + 'static {
    const KIND: StreamKind;
    /// The partition of a decoded message, or why it has none.
    fn partition(&self) -> Result<Partition, Rejection>;
    /// Rows in a file are sorted by this (symbol, then the partitioning time), then by
    /// stream sequence.
    fn sort_key(&self) -> (&str, i64);
    fn batch(rows: &[Row<Self>]) -> Result<RecordBatch, ArrowError>;
}

fn symbol_present(symbol: &str) -> Result<(), Rejection> {
    if symbol.is_empty() {
        Err(Rejection::Symbol)
    } else {
        Ok(())
    }
}

fn exchange_partition(exchange: &str, ts_ns: i64) -> Result<Partition, Rejection> {
    if valid_exchange(exchange) {
        Ok(Partition::new(Some(exchange), ts_ns))
    } else {
        Err(Rejection::Exchange(exchange.chars().take(64).collect()))
    }
}

impl Record for Tick {
    const KIND: StreamKind = StreamKind::Ticks;
    fn partition(&self) -> Result<Partition, Rejection> {
        symbol_present(&self.symbol)?;
        exchange_partition(&self.exchange, self.recv_ts_ns)
    }
    fn sort_key(&self) -> (&str, i64) {
        (&self.symbol, self.recv_ts_ns)
    }
    fn batch(rows: &[Row<Self>]) -> Result<RecordBatch, ArrowError> {
        schema::ticks_batch(rows)
    }
}

impl Record for Trade {
    const KIND: StreamKind = StreamKind::Trades;
    fn partition(&self) -> Result<Partition, Rejection> {
        symbol_present(&self.symbol)?;
        exchange_partition(&self.exchange, self.recv_ts_ns)
    }
    fn sort_key(&self) -> (&str, i64) {
        (&self.symbol, self.recv_ts_ns)
    }
    fn batch(rows: &[Row<Self>]) -> Result<RecordBatch, ArrowError> {
        schema::trades_batch(rows)
    }
}

impl Record for Spread {
    const KIND: StreamKind = StreamKind::Spreads;
    fn partition(&self) -> Result<Partition, Rejection> {
        symbol_present(&self.symbol)?;
        Ok(Partition::new(None, self.ts_ns))
    }
    fn sort_key(&self) -> (&str, i64) {
        (&self.symbol, self.ts_ns)
    }
    fn batch(rows: &[Row<Self>]) -> Result<RecordBatch, ArrowError> {
        schema::spreads_batch(rows)
    }
}

/// Decodes a payload and finds its partition.
///
/// # Errors
/// The [`Rejection`] when the payload can never be archived.
pub(crate) fn decode<T: Record>(payload: &[u8]) -> Result<(T, Partition), Rejection> {
    let msg = T::decode(payload).map_err(|e| Rejection::Decode(e.to_string()))?;
    let partition = msg.partition()?;
    Ok((msg, partition))
}

/// Sorts rows for a file: symbol, then time, then stream sequence.
pub(crate) fn sort_rows<T: Record>(rows: &mut [Row<T>]) {
    rows.sort_by(|a, b| {
        a.msg
            .sort_key()
            .cmp(&b.msg.sort_key())
            .then(a.stream_seq.cmp(&b.stream_seq))
    });
}

/// One encoded Parquet file, ready to put.
#[derive(Debug)]
pub(crate) struct EncodedFile {
    pub path: Path,
    pub bytes: Bytes,
    pub rows: usize,
}

/// Encodes each partition's rows as one file named after its first and last stream sequence.
pub(crate) fn encode_all<T: Record>(
    base: &Path,
    groups: BTreeMap<Partition, Vec<Row<T>>>,
) -> Result<Vec<EncodedFile>, EncodeError> {
    let mut files = Vec::with_capacity(groups.len());
    for (partition, mut rows) in groups {
        let (Some(first), Some(last)) = (
            rows.iter().map(|r| r.stream_seq).min(),
            rows.iter().map(|r| r.stream_seq).max(),
        ) else {
            continue;
        };
        sort_rows(&mut rows);
        let batch = T::batch(&rows)?;
        files.push(EncodedFile {
            path: partition.file_path(base, T::KIND, &file_name(T::KIND, first, last)),
            bytes: schema::to_parquet(&batch)?,
            rows: rows.len(),
        });
    }
    Ok(files)
}

/// Counts a rejection in `spreadagg_archive_rejected_total{stream,reason}`.
pub(crate) fn count_rejection(kind: StreamKind, rejection: &Rejection) {
    metrics::counter!(
        "spreadagg_archive_rejected_total",
        "stream" => kind.name(),
        "reason" => rejection.label()
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn tick(exchange: &str, symbol: &str, recv_ts_ns: i64) -> Tick {
        Tick {
            exchange: exchange.into(),
            symbol: symbol.into(),
            bid_px: 1.0,
            ask_px: 2.0,
            recv_ts_ns,
            ..Tick::default()
        }
    }

    #[test]
    fn bad_payloads_are_rejected_with_a_reason() {
        let garbage = decode::<Tick>(b"not a protobuf").expect_err("garbage");
        assert_eq!(garbage.label(), "decode");
        let truncated = decode::<Trade>(&[0xff; 8]).expect_err("truncated varint");
        assert_eq!(truncated.label(), "decode");
        // An empty payload decodes to the default message, which has no symbol.
        assert_eq!(decode::<Spread>(b""), Err(Rejection::Symbol));
        let no_exchange = tick("", "BTC-USDT", 1).encode_to_vec();
        assert_eq!(
            decode::<Tick>(&no_exchange),
            Err(Rejection::Exchange(String::new()))
        );
        let escaping = tick("../etc", "BTC-USDT", 1).encode_to_vec();
        assert_eq!(
            decode::<Tick>(&escaping)
                .map(|_| ())
                .expect_err("path")
                .label(),
            "exchange"
        );
    }

    #[test]
    fn good_payloads_decode_to_their_partition() {
        let t = tick("binance", "BTC-USDT", 1_735_804_799_999_999_999);
        let (back, partition) = decode::<Tick>(&t.encode_to_vec()).expect("valid");
        assert_eq!(back, t);
        assert_eq!(
            partition.segments(StreamKind::Ticks),
            ["ticks", "exchange=binance", "date=2025-01-02", "hour=07"]
        );
    }

    #[test]
    fn rows_sort_by_symbol_then_time_then_sequence() {
        let mut rows = vec![
            Row {
                stream_seq: 4,
                msg: tick("okx", "ETH-USDT", 10),
            },
            Row {
                stream_seq: 3,
                msg: tick("okx", "BTC-USDT", 20),
            },
            Row {
                stream_seq: 2,
                msg: tick("okx", "BTC-USDT", 10),
            },
            Row {
                stream_seq: 1,
                msg: tick("okx", "BTC-USDT", 20),
            },
        ];
        sort_rows(&mut rows);
        let order: Vec<u64> = rows.iter().map(|r| r.stream_seq).collect();
        assert_eq!(order, [2, 1, 3, 4]);
    }

    #[test]
    fn one_file_per_partition_named_by_its_sequences() {
        let hour = 3_600_000_000_000;
        let mut groups: BTreeMap<Partition, Vec<Row<Tick>>> = BTreeMap::new();
        for (seq, exchange, ts) in [
            (5, "okx", 0),
            (6, "binance", 0),
            (7, "okx", 0),
            (9, "okx", hour),
        ] {
            let msg = tick(exchange, "BTC-USDT", ts);
            let partition = msg.partition().expect("valid");
            groups.entry(partition).or_default().push(Row {
                stream_seq: seq,
                msg,
            });
        }
        let again = groups.clone();
        let files = encode_all::<Tick>(&Path::from("pre"), groups).expect("encodes");
        let names: Vec<(&str, usize)> = files.iter().map(|f| (f.path.as_ref(), f.rows)).collect();
        assert_eq!(
            names,
            [
                (
                    "pre/ticks/exchange=binance/date=1970-01-01/hour=00/ticks-6-6.parquet",
                    1
                ),
                (
                    "pre/ticks/exchange=okx/date=1970-01-01/hour=00/ticks-5-7.parquet",
                    2
                ),
                (
                    "pre/ticks/exchange=okx/date=1970-01-01/hour=01/ticks-9-9.parquet",
                    1
                ),
            ]
        );
        // The same rows give the same names and the same bytes: a retried flush overwrites.
        let repeat = encode_all::<Tick>(&Path::from("pre"), again).expect("encodes");
        for (a, b) in files.iter().zip(&repeat) {
            assert_eq!((&a.path, &a.bytes), (&b.path, &b.bytes));
        }
    }

    #[test]
    fn rejections_are_counted_by_stream_and_reason() {
        use metrics_exporter_prometheus::PrometheusBuilder;
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let rejection = decode::<Tick>(b"not a protobuf").expect_err("garbage");
            count_rejection(StreamKind::Ticks, &rejection);
        });
        let text = handle.render();
        assert!(
            text.lines()
                .any(|l| l.starts_with("spreadagg_archive_rejected_total")
                    && l.contains("stream=\"ticks\"")
                    && l.contains("reason=\"decode\"")
                    && l.ends_with(" 1")),
            "{text}"
        );
    }
}
