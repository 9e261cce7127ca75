{{/* The name of kubeci's objects: the release name, with `-kubeci` unless it says kubeci. */}}
{{- define "kubeci.fullname" -}}
{{- if contains "kubeci" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-kubeci" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubeci.selectorLabels" -}}
app.kubernetes.io/name: kubeci
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kubeci.labels" -}}
{{ include "kubeci.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubeci.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/*
What kubeci may do with the Kubernetes API, and no more: the verbs and resources the
engine's tests record it using. No `secrets` rule: kubeci never reads a Secret; build pods
name Secrets and only the kubelet resolves them.
*/}}
{{- define "kubeci.rules" -}}
# Jobs are declared in ConfigMaps: list and watch them, never write them.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch"]
# Builds are batch/v1 Jobs: create them, follow them, read one back (a retried request
# whose build another replica created), suspend, resume and annotate them (queue, cancel,
# reported states), delete them (retention).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Build pods: follow their state and stream their logs; remove kubeci's finalizer
# (`kubeci.io/archive`, a JSON patch) once a pod's logs are archived.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Each job's ledger (build numbers, recent requests, last cron run), written with
# optimistic concurrency.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update"]
# Invalid job ConfigMaps and builds that cannot start are reported as Events.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/*
Build pods' collectors (issue 30): who presents a token at /internal/v1/outputs is what
the API server's TokenReview says (audience kubeci-collect). It lets kubeci ask whether a
token is valid and whose it is — nothing else: no object is read or written with it.
*/}}
{{- define "kubeci.collectRule" -}}
# Build pods' collectors: ask the API server whose a token is (TokenReview).
- apiGroups: ["authentication.k8s.io"]
  resources: ["tokenreviews"]
  verbs: ["create"]
{{- end -}}
