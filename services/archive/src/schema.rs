//! The Parquet files' columns: one Arrow schema per stream, builders from decoded wire
//! messages to a `RecordBatch`, and the Parquet encoding (zstd, row groups for scans).
//!
//! Column names are the proto field names (DESIGN.md, "Parquet"); times are
//! `Timestamp(Nanosecond, "UTC")`, prices and quantities float64, and every file carries
//! `stream_seq`, the JetStream stream sequence, so a reader can prove there are no gaps and
//! drop duplicates. The `exchange` of ticks and trades is not a column: it is the Hive
//! partition value (`exchange=<id>`), and a column of the same name would clash with
//! partition discovery in pyarrow and DuckDB.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use spreadagg_model::wire::{Side, Spread, Tick, Trade};

/// One message to archive with its stream sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<T> {
    /// The JetStream stream sequence: the `stream_seq` column.
    pub stream_seq: u64,
    /// The decoded wire message.
    pub msg: T,
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn ts(values: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from(values).with_timezone("UTC"))
}

/// A timestamp where 0 means "not sent" (proto3 has no absent scalar): NULL in the file.
fn ts_zero_is_null(values: impl Iterator<Item = i64>) -> ArrayRef {
    let values: Vec<Option<i64>> = values.map(|v| (v != 0).then_some(v)).collect();
    Arc::new(TimestampNanosecondArray::from(values).with_timezone("UTC"))
}

fn f64s(values: Vec<f64>) -> ArrayRef {
    Arc::new(Float64Array::from(values))
}

fn strs<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn seqs<T>(rows: &[Row<T>]) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(
        rows.iter().map(|r| r.stream_seq),
    ))
}

/// Ticks: `symbol, bid_px, bid_qty, ask_px, ask_qty, book_spread_pct, exchange_ts_ns,
/// recv_ts_ns, seq, stream_seq`. `exchange_ts_ns` is NULL where the exchange sent no time.
pub fn tick_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("bid_px", DataType::Float64, false),
        Field::new("bid_qty", DataType::Float64, false),
        Field::new("ask_px", DataType::Float64, false),
        Field::new("ask_qty", DataType::Float64, false),
        Field::new("book_spread_pct", DataType::Float64, false),
        Field::new("exchange_ts_ns", timestamp(), true),
        Field::new("recv_ts_ns", timestamp(), false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("stream_seq", DataType::UInt64, false),
    ]))
}

/// Trades: `symbol, price, qty, side, trade_id, exchange_ts_ns, recv_ts_ns, stream_seq`.
/// `side` is `BUY` or `SELL`, NULL when the message left it unspecified;
/// `exchange_ts_ns` is NULL when 0.
pub fn trade_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("price", DataType::Float64, false),
        Field::new("qty", DataType::Float64, false),
        Field::new("side", DataType::Utf8, true),
        Field::new("trade_id", DataType::Utf8, false),
        Field::new("exchange_ts_ns", timestamp(), true),
        Field::new("recv_ts_ns", timestamp(), false),
        Field::new("stream_seq", DataType::UInt64, false),
    ]))
}

/// Spreads: every `Spread` field in proto order, then `stream_seq`.
pub fn spread_schema() -> SchemaRef {
    let f = |name: &str| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, false),
        Field::new("exchange_a", DataType::Utf8, false),
        Field::new("exchange_b", DataType::Utf8, false),
        f("bid_a"),
        f("ask_a"),
        f("bid_b"),
        f("ask_b"),
        Field::new("ts_a_ns", timestamp(), false),
        Field::new("ts_b_ns", timestamp(), false),
        f("a_to_b_pct"),
        f("b_to_a_pct"),
        f("bid_bid_pct"),
        f("staleness_ms"),
        Field::new("triggered_by", DataType::Utf8, false),
        f("upper_band"),
        f("lower_band"),
        Field::new("ts_ns", timestamp(), false),
        Field::new("stream_seq", DataType::UInt64, false),
    ]))
}

/// The rows of one tick file, in the given order.
///
/// # Errors
/// Only on a schema/array mismatch, which would be a bug here.
pub fn ticks_batch(rows: &[Row<Tick>]) -> Result<RecordBatch, ArrowError> {
    let col = |f: fn(&Tick) -> f64| f64s(rows.iter().map(|r| f(&r.msg)).collect());
    RecordBatch::try_new(
        tick_schema(),
        vec![
            strs(rows.iter().map(|r| r.msg.symbol.as_str())),
            col(|t| t.bid_px),
            col(|t| t.bid_qty),
            col(|t| t.ask_px),
            col(|t| t.ask_qty),
            col(|t| t.book_spread_pct),
            ts_zero_is_null(rows.iter().map(|r| r.msg.exchange_ts_ns)),
            ts(rows.iter().map(|r| r.msg.recv_ts_ns).collect()),
            Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.msg.seq),
            )),
            seqs(rows),
        ],
    )
}

/// `BUY`, `SELL`, or `None` for an unspecified or unknown side.
pub fn side_label(side: i32) -> Option<&'static str> {
    match Side::try_from(side) {
        Ok(Side::Buy) => Some("BUY"),
        Ok(Side::Sell) => Some("SELL"),
        Ok(Side::Unspecified) | Err(_) => None,
    }
}

/// The rows of one trade file, in the given order.
///
/// # Errors
/// Only on a schema/array mismatch, which would be a bug here.
pub fn trades_batch(rows: &[Row<Trade>]) -> Result<RecordBatch, ArrowError> {
    let col = |f: fn(&Trade) -> f64| f64s(rows.iter().map(|r| f(&r.msg)).collect());
    let sides: StringArray = rows.iter().map(|r| side_label(r.msg.side)).collect();
    RecordBatch::try_new(
        trade_schema(),
        vec![
            strs(rows.iter().map(|r| r.msg.symbol.as_str())),
            col(|t| t.price),
            col(|t| t.qty),
            Arc::new(sides),
            strs(rows.iter().map(|r| r.msg.trade_id.as_str())),
            ts_zero_is_null(rows.iter().map(|r| r.msg.exchange_ts_ns)),
            ts(rows.iter().map(|r| r.msg.recv_ts_ns).collect()),
            seqs(rows),
        ],
    )
}

/// The rows of one spread file, in the given order.
///
/// # Errors
/// Only on a schema/array mismatch, which would be a bug here.
pub fn spreads_batch(rows: &[Row<Spread>]) -> Result<RecordBatch, ArrowError> {
    let col = |f: fn(&Spread) -> f64| f64s(rows.iter().map(|r| f(&r.msg)).collect());
    let time = |f: fn(&Spread) -> i64| ts(rows.iter().map(|r| f(&r.msg)).collect());
    RecordBatch::try_new(
        spread_schema(),
        vec![
            strs(rows.iter().map(|r| r.msg.symbol.as_str())),
            strs(rows.iter().map(|r| r.msg.exchange_a.as_str())),
            strs(rows.iter().map(|r| r.msg.exchange_b.as_str())),
            col(|s| s.bid_a),
            col(|s| s.ask_a),
            col(|s| s.bid_b),
            col(|s| s.ask_b),
            time(|s| s.ts_a_ns),
            time(|s| s.ts_b_ns),
            col(|s| s.a_to_b_pct),
            col(|s| s.b_to_a_pct),
            col(|s| s.bid_bid_pct),
            col(|s| s.staleness_ms),
            strs(rows.iter().map(|r| r.msg.triggered_by.as_str())),
            col(|s| s.upper_band),
            col(|s| s.lower_band),
            time(|s| s.ts_ns),
            seqs(rows),
        ],
    )
}

/// Why a batch could not be encoded: a bug, never bad input (every value of a decoded
/// message has a column type).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("building the Arrow batch: {0}")]
    Arrow(#[from] ArrowError),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] ParquetError),
}

/// Rows per row group: large enough for efficient scans, small enough that a reader filtering
/// by symbol (rows are sorted by symbol) skips most of a big file by its statistics.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;

/// A complete Parquet file of `batch`: zstd-compressed (level 3: most of zstd's ratio at a
/// fraction of its top levels' cost), row groups of [`ROW_GROUP_ROWS`], Arrow schema
/// embedded (so readers get the UTC timezone and unsigned types back exactly).
///
/// # Errors
/// When the Parquet writer fails (a bug, see [`EncodeError`]).
pub fn to_parquet(batch: &RecordBatch) -> Result<Bytes, EncodeError> {
    to_parquet_with(batch, Vec::new())
}

/// As [`to_parquet`], with `metadata` as the file's key-value metadata (in its footer).
///
/// # Errors
/// When the Parquet writer fails (a bug, see [`EncodeError`]).
pub fn to_parquet_with(
    batch: &RecordBatch,
    metadata: Vec<(String, String)>,
) -> Result<Bytes, EncodeError> {
    let metadata = (!metadata.is_empty()).then(|| {
        metadata
            .into_iter()
            .map(|(k, v)| KeyValue::new(k, v))
            .collect()
    });
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_key_value_metadata(metadata)
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, TimestampNanosecondType, UInt64Type};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    fn tick(symbol: &str, exchange_ts_ns: i64, recv_ts_ns: i64) -> Tick {
        Tick {
            exchange: "binance".into(),
            symbol: symbol.into(),
            bid_px: 100.0,
            bid_qty: 1.5,
            ask_px: 100.5,
            ask_qty: 2.5,
            book_spread_pct: 0.5 / 100.5 * 100.0,
            exchange_ts_ns,
            recv_ts_ns,
            seq: 77,
        }
    }

    fn read_back(bytes: Bytes) -> RecordBatch {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .expect("parquet footer")
            .build()
            .expect("reader");
        let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        assert_eq!(batches.len(), 1);
        batches.into_iter().next().expect("one batch")
    }

    #[test]
    fn tick_files_round_trip_with_utc_timestamps_and_null_exchange_time() {
        let rows = vec![
            Row {
                stream_seq: 1,
                msg: tick("BTC-USDT", 0, 1_000),
            },
            Row {
                stream_seq: 2,
                msg: tick("ETH-USDT", 900, 2_000),
            },
        ];
        let batch = ticks_batch(&rows).expect("batch");
        let back = read_back(to_parquet(&batch).expect("parquet"));
        assert_eq!(back.schema(), tick_schema());
        assert!(back.schema().field_with_name("exchange").is_err());
        let ex = back
            .column_by_name("exchange_ts_ns")
            .expect("col")
            .as_primitive::<TimestampNanosecondType>();
        assert!(ex.is_null(0), "0 means the exchange sent no time");
        assert_eq!(ex.value(1), 900);
        let recv = back
            .column_by_name("recv_ts_ns")
            .expect("col")
            .as_primitive::<TimestampNanosecondType>();
        assert_eq!(recv.values().to_vec(), [1_000, 2_000]);
        assert_eq!(
            back.column_by_name("stream_seq")
                .expect("col")
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec(),
            [1, 2]
        );
        assert_eq!(
            back.column_by_name("ask_qty")
                .expect("col")
                .as_primitive::<Float64Type>()
                .value(0),
            2.5
        );
        assert_eq!(
            back.column_by_name("symbol")
                .expect("col")
                .as_string::<i32>()
                .value(1),
            "ETH-USDT"
        );
    }

    #[test]
    fn trade_sides_are_labels_and_unspecified_is_null() {
        let trade = |side: Side| Trade {
            exchange: "okx".into(),
            symbol: "SOL-USDT".into(),
            price: 150.0,
            qty: 3.0,
            side: side as i32,
            trade_id: "t-1".into(),
            exchange_ts_ns: 5,
            recv_ts_ns: 6,
        };
        let rows: Vec<Row<Trade>> = [Side::Buy, Side::Sell, Side::Unspecified]
            .into_iter()
            .enumerate()
            .map(|(i, s)| Row {
                stream_seq: i as u64 + 1,
                msg: trade(s),
            })
            .collect();
        let back = read_back(to_parquet(&trades_batch(&rows).expect("batch")).expect("pq"));
        assert_eq!(back.schema(), trade_schema());
        let sides = back.column_by_name("side").expect("col").as_string::<i32>();
        assert_eq!(
            (sides.value(0), sides.value(1), sides.is_null(2)),
            ("BUY", "SELL", true)
        );
        assert_eq!(side_label(99), None);
    }

    #[test]
    fn spread_columns_follow_the_proto() {
        let s = Spread {
            symbol: "BTC-USDT".into(),
            exchange_a: "binance".into(),
            exchange_b: "okx".into(),
            bid_a: 1.0,
            ask_a: 2.0,
            bid_b: 3.0,
            ask_b: 4.0,
            ts_a_ns: 10,
            ts_b_ns: 11,
            a_to_b_pct: 5.0,
            b_to_a_pct: 6.0,
            bid_bid_pct: 7.0,
            staleness_ms: 8.0,
            triggered_by: "okx".into(),
            upper_band: 9.0,
            lower_band: -9.0,
            ts_ns: 12,
        };
        let rows = vec![Row {
            stream_seq: 42,
            msg: s,
        }];
        let back = read_back(to_parquet(&spreads_batch(&rows).expect("batch")).expect("pq"));
        assert_eq!(back.schema(), spread_schema());
        let names: Vec<&str> = back
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "symbol",
                "exchange_a",
                "exchange_b",
                "bid_a",
                "ask_a",
                "bid_b",
                "ask_b",
                "ts_a_ns",
                "ts_b_ns",
                "a_to_b_pct",
                "b_to_a_pct",
                "bid_bid_pct",
                "staleness_ms",
                "triggered_by",
                "upper_band",
                "lower_band",
                "ts_ns",
                "stream_seq"
            ]
        );
        assert_eq!(
            back.column_by_name("lower_band")
                .expect("col")
                .as_primitive::<Float64Type>()
                .value(0),
            -9.0
        );
    }

    #[test]
    fn files_are_zstd_compressed() {
        let rows = vec![Row {
            stream_seq: 1,
            msg: tick("BTC-USDT", 1, 2),
        }];
        let bytes = to_parquet(&ticks_batch(&rows).expect("batch")).expect("pq");
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).expect("footer");
        let meta = builder.metadata();
        assert_eq!(meta.num_row_groups(), 1);
        assert!(
            matches!(
                meta.row_group(0).column(0).compression(),
                Compression::ZSTD(_)
            ),
            "{:?}",
            meta.row_group(0).column(0).compression()
        );
    }
}
