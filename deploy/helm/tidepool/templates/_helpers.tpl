{{/* The release's full name, at most 63 characters. */}}
{{- define "tidepool.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tidepool.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "tidepool.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "tidepool.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tidepool.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tidepool.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* One object of a multi-document file under files/, by kind. */}}
{{- define "tidepool.fileObject" -}}
{{- $root := index . 0 -}}
{{- $file := index . 1 -}}
{{- $kind := index . 2 -}}
{{- range $doc := splitList "\n---\n" ($root.Files.Get $file) -}}
{{- $obj := fromYaml $doc -}}
{{- if eq (get $obj "kind") $kind -}}
{{- toYaml $obj -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* tidepool.yaml: the configuration with the server section from the values. */}}
{{- define "tidepool.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- if not $config -}}
{{- $config = .Files.Get "files/tidepool.yaml" | fromYaml -}}
{{- $_ := unset $config "server" -}}
{{- end -}}
{{- $server := dict "metricsAddr" (printf "0.0.0.0:%v" .Values.metrics.port) "namespace" .Release.Namespace -}}
{{- $_ := set $server "leaderElection" (dict "enabled" .Values.leaderElection.enabled "leaseName" .Values.leaderElection.leaseName "leaseDuration" .Values.leaderElection.leaseDuration) -}}
{{- if .Values.mcp.enabled -}}
{{- $tokens := list -}}
{{- range .Values.mcp.tokens -}}
{{- $tokens = append $tokens (dict "name" .name "scope" .scope "tokenFrom" (dict "secret" (dict "name" $.Values.mcp.secretName "key" .name))) -}}
{{- end -}}
{{- $_ := set $server "mcp" (merge (dict "listen" (printf "0.0.0.0:%v" .Values.mcp.port) "tokens" $tokens) .Values.mcp.config) -}}
{{- end -}}
{{- $_ := set $config "server" (merge $server (get $config "server" | default dict)) -}}
{{- toYaml $config -}}
{{- end -}}
