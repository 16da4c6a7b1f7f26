package codecache_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/codecache"
	"github.com/scrapethis/scrapethis/internal/testenv"
)

// bound is how long a test waits for something that should happen at once
// on any machine: a bound, never a timing assertion.
const bound = 30 * time.Second

// small is a tiny project, distinct for each name.
func small(t testing.TB, name string) []byte {
	return pack(t, map[string]string{
		"scrapy.cfg":          "[settings]\ndefault = " + name + ".settings\n",
		name + "/__init__.py": "",
		name + "/settings.py": "BOT_NAME = '" + name + "'\n",
	})
}

func TestConcurrentAcquiresBuildOnce(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{})
	w := b.src.add(small(t, "one"), "application/gzip")
	release := make(chan struct{})
	b.src.gate = func(ctx context.Context, sha string) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	const n = 8
	entries := make([]*codecache.Entry, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			entries[i], errs[i] = c.Acquire(context.Background(), w)
		}()
	}
	testenv.WaitFor(t, bound, "the other acquires to wait for the one build", func() bool { return c.Waiters(w.SHA256) == n-1 })
	close(release)
	wg.Wait()

	built := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("acquire %d: %v", i, errs[i])
		}
		if entries[i].Dir != entries[0].Dir {
			t.Errorf("acquire %d got %s, acquire 0 %s", i, entries[i].Dir, entries[0].Dir)
		}
		if !entries[i].Prepared.Cached {
			built++
		}
	}
	if got := b.src.count(w.SHA256); got != 1 || built != 1 {
		t.Errorf("%d fetches, %d builders, want 1 and 1", got, built)
	}
	if n, _ := c.Stats(); n != 1 {
		t.Errorf("%d entries", n)
	}
	for _, e := range entries {
		e.Release()
	}
}

// A waiter leaves when its own context ends; when the builder's ends, a
// waiter still wanting the version builds it itself.
func TestAcquireContexts(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{})
	w := b.src.add(small(t, "one"), "application/gzip")
	b.src.gate = func(ctx context.Context, sha string) error {
		if b.src.count(sha) == 1 { // the first fetch hangs until its caller gives up
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	builderCtx, cancelBuilder := context.WithCancel(context.Background())
	builderErr := make(chan error, 1)
	go func() {
		_, err := c.Acquire(builderCtx, w)
		builderErr <- err
	}()
	testenv.WaitFor(t, bound, "the first fetch", func() bool { return b.src.count(w.SHA256) == 1 })

	impatient, cancelImpatient := context.WithCancel(context.Background())
	impatientErr := make(chan error, 1)
	go func() {
		_, err := c.Acquire(impatient, w)
		impatientErr <- err
	}()
	waiterDone := make(chan *codecache.Entry, 1)
	go func() {
		e, err := c.Acquire(context.Background(), w)
		if err != nil {
			t.Errorf("patient waiter: %v", err)
		}
		waiterDone <- e
	}()
	testenv.WaitFor(t, bound, "two waiters", func() bool { return c.Waiters(w.SHA256) == 2 })

	cancelImpatient()
	if err := <-impatientErr; !errors.Is(err, context.Canceled) {
		t.Errorf("impatient waiter: %v", err)
	}
	cancelBuilder()
	if err := <-builderErr; !errors.Is(err, context.Canceled) {
		t.Errorf("builder: %v", err)
	}
	e := <-waiterDone
	if e == nil {
		t.FailNow()
	}
	defer e.Release()
	if e.Prepared.Cached || b.src.count(w.SHA256) != 2 {
		t.Errorf("the patient waiter did not build it: %+v, %d fetches", e.Prepared, b.src.count(w.SHA256))
	}
}

func TestDifferentVersionsBuildInParallel(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{})
	w1 := b.src.add(small(t, "one"), "application/gzip")
	w2 := b.src.add(small(t, "two"), "application/gzip")
	// Each fetch waits until both are in flight: serialized builds would
	// never get there.
	b.src.gate = func(ctx context.Context, sha string) error {
		ctx, cancel := context.WithTimeout(ctx, bound)
		defer cancel()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for b.src.count(w1.SHA256) == 0 || b.src.count(w2.SHA256) == 0 {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return fmt.Errorf("the other version's fetch never started: %w", ctx.Err())
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	for _, w := range []codecache.Want{w1, w2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := c.Acquire(context.Background(), w)
			if err != nil {
				t.Errorf("acquire: %v", err)
				return
			}
			e.Release()
		}()
	}
	wg.Wait()
	if n, _ := c.Stats(); n != 2 {
		t.Errorf("%d entries", n)
	}
}

func TestEviction(t *testing.T) {
	t.Parallel()
	src := newSource()
	a := src.add(small(t, "aaa"), "application/gzip")
	bb := src.add(small(t, "bbb"), "application/gzip")
	cc := src.add(small(t, "ccc"), "application/gzip")

	// The entries' sizes, from a cache without a bound.
	log := testenv.Log(t, slog.LevelInfo)
	measure := open(t, codecache.Config{Dir: t.TempDir()}, &bundle{src: src, log: log})
	size := map[string]int64{}
	for _, w := range []codecache.Want{a, bb, cc} {
		_, before := measure.Stats()
		e := acquire(t, measure, w)
		_, after := measure.Stats()
		size[w.SHA256] = after - before
		e.Release()
	}

	dir := filepath.Join(t.TempDir(), "cache")
	max := size[a.SHA256] + size[bb.SHA256] + size[cc.SHA256] - 1 // any two fit, never three
	c := open(t, codecache.Config{Dir: dir, MaxBytes: max}, &bundle{src: src, log: log})
	use := func(w codecache.Want) { acquire(t, c, w).Release() }
	present := func(w codecache.Want) bool {
		_, err := os.Stat(filepath.Join(dir, w.SHA256))
		return err == nil
	}

	use(a)
	use(bb)
	use(a) // b is now the least recently used
	use(cc)
	if !present(a) || present(bb) || !present(cc) {
		t.Fatalf("after a, b, a, c: a %v, b %v, c %v; want b evicted", present(a), present(bb), present(cc))
	}
	if n, total := c.Stats(); n != 2 || total != size[a.SHA256]+size[cc.SHA256] {
		t.Errorf("Stats = %d, %d", n, total)
	}
	if _, err := os.Stat(filepath.Join(dir, bb.SHA256+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("b's marker: %v", err)
	}

	// Referenced entries are never evicted, even over the bound.
	ea, ec := acquire(t, c, a), acquire(t, c, cc)
	eb := acquire(t, c, bb)
	if !present(a) || !present(bb) || !present(cc) {
		t.Fatalf("a referenced entry was evicted: a %v, b %v, c %v", present(a), present(bb), present(cc))
	}
	if _, total := c.Stats(); total <= max {
		t.Errorf("total %d, want over %d while all three are held", total, max)
	}
	ec.Release() // c is the only unreferenced one: evicted on release
	if !present(a) || !present(bb) || present(cc) {
		t.Errorf("after releasing c: a %v, b %v, c %v", present(a), present(bb), present(cc))
	}
	ea.Release()
	eb.Release()
	if got := src.count(bb.SHA256); got != 3 {
		t.Errorf("b fetched %d times, want 3 (to measure, then twice: once more after its eviction)", got)
	}
}

func TestEntryLargerThanMaxBytes(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{MaxBytes: 1})
	w := b.src.add(small(t, "big"), "application/gzip")
	e := acquire(t, c, w)
	if _, err := os.Stat(filepath.Join(e.ProjectDir(), "scrapy.cfg")); err != nil {
		t.Fatalf("the entry is not usable while referenced: %v", err)
	}
	again := acquire(t, c, w)
	if !again.Prepared.Cached {
		t.Errorf("a referenced entry was rebuilt: %+v", again.Prepared)
	}
	e.Release()
	if _, err := os.Stat(again.ProjectDir()); err != nil {
		t.Fatalf("evicted while still referenced: %v", err)
	}
	again.Release()
	if n, total := c.Stats(); n != 0 || total != 0 {
		t.Errorf("Stats = %d, %d after the last release", n, total)
	}
	assertOnlyLock(t, filepath.Join(b.dir, "cache"))
}

func TestRestart(t *testing.T) {
	t.Parallel()
	c, b := setup(t, codecache.Config{})
	dir := filepath.Join(b.dir, "cache")
	older := b.src.add(small(t, "older"), "application/gzip")
	newer := b.src.add(small(t, "newer"), "application/gzip")
	acquire(t, c, older).Release()
	acquire(t, c, newer).Release()
	_, total := c.Stats()
	if _, err := codecache.New(codecache.Config{Dir: dir}, b.src, b.log); err == nil {
		t.Fatal("a second cache opened the same directory")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// What a crash leaves: a build's temporary directory, an entry renamed
	// but not marked, a marker whose entry is gone.
	writeTree(t, filepath.Join(dir, ".tmp-123", "project"), map[string]string{"scrapy.cfg": ""})
	unmarked := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	writeTree(t, filepath.Join(dir, unmarked, "project"), map[string]string{"scrapy.cfg": ""})
	orphan := "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	writeTree(t, dir, map[string]string{orphan + ".json": "{}"})

	c2 := open(t, codecache.Config{Dir: dir}, b)
	if n, got := c2.Stats(); n != 2 || got != total {
		t.Errorf("after restart Stats = %d, %d; want 2, %d", n, got, total)
	}
	want := []string{".lock", newer.SHA256, newer.SHA256 + ".json", older.SHA256, older.SHA256 + ".json"}
	slices.Sort(want)
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Errorf("after restart the directory holds %v, want %v", got, want)
	}
	e := acquire(t, c2, older)
	if !e.Prepared.Cached || b.src.count(older.SHA256) != 1 {
		t.Errorf("after restart: %+v, %d fetches", e.Prepared, b.src.count(older.SHA256))
	}
	e.Release() // older is now the most recently used
	c2.Close()

	// The LRU order survives a restart: with room for one, newer goes.
	_, olderSize := sizeOf(t, dir, older)
	c3 := open(t, codecache.Config{Dir: dir, MaxBytes: olderSize}, b)
	if n, _ := c3.Stats(); n != 1 {
		t.Fatalf("%d entries, want 1", n)
	}
	if _, err := os.Stat(filepath.Join(dir, older.SHA256)); err != nil {
		t.Errorf("the most recently used entry was evicted: %v", err)
	}
}

// sizeOf reads an entry's size from its marker.
func sizeOf(t *testing.T, dir string, w codecache.Want) (string, int64) {
	t.Helper()
	var m struct{ Bytes int64 }
	b, err := os.ReadFile(filepath.Join(dir, w.SHA256+".json"))
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil || m.Bytes <= 0 {
		t.Fatalf("marker of %s: %v (%s)", w.SHA256, err, b)
	}
	return w.SHA256, m.Bytes
}

func TestTwoCachesEachFetch(t *testing.T) {
	t.Parallel()
	c1, b := setup(t, codecache.Config{})
	c2 := open(t, codecache.Config{Dir: filepath.Join(b.dir, "other")}, b)
	w := b.src.add(small(t, "one"), "application/gzip")
	e1, e2 := acquire(t, c1, w), acquire(t, c2, w)
	defer e1.Release()
	defer e2.Release()
	if e1.Dir == e2.Dir || e1.Prepared.Cached || e2.Prepared.Cached || b.src.count(w.SHA256) != 2 {
		t.Errorf("%s %+v, %s %+v, %d fetches", e1.Dir, e1.Prepared, e2.Dir, e2.Prepared, b.src.count(w.SHA256))
	}
}

// A worker started with umask 077 still leaves entries any uid can read.
// Not parallel: the umask is the process's.
func TestUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	c, b := setup(t, codecache.Config{})
	files := scrapyProject("hello")
	files["requirements.txt"] = "hello\n"
	e := acquire(t, c, b.src.add(pack(t, files, helloWheel(t)), "application/gzip"))
	defer e.Release()
	assertReadable(t, filepath.Join(b.dir, "cache"))
}

func TestNewChecksPython(t *testing.T) {
	t.Parallel()
	_, err := codecache.New(codecache.Config{Dir: t.TempDir(), Python: "/bin/false"}, newSource(), testenv.Log(t, slog.LevelInfo))
	if err == nil || !strings.Contains(err.Error(), "pip 22.3 or later") {
		t.Errorf("New with /bin/false as python: %v", err)
	}
}

// BenchmarkAcquire measures a cold acquire of a small project with one
// wheel (fetch from memory, verify, unpack, venv and pip) and a cached one.
func BenchmarkAcquire(b *testing.B) {
	src := newSource()
	files := scrapyProject("hello")
	files["requirements.txt"] = "hello\n"
	w := src.add(pack(b, files, helloWheel(b)), "application/gzip")
	log := slog.New(slog.DiscardHandler)
	b.Run("cold", func(b *testing.B) {
		var fetch, unpack, env time.Duration
		for i := 0; b.Loop(); i++ {
			c, err := codecache.New(codecache.Config{Dir: filepath.Join(b.TempDir(), "cache"), Environ: []string{"PATH=/usr/bin:/bin"}}, src, log)
			if err != nil {
				b.Fatal(err)
			}
			e, err := c.Acquire(context.Background(), w)
			if err != nil {
				b.Fatal(err)
			}
			fetch, unpack, env = fetch+e.Prepared.Fetch, unpack+e.Prepared.Unpack, env+e.Prepared.Env
			e.Release()
			c.Close()
		}
		n := time.Duration(b.N)
		b.ReportMetric(float64((fetch / n).Microseconds()), "fetch-µs/op")
		b.ReportMetric(float64((unpack / n).Microseconds()), "unpack-µs/op")
		b.ReportMetric(float64((env / n).Milliseconds()), "env-ms/op")
	})
	b.Run("cached", func(b *testing.B) {
		c, err := codecache.New(codecache.Config{Dir: filepath.Join(b.TempDir(), "cache"), Environ: []string{"PATH=/usr/bin:/bin"}}, src, log)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		acquire := func() {
			e, err := c.Acquire(context.Background(), w)
			if err != nil {
				b.Fatal(err)
			}
			e.Release()
		}
		acquire()
		for b.Loop() {
			acquire()
		}
	})
}
