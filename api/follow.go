package api

import (
	"context"
	"sync"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
)

// MaxFollowsPerUser bounds a user's concurrent ?follow=1 log streams;
// more answer 429.
const MaxFollowsPerUser = 16

// follower is the one poller behind every followed log: each tick it
// reads the heads of all followed logs in one query, and wakes only the
// streams whose log grew or whose job ended. An idle stream costs no
// query of its own, however many are open.
type follower struct {
	db    *db.DB
	every time.Duration

	mu      sync.Mutex
	streams map[*followStream]struct{}
	perUser map[string]int

	stop chan struct{}
	done chan struct{}
}

type followStream struct {
	jobID string
	user  string
	last  int64         // the last seq the stream has sent
	wake  chan struct{} // buffered 1: something new
	final bool
}

func newFollower(store *db.DB, every time.Duration) *follower {
	f := &follower{db: store, every: every, streams: map[*followStream]struct{}{}, perUser: map[string]int{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go f.run()
	return f
}

// close stops the poller and waits for it.
func (f *follower) close() {
	close(f.stop)
	<-f.done
}

// add registers a stream of the user's job, or refuses one over the cap.
func (f *follower) add(user, jobID string, last int64) (*followStream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.perUser[user] >= MaxFollowsPerUser {
		return nil, scrapethis.Errorf(scrapethis.ETooManyRequests, "Too many followed logs open (at most %d per user)", MaxFollowsPerUser)
	}
	st := &followStream{jobID: jobID, user: user, last: last, wake: make(chan struct{}, 1)}
	f.streams[st] = struct{}{}
	f.perUser[user]++
	return st, nil
}

func (f *follower) remove(st *followStream) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.streams[st]; !ok {
		return
	}
	delete(f.streams, st)
	if f.perUser[st.user]--; f.perUser[st.user] <= 0 {
		delete(f.perUser, st.user)
	}
}

// sent records how far the stream has written.
func (f *follower) sent(st *followStream, last int64) {
	f.mu.Lock()
	st.last = last
	f.mu.Unlock()
}

func (f *follower) run() {
	defer close(f.done)
	t := time.NewTicker(f.every)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		f.poll()
	}
}

func (f *follower) poll() {
	f.mu.Lock()
	ids := make([]string, 0, len(f.streams))
	seen := map[string]bool{}
	for st := range f.streams {
		if !seen[st.jobID] {
			seen[st.jobID] = true
			ids = append(ids, st.jobID)
		}
	}
	f.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	heads, err := f.db.LogHeads(ctx, ids)
	if err != nil {
		return // the next tick tries again; streams keep waiting
	}
	byJob := make(map[string]db.LogHead, len(heads))
	for _, h := range heads {
		byJob[h.JobID] = h
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for st := range f.streams {
		h, ok := byJob[st.jobID]
		if !ok {
			continue
		}
		final := scrapethis.Status(h.Status).Final()
		if h.Last > st.last || final {
			st.final = st.final || final
			select {
			case st.wake <- struct{}{}:
			default:
			}
		}
	}
}

// isFinal reports whether the poller has seen the stream's job final.
func (f *follower) isFinal(st *followStream) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return st.final
}
