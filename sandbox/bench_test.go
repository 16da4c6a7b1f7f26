package sandbox_test

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/sandbox"
)

// BenchmarkStart starts and waits for a no-op executable, with the sandbox
// off, on, and on with the isolated network, and reports the median per
// job; "on" also reports the init's resident memory.
// go test -run '^$' -bench Start -benchtime 200x ./sandbox/
// (SANDBOX_BENCH_INIT=bin/scrapethis measures the shipped binary as init).
func BenchmarkStart(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the sandbox needs root")
	}
	for _, mode := range []string{"off", "on", "warm", "isolated"} {
		enabled := mode != "off"
		b.Run(mode, func(b *testing.B) {
			cfg := sandbox.DefaultConfig()
			cfg.Enabled = enabled
			cfg.Warm = mode == "warm"
			if mode == "isolated" {
				cfg.Network = sandbox.NetworkIsolated
			}
			cfg.InitArgv = []string{os.Args[0], sandbox.InitCommand}
			if v := os.Getenv("SANDBOX_BENCH_INIT"); v != "" { // bin/scrapethis, say
				cfg.InitArgv[0] = v
			}
			cfg.LockDir = benchLockDir(b)
			l, err := sandbox.NewLauncher(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { l.Close() })
			path := "/bin/true"
			var code []sandbox.Mount
			p, err := l.Policy("bench", code, 0)
			if err != nil {
				b.Fatal(err)
			}
			times := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			cpu := startCPU(b)
			for i := 0; i < b.N; i++ {
				began := time.Now()
				proc, err := l.Start(p, sandbox.Command{Path: path, Args: []string{path}, Env: []string{"PATH=/usr/bin:/bin"}})
				if err != nil {
					b.Fatal(err)
				}
				if res := proc.Wait(); res.Err != nil {
					b.Fatal(res.Err)
				}
				times = append(times, time.Since(began))
			}
			b.StopTimer()
			l.Close() // warm inits count as children once waited for
			cpu.report(b)
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "ms-median")
			b.ReportMetric(float64(times[len(times)*9/10].Microseconds())/1000, "ms-p90")
			if mode == "on" {
				rss, anon := initRSS(b, l, p)
				b.ReportMetric(float64(rss), "init-RSS-KiB")
				b.ReportMetric(float64(anon), "init-RssAnon-KiB")
			}
		})
	}
}

// initRSS is the resident memory of a sandbox's init while its spider runs:
// all of it, and its own (anonymous) part, the rest being the binary's
// pages that every init shares.
func initRSS(b *testing.B, l *sandbox.Launcher, p sandbox.Policy) (rss, anon int) {
	proc, err := l.Start(p, sandbox.Command{Path: "/bin/sleep", Args: []string{"sleep", "0.5"}})
	if err != nil {
		b.Fatal(err)
	}
	defer proc.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		// Once the spider runs, the init has done all its work.
		if kids, _ := os.ReadFile("/proc/" + strconv.Itoa(proc.Pid()) + "/task/" + strconv.Itoa(proc.Pid()) + "/children"); len(strings.TrimSpace(string(kids))) > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	st, _ := os.ReadFile("/proc/" + strconv.Itoa(proc.Pid()) + "/status")
	for _, line := range strings.Split(string(st), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			switch f[0] {
			case "VmRSS:":
				rss, _ = strconv.Atoi(f[1])
			case "RssAnon:":
				anon, _ = strconv.Atoi(f[1])
			}
		}
	}
	return rss, anon
}

// BenchmarkStartParallel is the throughput of no-op jobs, four at a time
// (the worker's default concurrency), sandbox off, on, and on with the
// isolated network: jobs/s.
func BenchmarkStartParallel(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("the sandbox needs root")
	}
	for _, mode := range []string{"off", "on", "warm", "isolated"} {
		enabled := mode != "off"
		b.Run(mode, func(b *testing.B) {
			cfg := sandbox.DefaultConfig()
			cfg.Enabled = enabled
			cfg.Warm = mode == "warm"
			if mode == "isolated" {
				cfg.Network = sandbox.NetworkIsolated
			}
			cfg.InitArgv = []string{os.Args[0], sandbox.InitCommand}
			if v := os.Getenv("SANDBOX_BENCH_INIT"); v != "" {
				cfg.InitArgv[0] = v
			}
			cfg.LockDir = benchLockDir(b)
			l, err := sandbox.NewLauncher(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { l.Close() })
			p, err := l.Policy("bench", nil, 0)
			if err != nil {
				b.Fatal(err)
			}
			b.SetParallelism(2) // x GOMAXPROCS 2: four at a time
			began := time.Now()
			cpu := startCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					proc, err := l.Start(p, sandbox.Command{Path: "/bin/true", Args: []string{"true"}})
					if err != nil {
						b.Error(err)
						return
					}
					if res := proc.Wait(); res.Err != nil {
						b.Error(res.Err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(began).Seconds(), "jobs/s")
			// Warm inits (and the spiders they reaped) count as children
			// once waited for: Close retires them.
			l.Close()
			cpu.report(b)
		})
	}
}

// benchLockDir is a uid lock directory that outlives the run, as
// /run/scrapethis/uids does: a fresh one would make most jobs create their
// uid's lock file (an ext4 inode) and charge that to the launcher.
func benchLockDir(b *testing.B) string {
	b.Helper()
	dir := filepath.Join(os.TempDir(), "scrapethis-bench-uids")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		b.Fatal(err)
	}
	return dir
}

// cpuMark is where the CPU clocks stood when a benchmark began: this
// process's and its waited-for children's (getrusage), and the whole
// machine's busy time (/proc/stat), which also counts the kernel's own
// threads (cgroup and namespace teardown that is deferred to workqueues
// and RCU) and, on a shared machine, everyone else's work.
type cpuMark struct {
	self, kids time.Duration
	machine    time.Duration
}

func startCPU(b *testing.B) cpuMark {
	b.Helper()
	var m cpuMark
	m.self, m.kids = rusage(syscall.RUSAGE_SELF), rusage(syscall.RUSAGE_CHILDREN)
	m.machine = machineBusy(b)
	return m
}

// report adds ms of CPU per job: the launcher's (this process), the
// sandbox's (children: the init and the spider) and the machine's.
func (m cpuMark) report(b *testing.B) {
	b.Helper()
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(b.N) }
	b.ReportMetric(per(rusage(syscall.RUSAGE_SELF)-m.self), "cpu-ms-self/job")
	b.ReportMetric(per(rusage(syscall.RUSAGE_CHILDREN)-m.kids), "cpu-ms-kids/job")
	b.ReportMetric(per(machineBusy(b)-m.machine), "cpu-ms-machine/job")
}

func rusage(who int) time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(who, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// machineBusy is the machine's CPU time not idle (nor waiting for I/O, nor
// stolen), all CPUs together, from /proc/stat.
func machineBusy(b *testing.B) time.Duration {
	b.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var ticks int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i == 7 { // idle, iowait, steal
			continue
		}
		if i > 7 {
			break // guest time is already in user
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond // USER_HZ is 100
}
