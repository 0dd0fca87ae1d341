{{/* Chart name, at most 63 characters. */}}
{{- define "integration-hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, plus the chart name unless the release name contains it. */}}
{{- define "integration-hub.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "integration-hub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels common to every resource. */}}
{{- define "integration-hub.labels" -}}
helm.sh/chart: {{ include "integration-hub.chart" . }}
app.kubernetes.io/name: {{ include "integration-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "integration-hub.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: integration-hub
{{- end }}

{{/* Selector labels of the server pods (the migration Job's pods have component=migrate). */}}
{{- define "integration-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "integration-hub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{/* ServiceAccount of the server pods. */}}
{{- define "integration-hub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "integration-hub.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ServiceAccount of the migration Job: it runs before the chart's own resources exist. */}}
{{- define "integration-hub.migrationServiceAccountName" -}}
{{- if .Values.migration.serviceAccountName }}
{{- .Values.migration.serviceAccountName }}
{{- else if and (not .Values.serviceAccount.create) .Values.serviceAccount.name }}
{{- .Values.serviceAccount.name }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/* Image tag: image.tag, else the chart's appVersion. */}}
{{- define "integration-hub.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* Full image reference, pinned by digest when one is given. */}}
{{- define "integration-hub.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "integration-hub.imageTag" .) }}
{{- end }}
{{- end }}

{{/* Name of an existing Secret: the reference's own name, else secrets.existingSecret, else the full name. */}}
{{- define "integration-hub.secretName" -}}
{{- $root := index . 0 }}
{{- $ref := index . 1 }}
{{- default (default (include "integration-hub.fullname" $root) $root.Values.secrets.existingSecret) $ref.name }}
{{- end }}

{{/* True (non-empty) when a JWKS file is mounted. */}}
{{- define "integration-hub.jwksFile" -}}
{{- if or .Values.secrets.jwks.secretName .Values.secrets.jwks.configMapName }}true{{ end }}
{{- end }}

{{/* terminationGracePeriodSeconds: given, or preStop pause + shutdown deadline + 10 s. */}}
{{- define "integration-hub.terminationGracePeriodSeconds" -}}
{{- $floor := add (int .Values.preStopSleepSeconds) (int .Values.config.shutdownDeadlineSeconds) }}
{{- $given := int .Values.terminationGracePeriodSeconds }}
{{- if eq $given 0 }}
{{- add $floor 10 }}
{{- else if le $given $floor }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be larger than preStopSleepSeconds + config.shutdownDeadlineSeconds (%d)" $given $floor) }}
{{- else }}
{{- $given }}
{{- end }}
{{- end }}

{{/* Checks of the values that no schema expresses. */}}
{{- define "integration-hub.validate" -}}
{{- if not (or .Values.secrets.jwtHs256Secret.enabled (include "integration-hub.jwksFile" .) .Values.config.jwt.jwksUrl) }}
{{- fail "no token verifier: enable secrets.jwtHs256Secret, or set secrets.jwks.secretName/configMapName or config.jwt.jwksUrl" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if lt (int .Values.preStopSleepSeconds) 1 }}
{{- fail "preStopSleepSeconds must be at least 1" }}
{{- end }}
{{- end }}
