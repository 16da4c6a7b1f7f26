package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/<pid>/stat CPU times (100 on
// every Linux this runs on).
const clockTick = 100

// cpuTimes is what /proc/<pid>/stat says a process has spent.
type cpuTimes struct {
	self     time.Duration // utime + stime
	children time.Duration // cutime + cstime: reaped children, e.g. spiders
}

func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{self: c.self - o.self, children: c.children - o.children}
}

// procCPU reads a process's CPU times.
func procCPU(pid int) (cpuTimes, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTimes{}, err
	}
	// The command name may hold spaces and parentheses: fields start
	// after the last ')'. Then state is field 3, utime field 14.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return cpuTimes{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return cpuTimes{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	tick := func(s string) time.Duration {
		n, _ := strconv.ParseInt(s, 10, 64)
		return time.Duration(n) * time.Second / clockTick
	}
	// f[0] is field 3 (state): utime is f[11], stime f[12], cutime f[13], cstime f[14].
	return cpuTimes{self: tick(f[11]) + tick(f[12]), children: tick(f[13]) + tick(f[14])}, nil
}

// procStatusKB reads a "Name:  123 kB" line of /proc/<pid>/status.
func procStatusKB(pid int, name string) (int64, error) {
	path := "/proc/self/status"
	if pid > 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != name {
			continue
		}
		return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
	}
	return 0, fmt.Errorf("%s: no %s line", path, name)
}

// pgCPU sums the CPU time of the Postgres processes serving the bench
// database, except the bench's own connections, plus the server's
// background processes (WAL writer, checkpointer...). Backends that exit
// in between are not counted, and the background processes serve every
// database on the server.
type pgCPU struct {
	b            *bench
	includeBench bool
	start        map[int]time.Duration
}

func (p *pgCPU) pids(ctx context.Context) ([]int, error) {
	var pids []int
	err := p.b.sql.SelectContext(ctx, &pids, `SELECT pid FROM pg_stat_activity
		WHERE (datname = current_database() AND ($1 OR application_name IS DISTINCT FROM $2))
		OR backend_type <> 'client backend'`, p.includeBench, benchAppName)
	return pids, err
}

// startPGCPU starts counting; includeBench counts the bench's own
// connections too, for the raw baselines that run on them.
func (b *bench) startPGCPU(ctx context.Context, includeBench bool) *pgCPU {
	p := &pgCPU{b: b, includeBench: includeBench, start: map[int]time.Duration{}}
	pids, err := p.pids(ctx)
	if err != nil {
		return p
	}
	for _, pid := range pids {
		if c, err := procCPU(pid); err == nil {
			p.start[pid] = c.self
		}
	}
	return p
}

// since returns the CPU spent since start, or -1 when /proc is not
// readable (Postgres elsewhere, or another user's processes).
func (p *pgCPU) since(ctx context.Context) time.Duration {
	pids, err := p.pids(ctx)
	if err != nil || len(p.start) == 0 {
		return -1
	}
	var total time.Duration
	for _, pid := range pids {
		c, err := procCPU(pid)
		if err != nil {
			continue
		}
		total += c.self - p.start[pid] // a new backend counts from zero
	}
	return total
}

// machineBusy is the CPU time every process on the machine has spent, from
// the first line of /proc/stat: user, nice, system, and steal (another
// virtual machine's). Interrupt time is left out, as /proc/<pid>/stat
// leaves it out too: much of it is the bench's own loopback traffic.
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected format")
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 8} {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTick, nil
}

// noise tells how much CPU processes other than the bench, its API and
// worker (with their spiders), Postgres and Redis took while a scenario
// ran: other users of the machine make every number here worse.
type noise struct {
	b          *bench
	start      time.Time
	machine    time.Duration
	ours       cpuSnapshot
	postmaster int
	exited     time.Duration // CPU of Postgres processes that exited, so far
	kernel     map[int]time.Duration
}

func (b *bench) startNoise(ctx context.Context) *noise {
	n := &noise{b: b, start: time.Now(), ours: b.snapshotPG(ctx, true), kernel: kernelThreads()}
	n.machine, _ = machineBusy()
	var bg int
	if b.sql.GetContext(ctx, &bg, `SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'`) == nil {
		n.postmaster = parentPID(bg)
		if c, err := procCPU(n.postmaster); err == nil {
			n.exited = c.children
		}
	}
	return n
}

// parentPID is the parent of pid, or 0.
func parentPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// others returns the share of the machine's CPU capacity (all cores) that
// other processes used, in percent.
func (n *noise) others(ctx context.Context) float64 {
	m, err := machineBusy()
	if err != nil {
		return 0
	}
	u := n.b.cpuSince(ctx, n.ours)
	ours := u.worker + u.spiders + u.api + u.redis + u.bench + max(u.pg, 0)
	if self, err := procCPU(os.Getpid()); err == nil {
		ours += self.children - n.ours.bench.children // raw fork/exec baselines
	}
	// Backends and autovacuum workers that exited meanwhile: the
	// postmaster reaped them. Server-wide, but mostly the bench's.
	if c, err := procCPU(n.postmaster); err == nil && n.postmaster > 0 {
		ours += c.children - n.exited
	}
	// Kernel threads (block I/O, writeback, journaling) mostly work for
	// Postgres's writes here: they count as no one's.
	for pid, c := range kernelThreads() {
		ours += c - n.kernel[pid]
	}
	capacity := time.Since(n.start).Seconds() * float64(runtime.NumCPU())
	if time.Since(n.start) < time.Second {
		return 0 // too short to tell at /proc's 10 ms resolution
	}
	return max(0, 100*((m-n.machine)-ours).Seconds()/capacity)
}

// kernelThreads returns the CPU time of every kernel thread (the children
// of kthreadd, pid 2), by pid.
func kernelThreads() map[int]time.Duration {
	out := map[int]time.Duration{}
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 || (f[1] != "2" && !strings.HasSuffix(filepath.Dir(p), "/2")) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		out[pid] = time.Duration(u+s) * time.Second / clockTick
	}
	return out
}
