{{/* Names */}}
{{- define "promsnmp-manager.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "promsnmp-manager.fullname" -}}
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

{{- define "promsnmp-manager.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels. Call with (dict "ctx" $ "component" "api"). */}}
{{- define "promsnmp-manager.selectorLabels" -}}
app.kubernetes.io/name: {{ include "promsnmp-manager.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "promsnmp-manager.labels" -}}
helm.sh/chart: {{ include "promsnmp-manager.chart" .ctx }}
{{ include "promsnmp-manager.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: promsnmp-manager
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "promsnmp-manager.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "promsnmp-manager.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "promsnmp-manager.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Checks that stop the render with a message naming the value to set. */}}
{{- define "promsnmp-manager.validate" -}}
{{- $gen := "generate them with the commands in values.yaml, section Secrets" -}}
{{- if not .Values.existingSecret -}}
{{- if not .Values.secretKey -}}
{{- fail (printf "secretKey is required: set secretKey and fieldEncryptionKeys, or existingSecret (a Secret with the keys %s and %s); %s." .Values.existingSecretKeys.secretKey .Values.existingSecretKeys.fieldEncryptionKeys $gen) -}}
{{- end -}}
{{- if not .Values.fieldEncryptionKeys -}}
{{- fail (printf "fieldEncryptionKeys is required: set it (the key ring of the SNMP credentials, keep it as long as your backups), or existingSecret (a Secret with the keys %s and %s); %s." .Values.existingSecretKeys.secretKey .Values.existingSecretKeys.fieldEncryptionKeys $gen) -}}
{{- end -}}
{{- if not (regexMatch "^[A-Za-z0-9]+:[A-Za-z0-9+/_=-]+(,[A-Za-z0-9]+:[A-Za-z0-9+/_=-]+)*$" .Values.fieldEncryptionKeys) -}}
{{- fail "fieldEncryptionKeys must look like id:base64(32 bytes)[,id:base64(32 bytes)...], e.g. k1:<44 base64 characters>." -}}
{{- end -}}
{{- end -}}
{{- if and (not .Values.database.url) (not .Values.database.existingSecret) -}}
{{- fail "database.url is required (postgres://user:password@host:5432/dbname), or database.existingSecret: a Secret whose key database.existingSecretKey holds it." -}}
{{- end -}}
{{- if and .Values.database.url (not (regexMatch "^postgres(ql)?://" .Values.database.url)) -}}
{{- fail "database.url must be a PostgreSQL URL (postgres://... or postgresql://...): the chart runs the production shape." -}}
{{- end -}}
{{- if and (not .Values.redis.url) (not .Values.redis.existingSecret) -}}
{{- fail "redis.url is required (redis://host:6379/0): without Redis every process would keep its own in-memory event bus. Or set redis.existingSecret." -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.hosts) -}}
{{- fail "ingress.hosts needs at least one host when ingress.enabled is true." -}}
{{- end -}}
{{- range $component := list "api" "ws" -}}
{{- $a := (index $.Values $component).autoscaling -}}
{{- if $a.enabled -}}
{{- if not (or $a.targetCPUUtilizationPercentage $a.targetMemoryUtilizationPercentage) -}}
{{- fail (printf "%s.autoscaling needs a target: targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage." $component) -}}
{{- end -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "%s.autoscaling.minReplicas (%v) is larger than maxReplicas (%v)." $component $a.minReplicas $a.maxReplicas) -}}
{{- end -}}
{{- $requests := (index $.Values $component).resources.requests | default dict -}}
{{- if and $a.targetCPUUtilizationPercentage (not $requests.cpu) -}}
{{- fail (printf "%s.autoscaling.targetCPUUtilizationPercentage is a share of %s.resources.requests.cpu: set that request." $component $component) -}}
{{- end -}}
{{- if and $a.targetMemoryUtilizationPercentage (not $requests.memory) -}}
{{- fail (printf "%s.autoscaling.targetMemoryUtilizationPercentage is a share of %s.resources.requests.memory: set that request." $component $component) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $b := .Values.backup -}}
{{- if $b.enabled -}}
{{- if not $b.url -}}
{{- fail "backup.url is required when backup.enabled is true: s3://bucket/prefix, or a directory mounted with backup.extraVolumes." -}}
{{- end -}}
{{- if and (not $b.s3.existingSecret) (ne (empty $b.s3.accessKeyId) (empty $b.s3.secretAccessKey)) -}}
{{- fail "backup.s3.accessKeyId and backup.s3.secretAccessKey go together: set both, or backup.s3.existingSecret, or neither (boto3's own credentials, e.g. an IAM role)." -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The public URL: config.publicUrl, else the first ingress host (https when TLS names it). */}}
{{- define "promsnmp-manager.publicUrl" -}}
{{- if .Values.config.publicUrl -}}
{{- .Values.config.publicUrl | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- $host := first .Values.ingress.hosts -}}
{{- $tls := false -}}
{{- range .Values.ingress.tls -}}
{{- if has $host (default list .hosts) -}}{{- $tls = true -}}{{- end -}}
{{- end -}}
{{- printf "%s://%s" (ternary "https" "http" $tls) $host -}}
{{- end -}}
{{- end -}}

{{- define "promsnmp-manager.numProxies" -}}
{{- if kindIs "invalid" .Values.config.numProxies -}}
{{- ternary 1 0 .Values.ingress.enabled -}}
{{- else -}}
{{- .Values.config.numProxies -}}
{{- end -}}
{{- end -}}

{{/* ALLOWED_HOSTS without the pod IP (added in the env as $(POD_IP)). */}}
{{- define "promsnmp-manager.allowedHosts" -}}
{{- $fullname := include "promsnmp-manager.fullname" . -}}
{{- $hosts := list "localhost" "127.0.0.1" -}}
{{- if .Values.ingress.enabled -}}
{{- $hosts = concat $hosts .Values.ingress.hosts -}}
{{- end -}}
{{- $public := include "promsnmp-manager.publicUrl" . -}}
{{- if $public -}}
{{- $hosts = append $hosts (regexReplaceAll "^[a-z]+://([^/:]+).*$" $public "${1}") -}}
{{- end -}}
{{- range $component := list "api" "ws" -}}
{{- $svc := printf "%s-%s" $fullname $component -}}
{{- $hosts = concat $hosts (list $svc (printf "%s.%s" $svc $.Release.Namespace) (printf "%s.%s.svc" $svc $.Release.Namespace)) -}}
{{- end -}}
{{- $hosts = concat $hosts .Values.config.allowedHosts -}}
{{- join "," (uniq $hosts) -}}
{{- end -}}

{{- define "promsnmp-manager.csrfTrustedOrigins" -}}
{{- if .Values.config.csrfTrustedOrigins -}}
{{- join "," .Values.config.csrfTrustedOrigins -}}
{{- else -}}
{{- $public := include "promsnmp-manager.publicUrl" . -}}
{{- if $public -}}{{- regexReplaceAll "^([a-z]+://[^/]+).*$" $public "${1}" -}}{{- end -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap's data: non-secret settings only (a test checks that no secret value lands here). */}}
{{- define "promsnmp-manager.configData" -}}
{{- $fullname := include "promsnmp-manager.fullname" . -}}
{{- $c := .Values.config -}}
{{- with include "promsnmp-manager.publicUrl" . }}
PUBLIC_URL: {{ . | quote }}
{{- end }}
{{- with $c.publicWsUrl }}
PUBLIC_WS_URL: {{ . | quote }}
{{- end }}
{{- with include "promsnmp-manager.csrfTrustedOrigins" . }}
CSRF_TRUSTED_ORIGINS: {{ . | quote }}
{{- end }}
{{- /* websocketUrl from the request keeps the request's port: the ingress routes by path, not port. */}}
WS_PORT: "0"
NUM_PROXIES: {{ include "promsnmp-manager.numProxies" . | quote }}
HEARTBEAT_INTERVAL_SECONDS: {{ $c.heartbeatIntervalSeconds | quote }}
HEARTBEAT_TIMEOUT_SECONDS: {{ $c.heartbeatTimeoutSeconds | quote }}
LEADER_CHECK_INTERVAL_SECONDS: {{ $c.leaderCheckIntervalSeconds | quote }}
FAILOVER_GRACE_SECONDS: {{ $c.failoverGraceSeconds | quote }}
CELERY_QUEUE: {{ default $fullname $c.celeryQueue | quote }}
CHANNEL_LAYER_PREFIX: {{ default $fullname $c.channelLayerPrefix | quote }}
THROTTLE_CACHE_PREFIX: {{ default $fullname $c.throttleCachePrefix | quote }}
LOG_LEVEL: {{ $c.logLevel | quote }}
LOG_FORMAT: {{ $c.logFormat | quote }}
{{- range $name, $value := $c.extra }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* The chart's Secret's data (base64); empty when every secret comes from existing Secrets. */}}
{{- define "promsnmp-manager.secretData" -}}
{{- if not .Values.existingSecret }}
SECRET_KEY: {{ .Values.secretKey | b64enc | quote }}
FIELD_ENCRYPTION_KEYS: {{ .Values.fieldEncryptionKeys | b64enc | quote }}
{{- end }}
{{- if and .Values.database.url (not .Values.database.existingSecret) }}
DATABASE_URL: {{ .Values.database.url | b64enc | quote }}
{{- end }}
{{- if and .Values.redis.url (not .Values.redis.existingSecret) }}
REDIS_URL: {{ .Values.redis.url | b64enc | quote }}
{{- end }}
{{- end -}}

{{/*
The containers' env and envFrom. Call with (dict "ctx" $ "c" $componentValues "suffix" "" "extra" list):
suffix "-migrate" names the hook copies of the ConfigMap and Secret that the migrate Job reads; "extra"
comes before the global extraEnv, the component's extraEnv last (a later entry of a name wins).
*/}}
{{- define "promsnmp-manager.env" -}}
{{- $ctx := .ctx -}}
{{- $v := $ctx.Values -}}
{{- $chartSecret := printf "%s%s" (include "promsnmp-manager.fullname" $ctx) .suffix -}}
{{- $keys := dict "secretKey" "SECRET_KEY" "fieldEncryptionKeys" "FIELD_ENCRYPTION_KEYS" -}}
{{- if $v.existingSecret -}}{{- $keys = $v.existingSecretKeys -}}{{- end -}}
env:
  # The pod's IP is an allowed host: kubelet probes and Prometheus scrapes use it as the Host header.
  - name: POD_IP
    valueFrom:
      fieldRef:
        fieldPath: status.podIP
  - name: ALLOWED_HOSTS
    value: {{ printf "%s,$(POD_IP)" (include "promsnmp-manager.allowedHosts" $ctx) | quote }}
  - name: SECRET_KEY
    valueFrom:
      secretKeyRef:
        name: {{ default $chartSecret $v.existingSecret }}
        key: {{ $keys.secretKey }}
  - name: FIELD_ENCRYPTION_KEYS
    valueFrom:
      secretKeyRef:
        name: {{ default $chartSecret $v.existingSecret }}
        key: {{ $keys.fieldEncryptionKeys }}
  - name: DATABASE_URL
    valueFrom:
      secretKeyRef:
        name: {{ default $chartSecret $v.database.existingSecret }}
        key: {{ ternary $v.database.existingSecretKey "DATABASE_URL" (not (empty $v.database.existingSecret)) }}
  - name: REDIS_URL
    valueFrom:
      secretKeyRef:
        name: {{ default $chartSecret $v.redis.existingSecret }}
        key: {{ ternary $v.redis.existingSecretKey "REDIS_URL" (not (empty $v.redis.existingSecret)) }}
  {{- with .extra }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with $v.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .c.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
envFrom:
  - configMapRef:
      name: {{ printf "%s%s" (include "promsnmp-manager.fullname" $ctx) .suffix }}
  {{- with $v.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .c.extraEnvFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/*
Where a component's pods go. Call with (dict "ctx" $ "component" "api" "c" $componentValues).
nodeSelector: the component's merged over the global one; tolerations: both; affinity: the component's,
else the global one, plus the anti-affinity preset (api, ws, worker: soft by default) unless that affinity
has a podAntiAffinity of its own; topologySpreadConstraints: the component's, else the global ones, each
without a labelSelector given the component's pod labels.
*/}}
{{- define "promsnmp-manager.scheduling" -}}
{{- $v := .ctx.Values -}}
{{- $c := .c -}}
{{- $selector := include "promsnmp-manager.selectorLabels" (dict "ctx" .ctx "component" .component) | fromYaml -}}
{{- $nodeSelector := merge (dict) (deepCopy ($c.nodeSelector | default dict)) (deepCopy $v.nodeSelector) -}}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with concat $v.tolerations ($c.tolerations | default list) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $affinity := deepCopy (default $v.affinity $c.affinity) -}}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" $selector) -}}
{{- if not $affinity.podAntiAffinity -}}
{{- if eq ($c.podAntiAffinityPreset | default "") "soft" -}}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) -}}
{{- else if eq ($c.podAntiAffinityPreset | default "") "hard" -}}
{{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) -}}
{{- end -}}
{{- end -}}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $spread := list -}}
{{- range (default $v.topologySpreadConstraints $c.topologySpreadConstraints) -}}
{{- $spread = append $spread (merge (deepCopy .) (dict "labelSelector" (dict "matchLabels" $selector))) -}}
{{- end -}}
{{- with $spread }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every component. Call with (dict "ctx" $ "component" "api" "c" $componentValues). */}}
{{- define "promsnmp-manager.podSpecCommon" -}}
{{- $v := .ctx.Values -}}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
securityContext:
  {{- toYaml $v.podSecurityContext | nindent 2 }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- include "promsnmp-manager.scheduling" . }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .c.tmpSizeLimit | default $v.tmpSizeLimit }}
  {{- with $v.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .c.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* Container settings shared by every component. Call with (dict "ctx" $ "c" $componentValues). */}}
{{- define "promsnmp-manager.containerCommon" -}}
{{- $v := .ctx.Values -}}
image: {{ include "promsnmp-manager.image" .ctx }}
imagePullPolicy: {{ $v.image.pullPolicy }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- with $v.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
  {{- with .c.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* The pod labels of a component that is no Deployment (the migrate Job, the backup CronJob). */}}
{{- define "promsnmp-manager.jobPodLabels" -}}
{{- include "promsnmp-manager.selectorLabels" . }}
{{- with .ctx.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod template metadata: labels and the checksums that roll the pods when settings change. */}}
{{- define "promsnmp-manager.podMetadata" -}}
{{- $ctx := .ctx -}}
labels:
  {{- include "promsnmp-manager.selectorLabels" . | nindent 2 }}
  {{- with $ctx.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include "promsnmp-manager.configData" $ctx | sha256sum }}
  checksum/secret: {{ include "promsnmp-manager.secretData" $ctx | sha256sum }}
  {{- with $ctx.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* NOTES: a component's replicas, or its autoscaling range. Call with the component's values. */}}
{{- define "promsnmp-manager.replicasNote" -}}
{{- if .autoscaling.enabled -}}
{{- printf "%v–%v replicas, autoscaled" .autoscaling.minReplicas .autoscaling.maxReplicas -}}
{{- else -}}
{{- printf "%v replicas" .replicas -}}
{{- end -}}
{{- end -}}
