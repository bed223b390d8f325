{{- /*
Names, labels, the image and RBAC rules that the other templates share (the namespace selection
is in _namespaces.tpl).

Every object lives in the release namespace (the manager namespace) unless it is cluster-scoped
or one of the per-namespace Role/RoleBinding pairs of static selection. Names are fixed, as in
the original chart, because clients and the traffic-manager look the objects up by name:
Deployment, Service, ServiceAccount and ConfigMap `traffic-manager`, Secret
`traffic-manager-tls`. Cluster-scoped names carry the manager namespace, so that several
traffic-managers (each managing its own namespaces) can share a cluster.
*/}}

{{- define "traffic-manager.name" -}}
traffic-manager
{{- end }}

{{- define "traffic-manager.namespace" -}}
{{ .Release.Namespace }}
{{- end }}

{{- /* The name of the manager's cluster-scoped role and binding. */}}
{{- define "traffic-manager.clusterRoleName" -}}
traffic-manager-{{ .Release.Namespace }}
{{- end }}

{{- /* The name of the clients' roles and bindings, namespaced and cluster-scoped. */}}
{{- define "traffic-manager.clientRoleName" -}}
telepresence-client-{{ .Release.Namespace }}
{{- end }}

{{- define "traffic-manager.chart" -}}
{{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The labels that select the traffic-manager's pod; never change them (Deployment
selectors are immutable). */}}
{{- define "traffic-manager.selectorLabels" -}}
app: traffic-manager
telepresence: manager
{{- end }}

{{- define "traffic-manager.labels" -}}
{{ include "traffic-manager.selectorLabels" . }}
app.kubernetes.io/name: traffic-manager
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/part-of: telepresence
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "traffic-manager.chart" . }}
{{- end }}

{{- define "traffic-manager.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.registry }}
{{- printf "%s/%s:%s" (trimSuffix "/" .Values.image.registry) .Values.image.name $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.name $tag }}
{{- end }}
{{- end }}

{{- /*
The RBAC rules that read the enabled workload kinds, for the traffic-manager's roles.
*/}}
{{- define "traffic-manager.workloadRules" -}}
{{- $kinds := list
  (list "deployments" "apps" "deployments")
  (list "replicaSets" "apps" "replicasets")
  (list "statefulSets" "apps" "statefulsets")
  (list "argoRollouts" "argoproj.io" "rollouts") }}
{{- range $kinds }}
{{- if dig (index . 0) "enabled" false $.Values.workloads }}
- apiGroups: [{{ index . 1 | quote }}]
  resources: [{{ index . 2 }}]
  verbs: [get, list, watch]
{{- end }}
{{- end }}
{{- end }}

{{- /*
The RBAC rules a client needs in a namespace the traffic-manager manages: see its pods and their
logs and port-forward to them.
*/}}
{{- define "traffic-manager.clientNamespaceRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [pods/portforward]
  verbs: [get, create]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch]
{{- end }}

{{- /*
The data of the traffic-manager's ConfigMap, mounted at CONFIG_DIR (/etc/traffic-manager): one
YAML document per concern. The Deployment's pod template carries its checksum, so that a change
rolls the pod.
*/}}
{{- define "traffic-manager.configData" -}}
{{- /* Only what is set is pushed: empty lists and strings, and empty sections, are left out
(numbers, zero included, are set). */}}
{{- $client := dict }}
{{- range $key, $value := .Values.client }}
{{- if kindIs "map" $value }}
{{- $set := dict }}
{{- range $name, $field := $value }}
{{- if or (kindIs "float64" $field) (kindIs "int64" $field) (kindIs "int" $field) $field }}
{{- $_ := set $set $name $field }}
{{- end }}
{{- end }}
{{- if $set }}
{{- $_ := set $client $key $set }}
{{- end }}
{{- else if or (kindIs "float64" $value) (kindIs "int64" $value) (kindIs "int" $value) $value }}
{{- $_ := set $client $key $value }}
{{- end }}
{{- end }}
{{- $agent := dict
  "image" (dict
    "registry" (.Values.agent.image.registry | default .Values.image.registry)
    "name" (.Values.agent.image.name | default .Values.image.name)
    "tag" (.Values.agent.image.tag | default .Values.image.tag | default .Chart.AppVersion)
    "pullPolicy" .Values.agent.image.pullPolicy)
  "logLevel" (.Values.agent.logLevel | default .Values.logLevel)
  "port" .Values.agent.port
  "resources" .Values.agent.resources
  "initResources" .Values.agent.initResources
  "appProtocolStrategy" .Values.agent.appProtocolStrategy
  "envoy" .Values.agent.envoy }}
client.yaml: |
  {{- if $client }}
  {{- toYaml $client | nindent 2 }}
  {{- else }}
  {}
  {{- end }}
namespaces.yaml: |
  {{- toYaml (include "traffic-manager.selection" . | fromJson) | nindent 2 }}
intercept.yaml: |
  environment:
    excluded: {{ .Values.intercept.environment.excluded | default list | toJson }}
workloads.yaml: |
  {{- range $kind := list "deployments" "replicaSets" "statefulSets" "argoRollouts" }}
  {{ $kind }}:
    enabled: {{ dig $kind "enabled" false $.Values.workloads }}
  {{- end }}
service-mesh.yaml: |
  type: {{ .Values.trafficManager.serviceMesh.type }}
agent.yaml: |
  agent:
    {{- toYaml $agent | nindent 4 }}
  agentInjector:
    {{- toYaml .Values.agentInjector | nindent 4 }}
{{- end }}
