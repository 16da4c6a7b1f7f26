package sandbox

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// uidPool hands each running job a uid of its own. A uid is held by an
// flock on a file named for it, so two workers of one host (sharing the
// lock directory) never hand out the same uid, and a worker that dies
// releases its uids with its file descriptors.
type uidPool struct {
	dir         string
	first, last int
}

func newUIDPool(dir string, first, last int) (*uidPool, error) {
	if dir == "" {
		dir = "/run/scrapethis/uids"
		if err := os.MkdirAll(dir, 0o700); err != nil {
			dir = filepath.Join(os.TempDir(), "scrapethis-uids")
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("uid lock directory: %w", err)
	}
	return &uidPool{dir: dir, first: first, last: last}, nil
}

// uidLease is one held uid.
type uidLease struct {
	uid int
	fd  int // of the uid's lock file, flocked; -1 once released
}

func (l *uidLease) release() {
	if l != nil && l.fd >= 0 {
		syscall.Close(l.fd) // drops the flock
		l.fd = -1
	}
}

// acquire takes a free uid of the range, starting at a random one so that
// consecutive jobs rarely reuse a uid.
func (p *uidPool) acquire() (*uidLease, error) {
	n := p.last - p.first + 1
	start := rand.IntN(n)
	for i := 0; i < n; i++ {
		uid := p.first + (start+i)%n
		// A raw fd: an *os.File's poller registration would cost more
		// than the lock.
		fd, err := syscall.Open(p.dir+"/"+strconv.Itoa(uid), syscall.O_CREAT|syscall.O_RDWR|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("uid lock: %w", err)
		}
		err = syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return &uidLease{uid: uid, fd: fd}, nil
		}
		syscall.Close(fd)
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("uid lock %d: %w", uid, err)
		}
	}
	return nil, fmt.Errorf("all %d sandbox uids (%d-%d) are in use", n, p.first, p.last)
}
