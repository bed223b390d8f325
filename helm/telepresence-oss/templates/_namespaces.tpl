{{- /*
Namespace scope: which namespaces this traffic-manager manages, and the check that no two
traffic-managers manage the same one.

The selection is recorded in the `namespaces.yaml` key of each traffic-manager's ConfigMap
(`traffic-manager`, labelled `telepresence: manager`, in its release namespace). That record is
how the traffic-manager learns its scope, and how a later install or upgrade of another release
discovers what this one manages.

Collision rule, at install and upgrade (it needs `lookup`, so `helm template` and `helm lint`,
which have no cluster, skip it): for every other traffic-manager found through its ConfigMap,
the candidates are the cluster's namespaces plus the names either side lists statically, and a
candidate managed by both is a collision that fails the release before anything is applied:

  traffic-manager in namespace <theirs> already manages namespace <shared>

  - static vs static: the two lists overlap (whether or not the namespace exists yet);
  - selector vs static: a listed name is matched by the selector, with the labels of the
    namespace if it exists, else with the only label it would get when created
    (kubernetes.io/metadata.name);
  - selector vs selector: an existing namespace is matched by both (future labels cannot be
    known, as in the reference, which applies both selectors to the cluster's namespaces);
  - all namespaces (neither namespaces nor namespaceSelector) manages every candidate, so it
    collides with any other traffic-manager that manages anything.

The first shared namespace in alphabetical order is named. The check also requires that the
namespaces that get Role/RoleBinding pairs exist (all but the release namespace, which Helm's
--create-namespace makes), so that a release does not fail half-applied.
*/}}

{{- /*
traffic-manager.selection: the namespaces this traffic-manager manages, as JSON, in the form
the ConfigMap's namespaces.yaml records it (and the traffic-manager and other releases read):

  {"namespaces": [names...]}        static selection
  {"namespaceSelector": {...}}      dynamic selection
  {}                                all namespaces

`namespaces` and `namespaceSelector` are mutually exclusive. As the reference defines it, a
selector is static when it has exactly one element, in `matchLabels` or `matchExpressions`,
with the key kubernetes.io/metadata.name, the operator In (a matchLabels entry is normalised to
`key In [value]`) and at least one value; such a selector is recorded as the list of names it
selects. An empty selector selects every namespace.
*/}}
{{- define "traffic-manager.selection" -}}
{{- $names := .Values.namespaces | default list }}
{{- $selector := .Values.namespaceSelector | default dict }}
{{- $labels := $selector.matchLabels | default dict }}
{{- $expressions := $selector.matchExpressions | default list }}
{{- if and $names (or $labels $expressions) }}
{{- fail "namespaces and namespaceSelector are mutually exclusive: set one of them (static or dynamic selection), or neither (all namespaces)" }}
{{- end }}
{{- range $expressions }}
{{- if and (has .operator (list "In" "NotIn")) (not .values) }}
{{- fail (printf "namespaceSelector: the %s requirement on %q needs at least one value" .operator .key) }}
{{- end }}
{{- if and (has .operator (list "Exists" "DoesNotExist")) .values }}
{{- fail (printf "namespaceSelector: the %s requirement on %q takes no values" .operator .key) }}
{{- end }}
{{- end }}
{{- $requirements := list }}
{{- range $key, $value := $labels }}
{{- $requirements = append $requirements (dict "key" $key "operator" "In" "values" (list $value)) }}
{{- end }}
{{- $requirements = concat $requirements $expressions }}
{{- if $names }}
{{- toJson (dict "namespaces" (uniq $names)) }}
{{- else if and (eq (len $requirements) 1) (eq (index $requirements 0).key "kubernetes.io/metadata.name") (eq (index $requirements 0).operator "In") (index $requirements 0).values }}
{{- toJson (dict "namespaces" (uniq (index $requirements 0).values)) }}
{{- else if $requirements }}
{{- $normalised := dict }}
{{- with $labels }}{{ $_ := set $normalised "matchLabels" . }}{{ end }}
{{- with $expressions }}{{ $_ := set $normalised "matchExpressions" . }}{{ end }}
{{- toJson (dict "namespaceSelector" $normalised) }}
{{- else }}
{{- toJson dict }}
{{- end }}
{{- end }}

{{- /* The static namespaces as a JSON list; empty for dynamic selection and all namespaces. */}}
{{- define "traffic-manager.staticNamespaces" -}}
{{- $selection := include "traffic-manager.selection" . | fromJson }}
{{- toJson ($selection.namespaces | default list) }}
{{- end }}

{{- /*
traffic-manager.manages: "true" when a selection (as traffic-manager.selection renders it)
manages a namespace, given as (dict "selection" S "name" N "labels" L). A static selection
manages the names it lists; a selector manages the namespaces whose labels it matches (both of
matchLabels and matchExpressions, all of their requirements); an empty selection manages all.
*/}}
{{- define "traffic-manager.manages" -}}
{{- $selection := .selection }}
{{- $labels := .labels | default dict }}
{{- if hasKey $selection "namespaces" }}
{{- if has .name $selection.namespaces }}true{{ end }}
{{- else }}
{{- $selector := $selection.namespaceSelector | default dict }}
{{- $matches := true }}
{{- range $key, $value := $selector.matchLabels | default dict }}
{{- if not (and (hasKey $labels $key) (eq (get $labels $key) $value)) }}
{{- $matches = false }}
{{- end }}
{{- end }}
{{- range $selector.matchExpressions | default list }}
{{- $present := hasKey $labels .key }}
{{- $listed := and $present (has (get $labels .key) (.values | default list)) }}
{{- if eq .operator "In" }}
{{- if not $listed }}{{ $matches = false }}{{ end }}
{{- else if eq .operator "NotIn" }}
{{- if $listed }}{{ $matches = false }}{{ end }}
{{- else if eq .operator "Exists" }}
{{- if not $present }}{{ $matches = false }}{{ end }}
{{- else if eq .operator "DoesNotExist" }}
{{- if $present }}{{ $matches = false }}{{ end }}
{{- else }}
{{- fail (printf "namespaceSelector: unsupported operator %q" .operator) }}
{{- end }}
{{- end }}
{{- if $matches }}true{{ end }}
{{- end }}
{{- end }}

{{- define "traffic-manager.checkNamespaces" -}}
{{- $mine := include "traffic-manager.selection" . | fromJson }}
{{- $existing := (lookup "v1" "Namespace" "" "").items | default list }}
{{- /* No namespaces at all: there is no cluster (helm template, helm lint). */}}
{{- if $existing }}
{{- $labelsByName := dict }}
{{- range $existing }}
{{- $labels := deepCopy (.metadata.labels | default dict) }}
{{- $_ := set $labels "kubernetes.io/metadata.name" .metadata.name }}
{{- $_ := set $labelsByName .metadata.name $labels }}
{{- end }}
{{- $needed := $mine.namespaces | default list }}
{{- if .Values.clientRbac.create }}
{{- $needed = concat $needed (.Values.clientRbac.namespaces | default list) }}
{{- end }}
{{- range $needed }}
{{- if and (ne . $.Release.Namespace) (not (hasKey $labelsByName .)) }}
{{- fail (printf "namespace %s does not exist: create it before installing a traffic-manager whose roles are bound in it" .) }}
{{- end }}
{{- end }}
{{- range $namespace := keys $labelsByName | sortAlpha }}
{{- if ne $namespace $.Release.Namespace }}
{{- $config := lookup "v1" "ConfigMap" $namespace (include "traffic-manager.name" $) }}
{{- if and $config (eq (dig "metadata" "labels" "telepresence" "" $config) "manager") (hasKey ($config.data | default dict) "namespaces.yaml") }}
{{- $theirs := index $config.data "namespaces.yaml" | fromYaml }}
{{- if hasKey $theirs "Error" }}
{{- fail (printf "cannot read the namespaces managed by the traffic-manager in namespace %s (its ConfigMap's namespaces.yaml): %s" $namespace (get $theirs "Error")) }}
{{- end }}
{{- $candidates := concat (keys $labelsByName) ($mine.namespaces | default list) ($theirs.namespaces | default list) | uniq | sortAlpha }}
{{- range $candidates }}
{{- $labels := get $labelsByName . | default (dict "kubernetes.io/metadata.name" .) }}
{{- if and (include "traffic-manager.manages" (dict "selection" $mine "name" . "labels" $labels)) (include "traffic-manager.manages" (dict "selection" $theirs "name" . "labels" $labels)) }}
{{- fail (printf "traffic-manager in namespace %s already manages namespace %s" $namespace .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
