package core

import (
	"errors"
	"fmt"
	"os"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// ReadDataSource returns the bytes an Envoy DataSource names: inline, from
// a file (read now) or from an environment variable. Errors name the field.
func ReadDataSource(ds *corev3.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, fmt.Errorf("filename: %w", err)
		}
		return b, nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, fmt.Errorf("environment_variable: %q is not set", s.EnvironmentVariable)
		}
		return []byte(v), nil
	default:
		return nil, errors.New("missing: one of inline_bytes, inline_string, filename or environment_variable is required")
	}
}
