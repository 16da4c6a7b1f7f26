package api

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/scrapethis/scrapethis"
)

// Failed authentication is throttled per client address: each address
// has a bucket of AuthBurst failures that refills at AuthRate a second;
// an address with an empty bucket gets 429 with Retry-After without its
// key being looked up. A key that is known good (in the key cache) still
// works from a throttled address, so one bad client behind a shared NAT
// does not lock out the others while the cache is live.
const (
	AuthBurst = 20
	AuthRate  = 2.0
	// maxBuckets bounds the table; past it, full (idle) buckets are dropped.
	maxBuckets = 100_000
)

type throttle struct {
	mu      sync.Mutex
	buckets map[string]*bucket
	burst   float64
	rate    float64
	now     func() time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newThrottle(burst, rate float64) *throttle {
	return &throttle{buckets: map[string]*bucket{}, burst: burst, rate: rate, now: time.Now}
}

// refill brings b up to now; the lock is held.
func (t *throttle) refill(b *bucket, now time.Time) {
	b.tokens = math.Min(t.burst, b.tokens+now.Sub(b.last).Seconds()*t.rate)
	b.last = now
}

// blocked reports whether addr has no failures left, and when it has one.
func (t *throttle) blocked(addr string) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.buckets[addr]
	if !ok {
		return 0, false
	}
	t.refill(b, t.now())
	if b.tokens >= 1 {
		return 0, false
	}
	return time.Duration((1 - b.tokens) / t.rate * float64(time.Second)), true
}

// fail takes one failure from addr's bucket.
func (t *throttle) fail(addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	b, ok := t.buckets[addr]
	if !ok {
		if len(t.buckets) >= maxBuckets {
			t.prune(now)
		}
		b = &bucket{tokens: t.burst, last: now}
		t.buckets[addr] = b
	}
	t.refill(b, now)
	b.tokens = math.Max(0, b.tokens-1)
}

// prune drops buckets that have refilled: they remember nothing.
func (t *throttle) prune(now time.Time) {
	for k, b := range t.buckets {
		t.refill(b, now)
		if b.tokens >= t.burst {
			delete(t.buckets, k)
		}
	}
	if len(t.buckets) >= maxBuckets { // all busy: start over rather than grow
		t.buckets = map[string]*bucket{}
	}
}

// clientAddr is the address failures are counted against: the peer's IP
// (proxies' forwarding headers are not trusted).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// errThrottled answers an address out of failures.
func errThrottled(w http.ResponseWriter, retry time.Duration) error {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(retry.Seconds())))))
	return scrapethis.Errorf(scrapethis.ETooManyRequests, "Too many failed authentication attempts; retry later")
}
