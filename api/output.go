package api

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
)

// jobItems answers a job's items in scrape order: a JSON array, JSON lines
// with ?format=jsonl, or CSV with ?format=csv; ?offset and ?limit pick a
// window. Rows are streamed page by page, never all held in memory.
func (s *Server) jobItems(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	format := q.Get("format")
	if format != "" && format != "json" && format != "jsonl" && format != "csv" {
		return scrapethis.Errorf(scrapethis.EInvalid, "Invalid format: must be json, jsonl or csv")
	}
	var win db.ItemWindow
	var err error
	if win.Offset, err = queryInt(q, "offset", 0); err != nil {
		return err
	}
	if win.Limit, err = queryInt(q, "limit", 1); err != nil {
		return err
	}
	job, err := s.db.Job(ctx, userID(ctx), jobParam(r))
	if err != nil {
		return err
	}
	first, last, found, err := s.db.ItemRange(ctx, job.ID, win)
	if err != nil {
		return err
	}
	var out itemWriter
	switch format {
	case "jsonl":
		w.Header().Set("Content-Type", "application/x-ndjson")
		out = &jsonlItems{w: w}
	case "csv":
		var cols []string
		if found {
			if cols, err = s.db.ItemKeys(ctx, job.ID, win); err != nil {
				return err
			}
		}
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="`+job.ID+`.csv"`)
		out = newCSVItems(w, cols)
	default:
		w.Header().Set("Content-Type", "application/json")
		out = &jsonItems{w: w}
	}
	w.WriteHeader(http.StatusOK)
	err = out.begin()
	// Page by seq: the pool connection is held only while a page is read,
	// never while the client reads it, and a page is bounded in bytes.
	for after := first - 1; found && err == nil && after < last; {
		var page []db.Item
		if page, err = s.db.ItemPage(ctx, job.ID, after, itemPageRows, itemPageBytes); err != nil || len(page) == 0 {
			break
		}
		extendWrite(w)
		for _, it := range page {
			if it.Seq > last {
				break
			}
			if err = out.item(it.Data); err != nil {
				break
			}
			after = it.Seq
		}
		if page[len(page)-1].Seq > last {
			break
		}
	}
	if err == nil {
		err = out.end()
	}
	if err != nil {
		// The status is sent: cut the response so the client sees a
		// truncated body, not a valid-looking short one.
		if ctx.Err() == nil {
			s.log.Warn("streaming items failed", "job_id", job.ID, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	return nil
}

// queryInt reads an optional whole-number query parameter of at least min.
func queryInt(q url.Values, name string, min int64) (int64, error) {
	v := q.Get(name)
	if v == "" && !q.Has(name) {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min {
		return 0, scrapethis.Errorf(scrapethis.EInvalid, "Invalid %s: must be a whole number from %d", name, min)
	}
	return n, nil
}

// itemWriter writes one items response body in one format.
type itemWriter interface {
	begin() error
	item(data []byte) error
	end() error
}

type jsonItems struct {
	w     io.Writer
	count int
}

func (j *jsonItems) begin() error { _, err := io.WriteString(j.w, "["); return err }
func (j *jsonItems) end() error   { _, err := io.WriteString(j.w, "]\n"); return err }
func (j *jsonItems) item(data []byte) error {
	if j.count++; j.count > 1 {
		if _, err := io.WriteString(j.w, ","); err != nil {
			return err
		}
	}
	_, err := j.w.Write(data)
	return err
}

type jsonlItems struct{ w io.Writer }

func (j *jsonlItems) begin() error { return nil }
func (j *jsonlItems) end() error   { return nil }
func (j *jsonlItems) item(data []byte) error {
	if _, err := j.w.Write(data); err != nil {
		return err
	}
	_, err := io.WriteString(j.w, "\n")
	return err
}

// csvItems writes RFC 4180 CSV: a header of the columns, then one record
// per item. A string is its text, null or a missing key an empty field,
// any other value (number, boolean, object, array) its compact JSON.
type csvItems struct {
	w    *csv.Writer
	cols []string
	idx  map[string]int
	rec  []string
}

func newCSVItems(w io.Writer, cols []string) *csvItems {
	c := &csvItems{w: csv.NewWriter(w), cols: cols, idx: make(map[string]int, len(cols)), rec: make([]string, len(cols))}
	c.w.UseCRLF = true
	for i, k := range cols {
		c.idx[k] = i
	}
	return c
}

func (c *csvItems) begin() error {
	if len(c.cols) == 0 {
		return nil
	}
	return c.w.Write(c.cols)
}

func (c *csvItems) end() error {
	c.w.Flush()
	return c.w.Error()
}

func (c *csvItems) item(data []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		fields = nil // not an object: a record of empty fields
	}
	for i := range c.rec {
		c.rec[i] = ""
	}
	for k, v := range fields {
		if i, ok := c.idx[k]; ok {
			c.rec[i] = csvField(v)
		}
	}
	if len(c.rec) == 0 {
		return nil
	}
	return c.w.Write(c.rec)
}

func csvField(v json.RawMessage) string {
	switch {
	case len(v) == 0 || string(v) == "null":
		return ""
	case v[0] == '"':
		var s string
		if json.Unmarshal(v, &s) == nil {
			return s
		}
	}
	var b bytes.Buffer
	if json.Compact(&b, v) == nil {
		return b.String()
	}
	return string(v)
}

// Item pages: at most this many rows, and about this many bytes.
const (
	itemPageRows  = 1000
	itemPageBytes = 4 << 20
)

// streamWriteTimeout bounds each page of a stream: a client that stops
// reading is cut off rather than holding its goroutine and buffers.
const streamWriteTimeout = 30 * time.Second

// extendWrite gives the stream's next writes a fresh deadline.
func extendWrite(w http.ResponseWriter) {
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(streamWriteTimeout))
}

// jobLogs answers a job's log as text/plain. With ?follow=1 it keeps the
// response open and sends new lines until the job is final.
func (s *Server) jobLogs(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	uid := userID(ctx)
	job, err := s.db.Job(ctx, uid, jobParam(r))
	if err != nil {
		return err
	}
	follow := r.URL.Query().Get("follow")
	following := follow == "1" || follow == "true"
	var st *followStream
	if following && !job.Status.Final() {
		if st, err = s.follows.add(uid, job.ID, -1); err != nil {
			return err
		}
		defer s.follows.remove(st)
		// A followed log may stay open as long as its job runs.
		http.NewResponseController(w).SetReadDeadline(time.Time{})
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var after int64 = -1
	for {
		// Seen final before this read: after it, nothing more can come.
		final := st == nil || s.follows.isFinal(st)
		for {
			lines, err := s.db.Logs(ctx, job.ID, after, 1000)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("streaming logs failed", "job_id", job.ID, "err", err)
				}
				panic(http.ErrAbortHandler)
			}
			extendWrite(w)
			for _, l := range lines {
				if _, err := w.Write([]byte(l.Line + "\n")); err != nil {
					panic(http.ErrAbortHandler)
				}
				after = l.Seq
			}
			if len(lines) < 1000 {
				break
			}
		}
		if final {
			return nil
		}
		s.follows.sent(st, after)
		if flusher != nil {
			extendWrite(w)
			flusher.Flush()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-st.wake:
		}
	}
}
