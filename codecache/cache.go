// Package codecache is a worker's local, size-bounded cache of deployed
// project versions. A version is named by the sha256 of its archive: the
// cache fetches the archive from the platform's storage, verifies the hash,
// unpacks it once (archive.Extract) and, when the project has a
// requirements.txt, builds its Python environment once; jobs then run from
// the entry, which the worker binds read-only into the sandbox.
//
// On disk, under Config.Dir:
//
//	<sha256>/project/   the project root (the archive's top folder stripped)
//	<sha256>/venv/      its environment, when it has a requirements.txt
//	<sha256>.json       the completion marker; its mtime is the entry's last use
//	.tmp-*              a build or an eviction in progress
//	.lock               held (flock) by the one Cache using Dir
//
// An entry is built in a temporary directory, renamed to <sha256> and then
// marked complete, so a crash leaves temporary directories or an unmarked
// entry, which New removes. Entries survive restarts; least recently used
// ones are evicted, never while an Entry holds them, once the entries' size
// on disk passes Config.MaxBytes.
//
// Environments are `python -m venv --system-site-packages --without-pip`,
// filled by the interpreter's own pip through `pip --python VENV/bin/python`:
// measured on a small project with one wheel, 0.8-1.4 s and 92 KiB, against
// 3.6-6.9 s and 25 MiB for a venv with a pip of its own (ensurepip).
package codecache

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/archive"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxBytes   = 10 << 30
	DefaultPython     = "/usr/bin/python3"
	DefaultPipTimeout = 10 * time.Minute
)

// The layout of an entry's directory, for the worker to name paths inside
// its mount: the project root and the environment's interpreter.
const (
	ProjectSubdir = "project"
	VenvSubdir    = "venv"
	VenvPython    = "venv/bin/python"
)

const (
	tmpPrefix    = ".tmp-"
	markerSuffix = ".json"
	lockName     = ".lock"
)

// ErrMismatch is a fetched archive whose sha256 is not the one asked for.
var ErrMismatch = errors.New("the fetched archive does not match its sha256")

// Source fetches a version's archive by its sha256 (hex, lower case).
type Source interface {
	Get(ctx context.Context, sha256 string) ([]byte, error)
}

// Config configures a Cache. Zero fields take their defaults.
type Config struct {
	Dir      string // the cache directory, created 0755 if missing
	MaxBytes int64  // bound on the entries' size on disk (project + venv); default DefaultMaxBytes
	Python   string // interpreter of the environments; default DefaultPython
	// Limits are passed to archive.Extract.
	Limits archive.Limits
	// PipTimeout bounds making one environment; default DefaultPipTimeout.
	PipTimeout time.Duration
	// Environ is the worker's environment, of which pip sees only PATH,
	// LANG and PIP_*; default os.Environ().
	Environ []string
}

// Want names the version to acquire.
type Want struct {
	SHA256      string // the archive's sha256, hex, lower case
	ContentType string // application/gzip or application/zip
}

// Timing says what Acquire had to do.
type Timing struct {
	Cached bool          // nothing was done: the entry was ready, or another Acquire built it
	Wait   time.Duration // waiting for another Acquire's build of the same version
	Fetch  time.Duration // Source.Get
	Unpack time.Duration // verifying the sha256 and extracting
	Env    time.Duration // venv and pip install; 0 without requirements.txt
}

// Cache is a worker's cache of versions. Its methods are safe for
// concurrent use.
type Cache struct {
	cfg  Config
	src  Source
	log  *slog.Logger
	lock *os.File

	mu      sync.Mutex
	entries map[string]*entry // complete, on disk
	builds  map[string]*build // in flight
	total   int64             // sum of entries' bytes
	stamp   time.Time         // the latest use stamped, so stamps are strictly increasing
	evicted int               // names evicted directories uniquely
}

type entry struct {
	sha     string
	project archive.Project
	bytes   int64
	refs    int
	used    time.Time
}

// build is one Acquire's build of a version that others may wait for.
type build struct {
	done     chan struct{}
	err      error // set before done is closed
	canceled bool  // err is the builder's own context ending
	waiters  int
}

// markerVersion changes when an entry's layout or marker does; entries of
// another version are rebuilt.
const markerVersion = 1

// marker is the content of <sha256>.json.
type marker struct {
	Version int             `json:"version"`
	Project archive.Project `json:"project"`
	Bytes   int64           `json:"bytes"`
}

var shaPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// New opens the cache in cfg.Dir, creating it if needed: it takes the
// directory's lock (one Cache per directory, across processes), removes
// what a crash left (temporary directories, unmarked entries, markers
// without an entry), loads the entries with their last use, and evicts down
// to MaxBytes.
func New(cfg Config, src Source, log *slog.Logger) (*Cache, error) {
	if cfg.Dir == "" {
		return nil, errors.New("codecache: no directory")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.Python == "" {
		cfg.Python = DefaultPython
	}
	if cfg.PipTimeout <= 0 {
		cfg.PipTimeout = DefaultPipTimeout
	}
	if cfg.Environ == nil {
		cfg.Environ = os.Environ()
	}
	if log == nil {
		log = slog.Default()
	}
	if err := checkPython(cfg.Python); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("codecache: %w", err)
	}
	cfg.Dir = dir
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("codecache: %w", err)
		}
		if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
			return nil, fmt.Errorf("codecache: %w", err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("codecache: %w", err)
	}
	if err := lock.Chmod(0o644); err != nil {
		lock.Close()
		return nil, fmt.Errorf("codecache: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("codecache: %s is in use by another worker on this machine (give each worker its own SCRAPETHIS_CACHE_DIR): %w", dir, err)
	}
	c := &Cache{cfg: cfg, src: src, log: log, lock: lock, entries: map[string]*entry{}, builds: map[string]*build{}}
	if err := c.load(); err != nil {
		lock.Close()
		return nil, err
	}
	c.log.Info("codecache: opened", "dir", dir, "entries", len(c.entries), "bytes", c.total, "max_bytes", cfg.MaxBytes)
	c.mu.Lock()
	gone := c.evictLocked()
	c.mu.Unlock()
	c.remove(gone)
	return c, nil
}

// load scans Dir.
func (c *Cache) load() error {
	des, err := os.ReadDir(c.cfg.Dir)
	if err != nil {
		return fmt.Errorf("codecache: %w", err)
	}
	dirs, markers := map[string]bool{}, map[string]fs.DirEntry{}
	for _, de := range des {
		name := de.Name()
		switch {
		case name == lockName:
		case strings.HasPrefix(name, tmpPrefix):
			c.log.Info("codecache: removing what an interrupted build left", "path", name)
			if err := os.RemoveAll(filepath.Join(c.cfg.Dir, name)); err != nil {
				return fmt.Errorf("codecache: %w", err)
			}
		case de.IsDir() && shaPattern.MatchString(name):
			dirs[name] = true
		case de.Type().IsRegular() && shaPattern.MatchString(strings.TrimSuffix(name, markerSuffix)) && strings.HasSuffix(name, markerSuffix):
			markers[strings.TrimSuffix(name, markerSuffix)] = de
		default:
			c.log.Warn("codecache: ignoring a file the cache did not make", "path", filepath.Join(c.cfg.Dir, name))
		}
	}
	for sha := range dirs {
		e, err := c.readMarker(sha, markers[sha])
		if err != nil {
			c.log.Info("codecache: removing an incomplete entry", "sha256", sha, "reason", err)
			os.Remove(c.markerPath(sha))
			if err := os.RemoveAll(c.entryDir(sha)); err != nil {
				return fmt.Errorf("codecache: %w", err)
			}
			continue
		}
		c.entries[sha] = e
		c.total += e.bytes
		if e.used.After(c.stamp) {
			c.stamp = e.used
		}
	}
	for sha := range markers {
		if !dirs[sha] {
			os.Remove(c.markerPath(sha))
		}
	}
	return nil
}

func (c *Cache) readMarker(sha string, de fs.DirEntry) (*entry, error) {
	if de == nil {
		return nil, errors.New("no marker")
	}
	b, err := os.ReadFile(c.markerPath(sha))
	if err != nil {
		return nil, err
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("marker: %w", err)
	}
	if m.Version != markerVersion {
		return nil, fmt.Errorf("marker version %d, not %d", m.Version, markerVersion)
	}
	fi, err := de.Info()
	if err != nil {
		return nil, err
	}
	return &entry{sha: sha, project: m.Project, bytes: m.Bytes, used: fi.ModTime()}, nil
}

// Close releases the directory's lock. Entries stay on disk for the next
// Cache; Entries acquired before stay usable.
func (c *Cache) Close() error {
	return c.lock.Close()
}

// Stats returns the number of entries and the sum of their sizes on disk.
func (c *Cache) Stats() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.total
}

// Acquire returns the entry of version w, fetching, verifying, unpacking it
// and making its environment if it is not in the cache yet. Acquires of one
// version share one build, the others waiting for it (or for their ctx);
// different versions build in parallel. A failed build caches nothing: the
// next Acquire tries again. A requirements.txt that cannot be installed is
// a *BuildError; a fetched archive of another sha256 matches ErrMismatch;
// an invalid archive is archive's scrapethis.Error. The entry is never
// evicted before its Release.
func (c *Cache) Acquire(ctx context.Context, w Want) (*Entry, error) {
	if !shaPattern.MatchString(w.SHA256) {
		return nil, scrapethis.Errorf(scrapethis.EInvalid, "codecache: %q is not a sha256 in lower-case hex", w.SHA256)
	}
	var waited time.Duration
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("codecache: acquire %s: %w", w.SHA256, err)
		}
		c.mu.Lock()
		if e := c.entries[w.SHA256]; e != nil {
			e.refs++
			c.touchLocked(e)
			c.mu.Unlock()
			return c.handle(e, Timing{Cached: true, Wait: waited}), nil
		}
		b := c.builds[w.SHA256]
		if b == nil {
			b = &build{done: make(chan struct{})}
			c.builds[w.SHA256] = b
			c.mu.Unlock()
			return c.buildAndAdd(ctx, w, b)
		}
		b.waiters++
		c.mu.Unlock()
		start := time.Now()
		select {
		case <-b.done:
		case <-ctx.Done():
		}
		waited += time.Since(start)
		c.mu.Lock()
		b.waiters--
		c.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("codecache: acquire %s: waiting for its build: %w", w.SHA256, err)
		}
		if b.err != nil && !b.canceled {
			return nil, b.err
		}
		// Built (take it from entries), or abandoned by its builder's
		// context: build it here.
	}
}

// buildAndAdd runs build b of w in the caller and adds the entry, with the
// caller's reference.
func (c *Cache) buildAndAdd(ctx context.Context, w Want, b *build) (*Entry, error) {
	finished := false
	defer func() {
		if !finished { // a panic, which the caller may recover from: free the waiters
			c.mu.Lock()
			delete(c.builds, w.SHA256)
			b.err, b.canceled = errors.New("codecache: the build panicked"), true
			c.mu.Unlock()
			close(b.done)
		}
	}()
	e, tm, err := c.build(ctx, w)
	finished = true
	c.mu.Lock()
	delete(c.builds, w.SHA256)
	b.err = err
	b.canceled = err != nil && ctx.Err() != nil
	var gone []string
	if err == nil {
		e.refs = 1
		c.touchLocked(e)
		c.entries[e.sha] = e
		c.total += e.bytes
		gone = c.evictLocked()
	}
	c.mu.Unlock()
	close(b.done)
	c.remove(gone)
	if err != nil {
		c.log.Warn("codecache: build failed", "sha256", w.SHA256, "err", err)
		return nil, err
	}
	c.log.Info("codecache: built", "sha256", w.SHA256, "bytes", e.bytes, "requirements", e.project.Requirements,
		"fetch", tm.Fetch, "unpack", tm.Unpack, "env", tm.Env)
	return c.handle(e, tm), nil
}

// build fetches, verifies, unpacks and prepares w in a temporary directory,
// then renames it to its place and marks it complete.
func (c *Cache) build(ctx context.Context, w Want) (*entry, Timing, error) {
	var tm Timing
	start := time.Now()
	data, err := c.src.Get(ctx, w.SHA256)
	if err != nil {
		return nil, tm, fmt.Errorf("codecache: fetch %s: %w", w.SHA256, err)
	}
	tm.Fetch = time.Since(start)

	start = time.Now()
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != w.SHA256 {
		return nil, tm, fmt.Errorf("codecache: %s: %w (%d bytes whose sha256 is %x)", w.SHA256, ErrMismatch, len(data), sum)
	}
	tmp, err := os.MkdirTemp(c.cfg.Dir, tmpPrefix)
	if err != nil {
		return nil, tm, fmt.Errorf("codecache: %w", err)
	}
	defer os.RemoveAll(tmp) // nothing left once renamed
	project, err := archive.Extract(ctx, bytes.NewReader(data), int64(len(data)), w.ContentType, c.cfg.Limits, filepath.Join(tmp, ProjectSubdir))
	if err != nil {
		return nil, tm, fmt.Errorf("codecache: unpack %s: %w", w.SHA256, err)
	}
	tm.Unpack = time.Since(start)

	if project.Requirements {
		start = time.Now()
		if err := c.buildEnv(ctx, w.SHA256, filepath.Join(tmp, ProjectSubdir), filepath.Join(tmp, VenvSubdir)); err != nil {
			var be *BuildError
			if errors.As(err, &be) {
				return nil, tm, err
			}
			return nil, tm, fmt.Errorf("codecache: environment of %s: %w", w.SHA256, err)
		}
		tm.Env = time.Since(start)
	}
	size, err := settle(tmp)
	if err != nil {
		return nil, tm, fmt.Errorf("codecache: %w", err)
	}
	final := c.entryDir(w.SHA256)
	if err := os.Rename(tmp, final); err != nil {
		return nil, tm, fmt.Errorf("codecache: %w", err)
	}
	if err := c.writeMarker(w.SHA256, marker{Version: markerVersion, Project: project, Bytes: size}); err != nil {
		os.RemoveAll(final)
		return nil, tm, fmt.Errorf("codecache: %w", err)
	}
	return &entry{sha: w.SHA256, project: project, bytes: size}, tm, nil
}

// writeMarker writes <sha256>.json through a temporary file, so a marker is
// whole or absent.
func (c *Cache) writeMarker(sha string, m marker) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(c.cfg.Dir, tmpPrefix+"marker-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), c.markerPath(sha))
}

// touchLocked stamps e as used now, in memory and on its marker's mtime,
// strictly after every earlier stamp so the LRU order has no ties.
func (c *Cache) touchLocked(e *entry) {
	now := time.Now().Round(0)
	if !now.After(c.stamp) {
		now = c.stamp.Add(time.Microsecond)
	}
	c.stamp, e.used = now, now
	if err := os.Chtimes(c.markerPath(e.sha), now, now); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Warn("codecache: cannot record an entry's use", "sha256", e.sha, "err", err)
	}
}

// evictLocked takes least recently used unreferenced entries out of the
// cache while it holds more than MaxBytes: their markers are removed and
// their directories renamed to temporary names, which it returns for
// remove to delete outside the lock.
func (c *Cache) evictLocked() []string {
	if c.total <= c.cfg.MaxBytes {
		return nil
	}
	var idle []*entry
	for _, e := range c.entries {
		if e.refs == 0 {
			idle = append(idle, e)
		}
	}
	slices.SortFunc(idle, func(a, b *entry) int { return cmp.Compare(a.used.UnixNano(), b.used.UnixNano()) })
	var gone []string
	for _, e := range idle {
		if c.total <= c.cfg.MaxBytes {
			break
		}
		if err := os.Remove(c.markerPath(e.sha)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("codecache: cannot evict", "sha256", e.sha, "err", err)
			continue
		}
		delete(c.entries, e.sha)
		c.total -= e.bytes
		c.evicted++
		dead := filepath.Join(c.cfg.Dir, fmt.Sprintf("%sevicted-%d-%s", tmpPrefix, c.evicted, e.sha))
		if err := os.Rename(c.entryDir(e.sha), dead); err != nil {
			// Unmarked, the directory is removed by the next New at the
			// latest; a build of the same version meanwhile fails.
			c.log.Warn("codecache: cannot move an evicted entry away", "sha256", e.sha, "err", err)
			continue
		}
		c.log.Info("codecache: evicted", "sha256", e.sha, "bytes", e.bytes, "last_used", e.used)
		gone = append(gone, dead)
	}
	return gone
}

// remove deletes evicted directories.
func (c *Cache) remove(dirs []string) {
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			c.log.Warn("codecache: cannot remove an evicted entry", "path", d, "err", err)
		}
	}
}

func (c *Cache) release(e *entry) {
	c.mu.Lock()
	e.refs--
	c.touchLocked(e)
	gone := c.evictLocked()
	c.mu.Unlock()
	c.remove(gone)
}

func (c *Cache) entryDir(sha string) string   { return filepath.Join(c.cfg.Dir, sha) }
func (c *Cache) markerPath(sha string) string { return filepath.Join(c.cfg.Dir, sha+markerSuffix) }

func (c *Cache) handle(e *entry, tm Timing) *Entry {
	return &Entry{Dir: c.entryDir(e.sha), SHA256: e.sha, Project: e.project, Prepared: tm, c: c, e: e}
}

// Entry is an acquired version: its files stay in place until Release.
type Entry struct {
	Dir      string          // the entry's directory, bound read-only into the sandbox
	SHA256   string          // the version's archive sha256
	Project  archive.Project // what the archive holds
	Prepared Timing          // what Acquire did

	c    *Cache
	e    *entry
	once sync.Once
}

// ProjectDir is the project root: Dir/project.
func (e *Entry) ProjectDir() string { return filepath.Join(e.Dir, ProjectSubdir) }

// VenvDir is the project's environment, Dir/venv, or "" when the project
// has no requirements.txt (its spiders then run with the machine's Python).
func (e *Entry) VenvDir() string {
	if !e.Project.Requirements {
		return ""
	}
	return filepath.Join(e.Dir, VenvSubdir)
}

// Python is the interpreter to run the project's spiders with:
// Dir/venv/bin/python, or "" without an environment. Run it, never the
// venv's scripts, whose shebangs name the directory it was built in.
func (e *Entry) Python() string {
	if !e.Project.Requirements {
		return ""
	}
	return filepath.Join(e.Dir, VenvPython)
}

// Release gives the entry back; it may be evicted from then on. It is
// idempotent.
func (e *Entry) Release() {
	e.once.Do(func() { e.c.release(e.e) })
}
