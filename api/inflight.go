package api

import "sync"

// inflight is the set of Idempotency-Keys whose first request this
// process is still serving: a second request with one answers 409 at
// once. Across processes the key row decides (see db.CreateJobs): the
// later request waits for the first one's commit and then replays it.
type inflight struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

// claim takes k, reporting false if it is taken; release gives it back.
func (f *inflight) claim(k string) (release func(), ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, taken := f.keys[k]; taken {
		return nil, false
	}
	if f.keys == nil {
		f.keys = map[string]struct{}{}
	}
	f.keys[k] = struct{}{}
	return func() {
		f.mu.Lock()
		delete(f.keys, k)
		f.mu.Unlock()
	}, true
}
