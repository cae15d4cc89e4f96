package bookinfo

import "html/template"

// starStyle draws glyphicon stars without Bootstrap, which the page does not
// load: Istio's markup is kept so that scripts grepping for it still work.
const starStyle = `<style>
body{font-family:sans-serif;margin:0}
nav{background:#1f2937;color:#fff;padding:12px 24px;display:flex;justify-content:space-between;align-items:center}
nav a,nav button{color:#fff}
.container{padding:12px 24px}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}
.glyphicon-star::before{content:"\2605"}.glyphicon-star-empty::before{content:"\2606"}
.error{color:#b91c1c}
</style>`

var funcs = template.FuncMap{
	"filled": func(n int) []struct{} { return make([]struct{}, max(0, min(n, 5))) },
	"empty":  func(n int) []struct{} { return make([]struct{}, 5-max(0, min(n, 5))) },
}

var indexTmpl = template.Must(template.New("index").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Simple Bookstore App</title>` + starStyle + `</head>
<body>
<nav><span>BookInfo Sample</span></nav>
<div class="container">
<h2>Hello! This is a simple bookstore application consisting of three services as shown below</h2>
<table>
<tr><th>service</th><th>endpoint</th></tr>
<tr><td>details</td><td>{{.details}}/details</td></tr>
<tr><td>reviews</td><td>{{.reviews}}/reviews</td></tr>
<tr><td>ratings</td><td>{{.ratings}}/ratings</td></tr>
</table>
<p>Click on one of the links below to auto generate a request to the backend as a real user or a tester</p>
<p><a href="/productpage?u=normal">Normal user</a></p>
<p><a href="/productpage?u=test">Test user</a></p>
</div>
</body></html>
`))

var pageTmpl = template.Must(template.New("productpage").Funcs(funcs).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Simple Bookstore App</title>` + starStyle + `</head>
<body>
<nav><span>BookInfo Sample</span>
{{- if .User}}
<span>{{.User}} <a href="logout">Sign out</a></span>
{{- else}}
<form method="post" action="login" name="login_form">
<input name="username" placeholder="Username" required> <input name="passwd" type="password" placeholder="Password">
<button type="submit">Sign in</button>
</form>
{{- end}}
</nav>
<div class="container">
<h1>{{.Product.Title}}</h1>
<p>{{.Description}}</p>
</div>
<div class="container" id="details">
{{- if .DetailsOK}}
<h4>Book Details</h4>
<table>
<tr><th>ISBN-10</th><th>Publisher</th><th>Pages</th><th>Type</th><th>Language</th></tr>
<tr><td>{{.Details.ISBN10}}</td><td>{{.Details.Publisher}}</td><td>{{.Details.Pages}}</td><td>{{.Details.Type}}</td><td>{{.Details.Language}}</td></tr>
</table>
{{- else}}
<h4 class="error">Error fetching product details!</h4>
<p>{{.DetailsError}}</p>
{{- end}}
</div>
<div class="container" id="reviews">
{{- if .ReviewsOK}}
<h4>Book Reviews</h4>
{{- range .Reviews.Reviews}}
<blockquote>
<p>{{.Text}}</p>
<small>{{.Reviewer}}</small>
{{- with .Rating}}
{{- if .Stars}}
<font color="{{.Color}}">
{{- range filled .Stars}}<span class="glyphicon glyphicon-star"></span>{{end -}}
{{- range empty .Stars}}<span class="glyphicon glyphicon-star-empty"></span>{{end -}}
</font>
{{- else if .Error}}
<p class="error"><i>{{.Error}}</i></p>
{{- end}}
{{- end}}
</blockquote>
{{- end}}
<dl><dt>Reviews served by:</dt><dd><u>{{.Reviews.Podname}}</u>{{if ne .Reviews.Clustername "null"}} on cluster <u>{{.Reviews.Clustername}}</u>{{end}}</dd></dl>
{{- else}}
<h4 class="error">Error fetching product reviews!</h4>
<p>{{.ReviewsError}}</p>
{{- end}}
</div>
</body></html>
`))
