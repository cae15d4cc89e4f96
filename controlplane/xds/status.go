package xds

import (
	"fmt"
	"slices"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// The resource types a config dump may hold must be registered for
	// protojson to print them.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// ProxyStatus is one connection's sync state, as /debug/syncz shows it.
type ProxyStatus struct {
	ConnID       string       `json:"conn_id"`
	ProxyID      string       `json:"proxy_id"`
	NodeID       string       `json:"node_id"`
	Type         string       `json:"proxy_type"`
	Namespace    string       `json:"namespace"`
	IPs          []string     `json:"ips"`
	IstioVersion string       `json:"istio_version,omitempty"`
	Delta        bool         `json:"delta"`
	ConnectedAt  time.Time    `json:"connected_at"`
	Types        []TypeStatus `json:"types"`
}

// TypeStatus is the state of one xDS type on one connection.
type TypeStatus struct {
	TypeURL      string    `json:"type_url"`
	Wildcard     bool      `json:"wildcard"`
	Names        []string  `json:"names,omitempty"`
	VersionSent  string    `json:"version_sent"`
	NonceSent    string    `json:"nonce_sent"`
	SentAt       time.Time `json:"sent_at"`
	VersionAcked string    `json:"version_acked"`
	NonceAcked   string    `json:"nonce_acked"`
	AckedAt      time.Time `json:"acked_at"`
	NACKs        int       `json:"nacks"`
	// LastNACK is the error of the last NACK, cleared by the next ACK.
	LastNACK      string    `json:"last_nack,omitempty"`
	LastNACKNonce string    `json:"last_nack_nonce,omitempty"`
	LastNACKAt    time.Time `json:"last_nack_at"`
	// SentConfigs caused the last response sent; Configs has, per
	// object ever pushed to this proxy, the latest version sent and ACKed.
	SentConfigs []ConfigKey    `json:"sent_configs,omitempty"`
	Configs     []ConfigStatus `json:"configs,omitempty"`
}

// ConfigStatus is one object's latest version sent to, and ACKed by, one
// proxy for one type.
type ConfigStatus struct {
	Config       ConfigKey `json:"config"` // without version
	VersionSent  string    `json:"version_sent"`
	VersionAcked string    `json:"version_acked"`
}

// Status reports every connection's sync state, sorted by connection id.
func (s *Server) Status() []ProxyStatus {
	conns := s.connections()
	out := make([]ProxyStatus, 0, len(conns))
	for _, c := range conns {
		out = append(out, c.status())
	}
	slices.SortFunc(out, func(a, b ProxyStatus) int { return strings.Compare(a.ConnID, b.ConnID) })
	return out
}

func (c *conn) status() ProxyStatus {
	ps := ProxyStatus{
		ConnID: c.id, ProxyID: c.proxy.ID, NodeID: c.proxy.NodeID, Type: c.proxy.Type,
		Namespace: c.proxy.Namespace, IPs: c.proxy.IPs, IstioVersion: c.proxy.IstioVersion,
		Delta: c.delta, ConnectedAt: c.connectedAt,
	}
	types := c.watchedTypes()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range types {
		w := c.watches[t]
		ts := TypeStatus{
			TypeURL: t, Wildcard: w.wildcard,
			VersionSent: w.versionSent, NonceSent: w.nonceSent, SentAt: w.sentAt,
			VersionAcked: w.versionAcked, NonceAcked: w.nonceAcked, AckedAt: w.ackedAt,
			NACKs: w.nacks, LastNACK: w.lastNACK, LastNACKNonce: w.nackNonce, LastNACKAt: w.nackAt,
			SentConfigs: slices.Clone(w.sentConfigs),
		}
		if !w.wildcard {
			ts.Names = slices.Clone(w.subscription())
		}
		for k, st := range w.configs {
			ts.Configs = append(ts.Configs, ConfigStatus{Config: k, VersionSent: st.sent, VersionAcked: st.acked})
		}
		slices.SortFunc(ts.Configs, func(a, b ConfigStatus) int { return strings.Compare(a.Config.String(), b.Config.String()) })
		ps.Types = append(ps.Types, ts)
	}
	return ps
}

// Delivery says whether one proxy connection was sent, and has ACKed, one
// config version.
type Delivery struct {
	ConnID  string `json:"conn_id"`
	ProxyID string `json:"proxy_id"`
	Sent    bool   `json:"sent"`
	// Acked is set when every type the version was sent in has been
	// ACKed with it.
	Acked bool `json:"acked"`
}

// Trace answers "which proxies received and ACKed config key at
// key.ResourceVersion?". Only connections that were sent it are listed,
// sorted by connection id. A proxy sent a newer version since reads as not
// sent: versions are opaque, only equality is known.
func (s *Server) Trace(key ConfigKey) []Delivery {
	var out []Delivery
	for _, c := range s.connections() {
		d := Delivery{ConnID: c.id, ProxyID: c.proxy.ID, Acked: true}
		c.mu.Lock()
		for _, w := range c.watches {
			st := w.configs[key.id()]
			if st == nil || st.sent != key.ResourceVersion {
				continue
			}
			d.Sent = true
			d.Acked = d.Acked && st.acked == key.ResourceVersion
		}
		c.mu.Unlock()
		if d.Sent {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b Delivery) int { return strings.Compare(a.ConnID, b.ConnID) })
	return out
}

// ConfigDump generates the resources of every type proxyID (a proxy id or
// a connection id) subscribes to, in the shape of Envoy's /config_dump,
// versions being the last ACKed.
func (s *Server) ConfigDump(proxyID string) (*adminv3.ConfigDump, error) {
	var c *conn
	for _, cc := range s.connections() {
		if cc.id == proxyID || (cc.proxy.ID == proxyID && (c == nil || cc.connectedAt.After(c.connectedAt))) {
			c = cc
		}
	}
	if c == nil {
		return nil, fmt.Errorf("no proxy %q is connected: see /debug/syncz for connected proxies", proxyID)
	}
	dump := &adminv3.ConfigDump{}
	req := &PushRequest{Full: true, Reason: "debug"}
	for _, t := range c.watchedTypes() {
		c.mu.Lock()
		w := c.watches[t]
		names, version := w.subscription(), w.versionAcked
		if !w.wildcard && len(names) == 0 {
			c.mu.Unlock()
			continue
		}
		c.mu.Unlock()
		res, err := c.generate(t, names, req)
		if err != nil {
			return nil, fmt.Errorf("proxy %q: generating %s: %w", proxyID, ShortType(t), err)
		}
		section := dumpSection(t, version, res)
		if section == nil {
			continue
		}
		a, err := anypb.New(section)
		if err != nil {
			return nil, err
		}
		dump.Configs = append(dump.Configs, a)
	}
	return dump, nil
}

func dumpSection(typeURL, version string, res []*encoding) proto.Message {
	switch typeURL {
	case ClusterType:
		d := &adminv3.ClustersConfigDump{VersionInfo: version}
		for _, r := range res {
			d.DynamicActiveClusters = append(d.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{VersionInfo: version, Cluster: r.any})
		}
		return d
	case EndpointType:
		d := &adminv3.EndpointsConfigDump{}
		for _, r := range res {
			d.DynamicEndpointConfigs = append(d.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{VersionInfo: version, EndpointConfig: r.any})
		}
		return d
	case ListenerType:
		d := &adminv3.ListenersConfigDump{VersionInfo: version}
		for _, r := range res {
			d.DynamicListeners = append(d.DynamicListeners, &adminv3.ListenersConfigDump_DynamicListener{
				Name: r.name, ActiveState: &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: version, Listener: r.any},
			})
		}
		return d
	case RouteType:
		d := &adminv3.RoutesConfigDump{}
		for _, r := range res {
			d.DynamicRouteConfigs = append(d.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{VersionInfo: version, RouteConfig: r.any})
		}
		return d
	case SecretType:
		d := &adminv3.SecretsConfigDump{}
		for _, r := range res {
			d.DynamicActiveSecrets = append(d.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{Name: r.name, VersionInfo: version, Secret: r.any})
		}
		return d
	}
	return nil
}
