package core

import (
	"context"

	udpatypev1 "github.com/cncf/xds/go/udpa/type/v1"
	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// TypedStruct type URLs: Envoy accepts both wrappers for extensions whose
// config is given as JSON (Istio's istio.metadata_exchange is one).
const (
	TypedStructURL     = "type.googleapis.com/xds.type.v3.TypedStruct"
	UDPATypedStructURL = "type.googleapis.com/udpa.type.v1.TypedStruct"
)

// ConfigType returns the type URL a filter registry resolves a
// typed_config by: the inner type_url of a TypedStruct, else the Any's own.
func ConfigType(a *anypb.Any) string {
	if tu, _, ok := UnwrapTypedStruct(a); ok {
		return tu
	}
	return a.GetTypeUrl()
}

// UnwrapTypedStruct returns the inner type_url and value of a TypedStruct
// (either wrapper); ok is false for any other Any or one that does not
// decode.
func UnwrapTypedStruct(a *anypb.Any) (typeURL string, value *structpb.Struct, ok bool) {
	switch a.GetTypeUrl() {
	case TypedStructURL:
		var ts xdstypev3.TypedStruct
		if a.UnmarshalTo(&ts) != nil {
			return "", nil, false
		}
		return ts.GetTypeUrl(), ts.GetValue(), true
	case UDPATypedStructURL:
		var ts udpatypev1.TypedStruct
		if a.UnmarshalTo(&ts) != nil {
			return "", nil, false
		}
		return ts.GetTypeUrl(), ts.GetValue(), true
	}
	return "", nil, false
}

type connInfoCtxKey struct{}

// WithConnInfo returns ctx carrying the downstream connection, so that
// what runs on an upstream connection made for it (Cluster.filters) can
// reach the downstream's filters.
func WithConnInfo(ctx context.Context, ci *ConnInfo) context.Context {
	return context.WithValue(ctx, connInfoCtxKey{}, ci)
}

// ConnInfoFrom returns the downstream connection carried by ctx, nil when none.
func ConnInfoFrom(ctx context.Context) *ConnInfo {
	ci, _ := ctx.Value(connInfoCtxKey{}).(*ConnInfo)
	return ci
}
