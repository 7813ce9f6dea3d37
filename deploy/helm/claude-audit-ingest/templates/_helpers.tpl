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
{{- required "database.existingSecret: the Secret holding DATABASE_URL (keys never come from values)" .Values.database.existingSecret -}}
{{- end -}}

{{- define "audit.signingKeySecret" -}}
{{- required "secrets.existingSigningKeySecret: the Secret holding signing.key (keys never come from values)" .Values.secrets.existingSigningKeySecret -}}
{{- end -}}

{{- define "audit.rawBatchKeySecret" -}}
{{- default (printf "%s-raw-batch-key" (include "audit.fullname" .)) .Values.messageKeys.rawBatchKeySecret -}}
{{- end -}}

{{- define "audit.canonicalRedactorKeySecret" -}}
{{- default (printf "%s-canonical-redactor-key" (include "audit.fullname" .)) .Values.messageKeys.canonicalRedactorKeySecret -}}
{{- end -}}

{{- define "audit.canonicalReporterKeySecret" -}}
{{- default (printf "%s-canonical-reporter-key" (include "audit.fullname" .)) .Values.messageKeys.canonicalReporterKeySecret -}}
{{- end -}}

{{- define "audit.canonicalKeyringSecret" -}}
{{- default (printf "%s-canonical-keyring" (include "audit.fullname" .)) .Values.messageKeys.canonicalKeyringSecret -}}
{{- end -}}

{{- define "audit.licenseKeysSecret" -}}
{{- required "secrets.existingLicenseKeysSecret: the Secret holding license-issuer.pub" .Values.secrets.existingLicenseKeysSecret -}}
{{- end -}}

{{/* Which Kafka principal a component (values key) connects as; empty: it uses no Kafka. */}}
{{- define "audit.kafkaPrincipal" -}}
{{- $map := dict "receiver" "receiver" "redactor" "redactor" "signer" "signer" "usage" "usage" "reporter" "reporter" "dlqExporter" "ops" "setup" "ops" -}}
{{- get $map . -}}
{{- end -}}

{{/* Kafka security environment for one principal: (dict "root" $ "principal" "receiver"). */}}
{{- define "audit.kafkaEnv" -}}
{{- $k := .root.Values.kafka -}}
{{- $user := index $k.users .principal -}}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: KAFKA_SASL_MECHANISM
  value: {{ $k.saslMechanism | quote }}
- name: KAFKA_SASL_USERNAME
  value: {{ $user.username | quote }}
- name: KAFKA_SASL_PASSWORD_FILE
  value: /var/run/secrets/kafka/user/{{ $user.passwordKey }}
{{- end }}
{{- if and (hasSuffix "SSL" $k.securityProtocol) $k.caSecret }}
- name: KAFKA_SSL_CA_FILE
  value: /var/run/secrets/kafka/ca/{{ $k.caKey }}
{{- end }}
{{- end -}}

{{- define "audit.kafkaMounts" -}}
{{- $k := .root.Values.kafka -}}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: kafka-user
  mountPath: /var/run/secrets/kafka/user
  readOnly: true
{{- end }}
{{- if and (hasSuffix "SSL" $k.securityProtocol) $k.caSecret }}
- name: kafka-ca
  mountPath: /var/run/secrets/kafka/ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "audit.kafkaVolumes" -}}
{{- $k := .root.Values.kafka -}}
{{- $user := index $k.users .principal -}}
{{- if hasPrefix "SASL_" $k.securityProtocol }}
- name: kafka-user
  secret:
    secretName: {{ default $user.username $user.passwordSecret }}
    items: [{key: {{ $user.passwordKey }}, path: {{ $user.passwordKey }}}]
    defaultMode: 0400
{{- end }}
{{- if and (hasSuffix "SSL" $k.securityProtocol) $k.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $k.caSecret }}
    items: [{key: {{ $k.caKey }}, path: {{ $k.caKey }}}]
    defaultMode: 0444
{{- end }}
{{- end -}}

{{/* The setup job's DATABASE_URL: the owner's, which runs migrations and nothing else. */}}
{{- define "audit.commonEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "audit.databaseSecret" . }}
      key: {{ .Values.database.key }}
{{- end -}}

{{/* A component's DATABASE_URL: its own role (shared/db/privileges.sql). Takes (dict "root" $ "component" key). */}}
{{- define "audit.componentDatabaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "audit.databaseSecret" .root }}
      key: {{ required (printf "database.componentKeys.%s is required" .component) (index .root.Values.database.componentKeys .component) }}
{{- end -}}
