package main

import (
	"strings"
	"testing"
	"time"
)

func TestIdentityFromEnv(t *testing.T) {
	env := map[string]string{"SECRET_TTL": "90s", "SECRET_GRACE_PERIOD_RATIO": "0.25", "TRUST_DOMAIN": "example.org"}
	o, err := identityFromEnv(func(k string) string { return env[k] })
	if err != nil || o.TTL != 90*time.Second || o.GraceRatio != 0.25 || o.TrustDomain != "example.org" {
		t.Fatalf("identityFromEnv: %+v %v", o, err)
	}
	for k, v := range map[string]string{"SECRET_TTL": "1 day", "SECRET_GRACE_PERIOD_RATIO": "2"} {
		_, err := identityFromEnv(func(n string) string {
			if n == k {
				return v
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: %v, want an error naming %s", k, v, err, k)
		}
	}
}
