package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestDefaultsAreTheReferenceScenario(t *testing.T) {
	o, err := parse(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	r := o.run
	if r.Spec.Services != 1000 || r.Spec.Endpoints != 2 || r.Spec.Namespaces != 10 || r.Proxies != 2000 || r.Reps != 20 ||
		r.Fleet.ProxiesPerConn != 50 || r.Fleet.Delta || r.ChangeTimeout != 30*time.Second || o.total != 15*time.Minute {
		t.Errorf("defaults %+v, total %v", r, o.total)
	}
	o, err = parse([]string{"-services", "100", "-proxies", "200", "-delta", "-per-conn", "1"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.run.Spec.Services != 100 || o.run.Proxies != 200 || !o.run.Fleet.Delta || o.run.Fleet.ProxiesPerConn != 1 {
		t.Errorf("flags not applied: %+v", o.run)
	}
}

func TestStrayArgumentIsRefused(t *testing.T) {
	var stderr bytes.Buffer
	if _, err := parse([]string{"-reps", "3", "100"}, &stderr); err == nil {
		t.Fatal("parse accepted a stray argument")
	}
	if got := stderr.String(); !strings.Contains(got, `xds-load: unexpected argument "100"; all settings are flags (see -h)`) {
		t.Errorf("stderr %q", got)
	}
}
