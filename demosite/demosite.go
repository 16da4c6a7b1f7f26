// Package demosite serves a small, fixed web site for spiders to scrape in
// development and tests: a few pages of quotes linked by "next" links.
package demosite

import (
	"fmt"
	"html"
	"net/http"
	"strconv"
	"strings"
)

// Pages is how many quote pages the site has.
const Pages = 3

// PerPage is how many quotes each page shows.
const PerPage = 5

var authors = []string{"Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov"}

// Quote returns the text of quote i (0-based) on the site.
func Quote(i int) (text, author string) {
	return fmt.Sprintf("Quote number %d: simplicity is prerequisite for reliability.", i+1), authors[i%len(authors)]
}

// Handler serves the site under prefix: prefix + "/" is page 1, prefix +
// "/page/N/" page N.
func Handler(prefix string) http.Handler {
	prefix = strings.TrimSuffix(prefix, "/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest := strings.TrimPrefix(r.URL.Path, prefix)
		page := 1
		switch {
		case rest == "" || rest == "/":
		case strings.HasPrefix(rest, "/page/"):
			n, err := strconv.Atoi(strings.Trim(strings.TrimPrefix(rest, "/page/"), "/"))
			if err != nil || n < 1 || n > Pages {
				http.NotFound(w, r)
				return
			}
			page = n
		default:
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		var b strings.Builder
		fmt.Fprintf(&b, "<!doctype html><html><head><title>Quotes page %d</title></head><body>\n", page)
		for i := (page - 1) * PerPage; i < page*PerPage; i++ {
			text, author := Quote(i)
			fmt.Fprintf(&b, "<div class=\"quote\"><span class=\"text\">%s</span> <small class=\"author\">%s</small></div>\n",
				html.EscapeString(text), html.EscapeString(author))
		}
		if page < Pages {
			fmt.Fprintf(&b, "<ul class=\"pager\"><li class=\"next\"><a href=\"%s/page/%d/\">Next</a></li></ul>\n", prefix, page+1)
		}
		b.WriteString("</body></html>\n")
		w.Write([]byte(b.String()))
	})
}
