{{/* The services this chart runs: values key -> Kubernetes name. */}}
{{- define "audit.components" -}}
receiver: receiver
redactor: redactor
signer: signer
usage: usage
reporter: reporter
dlqExporter: dlq-exporter
{{- end -}}

{{- define "audit.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "audit.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "audit.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "audit.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "audit.databaseSecret" -}}
{{- if .Values.database.existingSecret -}}{{ .Values.database.existingSecret }}{{- else -}}{{ include "audit.fullname" . }}-database{{- end -}}
{{- end -}}

{{- define "audit.signingKeySecret" -}}
{{- if .Values.secrets.existingSigningKeySecret -}}{{ .Values.secrets.existingSigningKeySecret }}{{- else -}}{{ include "audit.fullname" . }}-signing-key{{- end -}}
{{- end -}}

{{- define "audit.rawBatchKeySecret" -}}
{{- default (printf "%s-raw-batch-key" (include "audit.fullname" .)) .Values.messageKeys.rawBatchKeySecret -}}
{{- end -}}

{{- define "audit.canonicalRedactorKeySecret" -}}
{{- default (printf "%s-canonical-redactor-key" (include "audit.fullname" .)) .Values.messageKeys.canonicalRedactorKeySecret -}}
{{- end -}}

{{- define "audit.canonicalKeyringSecret" -}}
{{- default (printf "%s-canonical-keyring" (include "audit.fullname" .)) .Values.messageKeys.canonicalKeyringSecret -}}
{{- end -}}

{{- define "audit.licenseKeysSecret" -}}
{{- if .Values.secrets.existingLicenseKeysSecret -}}{{ .Values.secrets.existingLicenseKeysSecret }}{{- else -}}{{ include "audit.fullname" . }}-license-keys{{- end -}}
{{- end -}}

{{/* Environment every service and job shares: the ConfigMap, plus DATABASE_URL from its Secret. */}}
{{- define "audit.commonEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "audit.databaseSecret" . }}
      key: {{ .Values.database.key }}
{{- end -}}
