package grafana

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/promtest"
)

// grafanaVars stand for what Grafana substitutes before it sends a query.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$namespace", "default", "$workload", "reviews-v1",
	"$service", "reviews.default.svc.cluster.local", "${datasource}", "prometheus")

// labelValues is Grafana's label_values(metric, label) variable query.
var labelValues = regexp.MustCompile(`^label_values\((.*), *([a-z_]+)\)$`)

// Every query parses and evaluates in a real Prometheus (Debian's),
// Grafana's variables substituted as Grafana does.
func TestQueriesRunInPrometheus(t *testing.T) {
	base := promtest.Start(t, "global:\n  scrape_interval: 15s\n")
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	n := 0
	for name, m := range load(t) {
		for _, e := range exprs(t, m) {
			q := grafanaVars.Replace(e)
			if s := labelValues.FindStringSubmatch(q); s != nil {
				q = fmt.Sprintf("group by (%s) (%s)", s[2], s[1])
			}
			resp, err := c.PostForm(base+"/api/v1/query", url.Values{"query": {q}})
			if err != nil {
				t.Fatal(err)
			}
			var r struct{ Status, Error string }
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if r.Status != "success" {
				t.Errorf("%s: Prometheus refuses %s: %s", name, e, r.Error)
			}
			n++
		}
	}
	if n < 30 {
		t.Errorf("only %d queries checked", n)
	}
}
