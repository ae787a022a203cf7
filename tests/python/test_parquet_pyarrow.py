"""pyarrow reads the archiver's Parquet as-is (Hive partitions, typed columns) and finds
exactly the ticks the archiver acknowledged on JetStream: no gaps, no duplicates, the same
values the stream holds."""

import asyncio
import math
import time

import nats
import pyarrow as pa
import pyarrow.dataset as ds

from conftest import simulator_endpoints


def test_archive_holds_exactly_the_acknowledged_ticks(nats_url, roles, pb, tmp_path):
    (tmp_path / "fast.toml").write_text("[simulate]\nupdate_interval_ms = 20\n")
    store = tmp_path / "archive"
    sim = roles("simulate", "simulate", "--config", str(tmp_path / "fast.toml"))
    endpoints = simulator_endpoints(sim)
    archive = roles("archive", "archive", "--nats-url", nats_url, "--store", str(store))
    ingestors = [
        roles(f"ingest-{ex}", "ingest", "--exchange", ex, "--symbols", "BTC-USDT,ETH-USDT,SOL-USDT", "--ws-url", ws, "--rest-url", rest, "--nats-url", nats_url)
        for ex, (ws, rest) in endpoints.items()
    ]
    asyncio.run(wait_for_messages(nats_url, "MD_TICKS", 500))
    for r in ingestors:
        code, _ = r.terminate()
        assert code == 0, r.log()
    last = asyncio.run(wait_until_delivered(nats_url))
    code, took = archive.terminate()
    assert code == 0, archive.log()
    assert took < 5

    floor, stream_msgs = asyncio.run(read_back(nats_url, last))
    assert floor == last, f"archiver acknowledged up to {floor} of {last}"

    table = ds.dataset(store / "ticks", format="parquet", partitioning="hive").to_table()
    assert table.schema.field("recv_ts_ns").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("bid_px").type == pa.float64()
    assert table.schema.field("stream_seq").type == pa.uint64()
    seqs = table.column("stream_seq").to_pylist()
    assert len(seqs) == len(set(seqs)), "duplicate rows"
    assert set(seqs) == set(stream_msgs), "archived rows differ from the acknowledged stream sequences"

    recv_ns = table.column("recv_ts_ns").cast(pa.int64()).to_pylist()
    rows = table.drop_columns(["recv_ts_ns", "exchange_ts_ns"]).to_pylist()
    for row, recv in zip(rows, recv_ns):
        tick = pb.Tick.FromString(stream_msgs[row["stream_seq"]])
        assert row["exchange"] == tick.exchange
        assert row["symbol"] == tick.symbol
        assert row["bid_px"] == tick.bid_px and row["ask_px"] == tick.ask_px
        assert row["bid_qty"] == tick.bid_qty and row["ask_qty"] == tick.ask_qty
        assert math.isclose(row["book_spread_pct"], tick.book_spread_pct, rel_tol=1e-12)
        assert recv == tick.recv_ts_ns
    sim.terminate()


async def wait_for_messages(url, stream, n):
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if (await js.stream_info(stream)).state.messages >= n:
                    return
            except Exception:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"{stream} never reached {n} messages")
    finally:
        await nc.close()


async def wait_until_delivered(url):
    """Waits until the archiver has pulled every tick; returns the last sequence."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        last = (await js.stream_info("MD_TICKS")).state.last_seq
        deadline = time.time() + 30
        while time.time() < deadline:
            info = await js.consumer_info("MD_TICKS", "archiver-ticks")
            if info.delivered.stream_seq >= last:
                return last
            await asyncio.sleep(0.1)
        raise AssertionError("the archiver never pulled every tick")
    finally:
        await nc.close()


async def read_back(url, last):
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.consumer_info("MD_TICKS", "archiver-ticks")
        floor = info.ack_floor.stream_seq
        msgs = {}
        for seq in range(1, floor + 1):
            msgs[seq] = (await js.get_msg("MD_TICKS", seq)).data
        return floor, msgs
    finally:
        await nc.close()
