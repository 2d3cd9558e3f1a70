{{/* Names, labels, images and the shared pieces of every pod. */}}

{{- define "treadle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "treadle.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of a component's objects: (dict "root" $ "component" "trainer-smollm2"). */}}
{{- define "treadle.componentName" -}}
{{- printf "%s-%s" (include "treadle.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "treadle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "treadle.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .model }}
treadle.dev/base-model: {{ . }}
{{- end }}
{{- end -}}

{{/* Labels of every object: (dict "root" $ "component" "trainer" "model" "smollm2"). */}}
{{- define "treadle.labels" -}}
{{ include "treadle.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: treadle
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that make a Service's metrics port a scrape target of the ServiceMonitor. */}}
{{- define "treadle.metricsLabels" -}}
treadle.dev/metrics: "true"
treadle.dev/job: treadle-{{ . }}
{{- end -}}

{{- define "treadle.image" -}}
{{- printf "%s/treadle-%s:%s" .root.Values.image.registry .service (default .root.Chart.AppVersion .root.Values.image.tag) -}}
{{- end -}}

{{/* GPUs in a container's resources (nvidia.com/gpu of its limits, else its requests). */}}
{{- define "treadle.gpuCount" -}}
{{- $limits := default dict .limits -}}
{{- $requests := default dict .requests -}}
{{- int (get $limits "nvidia.com/gpu" | default (get $requests "nvidia.com/gpu") | default 0) -}}
{{- end -}}

{{/* Whole CPUs of a container's resources (its CPU limit, else its request; at least 1), or
nothing without either: "4", 2, "2500m" and 1.5 give 4, 2, 2 and 1. */}}
{{- define "treadle.cpuCount" -}}
{{- $cpu := (default dict .limits).cpu | default (default dict .requests).cpu -}}
{{- with $cpu -}}
{{- $text := toString . -}}
{{- if hasSuffix "m" $text -}}
{{- div (atoi (trimSuffix "m" $text)) 1000 | max 1 -}}
{{- else -}}
{{- float64 $text | floor | int | max 1 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* An environment variable's value from a config value (no exponent notation for numbers). */}}
{{- define "treadle.envValue" -}}
{{- if kindIs "float64" . -}}
{{- if eq (float64 (int64 .)) . -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/* TREADLE_<SERVICE>_<FIELD> variables of a `config` map: (dict "service" "trainer" "config" $cfg). */}}
{{- define "treadle.configEnv" -}}
{{- $prefix := printf "TREADLE_%s_" (upper .service) -}}
{{- range $key, $value := .config }}
- name: {{ printf "%s%s" $prefix (upper $key) }}
  value: {{ include "treadle.envValue" $value | quote }}
{{- end }}
{{- end -}}

{{/* The variables every service gets: listen on all interfaces, its ports. */}}
{{- define "treadle.serverEnv" -}}
{{- $prefix := printf "TREADLE_%s_" (upper .service) -}}
- name: {{ $prefix }}HOST
  value: "0.0.0.0"
- name: {{ $prefix }}PORT
  value: {{ .port | quote }}
- name: {{ $prefix }}METRICS_PORT
  value: {{ .root.Values.metricsPort | quote }}
- name: HF_HUB_OFFLINE
  value: "1"
- name: HOME
  value: /tmp
{{- end -}}

{{/* Container ports and gRPC health probes of a service's main container. */}}
{{- define "treadle.ports" -}}
ports:
  - name: grpc
    containerPort: {{ .port }}
    protocol: TCP
  - name: metrics
    containerPort: {{ .root.Values.metricsPort }}
    protocol: TCP
{{- end -}}

{{- define "treadle.probes" -}}
{{- if .startupSeconds }}
startupProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: 10
  failureThreshold: {{ div .startupSeconds 10 | max 1 }}
{{- end }}
readinessProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: 10
  timeoutSeconds: 5
livenessProbe:
  grpc:
    port: {{ .port }}
  periodSeconds: 20
  timeoutSeconds: 5
  failureThreshold: 6
{{- end -}}

{{- define "treadle.checkpointsAddress" -}}
{{ include "treadle.componentName" (dict "root" . "component" "checkpoints") }}:{{ .Values.checkpoints.port }}
{{- end -}}

{{- define "treadle.apiKeysSecret" -}}
{{- default (include "treadle.componentName" (dict "root" . "component" "api-keys")) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "treadle.s3Secret" -}}
{{- default (include "treadle.componentName" (dict "root" . "component" "s3")) .Values.objectStore.existingSecret -}}
{{- end -}}

{{- define "treadle.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{ include "treadle.componentName" (dict "root" . "component" "minio") }}:{{ .Values.minio.port }}
{{- else -}}
{{ required "objectStore.endpoint: set the S3 host:port when minio.enabled is false" .Values.objectStore.endpoint }}
{{- end -}}
{{- end -}}

{{/* S3 settings of the checkpoints service and the bucket Job. */}}
{{- define "treadle.s3Env" -}}
- name: TREADLE_CHECKPOINTS_S3_ENDPOINT
  value: {{ include "treadle.s3Endpoint" . | quote }}
- name: TREADLE_CHECKPOINTS_S3_SECURE
  value: {{ .Values.objectStore.secure | quote }}
- name: TREADLE_CHECKPOINTS_S3_REGION
  value: {{ .Values.objectStore.region | quote }}
- name: TREADLE_CHECKPOINTS_BUCKET
  value: {{ .Values.objectStore.bucket | quote }}
- name: TREADLE_CHECKPOINTS_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "treadle.s3Secret" . }}
      key: access-key
- name: TREADLE_CHECKPOINTS_S3_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "treadle.s3Secret" . }}
      key: secret-key
{{- end -}}

{{/* Pod-level settings shared by every workload: (dict "root" $ "spec" $componentValues). */}}
{{- define "treadle.podCommon" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .spec.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .spec.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .spec.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The models volume, when one is configured. */}}
{{- define "treadle.modelsVolume" -}}
{{- with .Values.models.volume }}
- name: models
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "treadle.modelsMount" -}}
{{- if .Values.models.volume }}
- name: models
  mountPath: {{ .Values.models.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* A PodDisruptionBudget: (dict "root" $ "component" "trainer" "model" "smollm2" "name" N "pdb" $values). */}}
{{- define "treadle.pdb" -}}
{{- if .pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "treadle.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "treadle.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{- define "treadle.schedulerAddress" -}}
{{ include "treadle.componentName" (dict "root" . "component" "scheduler") }}:{{ .Values.scheduler.port }}
{{- end -}}

{{/* The gateway's URL through its Ingress: what clients export as TINKER_BASE_URL. */}}
{{- define "treadle.gatewayIngressURL" -}}
{{- $in := .Values.gateway.ingress -}}
{{- $host := required "gateway.ingress.host: set the host clients reach the gateway at" $in.host -}}
{{- printf "%s://%s%s" (ternary "https" "http" (not (empty $in.tls))) $host (trimSuffix "/" $in.path) -}}
{{- end -}}
