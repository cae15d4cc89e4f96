package bookinfo

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// BookDetails is what the details service returns for a product, with the
// field names and order of Istio's details v1.
type BookDetails struct {
	ID        int    `json:"id"`
	Author    string `json:"author"`
	Year      int    `json:"year"`
	Type      string `json:"type"`
	Pages     int    `json:"pages"`
	Publisher string `json:"publisher"`
	Language  string `json:"language"`
	ISBN10    string `json:"ISBN-10"`
	ISBN13    string `json:"ISBN-13"`
}

// NewDetails returns the details service: GET /details/{id} and GET /health.
func NewDetails() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []byte(`{"status":"Details is healthy"}`))
	})
	mux.HandleFunc("GET /details/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.PathValue("id"))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, []byte(`{"error":"please provide numeric product id"}`))
			return
		}
		b, _ := json.Marshal(BookDetails{
			ID: id, Author: "William Shakespeare", Year: 1595, Type: "paperback", Pages: 200,
			Publisher: "PublisherA", Language: "English", ISBN10: "1234567890", ISBN13: "123-1234567890",
		})
		writeJSON(w, http.StatusOK, b)
	})
	return mux
}
