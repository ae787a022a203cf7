"""Traces: `spreadagg all` with the standard OTEL_EXPORTER_OTLP_ENDPOINT exports the hot path's
stage spans over OTLP/HTTP to a receiver in this test. The receiver decodes each request with
the OpenTelemetry project's own protobuf classes (PyPI opentelemetry-proto), as a collector
would; without the variable nothing is exported."""

import http.server
import threading
import time

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

STAGES = {"ingest.publish_batch", "engine.settle_batch", "archive.flush"}


class Receiver:
    """An OTLP/HTTP trace receiver on a free loopback port."""

    def __init__(self, port=0):
        self.requests = []
        self.bad = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    receiver.bad.append((self.path, self.headers.get("Content-Type")))
                    self.send_response(404)
                    self.end_headers()
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append(request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self):
        """(service.name, span name, attributes) of every span received."""
        out = []
        for request in list(self.requests):
            for rs in request.resource_spans:
                service = next((a.value.string_value for a in rs.resource.attributes if a.key == "service.name"), None)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        attrs = {a.key: a.value for a in span.attributes}
                        out.append((service, span.name, attrs, span))
        return out

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_stage_spans_reach_an_otlp_receiver(roles, receiver, tmp_path):
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_TRACES_SAMPLER_ARG": "1",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    all_ = roles("all", "all", "--listen", "127.0.0.1:0", "--store", str(tmp_path / "data"), env=env)
    all_.announced("listening gateway ")
    deadline = time.time() + 60
    while time.time() < deadline and not STAGES <= {name for _, name, _, _ in receiver.spans()}:
        time.sleep(0.5)
    spans = receiver.spans()
    names = {name for _, name, _, _ in spans}
    assert STAGES <= names, f"stages seen: {names}; bad requests: {receiver.bad}; log:\n{all_.log()}"
    assert not receiver.bad
    assert {service for service, _, _, _ in spans} == {"spreadagg-all"}
    for service, name, attrs, span in spans:
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0, name
        assert len(span.trace_id) == 16 and len(span.span_id) == 8, name
    publishes = [attrs for _, name, attrs, _ in spans if name == "ingest.publish_batch"]
    assert {a["exchange"].string_value for a in publishes} >= {"binance", "okx"}
    assert all(a["events"].int_value > 0 for a in publishes), [str(a["events"]) for a in publishes][:3]
    assert "traces exported with OTLP" in all_.log()
    code, _ = all_.terminate(within=10)
    assert code == 0, all_.log()


def test_nothing_is_exported_without_an_endpoint(roles, tmp_path, monkeypatch):
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    # The receiver listens where the SDK sends by default (localhost:4318), so a process that
    # built an exporter without being asked would reach it.
    default_port = Receiver(port=4318)
    try:
        all_ = roles("all", "all", "--listen", "127.0.0.1:0", "--store", str(tmp_path / "data"),
                     env={"OTEL_TRACES_SAMPLER_ARG": "1", "OTEL_BSP_SCHEDULE_DELAY": "200"})
        all_.announced("listening gateway ")
        time.sleep(3)
        code, _ = all_.terminate(within=10)
        assert code == 0, all_.log()
        assert default_port.requests == [], "spans were exported without an endpoint"
        assert "traces exported" not in all_.log()
    finally:
        default_port.close()


def test_a_protocol_other_than_http_protobuf_fails_at_start(roles, receiver):
    r = roles("grpc", "engine", env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert r.proc.wait(timeout=30) == 2
    assert "OTEL_EXPORTER_OTLP_PROTOCOL" in r.log()


def test_a_bad_sampler_ratio_fails_at_start(roles, receiver, tmp_path):
    r = roles("bad", "engine", env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_TRACES_SAMPLER_ARG": "7"})
    assert r.proc.wait(timeout=30) == 2
    assert "OTEL_TRACES_SAMPLER_ARG" in r.log()
