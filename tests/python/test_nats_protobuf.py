"""A NATS client written by others (nats-py) decodes our ticks and spreads with protobuf
classes generated from proto/ by protoc: the wire contract holds outside Rust."""

import asyncio
import math

import nats

from conftest import simulator_endpoints

SYMBOLS = {"BTC-USDT", "ETH-USDT"}


def test_ticks_and_spreads_decode_with_generated_protobuf(nats_url, roles, pb, tmp_path):
    (tmp_path / "fast.toml").write_text("[simulate]\nupdate_interval_ms = 20\n")
    sim = roles("simulate", "simulate", "--config", str(tmp_path / "fast.toml"))
    endpoints = simulator_endpoints(sim)
    engine = roles("engine", "engine", "--nats-url", nats_url)
    ingestors = [
        roles(f"ingest-{ex}", "ingest", "--exchange", ex, "--symbols", ",".join(sorted(SYMBOLS)), "--ws-url", ws, "--rest-url", rest, "--nats-url", nats_url)
        for ex, (ws, rest) in endpoints.items()
    ]
    ticks, spreads = asyncio.run(fetch(nats_url, 200, 50))

    for msg in ticks:
        t = pb.Tick()
        t.ParseFromString(msg.data)
        assert t.exchange in ("binance", "okx")
        assert t.symbol in SYMBOLS
        assert msg.subject == f"md.tick.{t.exchange}.{t.symbol}"
        assert msg.headers and msg.headers.get("Nats-Msg-Id"), "every publish carries Nats-Msg-Id"
        assert 0 < t.bid_px <= t.ask_px
        assert math.isclose(t.book_spread_pct, (t.ask_px - t.bid_px) / t.ask_px * 100, rel_tol=1e-12)
        assert t.recv_ts_ns > 1_600_000_000 * 10**9
        if t.exchange == "okx":
            assert t.exchange_ts_ns > 0 and t.seq > 0
    assert {pb.Tick.FromString(m.data).exchange for m in ticks} == {"binance", "okx"}

    for msg in spreads:
        s = pb.Spread()
        s.ParseFromString(msg.data)
        assert msg.subject == f"md.spread.{s.symbol}.{s.exchange_a}.{s.exchange_b}"
        assert s.exchange_a < s.exchange_b
        assert s.triggered_by in (s.exchange_a, s.exchange_b)
        assert math.isclose(s.a_to_b_pct, (s.bid_b / s.ask_a - 1) * 100, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(s.b_to_a_pct, (s.bid_a / s.ask_b - 1) * 100, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(s.bid_bid_pct, (s.bid_a / s.bid_b - 1) * 100, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(s.staleness_ms, abs(s.ts_a_ns - s.ts_b_ns) / 1e6, rel_tol=1e-9)
        assert s.lower_band <= s.upper_band

    for r in [*ingestors, engine, sim]:
        code, took = r.terminate()
        assert code == 0, f"{r.name} exit {code}; log:\n{r.log()}"


async def fetch(url, n_ticks, n_spreads):
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        ticks = await pull(js, "md.tick.>", "MD_TICKS", n_ticks)
        spreads = await pull(js, "md.spread.>", "MD_SPREADS", n_spreads)
        return ticks, spreads
    finally:
        await nc.close()


async def pull(js, subject, stream, n):
    # The streams exist once a role has connected; wait for them and for enough messages.
    for _ in range(300):
        try:
            info = await js.stream_info(stream)
            if info.state.messages >= n:
                break
        except Exception:
            pass
        await asyncio.sleep(0.1)
    sub = await js.pull_subscribe(subject, stream=stream)
    got = []
    while len(got) < n:
        for m in await sub.fetch(n - len(got), timeout=10):
            await m.ack()
            got.append(m)
    return got
