"""Clients written by others against the gateway of a running system (`spreadagg all` on the
embedded default, with its gRPC port and bearer tokens on):

- a Python WebSocket client (websockets) subscribes with wildcards and gets its snapshot and
  live frames;
- a Python gRPC client generated from proto/ by grpcio-tools streams and calls the API, and
  one that knows nothing but what server reflection tells it does the same; grpc.health.v1
  answers SERVING;
- openapi-spec-validator accepts /openapi.json, and every documented GET is answered with
  the status and body shape the document gives (jsonschema against its schemas);
- without the token, each of these surfaces refuses.
"""

import importlib
import json
import pathlib
import sys
import tempfile
import time
import urllib.error
import urllib.request

import grpc
import jsonschema
import pytest
from websockets.sync.client import connect

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "desk-token-1"


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """`spreadagg all` with gRPC on a free port and a tokens file; its addresses."""
    from conftest import Role

    workdir = tmp_path_factory.mktemp("gateway-clients")
    tokens = workdir / "tokens"
    tokens.write_text(f"# the desk\n{TOKEN}\n")
    config = workdir / "spreadagg.toml"
    config.write_text(f'[gateway]\ngrpc_listen = "127.0.0.1:0"\nauth_tokens_file = "{tokens}"\n')
    role = Role("all", ["all", "--config", str(config), "--listen", "127.0.0.1:0", "--store", str(workdir / "data")], workdir)
    try:
        http = role.announced("listening gateway ")
        grpc_addr = role.announced("listening gateway-grpc ")
        # Wait until spreads flow: the widest list is not empty.
        deadline = time.time() + 60
        while True:
            status, body = get(http, "/api/spreads/widest?limit=5")
            if status == 200 and body["items"]:
                break
            assert time.time() < deadline, f"no spreads: {status} {body}"
            time.sleep(0.5)
        yield {"http": http, "grpc": grpc_addr}
    finally:
        role.proc.terminate()
        role.proc.wait(timeout=10)


def get(http, path, token=TOKEN):
    request = urllib.request.Request(f"http://{http}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, body.decode(errors="replace")


# -- WebSocket --------------------------------------------------------------------------------


def test_a_python_websocket_client_gets_snapshots_and_live_frames(system):
    url = f"ws://{system['http']}/ws"
    with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        ws.send(json.dumps({"op": "subscribe", "channel": "spreads", "symbol": "BTC-*", "exchanges": ["binance", "*"], "id": 1}))
        subscribed = json.loads(ws.recv(timeout=10))
        assert subscribed == {"type": "subscribed", "channel": "spreads", "symbol": "BTC-*", "exchanges": ["binance", "*"], "id": 1}
        snapshot = json.loads(ws.recv(timeout=10))
        assert snapshot["type"] == "snapshot" and snapshot["id"] == 1 and snapshot["items"], snapshot
        for item in snapshot["items"]:
            assert item["symbol"].startswith("BTC-") and "binance" in (item["exchange_a"], item["exchange_b"])
        ws.send(json.dumps({"op": "subscribe", "channel": "ticks", "symbol": "*", "exchange": "okx", "snapshot": False}))
        seen = {"spread": 0, "tick": 0}
        deadline = time.time() + 20
        while min(seen.values()) < 3:
            assert time.time() < deadline, seen
            frame = json.loads(ws.recv(timeout=10))
            if frame["type"] == "spread":
                assert frame["symbol"].startswith("BTC-") and "binance" in (frame["exchange_a"], frame["exchange_b"])
                seen["spread"] += 1
            elif frame["type"] == "tick":
                assert frame["exchange"] == "okx" and frame["bid_px"] > 0
                seen["tick"] += 1
        ws.send(json.dumps({"op": "subscribe", "symbol": "btc", "id": "bad"}))
        while True:
            frame = json.loads(ws.recv(timeout=10))
            if frame["type"] == "error":
                assert frame["code"] == "invalid_symbol" and frame["id"] == "bad"
                break


def test_websocket_and_rest_refuse_callers_without_the_token(system):
    import websockets

    for headers in ({}, {"Authorization": "Bearer wrong"}):
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            connect(f"ws://{system['http']}/ws", additional_headers=headers)
        assert refused.value.response.status_code == 401
    with connect(f"ws://{system['http']}/ws?access_token={TOKEN}") as ws:
        ws.send(json.dumps({"op": "ping", "id": 1}))
        assert json.loads(ws.recv(timeout=10)) == {"type": "pong", "id": 1}
    for path in ("/api/symbols", "/api/exchanges", "/openapi.json"):
        status, _ = get(system["http"], path, token=None)
        assert status == 401, path


# -- gRPC -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_pb():
    """The gateway's gRPC modules, generated from proto/ by grpcio-tools at test time."""
    from grpc_tools import protoc

    out = pathlib.Path(tempfile.mkdtemp(prefix="spreadagg-grpc-"))
    protos = [str(ROOT / "proto/spreadagg/v1/market.proto"), str(ROOT / "proto/spreadagg/gateway/v1/gateway.proto")]
    rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}", *protos])
    assert rc == 0, "protoc failed"
    sys.path.insert(0, str(out))
    return importlib.import_module("spreadagg.gateway.v1.gateway_pb2"), importlib.import_module("spreadagg.gateway.v1.gateway_pb2_grpc")


AUTH = (("authorization", f"Bearer {TOKEN}"),)


def test_a_generated_grpc_client_streams_and_calls(system, gateway_pb):
    pb, rpc = gateway_pb
    with grpc.insecure_channel(system["grpc"]) as channel:
        stub = rpc.GatewayStub(channel)
        stream = stub.Subscribe(pb.SubscribeRequest(channel=pb.CHANNEL_SPREADS, symbol="*-USDT", snapshot=True), metadata=AUTH, timeout=30)
        snapshot, live, ended = [], [], False
        for event in stream:
            kind = event.WhichOneof("kind")
            if kind == "snapshot_end":
                assert snapshot and not ended, "one end, after the snapshot's items"
                ended = True
                continue
            assert kind == "spread", kind
            (live if ended else snapshot).append(event.spread)
            if len(live) >= 5:
                break
        stream.cancel()
        assert all(s.symbol.endswith("-USDT") for s in snapshot + live)
        exchanges = stub.GetExchanges(pb.ExchangesRequest(), metadata=AUTH, timeout=10)
        states = {e.exchange: e.state for e in exchanges.exchanges}
        assert len(states) == 11 and list(states.values()).count("live") >= 2, states
        first = live[0]
        chart = stub.GetChart(pb.ChartRequest(symbol=first.symbol, exchange_a=first.exchange_a, exchange_b=first.exchange_b), metadata=AUTH, timeout=10)
        assert chart.symbol == first.symbol and len(chart.ts_ns) == len(chart.spread_pct) == len(chart.upper_band) > 0
        with pytest.raises(grpc.RpcError) as bad:
            stub.Snapshot(pb.SubscribeRequest(channel=pb.CHANNEL_TICKS, symbol="btc"), metadata=AUTH, timeout=10)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetExchanges(pb.ExchangesRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_reflection_only_client_finds_and_calls_the_api(system):
    """No .proto files: the service, its methods and messages come from server reflection."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(system["grpc"]) as channel:
        channel = grpc.intercept_channel(channel, _Auth())
        database = ProtoReflectionDescriptorDatabase(channel)
        services = database.get_services()
        assert "spreadagg.gateway.v1.Gateway" in services, services
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("spreadagg.gateway.v1.Gateway")
        method = service.methods_by_name["Snapshot"]
        Request = message_factory.GetMessageClass(method.input_type)
        Reply = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            "/spreadagg.gateway.v1.Gateway/Snapshot",
            request_serializer=Request.SerializeToString,
            response_deserializer=Reply.FromString,
        )
        channel_enum = pool.FindEnumTypeByName("spreadagg.gateway.v1.Channel")
        reply = call(Request(channel=channel_enum.values_by_name["CHANNEL_SPREADS"].number, symbol="*"), timeout=10)
        assert reply.items and reply.items[0].WhichOneof("kind") == "spread"
        assert reply.items[0].spread.symbol


class _Auth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the bearer token to every call (reflection is a bidirectional stream)."""

    def _with_token(self, details):
        metadata = list(details.metadata or []) + list(AUTH)
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details, metadata):
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


def test_the_standard_health_service_answers_serving(system):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(system["grpc"]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "spreadagg.gateway.v1.Gateway"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service


# -- OpenAPI ----------------------------------------------------------------------------------


def test_the_openapi_document_is_valid_and_every_get_answers_as_documented(system):
    from openapi_spec_validator import validate

    status, doc = get(system["http"], "/openapi.json")
    assert status == 200
    validate(doc)
    # Path parameters from live data, so that each GET has something to answer.
    _, widest = get(system["http"], "/api/spreads/widest?limit=1")
    point = widest["items"][0]
    params = {"symbol": point["symbol"], "exchange_a": point["exchange_a"], "exchange_b": point["exchange_b"]}
    checked = []
    for path, item in doc["paths"].items():
        op = item.get("get")
        if not op:
            continue
        url = path
        for name, value in params.items():
            url = url.replace("{" + name + "}", value)
        assert "{" not in url, f"no value for a parameter of {path}"
        status, body = get(system["http"], url)
        documented = op["responses"].get(str(status))
        assert documented, f"{path}: status {status} not documented ({body})"
        schema = documented["content"]["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator({**schema, "components": doc["components"]})
        errors = sorted(validator.iter_errors(body), key=lambda e: e.path)
        assert not errors, f"{path}: {errors[0].message} at {list(errors[0].path)}"
        checked.append((path, status))
    assert len(checked) >= 8, checked
    assert all(status == 200 for _, status in checked), checked
