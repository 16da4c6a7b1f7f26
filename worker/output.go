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
	"sync"
	"time"
	"unicode/utf8"

	"github.com/scrapethis/scrapethis/db"
)

// MaxLineBytes bounds one stdout item or stderr log line; longer lines are
// dropped (items) or cut (logs), with a warning in the job's log.
const MaxLineBytes = 8 << 20

// MemoryLimit is the soft memory limit (GOMEMLIMIT) a worker process of
// cfg should run under: a base for the runtime, the pools and the caches,
// and per spider slot twice its item and log batches plus a line being
// read. Under it the runtime collects and returns memory to the OS sooner,
// so a burst of output does not leave the worker's RSS high.
func MemoryLimit(cfg Config) int64 {
	perSlot := int64(2*itemBatchBytes + 2*logBatchBytes + 2*MaxLineBytes)
	return 192<<20 + int64(cfg.Concurrency)*perSlot
}

// MaxWorkerRSSMB is the documented bound on a worker's resident memory at
// the default concurrency (4), whatever its spiders print.
const MaxWorkerRSSMB = 512

// Batches of a job's output are bounded in bytes as well as lines; with
// their queues, a job holds at most twice this in the worker's memory.
const (
	itemBatchBytes = 8 << 20
	logBatchBytes  = 1 << 20
)

// batcher collects lines given to put and writes them in batches of at
// most max lines or maxBytes bytes, or after delay since the batch's first
// line, retrying a failed write with backoff until it succeeds, the write
// says stop (ErrNotOwner), or ctx ends. The lines queued and batched are
// bounded in bytes too (2 x maxBytes, or one line larger than that): put
// blocks past it, as it does while a write is retried; a spider's pipe then
// fills and the spider waits. Nothing is lost, and a worker's memory stays
// bounded however much its spiders print.
type batcher struct {
	in       chan string
	max      int
	maxBytes int
	delay    time.Duration
	write    func(ctx context.Context, first int64, batch []string) error
	next     int64
	log      *slog.Logger
	what     string

	mu       sync.Mutex
	drained  *sync.Cond
	inflight int // bytes put and not yet written (or dropped)
}

func newBatcher(max, maxBytes int, delay time.Duration, first int64, log *slog.Logger, what string,
	write func(ctx context.Context, first int64, batch []string) error) *batcher {
	b := &batcher{in: make(chan string, max), max: max, maxBytes: maxBytes, delay: delay, write: write, next: first, log: log, what: what}
	b.drained = sync.NewCond(&b.mu)
	return b
}

// put queues a line, waiting while too many bytes are queued already.
func (b *batcher) put(s string) {
	b.mu.Lock()
	for b.inflight > 0 && b.inflight+len(s) > 2*b.maxBytes {
		b.drained.Wait()
	}
	b.inflight += len(s)
	b.mu.Unlock()
	b.in <- s
}

// close says nothing more will be put.
func (b *batcher) close() { close(b.in) }

func (b *batcher) release(n int) {
	b.mu.Lock()
	b.inflight -= n
	b.mu.Unlock()
	b.drained.Broadcast()
}

// run drains in until it is closed, then writes what is left. After a
// write fails for good it keeps draining (and drops) what is put, so that
// no producer waits forever, and returns that first error at the end.
func (b *batcher) run(ctx context.Context) error {
	var batch []string
	size := 0
	var failed error
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if failed == nil {
			failed = b.writeRetry(ctx, batch)
		}
		b.next += int64(len(batch))
		clear(batch)
		batch = batch[:0]
		b.release(size)
		size = 0
	}
	for {
		select {
		case v, ok := <-b.in:
			if !ok {
				flush()
				return failed
			}
			if len(batch) == 0 {
				timer.Reset(b.delay)
			}
			batch = append(batch, v)
			size += len(v)
			if len(batch) >= b.max || size >= b.maxBytes {
				timer.Stop()
				flush()
			}
		case <-timer.C:
			flush()
		}
	}
}

func (b *batcher) writeRetry(ctx context.Context, batch []string) error {
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
