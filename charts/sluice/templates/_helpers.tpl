{{/*
Chart name, for the app.kubernetes.io/name label.
*/}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name. Kubernetes names are limited to 63 characters for some kinds,
so it is truncated; a release already named after the chart is not repeated.
*/}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "sluice.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Value of the helm.sh/chart label.
*/}}
{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the operator pods. They must not change between releases, since a
Deployment's selector is immutable.
*/}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels on every resource of the chart.
*/}}
{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: sluice
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "sluice.serviceAccountName" -}}
{{- include "sluice.fullname" . }}
{{- end }}

{{/*
Permissions on the resources the operator reconciles, in every namespace it watches. Shared by
the ClusterRole (whole cluster) and the per-namespace Roles (watchNamespaces set), so both
modes grant exactly the same verbs.
*/}}
{{- define "sluice.watchRules" -}}
# Exactly what the operator's calls use (operator/src/rbac.rs, checked against the API server
# by an end-to-end test). Server-side apply needs create as well as patch.
# StreamJobs are reconciled: watched, a finalizer added, the status patched; quotas are read
# when a job asks to run. Neither is ever created or deleted by the operator.
- apiGroups: ["sluice.dev"]
  resources: ["streamjobs"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["sluice.dev"]
  resources: ["streamjobs/status", "streamquotas/status"]
  verbs: ["patch"]
# Children's owner references block the owner's deletion: that needs its finalizers.
- apiGroups: ["sluice.dev"]
  resources: ["streamjobs/finalizers"]
  verbs: ["update"]
- apiGroups: ["sluice.dev"]
  resources: ["streamquotas"]
  verbs: ["list"]
# What the operator creates for a StreamJob, owned by it so deletion cascades.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "patch", "delete"]
# The control token Secret: the one a job names is read, the generated one created. Never
# listed or watched.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "patch"]
# Pods are read for health and a failed tool's last log lines; never created or deleted.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Run-to-completion work the operator starts on a StreamJob's behalf.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["list", "create", "patch"]
{{- end }}

{{/*
The operator's --pod-priority-classes: each job priority with the PriorityClass the chart
creates for it.
*/}}
{{- define "sluice.podPriorityClasses" -}}
{{- $fullname := include "sluice.fullname" . -}}
{{- $pairs := list -}}
{{- range .Values.jobPriorityClasses -}}
{{- $pairs = append $pairs (printf "%s=%s-%s" .name $fullname .name) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end }}
