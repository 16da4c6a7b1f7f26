package worker

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/scrapethis/scrapethis/db"
)

// MaxLineBytes bounds one stdout item or stderr log line; longer lines are
// dropped (items) or cut (logs), with a warning in the job's log.
const MaxLineBytes = 8 << 20

// batcher collects values from in and writes them in batches of at most
// max, or after delay since the batch's first value, retrying a failed
// write with backoff until it succeeds, the write says stop (ErrNotOwner),
// or ctx ends. While a write is retried the channel fills and the producer
// blocks: a spider's pipe then fills and the spider waits. Nothing is lost.
type batcher[T any] struct {
	in    chan T
	max   int
	delay time.Duration
	write func(ctx context.Context, first int64, batch []T) error
	next  int64
	log   *slog.Logger
	what  string
}

func newBatcher[T any](max int, delay time.Duration, first int64, log *slog.Logger, what string,
	write func(ctx context.Context, first int64, batch []T) error) *batcher[T] {
	// The channel holds a whole batch, so that the reader goes on while a
	// batch is written; the batch itself grows only as far as a job's
	// output needs (most jobs print little).
	return &batcher[T]{in: make(chan T, max), max: max, delay: delay, write: write, next: first, log: log, what: what}
}

// run drains in until it is closed, then writes what is left.
func (b *batcher[T]) run(ctx context.Context) error {
	var batch []T
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := b.writeRetry(ctx, batch)
		b.next += int64(len(batch))
		batch = batch[:0]
		return err
	}
	for {
		select {
		case v, ok := <-b.in:
			if !ok {
				return flush()
			}
			if len(batch) == 0 {
				timer.Reset(b.delay)
			}
			batch = append(batch, v)
			if len(batch) >= b.max {
				timer.Stop()
				if err := flush(); err != nil {
					return err
				}
			}
		case <-timer.C:
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

func (b *batcher[T]) writeRetry(ctx context.Context, batch []T) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := b.write(ctx, b.next, batch)
		if err == nil || errors.Is(err, db.ErrNotOwner) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if attempt == 1 || attempt%10 == 0 {
			b.log.Warn("writing "+b.what+" failed; retrying", "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// readLines calls fn with each line of r (without its newline). A line
// longer than MaxLineBytes is passed cut, with truncated set.
func readLines(r io.Reader, fn func(line []byte, truncated bool)) error {
	br := bufio.NewReaderSize(r, 16<<10)
	var long []byte
	truncated := false
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(long)+len(chunk) <= MaxLineBytes {
				long = append(long, chunk...)
			} else {
				truncated = true
			}
			continue
		}
		if len(chunk) > 0 || long != nil {
			line := chunk
			if long != nil {
				if len(long)+len(chunk) <= MaxLineBytes {
					long = append(long, chunk...)
				} else {
					truncated = true
				}
				line = long
			}
			line = bytes.TrimSuffix(line, []byte("\n"))
			line = bytes.TrimSuffix(line, []byte("\r"))
			fn(line, truncated)
			long, truncated = nil, false
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// parseItem returns an item line as the JSON object it must be, or false.
func parseItem(line []byte) (string, bool) {
	line = bytes.TrimSpace(line)
	if len(line) < 2 || line[0] != '{' || !utf8.Valid(line) || !json.Valid(line) {
		return "", false
	}
	return string(line), true
}

// logLine makes a stderr line storable as Postgres text: valid UTF-8 and
// no NUL bytes, which Postgres refuses and a retry could never get past.
func logLine(line []byte) string {
	s := strings.ToValidUTF8(string(line), "\uFFFD")
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "")
	}
	return s
}
