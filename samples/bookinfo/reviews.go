package bookinfo

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// RatingsUnavailable is the rating error reviews v2 and v3 report when the
// ratings service did not answer in time or failed.
const RatingsUnavailable = "Ratings service is currently unavailable"

// ProductReviews is what the reviews service returns. Podname and
// Clustername tell which replica answered, as Istio's reviews do.
type ProductReviews struct {
	ID          string   `json:"id"`
	Podname     string   `json:"podname"`
	Clustername string   `json:"clustername"`
	Reviews     []Review `json:"reviews"`
}

// Review is one reviewer's text and, from reviews v2 and v3, their rating.
type Review struct {
	Reviewer string  `json:"reviewer"`
	Text     string  `json:"text"`
	Rating   *Rating `json:"rating,omitempty"`
}

// Rating is either stars in a colour or the error that ratings failed.
type Rating struct {
	Stars int    `json:"stars,omitempty"`
	Color string `json:"color,omitempty"`
	Error string `json:"error,omitempty"`
}

// ReviewsConfig configures one version of the reviews service.
type ReviewsConfig struct {
	// Version is v1 (no ratings), v2 (black stars) or v3 (red stars).
	Version string
	// Ratings is the ratings service; a zero Timeout means Istio's value for
	// the version: 10 s for v2, 2.5 s for v3.
	Ratings Upstream
	// Podname and Clustername are reported in every answer; Istio's Java
	// service prints "null" for an unset cluster name and so do we, since
	// productpage hides the cluster line on exactly that value.
	Podname, Clustername string
}

// reviewers is the fixed content of the reviews service.
var reviewers = []Review{
	{Reviewer: "Reviewer1", Text: "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!"},
	{Reviewer: "Reviewer2", Text: "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare."},
}

// NewReviews returns the reviews service: GET /reviews/{id} and GET /health.
func NewReviews(cfg ReviewsConfig) (http.Handler, error) {
	var color string
	switch cfg.Version {
	case "v1":
	case "v2":
		color = "black"
	case "v3":
		color = "red"
	default:
		return nil, fmt.Errorf("reviews version %q: want v1, v2 or v3 (--version or SERVICE_VERSION)", cfg.Version)
	}
	if color != "" && cfg.Ratings.Timeout == 0 {
		cfg.Ratings.Timeout = 10 * time.Second
		if color == "red" {
			cfg.Ratings.Timeout = 2500 * time.Millisecond
		}
	}
	if cfg.Clustername == "" {
		cfg.Clustername = "null"
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []byte(`{"status":"Reviews is healthy"}`))
	})
	mux.HandleFunc("GET /reviews/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, []byte(`{"error":"please provide numeric product id"}`))
			return
		}
		out := ProductReviews{ID: strconv.Itoa(id), Podname: cfg.Podname, Clustername: cfg.Clustername}
		var stars map[string]int
		if color != "" {
			stars = fetchRatings(r, cfg.Ratings, id)
		}
		for _, rv := range reviewers {
			if color != "" {
				if n, ok := stars[rv.Reviewer]; ok {
					rv.Rating = &Rating{Stars: n, Color: color}
				} else {
					rv.Rating = &Rating{Error: RatingsUnavailable}
				}
			}
			out.Reviews = append(out.Reviews, rv)
		}
		b, _ := json.Marshal(out)
		writeJSON(w, http.StatusOK, b)
	})
	return mux, nil
}

// fetchRatings asks ratings for the product's stars, forwarding the trace
// headers and end-user (which the fault-injection tasks match on). It returns
// nil when ratings failed, which the caller reports per review.
func fetchRatings(r *http.Request, up Upstream, id int) map[string]int {
	hdr := forward(r.Header, traceHeaders, contextHeaders, []string{"end-user"})
	status, body, err := get(r.Context(), up, "/ratings/"+strconv.Itoa(id), hdr)
	if err != nil || status != http.StatusOK {
		return nil
	}
	var pr ProductRatings
	if json.Unmarshal(body, &pr) != nil {
		return nil
	}
	return pr.Ratings
}
