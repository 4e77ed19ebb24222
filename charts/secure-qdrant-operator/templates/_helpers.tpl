{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "sqo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of every object: the release name, prefixed with the chart name unless it holds it. */}}
{{- define "sqo.fullname" -}}
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

{{/* Labels that select the operator pods (immutable Deployment selector). */}}
{{- define "sqo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sqo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "sqo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sqo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: secure-qdrant-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sqo.serviceAccountName" -}}
{{- default (include "sqo.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is set. */}}
{{- define "sqo.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* "true" when leader election is on: forced by the value, else when replicas > 1. */}}
{{- define "sqo.leaderElection" -}}
{{- $enabled := .Values.leaderElection.enabled -}}
{{- if and (kindIs "bool" $enabled) (not $enabled) (gt (int .Values.replicas) 1) -}}
{{- fail "leaderElection.enabled: false needs replicas: 1 (several operator pods without leader election would reconcile the same resources at once)" -}}
{{- end -}}
{{- if kindIs "bool" $enabled -}}
{{- ternary "true" "" $enabled -}}
{{- else -}}
{{- ternary "true" "" (gt (int .Values.replicas) 1) -}}
{{- end -}}
{{- end -}}

{{/*
The permissions the operator needs in every namespace it watches (a ClusterRole, or a Role per
watched namespace). They must equal `secure_qdrant_operator::rbac::RBAC`, which is derived from
the operator's API calls; tests/rbac.rs and tests/helm.rs fail when either side drifts.
- SSA (server-side apply) is a PATCH that creates a missing object: the API server authorizes
  that as `create`, so every applied kind has create and patch.
- list/watch: the controller's caches; they select the operator's own objects by label, but RBAC
  cannot restrict by label.
- patch of secureqdrants: a merge patch of metadata only, removing the
  `secureqdrant.dev/peers-removed` acknowledgment once the scale-down it allowed is applied.
*/}}
{{- define "sqo.rules" -}}
- apiGroups: ["secureqdrant.dev"]
  resources: ["secureqdrants"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["secureqdrant.dev"]
  resources: ["qdrantaccesstokens"]
  verbs: ["list", "watch"]
- apiGroups: ["secureqdrant.dev"]
  resources: ["secureqdrants/status", "qdrantaccesstokens/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["serviceaccounts", "configmaps", "services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
