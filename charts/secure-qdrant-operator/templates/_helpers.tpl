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

{{/*
The image prefixes the admission policy accepts, as a JSON list: each repository of
`policy.allowedImages` (`x/*`, a whole tree, as the prefix `x/`), and for a Docker Hub one
(`docker.io/...`, or written short: `qdrant/qdrant`, `busybox`) every spelling of the same
repository the operator's own normalisation accepts (`qdrant/qdrant`, `docker.io/...`,
`index.docker.io/...`, `registry-1.docker.io/...`, with and without `library/` for an official
image). An image is allowed when it is one of them followed by
`:<tag>` or `@<digest>` (or, for a prefix ending in `/`, when it starts with it), so `docker.io/qdrant/qdrant-evil` never matches `docker.io/qdrant/qdrant`.
*/}}
{{- define "sqo.allowedImagePrefixes" -}}
{{- $out := list -}}
{{- range $entry := .Values.policy.allowedImages -}}
{{- $repo := trimSuffix "*" $entry -}}
{{- $first := first (splitList "/" $repo) -}}
{{- $hub := "" -}}
{{- if or (eq $first "docker.io") (eq $first "index.docker.io") (eq $first "registry-1.docker.io") -}}
{{- $hub = trimPrefix (printf "%s/" $first) $repo -}}
{{- else if and (contains "/" $repo) (not (contains "." $first)) (not (contains ":" $first)) (ne $first "localhost") -}}
{{- $hub = $repo -}}
{{- else if not (contains "/" $repo) -}}
{{- $hub = printf "library/%s" $repo -}}
{{- end -}}
{{- if $hub -}}
{{- range $registry := list "" "docker.io/" "index.docker.io/" "registry-1.docker.io/" -}}
{{- $out = append $out (printf "%s%s" $registry $hub) -}}
{{- if hasPrefix "library/" $hub -}}
{{- $out = append $out (printf "%s%s" $registry (trimPrefix "library/" $hub)) -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- $out = append $out $repo -}}
{{- end -}}
{{- end -}}
{{- $out | uniq | toJson -}}
{{- end -}}

{{/*
The API server addresses the operator's NetworkPolicy allows, as a JSON list of CIDRs:
`configured` (networkPolicy.apiServer.cidrs) when set; else the addresses of the `kubernetes`
Service's EndpointSlice (`slice`) or Endpoints (`endpoints`) that `lookup` found at install
time (/32 or /128 each); else, when neither is known (`helm template`, a client-side dry run),
["0.0.0.0/0"]: any address, on the API server's ports only.
*/}}
{{- define "sqo.apiServerCidrs" -}}
{{- $found := list -}}
{{- range (dig "endpoints" list (default dict .slice)) -}}
{{- range (default list .addresses) -}}
{{- $found = append $found (ternary (printf "%s/128" .) (printf "%s/32" .) (contains ":" .)) -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- range (dig "subsets" list (default dict .endpoints)) -}}
{{- range (default list .addresses) -}}
{{- $found = append $found (ternary (printf "%s/128" .ip) (printf "%s/32" .ip) (contains ":" .ip)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if .configured -}}
{{- .configured | toJson -}}
{{- else if $found -}}
{{- $found | uniq | sortAlpha | toJson -}}
{{- else -}}
{{- list "0.0.0.0/0" | toJson -}}
{{- end -}}
{{- end -}}

{{/*
`sqo.apiServerCidrs` of this release: the value, else what `lookup` finds in the cluster (the
EndpointSlice first; the deprecated Endpoints only when there is no slice).
*/}}
{{- define "sqo.apiServerLookup" -}}
{{- $slice := dict -}}
{{- $endpoints := dict -}}
{{- if not .Values.networkPolicy.apiServer.cidrs -}}
{{- $slice = lookup "discovery.k8s.io/v1" "EndpointSlice" "default" "kubernetes" -}}
{{- if not $slice -}}
{{- $endpoints = lookup "v1" "Endpoints" "default" "kubernetes" -}}
{{- end -}}
{{- end -}}
{{- include "sqo.apiServerCidrs" (dict "configured" .Values.networkPolicy.apiServer.cidrs "slice" $slice "endpoints" $endpoints) -}}
{{- end -}}
