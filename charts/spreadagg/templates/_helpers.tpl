{{/*
Names, labels and the pod spec every role shares. Role templates (ingest.yaml, engine.yaml,
archive.yaml, gateway.yaml, simulator.yaml, streams-job.yaml) only add what is theirs.
*/}}

{{- define "spreadagg.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spreadagg.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The name of one of the release's objects: "<fullname>-<suffix>", at most `max` characters
(63, a DNS label, unless given). When it would be longer, the full name is cut, never the
suffix, so names stay distinct (ingest-<exchange>-<shard>, dashboard-<file>). Names that fit
are "<fullname>-<suffix>" unchanged. Input: dict root, suffix, and optionally max.
*/}}
{{- define "spreadagg.componentName" -}}
{{- $max := int (default 63 .max) }}
{{- $full := include "spreadagg.fullname" .root }}
{{- $room := sub $max (add (len .suffix) 1) | int }}
{{- printf "%s-%s" ($full | trunc $room | trimSuffix "-") .suffix }}
{{- end }}

{{/*
The engine's name (StatefulSet, its headless Service and PDB). At most 52 characters: the
StatefulSet controller labels every pod controller-revision-hash=<name>-<hash of about 10
characters>, and a label value longer than 63 stops it creating the pods.
*/}}
{{- define "spreadagg.engineName" -}}
{{- include "spreadagg.componentName" (dict "root" . "suffix" "engine" "max" 52) }}
{{- end }}

{{- define "spreadagg.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the whole release (every pod of every role). */}}
{{- define "spreadagg.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spreadagg.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "spreadagg.labels" -}}
helm.sh/chart: {{ include "spreadagg.chart" . }}
{{ include "spreadagg.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: spread-aggregator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of one workload. Input: dict root, component, and optionally exchange, shard.
*/}}
{{- define "spreadagg.workloadSelector" -}}
{{ include "spreadagg.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- if hasKey . "exchange" }}
spreadagg.io/exchange: {{ .exchange }}
spreadagg.io/shard: {{ .shard | quote }}
{{- end }}
{{- end }}

{{/* Labels of one workload's objects and pods (same input as spreadagg.workloadSelector). */}}
{{- define "spreadagg.workloadLabels" -}}
{{ include "spreadagg.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- if hasKey . "exchange" }}
spreadagg.io/exchange: {{ .exchange }}
spreadagg.io/shard: {{ .shard | quote }}
{{- end }}
{{- end }}

{{- define "spreadagg.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spreadagg.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "spreadagg.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The NATS URL every role gets: the in-release nats chart's client Service when nats.enabled
(named as that chart names it: nats.service.name, else its full name), else nats.url.
*/}}
{{- define "spreadagg.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- $svc := "" }}
{{- if and .Values.nats.service .Values.nats.service.name }}
{{- $svc = .Values.nats.service.name }}
{{- else if .Values.nats.fullnameOverride }}
{{- $svc = .Values.nats.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $n := default "nats" .Values.nats.nameOverride }}
{{- if contains $n .Release.Name }}
{{- $svc = .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $svc = printf "%s-%s" .Release.Name $n | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- printf "nats://%s:4222" $svc }}
{{- else }}
{{- required "nats.url is required when nats.enabled is false" .Values.nats.url }}
{{- end }}
{{- end }}

{{/*
The Secret holding the NATS URL (nats.urlSecret) as a secretKeyRef body, or nothing when
nats.urlSecret.name is empty.
*/}}
{{- define "spreadagg.natsUrlSecretRef" -}}
{{- $name := dig "urlSecret" "name" "" .Values.nats }}
{{- if $name }}
name: {{ $name }}
key: {{ required "nats.urlSecret.key is required when nats.urlSecret.name is set" (dig "urlSecret" "key" "" .Values.nats) }}
{{- end }}
{{- end }}

{{/*
The NATS URL as NOTES.txt may print it: where it comes from a Secret, the Secret and key; else
the URL with any credentials (user:password@ or token@) replaced by ***@.
*/}}
{{- define "spreadagg.natsUrlForDisplay" -}}
{{- $ref := include "spreadagg.natsUrlSecretRef" . | fromYaml }}
{{- if $ref }}
{{- printf "from Secret %s, key %s" $ref.name $ref.key }}
{{- else }}
{{- regexReplaceAll "^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@" (include "spreadagg.natsUrl" .) "${1}***@" }}
{{- end }}
{{- end }}

{{/* A TOML value: strings, numbers, booleans and arrays of them are valid TOML as JSON. */}}
{{- define "spreadagg.tomlValue" -}}
{{- if kindIs "map" . -}}
{{- /* An inline table (archive.store_options): { "key" = "value", ... } */ -}}
{ {{- range $i, $k := keys . | sortAlpha }}{{ if $i }},{{ end }} {{ toJson $k }} = {{ toJson (get $ $k) }}{{ end }} }
{{- else -}}
{{- toJson . }}
{{- end }}
{{- end }}

{{/* A TOML table body from a flat map; null values are left out (the binary's default). */}}
{{- define "spreadagg.tomlTable" -}}
{{- range $k, $v := . }}
{{- if not (kindIs "invalid" $v) }}
{{ $k }} = {{ include "spreadagg.tomlValue" $v }}
{{- end }}
{{- end }}
{{- end }}

{{/* The whole spreadagg.toml. */}}
{{- define "spreadagg.configToml" -}}
# spreadagg configuration, rendered by the chart from .Values.config (docs/configuration.md).
# The NATS URL, admin address, log format and per-role flags come from the environment.
{{- $c := .Values.config }}
{{- if not (kindIs "invalid" $c.drain_timeout_s) }}
drain_timeout_s = {{ include "spreadagg.tomlValue" $c.drain_timeout_s }}
{{- end }}

[streams]
{{- include "spreadagg.tomlTable" $c.streams }}
{{- range $section := list "ingest" "engine" "archive" "gateway" }}
{{- with (get $c $section) }}

[{{ $section }}]
{{- include "spreadagg.tomlTable" . }}
{{- end }}
{{- end }}
{{- with .Values.archive.leaderElection }}
{{- if .enabled }}

[lease]
name = {{ include "spreadagg.componentName" (dict "root" $ "suffix" "archive") | quote }}
duration_s = {{ .durationSeconds }}
renew_every_s = {{ .renewEverySeconds }}
{{- end }}
{{- end }}
{{- if .Values.simulator.enabled }}

[simulate]
host = "0.0.0.0"
exchanges = {{ include "spreadagg.tomlValue" (keys .Values.simulator.ports | sortAlpha) }}
{{- include "spreadagg.tomlTable" .Values.simulator.config }}
{{- end }}
{{- end }}

{{/* Annotation that rolls pods when the configuration file changes. */}}
{{- define "spreadagg.configChecksum" -}}
checksum/config: {{ include "spreadagg.configToml" . | sha256sum }}
{{- end }}

{{/*
The pod spec every long-running role shares. Input: dict
  root       the chart context
  name       container name (the role)
  args       container args (list)
  env        extra env (list of EnvVar), after the shared ones
  envFrom    list of EnvFromSource (optional)
  ports      extra container ports (list, optional)
  volumes    extra volumes (list, optional); mounts: extra volumeMounts (list, optional)
  role       the role's values (resources, nodeSelector, tolerations, affinity, extraEnv)
  probes     false for the stream Job (no probes, no preStop, restartPolicy OnFailure)
  automountToken  true to mount the service account token (default false)
*/}}
{{- define "spreadagg.podSpec" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $role := .role }}
{{- $long := ternary .probes true (hasKey . "probes") -}}
serviceAccountName: {{ include "spreadagg.serviceAccountName" $root }}
{{- /* Only a role that talks to the Kubernetes API (the archiver's Lease) gets a token. */}}
automountServiceAccountToken: {{ .automountToken | default false }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- if $long }}
terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
{{- else }}
restartPolicy: OnFailure
{{- end }}
{{- with (default $v.nodeSelector $role.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $v.tolerations $role.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $v.affinity $role.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: {{ .name }}
    image: {{ include "spreadagg.image" $root }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    args:
      {{- toYaml .args | nindent 6 }}
    env:
      - name: NATS_URL
        {{- with include "spreadagg.natsUrlSecretRef" $root }}
        valueFrom:
          secretKeyRef:
            {{- . | trim | nindent 12 }}
        {{- else }}
        value: {{ include "spreadagg.natsUrl" $root | quote }}
        {{- end }}
      - name: SPREADAGG_ADMIN_ADDR
        value: "0.0.0.0:{{ $v.admin.port }}"
      - name: SPREADAGG_CONFIG
        value: /etc/spreadagg/spreadagg.toml
      - name: SPREADAGG_LOG_FORMAT
        value: {{ $v.logFormat | quote }}
      - name: RUST_LOG
        value: {{ $v.logLevel | quote }}
      {{- if $v.admin.tokenSecret.name }}
      - name: SPREADAGG_ADMIN_TOKEN
        valueFrom:
          secretKeyRef:
            name: {{ $v.admin.tokenSecret.name }}
            key: {{ $v.admin.tokenSecret.key }}
      {{- end }}
      {{- with .env }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{- with $v.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{- with $role.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with .envFrom }}
    envFrom:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    ports:
      - name: admin
        containerPort: {{ $v.admin.port }}
        protocol: TCP
      {{- with .ports }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- if $long }}
    startupProbe:
      httpGet: {path: /healthz, port: admin}
      periodSeconds: {{ $v.probes.startup.periodSeconds }}
      failureThreshold: {{ $v.probes.startup.failureThreshold }}
    readinessProbe:
      httpGet: {path: /readyz, port: admin}
      periodSeconds: {{ $v.probes.readiness.periodSeconds }}
      failureThreshold: {{ $v.probes.readiness.failureThreshold }}
    livenessProbe:
      httpGet: {path: /healthz, port: admin}
      periodSeconds: {{ $v.probes.liveness.periodSeconds }}
      failureThreshold: {{ $v.probes.liveness.failureThreshold }}
      timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
    lifecycle:
      preStop:
        exec:
          # After the delay, POST /drain on the local admin address (with SPREADAGG_ADMIN_TOKEN
          # if set); SIGTERM follows and finds the role already draining.
          command: ["spreadagg", "drain", "--delay", {{ include "spreadagg.preStopDelay" (dict "v" $v "role" $role) | quote }}]
    {{- end }}
    resources:
      {{- toYaml $role.resources | nindent 6 }}
    securityContext:
      {{- toYaml $v.securityContext | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/spreadagg
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- with .mounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ .configMap | default (include "spreadagg.componentName" (dict "root" $root "suffix" "config")) }}
  - name: tmp
    emptyDir:
      sizeLimit: {{ $v.tmpSizeLimit }}
  {{- with .volumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Pod template metadata. Input: dict root, sel (selector dict for workloadLabels), role. */}}
{{- define "spreadagg.podMetadata" -}}
labels:
  {{- include "spreadagg.workloadLabels" .sel | nindent 2 }}
  spreadagg.io/scrape: "true"
annotations:
  {{- include "spreadagg.configChecksum" .root | nindent 2 }}
  {{- with .root.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .role.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* A PodDisruptionBudget for one workload. Input: dict root, sel, name, pdb. */}}
{{- define "spreadagg.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "spreadagg.workloadLabels" .sel | nindent 4 }}
spec:
  maxUnavailable: {{ .pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "spreadagg.workloadSelector" .sel | nindent 6 }}
{{- end }}

{{/*
The effective settings of one ingestor: each key of ingestDefaults, replaced by the
exchange's own when it has the key (even a zero or empty value); extraEnv is appended.
Input: dict root, id. Output: JSON.
*/}}
{{- define "spreadagg.ingestor" -}}
{{- $d := .root.Values.ingestDefaults }}
{{- $e := get .root.Values.ingestors .id }}
{{- $out := dict }}
{{- range $k, $dv := $d }}
{{- $_ := set $out $k (ternary (get $e $k) $dv (hasKey $e $k)) }}
{{- end }}
{{- $_ := set $out "extraEnv" (concat ($d.extraEnv | default list) ($e.extraEnv | default list)) }}
{{- $_ := set $out "enabled" $e.enabled }}
{{- toJson $out }}
{{- end }}

{{/* WebSocket path of each simulated exchange (docs/simulator.md). */}}
{{- define "spreadagg.simWsPath" -}}
{{- $paths := dict "binance" "/ws" "okx" "/ws/v5/public" "htx" "/ws" "kucoin" "/" "mexc" "/ws" "bybit" "/v5/public/spot" "gateio" "/ws/v4/" "bitget" "/v2/ws/public" "bingx" "/market" "coinbase" "/" "kraken" "/v2" }}
{{- get $paths . }}
{{- end }}

{{/*
The preStop delay of a role (its own, else the global one), checked against the grace period:
the delay, then the roles' drain (config.drain_timeout_s, 4.5 s by default), with 5 s to spare.
*/}}
{{- define "spreadagg.preStopDelay" -}}
{{- $delay := .v.preStopDelaySeconds -}}
{{- if hasKey .role "preStopDelaySeconds" }}{{ $delay = .role.preStopDelaySeconds }}{{ end -}}
{{- $drain := 4.5 -}}
{{- if and .v.config (hasKey .v.config "drain_timeout_s") }}{{ $drain = .v.config.drain_timeout_s }}{{ end -}}
{{- if lt (float64 .v.terminationGracePeriodSeconds) (addf $delay $drain 5) -}}
{{- fail (printf "terminationGracePeriodSeconds (%v) must cover the preStop delay (%v s) plus drain_timeout_s (%v s) plus 5 s" .v.terminationGracePeriodSeconds $delay $drain) -}}
{{- end -}}
{{- $delay -}}
{{- end }}
