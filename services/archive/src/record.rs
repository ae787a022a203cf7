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
use crate::read::{self, ReadError};
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
    #[error("the row cannot be encoded as Parquet: {0}")]
    Encode(String),
}

impl Rejection {
    /// The `reason` label of `spreadagg_archive_rejected_total`.
    pub const fn label(&self) -> &'static str {
        match self {
            Rejection::Decode(_) => "decode",
            Rejection::Exchange(_) => "exchange",
            Rejection::Symbol => "symbol",
            Rejection::Encode(_) => "encode",
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
    /// The rows of one of this stream's files (`exchange` from its partition, where it has one).
    fn read(bytes: Bytes, exchange: Option<&str>) -> Result<Vec<Row<Self>>, ReadError>;
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
    fn read(bytes: Bytes, exchange: Option<&str>) -> Result<Vec<Row<Self>>, ReadError> {
        read::ticks(bytes, exchange.unwrap_or_default())
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
    fn read(bytes: Bytes, exchange: Option<&str>) -> Result<Vec<Row<Self>>, ReadError> {
        read::trades(bytes, exchange.unwrap_or_default())
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
    fn read(bytes: Bytes, _exchange: Option<&str>) -> Result<Vec<Row<Self>>, ReadError> {
        read::spreads(bytes)
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
    pub partition: Partition,
    pub path: Path,
    pub bytes: Bytes,
    pub rows: usize,
}

/// What a flush's encoding produced: the files, and the rows that could not be encoded
/// (with the reason), which the writer keeps aside instead of failing the whole flush.
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    pub files: Vec<EncodedFile>,
    pub rejected: Vec<RejectedRow>,
}

/// A row kept out of its file, with the message's bytes so it can be kept aside whole.
#[derive(Debug)]
pub(crate) struct RejectedRow {
    pub stream_seq: u64,
    pub reason: Rejection,
    pub payload: Bytes,
}

impl RejectedRow {
    fn new<T: Record>(row: &Row<T>, error: &EncodeError) -> Self {
        Self {
            stream_seq: row.stream_seq,
            reason: Rejection::Encode(error.to_string()),
            payload: Bytes::from(row.msg.encode_to_vec()),
        }
    }
}

/// Encodes each partition's rows as one file named after its first and last stream sequence.
/// A partition whose batch fails to encode is encoded row by row to find the rows at fault;
/// those are returned as rejected and the file is written without them. (Every value of a
/// decoded message has a column type, so this is a guard against bugs and limits, such as a
/// column's 2 GiB string offsets, not an expected path.)
pub(crate) fn encode_all<T: Record>(
    base: &Path,
    run: &str,
    replica: &str,
    groups: BTreeMap<Partition, Vec<Row<T>>>,
) -> Encoded {
    let mut out = Encoded::default();
    for (partition, mut rows) in groups {
        sort_rows(&mut rows);
        if let Err(error) = encode_rows(&rows) {
            tracing::warn!(stream = T::KIND.name(), %error, rows = rows.len(), "a batch failed to encode; isolating the rows at fault");
            rows.retain(|row| match encode_rows(std::slice::from_ref(row)) {
                Ok(_) => true,
                Err(error) => {
                    out.rejected.push(RejectedRow::new(row, &error));
                    false
                }
            });
        }
        let (Some(first), Some(last)) = (
            rows.iter().map(|r| r.stream_seq).min(),
            rows.iter().map(|r| r.stream_seq).max(),
        ) else {
            continue;
        };
        match encode_rows(&rows) {
            Ok(bytes) => out.files.push(EncodedFile {
                path: partition.file_path(
                    base,
                    T::KIND,
                    &file_name(T::KIND, first, last, run, replica),
                ),
                partition: partition.clone(),
                bytes,
                rows: rows.len(),
            }),
            // Each row encodes alone but not together: keep them all aside rather than stop.
            Err(error) => out
                .rejected
                .extend(rows.iter().map(|r| RejectedRow::new(r, &error))),
        }
    }
    out
}

fn encode_rows<T: Record>(rows: &[Row<T>]) -> Result<Bytes, EncodeError> {
    schema::to_parquet(&T::batch(rows)?)
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
        let encoded = encode_all::<Tick>(&Path::from("pre"), "0a1b", "", groups);
        assert!(encoded.rejected.is_empty());
        let files = encoded.files;
        let names: Vec<(&str, usize)> = files.iter().map(|f| (f.path.as_ref(), f.rows)).collect();
        assert_eq!(
            names,
            [
                (
                    "pre/ticks/exchange=binance/date=1970-01-01/hour=00/ticks-6-6-0a1b.parquet",
                    1
                ),
                (
                    "pre/ticks/exchange=okx/date=1970-01-01/hour=00/ticks-5-7-0a1b.parquet",
                    2
                ),
                (
                    "pre/ticks/exchange=okx/date=1970-01-01/hour=01/ticks-9-9-0a1b.parquet",
                    1
                ),
            ]
        );
        // The same rows give the same names and the same bytes: a retried flush overwrites.
        let repeat = encode_all::<Tick>(&Path::from("pre"), "0a1b", "", again).files;
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

    /// A record whose batch fails when any row is named "poison": stands in for a row the
    /// real schemas cannot encode, which no valid message produces.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Probe {
        #[prost(string, tag = "1")]
        name: String,
    }

    impl Record for Probe {
        const KIND: StreamKind = StreamKind::Trades;
        fn partition(&self) -> Result<Partition, Rejection> {
            Ok(Partition::new(Some("okx"), 0))
        }
        fn sort_key(&self) -> (&str, i64) {
            (&self.name, 0)
        }
        fn batch(rows: &[Row<Self>]) -> Result<RecordBatch, ArrowError> {
            if rows.iter().any(|r| r.msg.name == "poison") {
                return Err(ArrowError::InvalidArgumentError("poisoned".into()));
            }
            let trades: Vec<Row<Trade>> = rows
                .iter()
                .map(|r| Row {
                    stream_seq: r.stream_seq,
                    msg: Trade {
                        exchange: "okx".into(),
                        symbol: r.msg.name.clone(),
                        ..Trade::default()
                    },
                })
                .collect();
            schema::trades_batch(&trades)
        }
        fn read(_: Bytes, _: Option<&str>) -> Result<Vec<Row<Self>>, ReadError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn rows_that_cannot_be_encoded_are_kept_aside_and_the_rest_written() {
        let rows: Vec<Row<Probe>> = ["a", "poison", "b", "poison"]
            .iter()
            .zip(1u64..)
            .map(|(name, seq)| Row {
                stream_seq: seq,
                msg: Probe {
                    name: (*name).into(),
                },
            })
            .collect();
        let groups = BTreeMap::from([(Partition::new(Some("okx"), 0), rows)]);
        let encoded = encode_all::<Probe>(&Path::from(""), "0a1b", "", groups);
        let mut rejected: Vec<u64> = encoded.rejected.iter().map(|r| r.stream_seq).collect();
        rejected.sort_unstable();
        assert_eq!(rejected, [2, 4]);
        let first = &encoded.rejected[0];
        assert!(matches!(first.reason, Rejection::Encode(_)));
        assert_eq!(
            Probe::decode(first.payload.clone())
                .expect("payload kept whole")
                .name,
            "poison"
        );
        assert_eq!(encoded.files.len(), 1);
        assert_eq!(encoded.files[0].rows, 2);
        assert!(
            encoded.files[0]
                .path
                .as_ref()
                .ends_with("trades-1-3-0a1b.parquet")
        );
    }
}
