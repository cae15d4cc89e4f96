package bookinfo

import (
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
)

// The texts productpage shows when an upstream fails; Istio's tasks tell
// users to look for exactly these.
const (
	DetailsUnavailable        = "Sorry, product details are currently unavailable for this book."
	ReviewsUnavailable        = "Sorry, product reviews are currently unavailable for this book."
	RatingsUnavailableForBook = "Sorry, product ratings are currently unavailable for this book."
)

// userCookie holds the signed-in user's name; productpage turns it into the
// end-user header on its calls, which Istio's routing tasks match on.
const userCookie = "user"

// ProductPageConfig configures the productpage service.
type ProductPageConfig struct {
	// Details, Reviews and Ratings are the services productpage calls; Istio's
	// timeouts are 3 s per attempt for each.
	Details, Reviews, Ratings Upstream
	// ReviewsAttempts is how many times productpage asks reviews before
	// giving up; Istio's productpage tries twice on purpose, and the fault
	// injection task's 6 s comes from it.
	ReviewsAttempts int
}

// Product is a book productpage knows without asking anyone.
type Product struct {
	ID              int    `json:"id"`
	Title           string `json:"title"`
	DescriptionHTML string `json:"descriptionHtml"`
}

var products = []Product{{
	ID:    0,
	Title: "The Comedy of Errors",
	DescriptionHTML: `<a href="https://en.wikipedia.org/wiki/The_Comedy_of_Errors">Wikipedia Summary</a>: ` +
		`The Comedy of Errors is one of <b>William Shakespeare's</b> early plays. It is his shortest and one of his ` +
		`most farcical comedies, with a major part of the humour coming from slapstick and mistaken identity, in ` +
		`addition to puns and word play.`,
}}

type productPage struct {
	cfg     ProductPageConfig
	results resultCounter
}

// NewProductPage returns the productpage service: the HTML pages (/, /productpage),
// sign-in (POST /login, GET /logout), the JSON API under /api/v1/products,
// /health and /metrics.
func NewProductPage(cfg ProductPageConfig) http.Handler {
	if cfg.ReviewsAttempts < 1 {
		cfg.ReviewsAttempts = 1
	}
	p := &productPage{cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", p.index)
	mux.HandleFunc("GET /index.html", p.index)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("Product page is healthy"))
	})
	mux.Handle("GET /metrics", &p.results)
	mux.HandleFunc("POST /login", p.login)
	mux.HandleFunc("GET /logout", p.logout)
	mux.HandleFunc("GET /productpage", p.page)
	mux.HandleFunc("GET /api/v1/products", func(w http.ResponseWriter, r *http.Request) {
		b, _ := json.Marshal(products)
		writeJSON(w, http.StatusOK, b)
	})
	mux.HandleFunc("GET /api/v1/products/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeUpstream(w, p.details(r, r.PathValue("id")))
	})
	mux.HandleFunc("GET /api/v1/products/{id}/reviews", func(w http.ResponseWriter, r *http.Request) {
		writeUpstream(w, p.reviews(r, r.PathValue("id")))
	})
	mux.HandleFunc("GET /api/v1/products/{id}/ratings", func(w http.ResponseWriter, r *http.Request) {
		writeUpstream(w, p.ratings(r, r.PathValue("id")))
	})
	return mux
}

// upstreamResult is an upstream's JSON answer, or the error object
// productpage substitutes, with the status productpage reports.
type upstreamResult struct {
	status int
	body   json.RawMessage
}

func writeUpstream(w http.ResponseWriter, res upstreamResult) {
	writeJSON(w, res.status, res.body)
}

// signedInUser is the name set by /login, or "".
func signedInUser(r *http.Request) string {
	c, err := r.Cookie(userCookie)
	if err != nil {
		return ""
	}
	u, err := url.QueryUnescape(c.Value)
	if err != nil {
		return ""
	}
	return u
}

// outboundHeaders are the headers productpage sends upstream: the trace and
// context headers it received, and end-user for the signed-in user.
func outboundHeaders(r *http.Request) http.Header {
	h := forward(r.Header, traceHeaders, contextHeaders)
	if u := signedInUser(r); u != "" {
		h.Set("end-user", u)
	}
	return h
}

// call asks one upstream (app) up to attempts times and keeps the first 200
// answer; otherwise it reports the last status (500 when nothing answered)
// with errText, as Istio's productpage does.
func (p *productPage) call(ctx context.Context, app string, up Upstream, path string, hdr http.Header, attempts int, errText string) upstreamResult {
	status := 0
	for range attempts {
		var body []byte
		var err error
		status, body, err = get(ctx, up, path, hdr)
		if err != nil {
			status = 0
		}
		p.results.add(app, status)
		if status == http.StatusOK && json.Valid(body) {
			return upstreamResult{status: http.StatusOK, body: body}
		}
		if ctx.Err() != nil {
			break
		}
	}
	if status == 0 || status == http.StatusOK {
		status = http.StatusInternalServerError
	}
	b, _ := json.Marshal(map[string]string{"error": errText})
	return upstreamResult{status: status, body: b}
}

func (p *productPage) details(r *http.Request, id string) upstreamResult {
	return p.call(r.Context(), "details", p.cfg.Details, "/details/"+url.PathEscape(id), outboundHeaders(r), 1, DetailsUnavailable)
}

func (p *productPage) reviews(r *http.Request, id string) upstreamResult {
	return p.call(r.Context(), "reviews", p.cfg.Reviews, "/reviews/"+url.PathEscape(id), outboundHeaders(r), p.cfg.ReviewsAttempts, ReviewsUnavailable)
}

func (p *productPage) ratings(r *http.Request, id string) upstreamResult {
	return p.call(r.Context(), "ratings", p.cfg.Ratings, "/ratings/"+url.PathEscape(id), outboundHeaders(r), 1, RatingsUnavailableForBook)
}

// back is where /login and /logout send the browser: the page it came from.
func back(r *http.Request) string {
	if ref := r.Referer(); ref != "" {
		return ref
	}
	return "/productpage"
}

func (p *productPage) login(w http.ResponseWriter, r *http.Request) {
	user := r.FormValue("username")
	if user == "" {
		http.Error(w, "sign-in needs a username: send the form field username", http.StatusBadRequest)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: userCookie, Value: url.QueryEscape(user), Path: "/", HttpOnly: true})
	http.Redirect(w, r, back(r), http.StatusFound)
}

func (p *productPage) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: userCookie, Value: "", Path: "/", MaxAge: -1})
	http.Redirect(w, r, back(r), http.StatusFound)
}

func (p *productPage) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	indexTmpl.Execute(w, map[string]string{
		"details": p.cfg.Details.URL, "reviews": p.cfg.Reviews.URL, "ratings": p.cfg.Ratings.URL,
	})
}

// pageData is what the product page template renders.
type pageData struct {
	User         string
	Product      Product
	Description  template.HTML
	DetailsOK    bool
	Details      BookDetails
	DetailsError string
	ReviewsOK    bool
	Reviews      ProductReviews
	ReviewsError string
}

func (p *productPage) page(w http.ResponseWriter, r *http.Request) {
	d := pageData{User: signedInUser(r), Product: products[0], Description: template.HTML(products[0].DescriptionHTML)}
	det := p.details(r, "0")
	if det.status == http.StatusOK && json.Unmarshal(det.body, &d.Details) == nil {
		d.DetailsOK = true
	} else {
		d.DetailsError = DetailsUnavailable
	}
	rev := p.reviews(r, "0")
	if rev.status == http.StatusOK && json.Unmarshal(rev.body, &d.Reviews) == nil {
		d.ReviewsOK = true
	} else {
		d.ReviewsError = ReviewsUnavailable
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	pageTmpl.Execute(w, d)
}
