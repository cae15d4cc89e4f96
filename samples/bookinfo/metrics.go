package bookinfo

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
)

// resultCounter counts productpage's calls to its upstreams by app and
// response code, the request_result_total series Istio's productpage
// serves on /metrics (its Deployment carries the prometheus.io scrape
// annotations). Code "0" is a call that got no response.
type resultCounter struct {
	mu     sync.Mutex
	counts map[[2]string]int64
}

func (c *resultCounter) add(app string, code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[[2]string]int64{}
	}
	c.counts[[2]string{app, strconv.Itoa(code)}]++
}

func (c *resultCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	keys := make([][2]string, 0, len(c.counts))
	for k := range c.counts {
		keys = append(keys, k)
	}
	counts := make(map[[2]string]int64, len(c.counts))
	for k, v := range c.counts {
		counts[k] = v
	}
	c.mu.Unlock()
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintln(w, "# HELP request_result_total Results of productpage's requests to its upstreams")
	fmt.Fprintln(w, "# TYPE request_result_total counter")
	for _, k := range keys {
		fmt.Fprintf(w, "request_result_total{destination_app=%q,response_code=%q} %d\n", k[0], k[1], counts[k])
	}
}
