"""The Helm chart (charts/spreadagg) and the plain manifests generated from it (k8s/), checked
offline with real tools: Helm's own template engine and linter (helm 3.19 from scripts/k8s-tools),
kubernetes-validate --strict against pinned Kubernetes schemas, kubectl kustomize, promtool.

The chart declares the official nats chart as a dependency that cannot be downloaded here; the
chart is rendered from a temporary copy with an empty stand-in in its charts/ folder
(scripts/gen-k8s chart_copy), and the declaration and the values passed to it are checked on
their own (test_nats_dependency_*).

Every tool is required: a missing one fails the test with a message to run scripts/test.
"""

import copy
import importlib.machinery
import importlib.util
import json
import pathlib
import re
import shutil
import subprocess
import tomllib

import pytest
import yaml


ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "spreadagg"
EXAMPLES = CHART / "examples"
KUBE_VERSIONS = ["1.25.0", "1.30.0", "1.34.0"]
EXCHANGES = ["binance", "bybit", "okx", "gateio", "bitget", "kucoin", "mexc", "htx", "bingx", "coinbase", "kraken"]
WITH_ADAPTERS = EXCHANGES
SIM_WS_PATHS = {"binance": "/ws", "okx": "/ws/v5/public", "htx": "/ws", "kucoin": "/", "mexc": "/ws",
                "bybit": "/v5/public/spot", "gateio": "/ws/v4/", "bitget": "/v2/ws/public", "bingx": "/market",
                "coinbase": "/", "kraken": "/v2"}
WORKLOADS = ("Deployment", "StatefulSet", "Job")
CUSTOM_KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")


def _load_gen_k8s():
    loader = importlib.machinery.SourceFileLoader("gen_k8s", str(ROOT / "scripts" / "gen-k8s"))
    spec = importlib.util.spec_from_loader("gen_k8s", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


gen = _load_gen_k8s()


def _tool(name):
    for candidate in (ROOT / ".venv" / "bin" / name, shutil.which(name)):
        if candidate and pathlib.Path(candidate).exists():
            return str(candidate)
    pytest.fail(f"{name} is missing: run scripts/test (it runs scripts/k8s-tools and installs tests/python/requirements.txt)")


@pytest.fixture(scope="session")
def tools():
    return {name: _tool(name) for name in ("helm", "kubectl", "kubernetes-validate", "promtool")}


@pytest.fixture(scope="session")
def chart(tools, tmp_path_factory):
    return gen.chart_copy(tmp_path_factory.mktemp("chart"))


def render(chart, values=(), sets=()):
    try:
        return gen.objects(gen.render(chart, values=values, sets=sets))
    except subprocess.CalledProcessError as e:
        pytest.fail(f"helm template failed:\n{e.stderr}")


def render_error(chart, values=(), sets=()):
    try:
        gen.render(chart, values=values, sets=sets)
    except subprocess.CalledProcessError as e:
        return e.stderr
    return None


def without_stand_in(objs):
    return [o for o in objs if (o["metadata"].get("labels") or {}).get("spreadagg.io/stand-in") != "true"]


def kinds(objs):
    out = {}
    for o in objs:
        out[o["kind"]] = out.get(o["kind"], 0) + 1
    return out


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def one(objs, kind, name):
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def pod_spec(o):
    return o["spec"]["template"]["spec"]


def write_values(tmp_path, name, data):
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


# Value sets rendered by many tests: (name, values files).
CASES = {
    "default": [],
    "production": [EXAMPLES / "production.yaml"],
    "staging": [EXAMPLES / "staging.yaml"],
}


@pytest.fixture(scope="session")
def rendered(chart):
    return {name: render(chart, values=files) for name, files in CASES.items()}


# -- lint and schema validation of every rendered object ------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_helm_lint_strict_passes(chart, tools, case):
    args = [tools["helm"], "lint", "--strict", str(chart)]
    for f in CASES[case]:
        args += ["-f", str(f)]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in r.stdout, r.stdout
    assert "[ERROR]" not in r.stdout and "[WARNING]" not in r.stdout, r.stdout


def kubernetes_validate(tools, objs, version, tmp_path):
    f = tmp_path / f"objects-{version}.yaml"
    f.write_text(yaml.safe_dump_all(objs, sort_keys=False))
    r = subprocess.run([tools["kubernetes-validate"], "--strict", "-k", version, str(f)], capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).splitlines()


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("case", list(CASES))
def test_every_rendered_object_validates_strictly(rendered, tools, tmp_path, case, version):
    objs = without_stand_in(rendered[case])
    rc, lines = kubernetes_validate(tools, objs, version, tmp_path)
    assert rc == 0, "\n".join(lines)
    passed = [l for l in lines if l.startswith("INFO") and " passed for resource " in l]
    warned = [l for l in lines if l.startswith("WARN")]
    custom = [o for o in objs if o["kind"] in CUSTOM_KINDS]
    assert len(passed) == len(objs) - len(custom), "\n".join(lines)
    # Custom resources have no bundled schema: they only warn, and are checked by their own tests.
    assert len(warned) == len(custom) and all("Couldn't find schema" in l for l in warned), "\n".join(lines)
    assert not [l for l in lines if l.startswith("ERROR")]


def test_the_validator_rejects_a_broken_object(rendered, tools, tmp_path):
    """The validation above can fail: an unknown field in a rendered Deployment is an error."""
    broken = copy.deepcopy(by_kind(rendered["default"], "Deployment")[0])
    pod_spec(broken)["containers"][0]["livenessprobe"] = {}
    rc, lines = kubernetes_validate(tools, [broken], "1.30.0", tmp_path)
    assert rc != 0 and any("livenessprobe" in l for l in lines), "\n".join(lines)


# -- values.schema.json ------------------------------------------------------------------------

BAD_VALUES = {
    "unknown exchange key": ["ingestors.ftx.enabled=true"],
    "negative replicas": ["ingestors.binance.replicas=-1"],
    "zero shards": ["ingestors.okx.shards=0"],
    "zero shards in the defaults": ["ingestDefaults.shards=0"],
    "engine replicas 65": ["engine.replicas=65"],
    "store with an unknown scheme": ["archive.store=ftp://archive.example.com/spreads"],
    "relative file store": ["archive.store=file://data"],
    "unknown top-level key": ["ingestor.binance.enabled=true"],
    "unknown key in an ingestor": ["ingestors.binance.symbol=BTC-USDT"],
    "lower-case symbol": ["ingestors.binance.symbols={btc-usdt}"],
    "memory quantity": ["ingestDefaults.resources.limits.memory=lots"],
    "cpu quantity": ["gateway.resources.requests.cpu=fast"],
    "resources without limits": ["engine.resources.limits=null"],
    "unknown config key": ["config.engine.max_stalenes_ms=1"],
    "store in config instead of archive.store": ["config.archive.store=file:///x"],
    "stream storage": ["config.streams.storage=disk"],
    "stream replicas 0": ["config.streams.replicas=0"],
    "simulator port for an unknown exchange": ["simulator.ports.ftx=7012"],
    "simulator port out of range": ["simulator.ports.bybit=80"],
    "log format": ["logFormat=yaml"],
    "nats url scheme": ["nats.url=http://nats:4222"],
    "upgrade hook": ["streamsJob.upgradeHook=post-install"],
    "security context with a root filesystem": ["securityContext.readOnlyRootFilesystem=false"],
    "ws url scheme": ["ingestors.okx.wsUrl=http://ws.okx.com/ws"],
    "unknown key in nats.urlSecret": ["nats.urlSecret.secret=nats"],
    "no DNS port": ["networkPolicy.dns.ports={}"],
    "DNS port protocol": ["networkPolicy.dns.ports[0].port=53", "networkPolicy.dns.ports[0].protocol=ICMP"],
    "ingest extra egress not a list": ["networkPolicy.ingestExtraEgress=proxy"],
}


def test_a_grace_period_that_cannot_cover_the_drain_fails_rendering(chart):
    # The gateway's 5 s delay plus a 25 s drain plus 5 s of room do not fit in 30 s.
    err = render_error(chart, sets=["config.drain_timeout_s=25"])
    assert err is not None and "terminationGracePeriodSeconds" in err, err
    err = render_error(chart, sets=["preStopDelaySeconds=30"])
    assert err is not None and "terminationGracePeriodSeconds" in err, err
    assert render_error(chart, sets=["config.drain_timeout_s=25", "terminationGracePeriodSeconds=40"]) is None


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_schema_rejects_bad_values(chart, case):
    err = render_error(chart, sets=BAD_VALUES[case])
    assert err is not None, f"helm template accepted {BAD_VALUES[case]}"
    assert "don't meet the specifications of the schema" in err, err


GOOD_VALUES = {
    "s3 store": ["archive.store=s3://spreads-archive/prod"],
    "gs store": ["archive.store=gs://spreads-archive/prod"],
    "az store": ["archive.store=az://spreads/prod"],
    "memory store": ["archive.store=memory://"],
    "engine off": ["engine.replicas=0"],
    "explicit symbols": ["ingestors.binance.symbols={BTC-USDT,ETH-USDT}"],
    "tls nats": ["nats.url=tls://nats.example.com:4222"],
    "post-upgrade hook": ["streamsJob.upgradeHook=post-upgrade"],
}


@pytest.mark.parametrize("case", list(GOOD_VALUES))
def test_schema_accepts_good_values(chart, case):
    """The schema is not simply refusing everything: these valid variants render."""
    assert render_error(chart, sets=GOOD_VALUES[case]) is None


def test_schema_is_valid_json_schema_and_the_examples_pass_it():
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(defaults)
    assert set(defaults) == set(schema["properties"]) - {"global"}, "values.yaml and the schema list different top-level keys"
    assert set(schema["properties"]["ingestors"]["properties"]) == set(EXCHANGES)


# -- workloads -------------------------------------------------------------------------------


def check_workload(o, values):
    name = f"{o['kind']}/{o['metadata']['name']}"
    spec = pod_spec(o)
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001, name
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
    # Only the archiver with leader election talks to the Kubernetes API.
    talks_to_api = o["metadata"]["name"].endswith("-archive") and o["spec"]["replicas"] > 1
    assert spec["automountServiceAccountToken"] is talks_to_api, name
    tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    config_volumes = {v["name"]: v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v}
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        res = c["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), name
        env = env_of(c)
        assert env["SPREADAGG_LOG_FORMAT"] == "json", name
        assert env["SPREADAGG_CONFIG"] == "/etc/spreadagg/spreadagg.toml", name
        assert env["SPREADAGG_ADMIN_ADDR"] == "0.0.0.0:9090", name
        assert env["NATS_URL"].startswith("nats://"), name
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/tmp"]["name"] in tmp_volumes, name
        assert mounts["/etc/spreadagg"]["readOnly"] is True and mounts["/etc/spreadagg"]["name"] in config_volumes, name
        assert {"name": "admin", "containerPort": 9090, "protocol": "TCP"} in c["ports"], name
        if o["kind"] == "Job":
            for probe in ("startupProbe", "readinessProbe", "livenessProbe", "lifecycle"):
                assert probe not in c, f"{name}: a Job has no {probe}"
            assert spec["restartPolicy"] == "OnFailure", name
            continue
        assert c["startupProbe"]["httpGet"]["port"] == "admin", name
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}, name
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}, name
        command = c["lifecycle"]["preStop"]["exec"]["command"]
        assert command[:3] == ["spreadagg", "drain", "--delay"], name
        delay = float(command[3])
        # The hook's delay, then the roles' own drain (drain_timeout_s), with room.
        drain = float(values["config"].get("drain_timeout_s", 4.5))
        assert spec["terminationGracePeriodSeconds"] >= delay + drain + 5, name
        if c["name"] == "gateway":
            assert delay > 0, "the gateway waits for load balancers before it drains"
    if o["kind"] != "Job":
        assert "checksum/config" in o["spec"]["template"]["metadata"]["annotations"], name


@pytest.mark.parametrize("case", list(CASES))
def test_every_workload_has_probes_drain_security_and_resources(rendered, case):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    workloads = [o for o in rendered[case] if o["kind"] in WORKLOADS]
    assert workloads
    for o in workloads:
        check_workload(o, values)
    assert len(by_kind(rendered[case], "Job")) == 1


def test_engine_is_a_one_replica_statefulset_with_a_headless_service(rendered):
    objs = rendered["default"]
    sts = one(objs, "StatefulSet", "spreadagg-engine")
    assert sts["spec"]["replicas"] == 1
    svc = one(objs, "Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert pod_spec(sts)["containers"][0]["args"] == ["engine"]
    assert not [o for o in objs if o["kind"] == "Deployment" and "engine" in o["metadata"]["name"]]
    env = {e["name"] for e in pod_spec(sts)["containers"][0]["env"]}
    assert "SPREADAGG_SHARD" not in env, "one engine: no shard"


def test_engine_replicas_are_symbol_shards_by_pod_index(chart):
    objs = render(chart, sets=["engine.replicas=3"])
    sts = one(objs, "StatefulSet", "spreadagg-engine")
    assert sts["spec"]["replicas"] == 3
    env = {e["name"]: e for e in pod_spec(sts)["containers"][0]["env"]}
    assert env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["SPREADAGG_SHARD"]["value"] == "$(POD_INDEX)/3"
    names = [e["name"] for e in pod_spec(sts)["containers"][0]["env"]]
    assert names.index("POD_INDEX") < names.index("SPREADAGG_SHARD"), "defined before it is referenced"


# -- one Deployment per enabled exchange and shard ------------------------------------------

TOGGLES = {
    "defaults": [],
    "two off": ["ingestors.okx.enabled=false", "ingestors.htx.enabled=false"],
    "shards and replicas": ["ingestors.binance.shards=4", "ingestors.binance.replicas=2", "ingestDefaults.shards=2"],
    "all off but one": [f"ingestors.{e}.enabled=false" for e in WITH_ADAPTERS if e != "mexc"],
    "one sharded, one off": ["ingestors.bybit.shards=3", "ingestors.kraken.enabled=false"],
    "every exchange off": [f"ingestors.{e}.enabled=false" for e in EXCHANGES],
}


def expected_ingestors(sets):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for s in sets:
        path, value = s.split("=", 1)
        node = values
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    out = {}
    for ex, ing in values["ingestors"].items():
        if ing["enabled"]:
            shards = ing.get("shards", values["ingestDefaults"]["shards"])
            replicas = ing.get("replicas", values["ingestDefaults"]["replicas"])
            for i in range(shards):
                out[(ex, str(i))] = (shards, replicas)
    return out


@pytest.mark.parametrize("case", list(TOGGLES))
def test_one_deployment_and_pdb_per_enabled_exchange_and_shard(chart, case):
    objs = render(chart, sets=TOGGLES[case])
    expected = expected_ingestors(TOGGLES[case])
    ingest = [o for o in by_kind(objs, "Deployment") if o["metadata"]["labels"]["app.kubernetes.io/component"] == "ingest"]
    found = {}
    for d in ingest:
        sel = d["spec"]["selector"]["matchLabels"]
        ex, shard = sel["spreadagg.io/exchange"], sel["spreadagg.io/shard"]
        assert sel["app.kubernetes.io/component"] == "ingest"
        assert (ex, shard) not in found, f"two Deployments for {ex} shard {shard}"
        pod_labels = d["spec"]["template"]["metadata"]["labels"]
        assert sel.items() <= pod_labels.items()
        env = env_of(pod_spec(d)["containers"][0])
        shards, replicas = expected.get((ex, shard), (None, None))
        assert env["SPREADAGG_EXCHANGE"] == ex
        assert env["SPREADAGG_SHARD"] == f"{shard}/{shards}"
        assert d["spec"]["replicas"] == replicas
        assert d["metadata"]["name"] == f"spreadagg-ingest-{ex}-{shard}"
        found[(ex, shard)] = d
    assert set(found) == set(expected)
    pdbs = {(p["spec"]["selector"]["matchLabels"].get("spreadagg.io/exchange"), p["spec"]["selector"]["matchLabels"].get("spreadagg.io/shard")): p
            for p in by_kind(objs, "PodDisruptionBudget") if p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "ingest"}
    assert set(pdbs) == set(expected)
    for k, p in pdbs.items():
        assert p["spec"]["selector"]["matchLabels"] == found[k]["spec"]["selector"]["matchLabels"]
    # Nothing at all names a disabled exchange.
    enabled = {ex for ex, _ in expected}
    text = yaml.safe_dump_all(objs)
    for ex in set(EXCHANGES) - enabled:
        assert f"spreadagg.io/exchange: {ex}\n" not in text and f"ingest-{ex}-" not in text, ex


def test_ingestor_settings_reach_the_pod_and_override_the_defaults(chart, tmp_path):
    values = write_values(tmp_path, "ing", {
        "ingestDefaults": {"quotes": ["USDT"], "minVolume": 5000, "extraEnv": [{"name": "A", "value": "1"}]},
        "ingestors": {
            "binance": {"enabled": True, "symbols": ["BTC-USDT", "ETH-USDT"], "wsUrl": "wss://example.com:9443/ws",
                        "restUrl": "https://example.com", "maxVolume": 2.5e9, "extraEnv": [{"name": "B", "value": "2"}],
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "3", "memory": "3Gi"}}},
            "okx": {"enabled": True, "minVolume": 0, "quotes": ["USDC", "USDT"]},
        },
    })
    objs = render(chart, values=[values])
    b = pod_spec(one(objs, "Deployment", "spreadagg-ingest-binance-0"))["containers"][0]
    env = env_of(b)
    assert env["SPREADAGG_SYMBOLS"] == "BTC-USDT,ETH-USDT"
    assert env["SPREADAGG_QUOTES"] == "USDT"
    assert env["SPREADAGG_MIN_VOLUME"] == "5000" and env["SPREADAGG_MAX_VOLUME"] == "2500000000"
    assert env["SPREADAGG_WS_URL"] == "wss://example.com:9443/ws" and env["SPREADAGG_REST_URL"] == "https://example.com"
    assert env["A"] == "1" and env["B"] == "2"
    assert b["resources"]["limits"]["memory"] == "3Gi"
    o = env_of(pod_spec(one(objs, "Deployment", "spreadagg-ingest-okx-0"))["containers"][0])
    assert o["SPREADAGG_MIN_VOLUME"] == "0", "a zero overrides the default"
    assert o["SPREADAGG_QUOTES"] == "USDC,USDT"
    assert "SPREADAGG_MAX_VOLUME" not in o and "SPREADAGG_WS_URL" not in o and "B" not in o
    h = env_of(pod_spec(one(objs, "Deployment", "spreadagg-ingest-htx-0"))["containers"][0])
    assert "SPREADAGG_MAX_VOLUME" not in h and h["SPREADAGG_MIN_VOLUME"] == "5000"


# -- configuration file ------------------------------------------------------------------------


def rust_struct_fields(path, struct):
    text = (ROOT / path).read_text()
    body = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", text, re.S).group(1)
    return set(re.findall(r"^\s*pub (\w+):", body, re.M))


RUST_SECTIONS = {
    None: ("services/spreadagg/src/settings.rs", "Settings"),
    "streams": ("services/bus/src/settings.rs", "StreamSettings"),
    "ingest": ("services/ingest/src/lib.rs", "IngestConfig"),
    "engine": ("services/engine/src/config.rs", "EngineConfig"),
    "archive": ("services/archive/src/lib.rs", "ArchiveConfig"),
    "gateway": ("services/gateway/src/config.rs", "GatewayConfig"),
    "simulate": ("services/simulate/src/config.rs", "SimConfig"),
    "lease": ("services/spreadagg/src/lease.rs", "LeaseSettings"),
}


def check_toml_keys(doc):
    """Every key of the rendered file exists in the Rust struct that reads it (deny_unknown_fields)."""
    top = rust_struct_fields(*RUST_SECTIONS[None])
    for k, v in doc.items():
        assert k in top, f"unknown top-level key {k}"
        if isinstance(v, dict):
            fields = rust_struct_fields(*RUST_SECTIONS[k])
            assert set(v) <= fields, f"[{k}] keys unknown to the binary: {set(v) - fields}"


def config_toml(objs, name="spreadagg-config"):
    return tomllib.loads(one(objs, "ConfigMap", name)["data"]["spreadagg.toml"])


def test_config_file_holds_only_keys_the_binary_knows_with_every_schema_key_set(chart, tmp_path):
    schema = json.loads((CHART / "values.schema.json").read_text())
    def sample(prop):
        if "enum" in prop:
            return prop["enum"][-1]
        if prop["type"] == "integer":
            return min(max(prop.get("minimum", 1), 1) * 2, prop.get("maximum", 1 << 30))
        if prop["type"] == "object":
            return {"aws_region": "x"}
        if prop["type"] == "array":
            return ["https://desk.example.com"]
        return {"number": 0.5, "string": "x", "boolean": True}[prop["type"]]

    config = {}
    for section, spec in schema["properties"]["config"]["properties"].items():
        if section == "drain_timeout_s":
            config[section] = 4.0
            continue
        config[section] = {}
        for k, prop in spec["properties"].items():
            config[section][k] = sample(prop) if k != "durable" else "engine-a"
    config["engine"].update(upper_quantile=0.9, lower_quantile=0.1)
    simulator = {"enabled": True, "config": {k: (["BTC-USDT"] if k == "symbols" else 1000 if p.get("type") == "integer" or "integer" in p.get("type", []) else 0.5)
                                             for k, p in schema["properties"]["simulator"]["properties"]["config"]["properties"].items()}}
    objs = render(chart, values=[write_values(tmp_path, "all", {"config": config, "simulator": simulator})])
    doc = config_toml(objs)
    check_toml_keys(doc)
    for section in ("streams", "ingest", "engine", "archive", "gateway"):
        assert set(doc[section]) == set(config[section]), section
    assert doc["archive"]["store_options"] == {"aws_region": "x"}, "a map renders as a TOML table"
    assert doc["simulate"]["host"] == "0.0.0.0"
    assert doc["simulate"]["exchanges"] == sorted(WITH_ADAPTERS)
    # The stream Job reads the same file from its own hook ConfigMap.
    assert config_toml(objs, "spreadagg-streams-config") == doc


@pytest.mark.parametrize("case", list(CASES))
def test_config_file_of_each_example(rendered, case):
    doc = config_toml(rendered[case])
    check_toml_keys(doc)
    assert set(doc["streams"]) == {"max_age", "max_bytes", "max_messages", "duplicate_window", "replicas", "storage"}
    assert ("simulate" in doc) == (case == "staging")


def test_a_config_change_rolls_every_pod(chart):
    before = render(chart)
    after = render(chart, sets=["config.engine.max_staleness_ms=1000"])
    sums = lambda objs: {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                         for o in objs if o["kind"] in WORKLOADS}
    a, b = sums(before), sums(after)
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)


# -- streams hook Job --------------------------------------------------------------------------


def test_stream_job_is_a_hook_that_runs_spreadagg_streams_after_its_config(rendered, chart):
    objs = rendered["default"]
    job = one(objs, "Job", "spreadagg-streams")
    cm = one(objs, "ConfigMap", "spreadagg-streams-config")
    hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
    assert hooks == ["post-install", "pre-upgrade"]
    assert cm["metadata"]["annotations"]["helm.sh/hook"] == job["metadata"]["annotations"]["helm.sh/hook"]
    assert int(cm["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    assert "hook-succeeded" in cm["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert job["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation", "the Job stays for its logs"
    c = pod_spec(job)["containers"][0]
    assert c["args"] == ["streams"]
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "spreadagg-streams-config"
    assert job["spec"]["backoffLimit"] >= 1
    post = one(render(chart, sets=["streamsJob.upgradeHook=post-upgrade"]), "Job", "spreadagg-streams")
    assert post["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert not [o for o in render(chart, sets=["streamsJob.enabled=false"]) if o["kind"] == "Job"]


# -- NATS --------------------------------------------------------------------------------------


def test_nats_dependency_is_declared_with_its_condition_and_not_vendored():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    deps = chart["dependencies"]
    assert len(deps) == 1
    nats = deps[0]
    assert nats["name"] == "nats"
    assert nats["repository"] == "https://nats-io.github.io/k8s/helm/charts/"
    assert nats["condition"] == "nats.enabled"
    assert re.fullmatch(r"[~^]2\.\d+(\.\d+)?|>=\s*2\.\d+(\.\d+)?\s*,?\s*<\s*3(\.0\.0)?", nats["version"]), nats["version"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["nats"]["enabled"] is False
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "charts/spreadagg/charts"], capture_output=True, text=True, check=True).stdout
    assert tracked == "", "the nats chart is fetched by `helm dependency build`, never committed"


def test_production_example_passes_three_replicas_file_storage_and_the_fsync_policy():
    prod = yaml.safe_load((EXAMPLES / "production.yaml").read_text())
    nats = prod["nats"]
    assert nats["enabled"] is True
    assert nats["config"]["cluster"] == {"enabled": True, "replicas": 3}
    js = nats["config"]["jetstream"]
    assert js["enabled"] is True
    assert js["fileStore"]["enabled"] is True and js["fileStore"]["pvc"]["enabled"] is True
    assert re.fullmatch(r"always|\d+(ms|s|m|h)", str(js["merge"]["sync_interval"]))
    assert prod["config"]["streams"]["replicas"] == 3 and prod["config"]["streams"]["storage"] == "file"
    text = (EXAMPLES / "production.yaml").read_text()
    assert "Jepsen" in text or "power loss" in text, "the example explains the fsync trade-off"
    assert set(e for e, v in prod["ingestors"].items() if v["enabled"]) == set(WITH_ADAPTERS)
    assert any(v.get("shards", 1) > 1 for v in prod["ingestors"].values())


def workload_nats_urls(objs):
    return {env_of(c)["NATS_URL"] for o in objs if o["kind"] in WORKLOADS for c in pod_spec(o)["containers"]}


def test_nats_url_is_external_by_default_and_the_dependency_service_when_enabled(rendered, chart):
    default = rendered["default"]
    assert workload_nats_urls(default) == {"nats://nats:4222"}
    assert len(without_stand_in(default)) == len(default), "the nats chart renders nothing when nats.enabled is false"
    prod = rendered["production"]
    stand_in = [o for o in prod if o not in without_stand_in(prod)]
    assert len(stand_in) == 1, "condition nats.enabled switches the dependency on"
    assert workload_nats_urls(prod) == {"nats://spreadagg-nats:4222"}
    override = render(chart, sets=["nats.enabled=true", "nats.fullnameOverride=js"])
    assert workload_nats_urls(override) == {"nats://js:4222"}
    assert workload_nats_urls(render(chart, sets=["nats.url=nats://user:pw@nats.other:4222"])) == {"nats://user:pw@nats.other:4222"}


# -- gateway, archive, simulator, admin token -------------------------------------------------


def test_gateway_service_ingress_and_autoscaler(rendered, chart):
    default = rendered["default"]
    svc = one(default, "Service", "spreadagg-gateway")
    assert [p["port"] for p in svc["spec"]["ports"]] == [8080]
    assert not by_kind(default, "Ingress") and not by_kind(default, "HorizontalPodAutoscaler")
    assert one(default, "Deployment", "spreadagg-gateway")["spec"]["replicas"] == 1
    prod = rendered["production"]
    ing = one(prod, "Ingress", "spreadagg-gateway")
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "spreadagg-gateway", "port": {"name": "http"}}
    hpa = one(prod, "HorizontalPodAutoscaler", "spreadagg-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "spreadagg-gateway"}
    assert "replicas" not in one(prod, "Deployment", "spreadagg-gateway")["spec"], "the autoscaler owns the replica count"
    grpc = render(chart, sets=["gateway.grpc.enabled=true"])
    c = pod_spec(one(grpc, "Deployment", "spreadagg-gateway"))["containers"][0]
    assert env_of(c)["SPREADAGG_GRPC_LISTEN"] == "0.0.0.0:9091"
    assert [p["name"] for p in one(grpc, "Service", "spreadagg-gateway")["spec"]["ports"]] == ["http", "grpc"]


def test_archive_store_credentials_and_volume(rendered, chart):
    d = one(rendered["default"], "Deployment", "spreadagg-archive")
    c = pod_spec(d)["containers"][0]
    assert env_of(c)["SPREADAGG_STORE"] == "file:///var/lib/spreadagg/archive"
    assert "envFrom" not in c
    data = {v["name"]: v for v in pod_spec(d)["volumes"]}["data"]
    assert "emptyDir" in data
    objs = render(chart, sets=["archive.store=s3://spreads/archive", "archive.credentialsSecret=archive-s3"])
    c = pod_spec(one(objs, "Deployment", "spreadagg-archive"))["containers"][0]
    assert c["envFrom"] == [{"secretRef": {"name": "archive-s3"}}]
    assert env_of(c)["SPREADAGG_STORE"] == "s3://spreads/archive"
    prod = rendered["production"]
    pvc = one(prod, "PersistentVolumeClaim", "spreadagg-archive")
    data = {v["name"]: v for v in pod_spec(one(prod, "Deployment", "spreadagg-archive"))["volumes"]}["data"]
    assert data["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    err = render_error(chart, sets=["archive.store=file:///data/archive"])
    assert err and "outside archive.dataPath" in err, "a file store off the data volume would hit the read-only root"
    assert render_error(chart, sets=["archive.store=file:///data/archive", "archive.dataPath=/data"]) is None
    existing = render(chart, sets=["archive.persistence.enabled=true", "archive.persistence.existingClaim=old"])
    assert not by_kind(existing, "PersistentVolumeClaim")


def test_simulator_is_off_by_default_and_wires_every_simulated_ingestor_when_on(rendered, chart):
    assert not [o for o in rendered["default"] if "simulator" in o["metadata"]["name"]]
    objs = rendered["staging"]
    sim = one(objs, "Deployment", "spreadagg-simulator")
    args = pod_spec(sim)["containers"][0]["args"]
    assert args[0] == "simulate"
    ports = yaml.safe_load((CHART / "values.yaml").read_text())["simulator"]["ports"]
    assert args[1:] == [x for e in sorted(ports) for x in ("--port", f"{e}={ports[e]}")]
    svc = one(objs, "Service", "spreadagg-simulator")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == ports
    assert config_toml(objs)["simulate"]["host"] == "0.0.0.0"
    for ex in WITH_ADAPTERS:
        env = env_of(pod_spec(one(objs, "Deployment", f"spreadagg-ingest-{ex}-0"))["containers"][0])
        assert env["SPREADAGG_WS_URL"] == f"ws://spreadagg-simulator:{ports[ex]}{SIM_WS_PATHS[ex]}", ex
        assert env["SPREADAGG_REST_URL"] == f"http://spreadagg-simulator:{ports[ex]}", ex
    own = render(chart, values=[EXAMPLES / "staging.yaml"], sets=["ingestors.okx.wsUrl=wss://ws.okx.com:8443/ws/v5/public"])
    env = env_of(pod_spec(one(own, "Deployment", "spreadagg-ingest-okx-0"))["containers"][0])
    assert env["SPREADAGG_WS_URL"] == "wss://ws.okx.com:8443/ws/v5/public", "an explicit URL wins over the simulator"


def test_admin_token_comes_from_the_secret_on_every_workload(rendered, chart):
    assert all("SPREADAGG_ADMIN_TOKEN" not in env_of(c) for o in rendered["default"] if o["kind"] in WORKLOADS for c in pod_spec(o)["containers"])
    objs = render(chart, sets=["admin.tokenSecret.name=admin", "admin.tokenSecret.key=t"])
    for o in objs:
        if o["kind"] in WORKLOADS:
            assert env_of(pod_spec(o)["containers"][0])["SPREADAGG_ADMIN_TOKEN"] == {"secretKeyRef": {"name": "admin", "key": "t"}}


# -- network policies --------------------------------------------------------------------------


def test_network_policies(rendered, chart):
    objs = rendered["default"]
    pols = {p["metadata"]["name"]: p["spec"] for p in by_kind(objs, "NetworkPolicy")}
    assert set(pols) == {"spreadagg-base", "spreadagg-gateway", "spreadagg-ingest", "spreadagg-archive"}
    base = pols["spreadagg-base"]
    assert base["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "spreadagg", "app.kubernetes.io/instance": "spreadagg"}
    assert base["ingress"][0]["ports"] == [{"port": "admin", "protocol": "TCP"}]
    assert base["ingress"][0]["from"][0]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    egress_ports = {(p["port"], p["protocol"]) for rule in base["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (4222, "TCP")} <= egress_ports
    ingest = pols["spreadagg-ingest"]
    assert ingest["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "ingest"
    assert 443 in {p["port"] for rule in ingest["egress"] for p in rule["ports"]}
    assert {"port": "http", "protocol": "TCP"} in pols["spreadagg-gateway"]["ingress"][0]["ports"]
    staging = {p["metadata"]["name"]: p["spec"] for p in by_kind(rendered["staging"], "NetworkPolicy")}
    assert "spreadagg-simulator" in staging
    assert not by_kind(render(chart, sets=["networkPolicy.enabled=false"]), "NetworkPolicy")


# -- monitors, dashboards, alert rules -------------------------------------------------------


def test_service_monitor_and_pod_monitor(rendered, chart):
    assert not [o for o in rendered["default"] if o["kind"] in CUSTOM_KINDS]
    prod = rendered["production"]
    sm = one(prod, "ServiceMonitor", "spreadagg")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    svc = one(prod, "Service", "spreadagg-metrics")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["endpoints"] and all(e["port"] == "admin" and e["path"] == "/metrics" for e in sm["spec"]["endpoints"])
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["ports"][0]["name"] == "admin"
    scraped = [o for o in prod if o["kind"] in ("Deployment", "StatefulSet")]
    for o in scraped:
        assert svc["spec"]["selector"].items() <= o["spec"]["template"]["metadata"]["labels"].items(), o["metadata"]["name"]
    job = one(prod, "Job", "spreadagg-streams")
    assert not svc["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert "spreadagg.io/exchange" in sm["spec"]["podTargetLabels"]
    pm = one(render(chart, sets=["metrics.podMonitor.enabled=true", "metrics.podMonitor.additionalLabels.release=kps"]), "PodMonitor", "spreadagg")
    assert pm["metadata"]["labels"]["release"] == "kps"
    assert pm["spec"]["podMetricsEndpoints"] and all(e["port"] == "admin" for e in pm["spec"]["podMetricsEndpoints"])
    assert pm["spec"]["selector"]["matchLabels"]["spreadagg.io/scrape"] == "true"


def dashboards_and_rules(objs, label="grafana_dashboard", value="1"):
    cms = [o for o in by_kind(objs, "ConfigMap") if (o["metadata"].get("labels") or {}).get(label) == value]
    rules = by_kind(objs, "PrometheusRule")
    return cms, rules


def check_dashboards_and_rules(chart_dir, objs, tools, tmp_path, label="grafana_dashboard", value="1"):
    files = sorted((chart_dir / "files" / "dashboards").glob("*.json"))
    cms, rules = dashboards_and_rules(objs, label, value)
    assert len(cms) == len(files), "one ConfigMap per dashboard file"
    by_file = {}
    for cm in cms:
        assert len(cm["data"]) == 1
        (name, text), = cm["data"].items()
        by_file[name] = text
    for f in files:
        assert json.loads(by_file[f.name]) == json.loads(f.read_text()), f.name
    rule_file = chart_dir / "files" / "alerts" / "spreadagg.rules.yaml"
    if not rule_file.exists():
        assert rules == []
        return
    assert len(rules) == 1
    groups = rules[0]["spec"]["groups"]
    assert groups == yaml.safe_load(rule_file.read_text())["groups"]
    for g in groups:
        assert g["name"] and g["rules"]
        for r in g["rules"]:
            assert ("alert" in r) != ("record" in r) and r["expr"]
    out = tmp_path / "rendered.rules.yaml"
    out.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    r = subprocess.run([tools["promtool"], "check", "rules", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboards_and_rules_of_the_chart(rendered, tools, tmp_path):
    """Generic over charts/spreadagg/files: one ConfigMap per dashboard file, the rule file's
    groups in the PrometheusRule (and valid for promtool), nothing when the files are absent."""
    check_dashboards_and_rules(CHART, rendered["production"], tools, tmp_path)
    assert dashboards_and_rules(rendered["default"]) == ([], [])


def test_dashboard_and_rule_templates_with_sample_files(tmp_path, tools):
    """The same templates over sample files in a copy of the chart (in place of the real ones):
    Grafana and Prometheus template braces pass through untouched."""
    chart_dir = gen.chart_copy(tmp_path / "sample")
    for sub in ("dashboards", "alerts"):
        shutil.rmtree(chart_dir / "files" / sub, ignore_errors=True)
        (chart_dir / "files" / sub).mkdir(parents=True)
    for name in ("feeds.json", "engine_overview.json"):
        (chart_dir / "files" / "dashboards" / name).write_text(json.dumps(
            {"title": name, "panels": [{"targets": [{"expr": "rate(spreadagg_x_total[1m])", "legendFormat": "{{exchange}}"}]}]}))
    (chart_dir / "files" / "alerts" / "spreadagg.rules.yaml").write_text(
        "groups:\n  - name: spreadagg\n    rules:\n      - alert: SpreadaggSample\n        expr: up == 0\n        for: 1m\n"
        "        labels: {severity: warning}\n        annotations:\n          summary: '{{ $labels.exchange }} is down'\n")
    objs = render(chart_dir, sets=["grafana.dashboards.enabled=true", "prometheusRule.enabled=true",
                                   "grafana.dashboards.label=dash", "grafana.dashboards.labelValue=yes"])
    check_dashboards_and_rules(chart_dir, objs, tools, tmp_path, label="dash", value="yes")
    cms, rules = dashboards_and_rules(objs, "dash", "yes")
    assert len(cms) == 2 and len(rules) == 1
    assert {c["metadata"]["name"] for c in cms} == {"spreadagg-dashboard-feeds", "spreadagg-dashboard-engine-overview"}
    assert rules[0]["spec"]["groups"][0]["rules"][0]["annotations"]["summary"] == "{{ $labels.exchange }} is down"
    off = render(chart_dir)
    assert dashboards_and_rules(off, "dash", "yes") == ([], []) and not by_kind(off, "PrometheusRule")


# -- plain manifests (k8s/) --------------------------------------------------------------------


def test_generated_k8s_tree_has_no_drift(tmp_path, tools):
    gen.generate(tmp_path)
    fresh = gen.generated_files(tmp_path)
    committed = gen.generated_files(ROOT / "k8s")
    differ = sorted(p for p in set(fresh) | set(committed) if fresh.get(p) != committed.get(p))
    assert not differ, f"k8s/ is out of date with the chart: run scripts/gen-k8s ({differ[:10]})"
    assert any(p.startswith("base/") for p in fresh) and any(p.startswith("streams/") for p in fresh)


def kustomize(tools, path):
    r = subprocess.run([tools["kubectl"], "kustomize", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return gen.objects(r.stdout)


def keyed(objs, drop_namespace=False):
    out = {}
    for o in objs:
        o = copy.deepcopy(o)
        if drop_namespace:
            # kustomize's namespace also rewrites a RoleBinding's service account subjects.
            o["metadata"].pop("namespace", None)
            for subject in o.get("subjects", []):
                subject.pop("namespace", None)
        out[(o["kind"], o["metadata"]["name"])] = o
    return out


def test_kustomize_base_and_overlay_build_and_equal_the_chart(tools, chart):
    base = kustomize(tools, ROOT / "k8s" / "base")
    expected = [gen.plain(o) for o in render(chart)]
    assert keyed(base) == keyed(expected)
    overlay = kustomize(tools, ROOT / "k8s" / "overlays" / "production")
    assert {o["metadata"].get("namespace") for o in overlay} == {"spreadagg"}
    prod = [gen.plain(o) for o in render(chart, values=[EXAMPLES / "production.yaml", ROOT / "k8s" / "overlays" / "production" / "values.yaml"])]
    assert keyed(overlay, drop_namespace=True) == keyed(prod, drop_namespace=True)
    assert kinds(overlay).get("ServiceMonitor") == 1 and kinds(overlay).get("Ingress") == 1


def test_k8s_stream_definitions_follow_the_production_streams_section():
    prod = yaml.safe_load((EXAMPLES / "production.yaml").read_text())["config"]["streams"]
    subjects = {"MD_TICKS": "md.tick.>", "MD_TRADES": "md.trade.>", "MD_SPREADS": "md.spread.>", "MD_SIGNALS": "md.signal.>"}
    for name, subject in subjects.items():
        d = json.loads((ROOT / "k8s" / "streams" / f"{name}.json").read_text())
        assert d["name"] == name and d["subjects"] == [subject]
        assert d["num_replicas"] == prod["replicas"] == 3
        assert d["storage"] == prod["storage"]
        assert d["max_age"] == prod["max_age"] * 10**9
        assert d["duplicate_window"] == prod["duplicate_window"] * 10**9


def notes_renderer(tmp_path):
    """NOTES.txt, which `helm template` leaves out, rendered through `tpl` in a copy of the chart:
    a function of --set pairs returning the text."""
    chart_dir = gen.chart_copy(tmp_path)
    (chart_dir / "notes-check").mkdir()
    shutil.copy(chart_dir / "templates" / "NOTES.txt", chart_dir / "notes-check" / "NOTES.txt")
    (chart_dir / "templates" / "zz-notes-check.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes-check}\n"
        "data:\n  notes: {{ tpl (.Files.Get \"notes-check/NOTES.txt\") . | quote }}\n")
    return lambda *sets: one(render(chart_dir, sets=sets), "ConfigMap", "notes-check")["data"]["notes"]


def test_notes_render_with_the_gateway_address_and_warnings(tmp_path):
    """NOTES.txt, which `helm template` leaves out, rendered through `tpl` in a copy of the chart."""
    notes = notes_renderer(tmp_path)
    text = notes()
    assert "port-forward svc/spreadagg-gateway 8080" in text and "nats://nats:4222" in text
    assert "below 3" in text and "adapter" not in text and "simulator is ON" not in text
    text = notes("ingestors.bybit.shards=2", "simulator.enabled=true", "config.streams.replicas=3")
    assert "bybit: 2 shard(s)" in text and "simulator is ON" in text and "below 3" not in text
    # Every exchange has an adapter: no warning about a missing one, whichever is enabled.
    assert "adapter" not in text


ARCHIVE_WARNING = "WARNING: THE ARCHIVE IS NOT PERSISTENT"


def test_notes_warn_loudly_when_a_file_archive_is_on_an_empty_dir(tmp_path):
    notes = notes_renderer(tmp_path)
    text = notes()
    assert ARCHIVE_WARNING in text
    assert "file:///var/lib/spreadagg/archive" in text and "archive.persistence.enabled=true" in text
    assert ARCHIVE_WARNING in notes("archive.store=file:///var/lib/spreadagg/elsewhere")
    assert ARCHIVE_WARNING not in notes("archive.persistence.enabled=true")
    assert ARCHIVE_WARNING not in notes("archive.persistence.enabled=true", "archive.persistence.existingClaim=old")
    assert ARCHIVE_WARNING not in notes("archive.store=s3://spreads/archive")
    assert ARCHIVE_WARNING not in notes("archive.enabled=false")


OPAQUE = {"resources", "podSecurityContext", "securityContext", "metricsNamespaceSelector", "namespaceSelector", "podSelector", "hosts", "ports"}


def leaf_paths(node, path=()):
    if isinstance(node, dict) and node and not (path and path[-1] in OPAQUE):
        for k, v in node.items():
            yield from leaf_paths(v, path + (k,))
    else:
        yield path


def test_readme_lists_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"`([A-Za-z0-9_.<>]+)`", readme))
    missing = []
    for path in leaf_paths(values):
        if path[0] == "ingestors":
            path = ("ingestors", "<id>") + path[2:]
        if ".".join(path) not in documented:
            missing.append(".".join(path))
    assert not missing, f"charts/spreadagg/README.md does not list: {missing}"


# -- names of a long release -------------------------------------------------------------------

# 53 characters, Helm's longest release name, without "spreadagg" in it (so the full name is
# "<release>-spreadagg", cut to 50).
LONG_RELEASE = "market-data-spread-aggregator-production-eu-west-1-ab"


def test_a_53_character_release_name_renders_names_and_labels_kubernetes_accepts(chart, tmp_path):
    """Every name and label value of a maximal release fits in 63 characters; the engine
    StatefulSet's name leaves room for the controller-revision-hash label Kubernetes puts on
    its pods (the name, '-' and a hash of about 10 characters), so at most 52."""
    assert len(LONG_RELEASE) == 53
    values = write_values(tmp_path, "everything", {
        "ingestors": {e: {"enabled": True} for e in EXCHANGES} | {"coinbase": {"enabled": True, "shards": 12}},
        "simulator": {"enabled": True},
        "archive": {"persistence": {"enabled": True}},
        "gateway": {"ingress": {"enabled": True}, "autoscaling": {"enabled": True}},
        "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
        "grafana": {"dashboards": {"enabled": True}},
        "prometheusRule": {"enabled": True},
    })
    try:
        objs = without_stand_in(gen.objects(gen.render(chart, values=[values], release=LONG_RELEASE)))
    except subprocess.CalledProcessError as e:
        pytest.fail(f"helm template failed:\n{e.stderr}")
    problems = []

    def labels(where, mapping):
        for k, v in (mapping or {}).items():
            if len(str(v)) > 63:
                problems.append(f"{where}: label {k}={v} is {len(str(v))} characters")

    names = set()
    for o in objs:
        kind, name = o["kind"], o["metadata"]["name"]
        assert (kind, name) not in names, f"two {kind} objects named {name}"
        names.add((kind, name))
        if len(name) > 63:
            problems.append(f"{kind}/{name}: name is {len(name)} characters")
        labels(f"{kind}/{name}", o["metadata"].get("labels"))
        spec = o.get("spec") or {}
        labels(f"{kind}/{name} selector", (spec.get("selector") or {}).get("matchLabels"))
        labels(f"{kind}/{name} pod template", ((spec.get("template") or {}).get("metadata") or {}).get("labels"))
        if kind == "Job":
            labels(f"{kind}/{name} job-name", {"batch.kubernetes.io/job-name": name})
    sts = by_kind(objs, "StatefulSet")
    assert len(sts) == 1
    name = sts[0]["metadata"]["name"]
    if len(name) > 52:
        problems.append(f"StatefulSet/{name}: {len(name)} characters, so its pods' controller-revision-hash "
                        f"label ({name}-<hash>) is longer than 63")
    assert not problems, "\n".join(problems)
    # What refers to those names still finds them.
    by_name = {(o["kind"], o["metadata"]["name"]) for o in objs}
    assert ("Service", sts[0]["spec"]["serviceName"]) in by_name
    for o in objs:
        if o["kind"] in WORKLOADS:
            spec = pod_spec(o)
            for v in spec["volumes"]:
                if "configMap" in v:
                    assert ("ConfigMap", v["configMap"]["name"]) in by_name, o["metadata"]["name"]
                if "persistentVolumeClaim" in v:
                    assert ("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]) in by_name
            assert ("ServiceAccount", spec["serviceAccountName"]) in by_name
            for c in spec["containers"]:
                for key in ("SPREADAGG_WS_URL", "SPREADAGG_REST_URL"):
                    url = env_of(c).get(key)
                    if url:
                        host = re.match(r"\w+://([^:/]+)", url).group(1)
                        assert ("Service", host) in by_name, f"{o['metadata']['name']}: {key} names no Service"
    for kind in ("HorizontalPodAutoscaler",):
        for o in by_kind(objs, kind):
            assert ("Deployment", o["spec"]["scaleTargetRef"]["name"]) in by_name
    for o in by_kind(objs, "Ingress"):
        for rule in o["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                assert ("Service", p["backend"]["service"]["name"]) in by_name


def test_short_release_names_keep_their_object_names(rendered):
    """Fitting long names into 63 characters renames nothing that already fitted."""
    names = {(o["kind"], o["metadata"]["name"]) for o in without_stand_in(rendered["default"])}
    for expected in [("StatefulSet", "spreadagg-engine"), ("Service", "spreadagg-engine"), ("Deployment", "spreadagg-archive"),
                     ("Deployment", "spreadagg-ingest-binance-0"), ("ConfigMap", "spreadagg-config"),
                     ("ConfigMap", "spreadagg-streams-config"), ("Job", "spreadagg-streams"), ("Service", "spreadagg-gateway"),
                     ("NetworkPolicy", "spreadagg-base"), ("ServiceAccount", "spreadagg")]:
        assert expected in names, expected


def test_autoscaler_min_above_max_fails_rendering(chart):
    """The API server refuses an HPA whose minReplicas exceeds maxReplicas; rendering says so first."""
    err = render_error(chart, sets=["gateway.autoscaling.enabled=true", "gateway.autoscaling.minReplicas=5",
                                    "gateway.autoscaling.maxReplicas=3"])
    assert err is not None, "helm template accepted minReplicas 5 above maxReplicas 3"
    assert "gateway.autoscaling.minReplicas (5) must not exceed gateway.autoscaling.maxReplicas (3)" in err, err
    hpa = one(render(chart, sets=["gateway.autoscaling.enabled=true", "gateway.autoscaling.minReplicas=4",
                                  "gateway.autoscaling.maxReplicas=4"]), "HorizontalPodAutoscaler", "spreadagg-gateway")
    assert hpa["spec"]["minReplicas"] == hpa["spec"]["maxReplicas"] == 4
    # Off, the autoscaler's bounds are not used and not checked.
    assert render_error(chart, sets=["gateway.autoscaling.minReplicas=5", "gateway.autoscaling.maxReplicas=3"]) is None


# -- NATS URL from a Secret --------------------------------------------------------------------


def test_nats_url_from_a_secret_on_every_pod(chart):
    for extra in ([], ["nats.enabled=true"]):
        objs = render(chart, sets=["nats.urlSecret.name=nats-creds", "nats.urlSecret.key=url", "streamsJob.enabled=true", *extra])
        workloads = [o for o in objs if o["kind"] in WORKLOADS]
        assert {o["kind"] for o in workloads} == set(WORKLOADS)
        for o in workloads:
            for c in pod_spec(o)["containers"]:
                env = [e for e in c["env"] if e["name"] == "NATS_URL"]
                assert env == [{"name": "NATS_URL", "valueFrom": {"secretKeyRef": {"name": "nats-creds", "key": "url"}}}], o["metadata"]["name"]
        assert "nats://" not in yaml.safe_dump_all(objs).replace("nats://nats:4222", ""), "no URL literal anywhere"
    err = render_error(chart, sets=["nats.urlSecret.name=nats-creds"])
    assert err and "nats.urlSecret.key is required" in err, err


def test_notes_never_print_nats_credentials(tmp_path):
    notes = notes_renderer(tmp_path)
    text = notes("nats.url=nats://spreadagg:hunter2@nats.other:4222")
    assert "hunter2" not in text and "spreadagg:" not in text.split("NATS:", 1)[1].splitlines()[0]
    assert "NATS: nats://***@nats.other:4222 (external, nats.url)" in text
    text = notes("nats.url=tls://s3cr3t-token@nats.other:4222")
    assert "s3cr3t" not in text and "tls://***@nats.other:4222" in text
    assert "NATS: nats://nats:4222 (external, nats.url)" in notes(), "a URL without credentials is printed whole"
    text = notes("nats.url=nats://u:p4ss@nats:4222", "nats.urlSecret.name=nats-creds", "nats.urlSecret.key=url")
    assert "NATS: from Secret nats-creds, key url (nats.urlSecret)" in text and "p4ss" not in text


# -- network policies: DNS and the ingestors' extra egress -------------------------------------

# The examples of README.md's "Network policies" section.
NODELOCAL_DNS = {"networkPolicy": {"dns": {"extraTo": [{"ipBlock": {"cidr": "169.254.20.10/32"}}]}}}
OPENSHIFT_DNS = {"networkPolicy": {"dns": {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}},
    "podSelector": {"matchLabels": {"k8s-app": None, "dns.operator.openshift.io/daemonset-dns": "default"}},
    "ports": [{"port": 5353, "protocol": "UDP"}, {"port": 5353, "protocol": "TCP"}]}}}
INGEST_PROXY = {"networkPolicy": {"ingestExtraEgress": [
    {"to": [{"ipBlock": {"cidr": "10.20.0.15/32"}}], "ports": [{"port": 3128, "protocol": "TCP"}]}]}}
KUBE_DNS = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}


def dns_rule(objs):
    base = one(objs, "NetworkPolicy", "spreadagg-base")["spec"]
    rules = [r for r in base["egress"] if any(p["port"] in (53, 5353) for p in r["ports"])]
    assert len(rules) == 1, base["egress"]
    return rules[0]


def test_dns_egress_defaults_nodelocal_and_openshift(rendered, chart, tools, tmp_path):
    default = dns_rule(rendered["default"])
    assert default["to"] == [KUBE_DNS]
    assert default["ports"] == [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
    readme = (CHART / "README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    for name, values in (("nodelocal", NODELOCAL_DNS), ("openshift", OPENSHIFT_DNS), ("proxy", INGEST_PROXY)):
        assert values in blocks, f"README.md lacks the {name} example"
    for name, values in (("nodelocal", NODELOCAL_DNS), ("openshift", OPENSHIFT_DNS)):
        objs = render(chart, values=[write_values(tmp_path, name, values)])
        rc, lines = kubernetes_validate(tools, by_kind(objs, "NetworkPolicy"), "1.30.0", tmp_path)
        assert rc == 0, "\n".join(lines)
        rule = dns_rule(objs)
        if name == "nodelocal":
            assert rule["to"] == [KUBE_DNS, {"ipBlock": {"cidr": "169.254.20.10/32"}}]
            assert rule["ports"] == default["ports"]
        else:
            # The default's k8s-app label is gone (null in the values), not merged in.
            assert rule["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}},
                                   "podSelector": {"matchLabels": {"dns.operator.openshift.io/daemonset-dns": "default"}}}]
            assert rule["ports"] == [{"port": 5353, "protocol": "UDP"}, {"port": 5353, "protocol": "TCP"}]
    only_ip = write_values(tmp_path, "only-ip", {"networkPolicy": {"dns": {
        "namespaceSelector": None, "podSelector": None, "extraTo": [{"ipBlock": {"cidr": "169.254.20.10/32"}}]}}})
    assert dns_rule(render(chart, values=[only_ip]))["to"] == [{"ipBlock": {"cidr": "169.254.20.10/32"}}]


def test_ingest_extra_egress(rendered, chart, tools, tmp_path):
    default = one(rendered["default"], "NetworkPolicy", "spreadagg-ingest")["spec"]["egress"]
    objs = render(chart, values=[EXAMPLES / "staging.yaml", write_values(tmp_path, "proxy", INGEST_PROXY)])
    egress = one(objs, "NetworkPolicy", "spreadagg-ingest")["spec"]["egress"]
    assert egress[:len(default)] == default
    assert INGEST_PROXY["networkPolicy"]["ingestExtraEgress"][0] in egress
    assert len(egress) == len(default) + 2, "the proxy rule and the simulator's"
    rc, lines = kubernetes_validate(tools, by_kind(objs, "NetworkPolicy"), "1.30.0", tmp_path)
    assert rc == 0, "\n".join(lines)


def test_operations_doc_names_only_values_that_exist():
    """docs/operations.md tells operators which values to set (the Upgrade section: the stream
    hook, NATS and network-policy keys); every key it names is a key of values.yaml."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    text = (ROOT / "docs" / "operations.md").read_text()
    named = set(re.findall(r"`((?:nats|networkPolicy|streamsJob|archive|gateway|ingestors|metrics|prometheusRule|grafana)\.[A-Za-z0-9_.<>]+)", text))
    assert {"streamsJob.upgradeHook", "networkPolicy.natsPorts", "networkPolicy.natsTo", "nats.url"} <= named
    assert "streamsJob.upgradeHook=post-upgrade" in text
    upgrade = text.split("### Upgrade", 1)[1].split("\n### ", 1)[0]
    for key in ("networkPolicy.natsPorts", "networkPolicy.natsTo", "nats.url", "streamsJob.upgradeHook=post-upgrade"):
        assert key in upgrade, f"the Upgrade section does not mention {key}"
    for path in sorted(named):
        parts = path.split(".")
        if parts[0] == "ingestors" and len(parts) > 2 and parts[2] != "enabled":
            parts = ["ingestDefaults", *parts[2:]]  # an exchange takes any ingestDefaults key
        elif parts[0] == "ingestors" and parts[1] == "<id>":
            parts = ["ingestors", "binance", *parts[2:]]
        node = values
        for part in parts:
            if node == {}:
                break  # a free-form map (nats.config.jetstream.merge, config.engine): any key
            assert isinstance(node, dict) and part in node, f"docs/operations.md names `{path}`, which values.yaml does not have"
            node = node[part]


def test_archive_leader_election_wires_the_lease_rbac_and_a_standby(rendered, chart):
    """Production runs a standby archiver: two replicas, rolling (not Recreate), a [lease] the
    binary knows, POD_NAMESPACE from the downward API, a token only in the archiver's pods, a
    Role that may renew only its own Lease, and egress to the API server."""
    objs = rendered["production"]
    archive = one(objs, "Deployment", "spreadagg-archive")
    assert archive["spec"]["replicas"] == 2
    assert archive["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = archive["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    for o in objs:
        if o["kind"] in ("Deployment", "StatefulSet", "Job") and o["metadata"]["name"] != "spreadagg-archive":
            spec = o["spec"]["template"]["spec"]
            assert spec["automountServiceAccountToken"] is False, o["metadata"]["name"]
    lease = config_toml(objs)["lease"]
    check_toml_keys(config_toml(objs))
    assert lease == {"name": "spreadagg-archive", "duration_s": 15, "renew_every_s": 5}
    role = one(objs, "Role", "spreadagg-archive-lease")
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": ["spreadagg-archive"], "verbs": ["get", "update"]}]
    binding = one(objs, "RoleBinding", "spreadagg-archive-lease")
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    policy = one(objs, "NetworkPolicy", "spreadagg-archive")
    ports = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])}
    assert 6443 in ports
    # Off by default: one archiver, Recreate, no token, no Role, no [lease].
    default = rendered["default"]
    archive = one(default, "Deployment", "spreadagg-archive")
    assert archive["spec"]["replicas"] == 1 and archive["spec"]["strategy"]["type"] == "Recreate"
    assert archive["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert not by_kind(default, "Role") and "lease" not in config_toml(default)


def test_archive_leader_election_refuses_a_store_replicas_cannot_share(chart):
    err = render_error(chart, sets=["archive.leaderElection.enabled=true"])
    assert err is not None and "ReadWriteMany" in err, err
    err = render_error(chart, sets=["archive.leaderElection.enabled=true", "archive.store=memory://",
                                    "archive.leaderElection.renewEverySeconds=6"])
    assert err is not None and "renewEverySeconds" in err, err
    err = render_error(chart, sets=["archive.leaderElection.enabled=true", "archive.store=memory://",
                                    "config.drain_timeout_s=6"])
    assert err is not None and "drain_timeout_s" in err, err
    assert render_error(chart, sets=["archive.leaderElection.enabled=true", "archive.store=s3://spreads-archive/p"]) is None
