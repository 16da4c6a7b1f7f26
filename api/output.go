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
	first := true
	if !jsonl {
		w.Write([]byte("["))
	}
	err = s.db.EachItem(ctx, job.ID, func(data []byte) error {
		switch {
		case jsonl:
		case first:
			first = false
		default:
			w.Write([]byte(","))
		}
		_, err := w.Write(data)
		if jsonl {
			w.Write([]byte("\n"))
		}
		return err
	})
	if err != nil {
		// The status is sent: cut the response so the client sees a
		// truncated body, not a valid-looking short one.
		if ctx.Err() == nil {
			s.log.Error("streaming items failed", "job_id", job.ID, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	if !jsonl {
		w.Write([]byte("]\n"))
	}
	return nil
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
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var after int64 = -1
	for {
		final := job.Status.Final()
		for {
			lines, err := s.db.Logs(ctx, job.ID, after, 1000)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Error("streaming logs failed", "job_id", job.ID, "err", err)
				}
				panic(http.ErrAbortHandler)
			}
			for _, l := range lines {
				w.Write([]byte(l.Line))
				w.Write([]byte("\n"))
				after = l.Seq
			}
			if len(lines) < 1000 {
				break
			}
		}
		if !following || final {
			return nil
		}
		if flusher != nil {
			flusher.Flush()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.LogPoll):
		}
		if job, err = s.db.Job(ctx, uid, job.ID); err != nil {
			// The status is sent: cut the stream rather than end it cleanly.
			panic(http.ErrAbortHandler)
		}
	}
}
