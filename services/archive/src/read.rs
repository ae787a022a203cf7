//! Reading archived files back into wire messages: the inverse of [`crate::schema`], for
//! `replay` (and anything else that needs the messages rather than the columns). The
//! exchange of ticks and trades comes from the file's `exchange=` partition, as it is not a
//! column.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampNanosecondType, UInt64Type};
use arrow_array::{Array, RecordBatch};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use spreadagg_model::wire::{Side, Spread, Tick, Trade};

use crate::schema::Row;

/// Why a file could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(String);

fn missing(name: &str) -> ReadError {
    ReadError(format!("column {name} is missing or has another type"))
}

fn f64_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a [f64], ReadError> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Float64Type>())
        .map(|a| a.values().as_ref())
        .ok_or_else(|| missing(name))
}

fn u64_col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a [u64], ReadError> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .map(|a| a.values().as_ref())
        .ok_or_else(|| missing(name))
}

/// A timestamp column; NULL reads as 0 (the proto's "not sent").
fn ts_col(b: &RecordBatch, name: &str) -> Result<Vec<i64>, ReadError> {
    let a = b
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or_else(|| missing(name))?;
    Ok((0..a.len())
        .map(|i| if a.is_null(i) { 0 } else { a.value(i) })
        .collect())
}

fn str_col(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, ReadError> {
    let a = b
        .column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| missing(name))?;
    Ok((0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i).to_owned()))
        .collect())
}

fn batches(bytes: Bytes) -> Result<Vec<RecordBatch>, ReadError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|builder| builder.build())
        .map_err(|e| ReadError(e.to_string()))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ReadError(e.to_string()))
}

/// The ticks of one file of partition `exchange=<exchange>`.
///
/// # Errors
/// When the bytes are not a tick file of this archive.
pub fn ticks(bytes: Bytes, exchange: &str) -> Result<Vec<Row<Tick>>, ReadError> {
    let mut out = Vec::new();
    for b in batches(bytes)? {
        let symbol = str_col(&b, "symbol")?;
        let (bid_px, bid_qty) = (f64_col(&b, "bid_px")?, f64_col(&b, "bid_qty")?);
        let (ask_px, ask_qty) = (f64_col(&b, "ask_px")?, f64_col(&b, "ask_qty")?);
        let book = f64_col(&b, "book_spread_pct")?;
        let (ex_ts, recv_ts) = (ts_col(&b, "exchange_ts_ns")?, ts_col(&b, "recv_ts_ns")?);
        let (seq, stream_seq) = (u64_col(&b, "seq")?, u64_col(&b, "stream_seq")?);
        for i in 0..b.num_rows() {
            out.push(Row {
                stream_seq: stream_seq[i],
                msg: Tick {
                    exchange: exchange.to_owned(),
                    symbol: symbol[i].clone().unwrap_or_default(),
                    bid_px: bid_px[i],
                    bid_qty: bid_qty[i],
                    ask_px: ask_px[i],
                    ask_qty: ask_qty[i],
                    book_spread_pct: book[i],
                    exchange_ts_ns: ex_ts[i],
                    recv_ts_ns: recv_ts[i],
                    seq: seq[i],
                },
            });
        }
    }
    Ok(out)
}

/// The trades of one file of partition `exchange=<exchange>`.
///
/// # Errors
/// When the bytes are not a trade file of this archive.
pub fn trades(bytes: Bytes, exchange: &str) -> Result<Vec<Row<Trade>>, ReadError> {
    let mut out = Vec::new();
    for b in batches(bytes)? {
        let (symbol, side, id) = (
            str_col(&b, "symbol")?,
            str_col(&b, "side")?,
            str_col(&b, "trade_id")?,
        );
        let (price, qty) = (f64_col(&b, "price")?, f64_col(&b, "qty")?);
        let (ex_ts, recv_ts) = (ts_col(&b, "exchange_ts_ns")?, ts_col(&b, "recv_ts_ns")?);
        let stream_seq = u64_col(&b, "stream_seq")?;
        for i in 0..b.num_rows() {
            let side = match side[i].as_deref() {
                Some("BUY") => Side::Buy,
                Some("SELL") => Side::Sell,
                _ => Side::Unspecified,
            };
            out.push(Row {
                stream_seq: stream_seq[i],
                msg: Trade {
                    exchange: exchange.to_owned(),
                    symbol: symbol[i].clone().unwrap_or_default(),
                    price: price[i],
                    qty: qty[i],
                    side: side as i32,
                    trade_id: id[i].clone().unwrap_or_default(),
                    exchange_ts_ns: ex_ts[i],
                    recv_ts_ns: recv_ts[i],
                },
            });
        }
    }
    Ok(out)
}

/// The spreads of one file.
///
/// # Errors
/// When the bytes are not a spread file of this archive.
pub fn spreads(bytes: Bytes) -> Result<Vec<Row<Spread>>, ReadError> {
    let mut out = Vec::new();
    for b in batches(bytes)? {
        let s = |n| str_col(&b, n);
        let (symbol, ea, eb, trig) = (
            s("symbol")?,
            s("exchange_a")?,
            s("exchange_b")?,
            s("triggered_by")?,
        );
        let f = |n| f64_col(&b, n);
        let (bid_a, ask_a, bid_b, ask_b) = (f("bid_a")?, f("ask_a")?, f("bid_b")?, f("ask_b")?);
        let (ab, ba, bb, stale) = (
            f("a_to_b_pct")?,
            f("b_to_a_pct")?,
            f("bid_bid_pct")?,
            f("staleness_ms")?,
        );
        let (up, low) = (f("upper_band")?, f("lower_band")?);
        let (ts_a, ts_b, ts) = (
            ts_col(&b, "ts_a_ns")?,
            ts_col(&b, "ts_b_ns")?,
            ts_col(&b, "ts_ns")?,
        );
        let stream_seq = u64_col(&b, "stream_seq")?;
        for i in 0..b.num_rows() {
            out.push(Row {
                stream_seq: stream_seq[i],
                msg: Spread {
                    symbol: symbol[i].clone().unwrap_or_default(),
                    exchange_a: ea[i].clone().unwrap_or_default(),
                    exchange_b: eb[i].clone().unwrap_or_default(),
                    bid_a: bid_a[i],
                    ask_a: ask_a[i],
                    bid_b: bid_b[i],
                    ask_b: ask_b[i],
                    ts_a_ns: ts_a[i],
                    ts_b_ns: ts_b[i],
                    a_to_b_pct: ab[i],
                    b_to_a_pct: ba[i],
                    bid_bid_pct: bb[i],
                    staleness_ms: stale[i],
                    triggered_by: trig[i].clone().unwrap_or_default(),
                    upper_band: up[i],
                    lower_band: low[i],
                    ts_ns: ts[i],
                },
            });
        }
    }
    Ok(out)
}

/// The key-value metadata from a Parquet file's footer alone: `tail` is the file's last
/// bytes, at least the footer (its metadata, 4 length bytes and `PAR1`). `Ok(None)` when the
/// tail is too short for the footer, whose full length is then `needed`.
///
/// # Errors
/// When the tail is not a Parquet footer.
pub fn footer_metadata(tail: &[u8]) -> Result<Result<Vec<(String, String)>, usize>, ReadError> {
    let n = tail.len();
    if n < 8 || &tail[n - 4..] != b"PAR1" {
        return Err(ReadError("not a Parquet file (no PAR1 trailer)".into()));
    }
    let len_bytes: [u8; 4] = tail[n - 8..n - 4]
        .try_into()
        .map_err(|_| ReadError("truncated footer".into()))?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len + 8 > n {
        return Ok(Err(len + 8));
    }
    let meta =
        parquet::file::metadata::ParquetMetaDataReader::decode_metadata(&tail[n - 8 - len..n - 8])
            .map_err(|e| ReadError(e.to_string()))?;
    Ok(Ok(meta
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter_map(|e| Some((e.key.clone(), e.value.clone()?)))
                .collect()
        })
        .unwrap_or_default()))
}

/// The key-value metadata of a Parquet file (its footer), without reading its rows.
///
/// # Errors
/// When the bytes are not a Parquet file.
pub fn metadata(bytes: Bytes) -> Result<Vec<(String, String)>, ReadError> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| ReadError(e.to_string()))?;
    Ok(builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kv| {
            kv.iter()
                .filter_map(|e| Some((e.key.clone(), e.value.clone()?)))
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{self, Row};

    #[test]
    fn ticks_and_trades_read_back_as_written() {
        let ticks = vec![
            Row {
                stream_seq: 7,
                msg: Tick {
                    exchange: "okx".into(),
                    symbol: "BTC-USDT".into(),
                    bid_px: 1.5,
                    bid_qty: 2.0,
                    ask_px: 1.75,
                    ask_qty: 3.0,
                    book_spread_pct: 0.1,
                    exchange_ts_ns: 0,
                    recv_ts_ns: 99,
                    seq: 4,
                },
            },
            Row {
                stream_seq: 9,
                msg: Tick {
                    exchange: "okx".into(),
                    symbol: "ETH-USDT".into(),
                    exchange_ts_ns: 5,
                    recv_ts_ns: 100,
                    ..Tick::default()
                },
            },
        ];
        let bytes =
            schema::to_parquet(&schema::ticks_batch(&ticks).expect("batch")).expect("parquet");
        assert_eq!(super::ticks(bytes, "okx").expect("reads"), ticks);

        let trades = vec![Row {
            stream_seq: 3,
            msg: Trade {
                exchange: "binance".into(),
                symbol: "BTC-USDT".into(),
                price: 10.0,
                qty: 0.5,
                side: Side::Sell as i32,
                trade_id: "t-1".into(),
                exchange_ts_ns: 1,
                recv_ts_ns: 2,
            },
        }];
        let bytes =
            schema::to_parquet(&schema::trades_batch(&trades).expect("batch")).expect("parquet");
        assert_eq!(super::trades(bytes, "binance").expect("reads"), trades);
        assert!(super::trades(Bytes::from_static(b"not parquet"), "x").is_err());

        let spreads = vec![Row {
            stream_seq: 11,
            msg: Spread {
                symbol: "BTC-USDT".into(),
                exchange_a: "binance".into(),
                exchange_b: "okx".into(),
                bid_a: 1.0,
                ask_a: 2.0,
                bid_b: 3.0,
                ask_b: 4.0,
                ts_a_ns: 5,
                ts_b_ns: 6,
                a_to_b_pct: 7.0,
                b_to_a_pct: 8.0,
                bid_bid_pct: 9.0,
                staleness_ms: 10.0,
                triggered_by: "okx".into(),
                upper_band: 11.0,
                lower_band: 12.0,
                ts_ns: 13,
            },
        }];
        let bytes =
            schema::to_parquet(&schema::spreads_batch(&spreads).expect("batch")).expect("parquet");
        assert_eq!(super::spreads(bytes.clone()).expect("reads"), spreads);
        assert!(
            super::metadata(bytes)
                .expect("footer")
                .iter()
                .all(|(k, _)| k != "spreadagg.compacted_from")
        );
    }
}
