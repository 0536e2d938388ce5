{{/* Chart name, overridable. */}}
{{- define "inframind.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-qualified unless the release name already holds the chart name. */}}
{{- define "inframind.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "inframind.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels. Deliberately not app.kubernetes.io/managed-by: inframind,
which marks the pods the operator creates (the PodMonitor selects those).
*/}}
{{- define "inframind.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inframind.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "inframind.labels" -}}
helm.sh/chart: {{ include "inframind.chart" . }}
{{ include "inframind.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: inframind
{{- end -}}

{{- define "inframind.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "inframind.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "inframind.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Name of the Service in front of the operator's /metrics (also Prometheus' job label). */}}
{{- define "inframind.metricsServiceName" -}}
{{- printf "%s-metrics" (include "inframind.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
RBAC rules for what the operator does inside the namespaces it serves. Each
rule names the code that needs it; see tests/integration/test_chart.py, which
checks these against the adapters.
*/}}
{{- define "inframind.namespacedRules" -}}
# kopf watches the custom resources and patches them for its finalizer and
# progress annotations; adapters.list_custom / fetch_custom read them.
- apiGroups: ["inframind.io"]
  resources: ["modelpools", "agentpipelines"]
  verbs: ["get", "list", "watch", "patch"]
# adapters.patch_custom_status, and kopf's own status bookkeeping.
- apiGroups: ["inframind.io"]
  resources: ["modelpools/status", "agentpipelines/status"]
  verbs: ["patch"]
# adapters.fetch_object / ensure_object / delete_object on the vLLM and gateway
# Deployments; list/watch for the kopf event handler on vLLM Deployments.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
# adapters.fetch_object / ensure_object / delete_object: vLLM and gateway
# Services, gateway ConfigMaps.
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "create", "update", "delete"]
# adapters.post_event and kopf's event posting: both only create.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* What kopf must see cluster-wide even when it serves a few namespaces. */}}
{{- define "inframind.clusterRules" -}}
# kopf lists and watches CRDs to notice the custom resources appear or change.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.operator.namespaces }}
# kopf lists and watches namespaces only when it serves a list of them.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end -}}
