package stats

// PromScope is Scope for metrics whose Prometheus names are not Envoy's,
// such as istio-agent's istio_agent_*: promPrefix is used as given, with no
// "envoy_" in front.
func (s *Store) PromScope(flat, promPrefix string, tags ...Tag) *Scope {
	sc := &Scope{store: s, tags: tags, promPrefix: promPrefix}
	if flat != "" {
		sc.flatPrefix = flat + "."
	}
	return sc
}
