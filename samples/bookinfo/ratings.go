package bookinfo

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ProductRatings is what the ratings service returns: stars per reviewer.
type ProductRatings struct {
	ID      int            `json:"id"`
	Ratings map[string]int `json:"ratings"`
}

// NewRatings returns the ratings service (v1, its fixed ratings):
// GET /ratings/{id} and GET /health.
func NewRatings() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []byte(`{"status":"Ratings is healthy"}`))
	})
	mux.HandleFunc("GET /ratings/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, []byte(`{"error":"please provide numeric product id"}`))
			return
		}
		b, _ := json.Marshal(ProductRatings{ID: id, Ratings: map[string]int{"Reviewer1": 5, "Reviewer2": 4}})
		writeJSON(w, http.StatusOK, b)
	})
	return mux
}
