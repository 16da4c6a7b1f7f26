package api

import (
	"net/http"
	"time"

	"github.com/scrapethis/scrapethis"
)

// jobItems answers a job's items in scrape order: a JSON array, or JSON
// lines with ?format=jsonl. Rows are streamed, never all held in memory.
func (s *Server) jobItems(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	job, err := s.db.Job(ctx, userID(ctx), jobParam(r))
	if err != nil {
		return err
	}
	format := r.URL.Query().Get("format")
	if format != "" && format != "json" && format != "jsonl" {
		return scrapethis.Errorf(scrapethis.EInvalid, "Invalid format: must be json or jsonl")
	}
	jsonl := format == "jsonl"
	if jsonl {
		w.Header().Set("Content-Type", "application/x-ndjson")
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(http.StatusOK)
	if !jsonl {
		w.Write([]byte("["))
	}
	// Page by seq: the pool connection is held only while a page is read,
	// never while the client reads it, and a page is bounded in bytes.
	first := true
	var after int64 = -1
	for {
		page, err := s.db.ItemPage(ctx, job.ID, after, itemPageRows, itemPageBytes)
		if err != nil {
			// The status is sent: cut the response so the client sees a
			// truncated body, not a valid-looking short one.
			if ctx.Err() == nil {
				s.log.Warn("streaming items failed", "job_id", job.ID, "err", err)
			}
			panic(http.ErrAbortHandler)
		}
		extendWrite(w)
		for _, it := range page {
			switch {
			case jsonl:
			case first:
				first = false
			default:
				w.Write([]byte(","))
			}
			if _, err := w.Write(it.Data); err != nil {
				panic(http.ErrAbortHandler)
			}
			if jsonl {
				w.Write([]byte("\n"))
			}
			after = it.Seq
		}
		if len(page) == 0 {
			break
		}
	}
	if !jsonl {
		w.Write([]byte("]\n"))
	}
	return nil
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
