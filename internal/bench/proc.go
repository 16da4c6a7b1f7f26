package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/procfs"
)

// procs reads /proc, through procfs: CPU times, memory, parents.
type procs struct {
	fs procfs.FS
}

func newProcs() (*procs, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, fmt.Errorf("bench: /proc: %w", err)
	}
	return &procs{fs: fs}, nil
}

// userHZ is the unit of /proc/<pid>/stat CPU times (procfs assumes the
// same 100 in ProcStat.CPUTime).
const userHZ = 100

func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / userHZ }

// cpuTimes is what /proc/<pid>/stat says a process has spent.
type cpuTimes struct {
	self     time.Duration // utime + stime
	children time.Duration // cutime + cstime: reaped children, e.g. spiders
}

func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{self: c.self - o.self, children: c.children - o.children}
}

func (p *procs) stat(pid int) (procfs.ProcStat, error) {
	pr, err := p.fs.Proc(pid)
	if err != nil {
		return procfs.ProcStat{}, fmt.Errorf("process %d: %w", pid, err)
	}
	st, err := pr.Stat()
	if err != nil {
		return procfs.ProcStat{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return st, nil
}

// cpu reads a process's CPU times.
func (p *procs) cpu(pid int) (cpuTimes, error) {
	st, err := p.stat(pid)
	if err != nil {
		return cpuTimes{}, err
	}
	return cpuTimes{self: ticks(int64(st.UTime + st.STime)), children: ticks(int64(st.CUTime + st.CSTime))}, nil
}

// memory returns a process's peak and current resident set, in bytes.
func (p *procs) memory(pid int) (peak, now uint64, err error) {
	pr, err := p.fs.Proc(pid)
	if err != nil {
		return 0, 0, fmt.Errorf("process %d: %w", pid, err)
	}
	st, err := pr.NewStatus()
	if err != nil {
		return 0, 0, fmt.Errorf("process %d status: %w", pid, err)
	}
	return st.VmHWM, st.VmRSS, nil
}

// parent is the parent of pid, or 0.
func (p *procs) parent(pid int) int {
	st, err := p.stat(pid)
	if err != nil {
		return 0
	}
	return st.PPID
}

// children lists the processes whose parent is pid, with their command
// lines.
func (p *procs) children(pid int) map[int][]string {
	all, err := p.fs.AllProcs()
	if err != nil {
		return nil
	}
	out := map[int][]string{}
	for _, pr := range all {
		st, err := pr.Stat()
		if err != nil || st.PPID != pid {
			continue
		}
		cmdline, _ := pr.CmdLine()
		out[pr.PID] = cmdline
	}
	return out
}

// kernelThreads returns the CPU time of every kernel thread (kthreadd, pid
// 2, and its children), by pid.
func (p *procs) kernelThreads() map[int]time.Duration {
	out := map[int]time.Duration{}
	all, err := p.fs.AllProcs()
	if err != nil {
		return out
	}
	for _, pr := range all {
		st, err := pr.Stat()
		if err != nil || (st.PPID != 2 && pr.PID != 2) {
			continue
		}
		out[pr.PID] = ticks(int64(st.UTime + st.STime))
	}
	return out
}

// machineBusy is the CPU time every process on the machine has spent, from
// /proc/stat: user, nice, system, and steal (another virtual machine's).
// Interrupt time is left out, as /proc/<pid>/stat leaves it out too: much
// of it is the bench's own loopback traffic.
func (p *procs) machineBusy() (time.Duration, error) {
	st, err := p.fs.Stat()
	if err != nil {
		return 0, fmt.Errorf("/proc/stat: %w", err)
	}
	c := st.CPUTotal
	return time.Duration((c.User + c.Nice + c.System + c.Steal) * float64(time.Second)), nil
}

// loadavg is the 1-minute load average.
func (p *procs) loadavg() (float64, error) {
	l, err := p.fs.LoadAvg()
	if err != nil {
		return 0, fmt.Errorf("/proc/loadavg: %w", err)
	}
	return l.Load1, nil
}

// kernel is the running kernel's release.
func (p *procs) kernel() (string, error) {
	v, err := p.fs.SysctlStrings("kernel/osrelease")
	if err != nil {
		return "", fmt.Errorf("kernel release: %w", err)
	}
	return strings.Join(v, " "), nil
}

// pgCPU sums the CPU time of the Postgres processes serving the bench
// database, except the bench's own connections, plus the server's
// background processes (WAL writer, checkpointer...). Backends that exit
// in between are not counted, and the background processes serve every
// database on the server.
type pgCPU struct {
	b            *Benchmarker
	includeBench bool
	start        map[int]time.Duration
}

func (p *pgCPU) pids(ctx context.Context) ([]int, error) {
	skip := benchAppName
	if p.includeBench {
		skip = ""
	}
	return p.b.store.ServerPIDs(ctx, skip)
}

// startPGCPU starts counting; includeBench counts the bench's own
// connections too, for the raw baselines that run on them.
func (b *Benchmarker) startPGCPU(ctx context.Context, includeBench bool) *pgCPU {
	p := &pgCPU{b: b, includeBench: includeBench, start: map[int]time.Duration{}}
	pids, err := p.pids(ctx)
	if err != nil {
		return p
	}
	for _, pid := range pids {
		if c, err := b.procs.cpu(pid); err == nil {
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
		c, err := p.b.procs.cpu(pid)
		if err != nil {
			continue
		}
		total += c.self - p.start[pid] // a new backend counts from zero
	}
	return total
}

// noise tells how much CPU processes other than the bench, its API and
// worker (with their spiders), Postgres and Redis took while a scenario
// ran: other users of the machine make every number here worse.
type noise struct {
	b          *Benchmarker
	start      time.Time
	machine    time.Duration
	ours       cpuSnapshot
	postmaster int
	exited     time.Duration // CPU of Postgres processes that exited, so far
	kernel     map[int]time.Duration
}

func (b *Benchmarker) startNoise(ctx context.Context) *noise {
	n := &noise{b: b, start: time.Now(), ours: b.snapshotPG(ctx, true), kernel: b.procs.kernelThreads()}
	n.machine, _ = b.procs.machineBusy()
	if bg, err := b.store.CheckpointerPID(ctx); err == nil {
		n.postmaster = b.procs.parent(bg)
		if c, err := b.procs.cpu(n.postmaster); err == nil {
			n.exited = c.children
		}
	}
	return n
}

// others returns the share of the machine's CPU capacity (all cores) that
// other processes used, in percent.
func (n *noise) others(ctx context.Context) float64 {
	m, err := n.b.procs.machineBusy()
	if err != nil {
		return 0
	}
	u := n.b.cpuSince(ctx, n.ours)
	ours := u.worker + u.spiders + u.api + u.redis + u.bench + max(u.pg, 0)
	if self, err := n.b.procs.cpu(os.Getpid()); err == nil {
		ours += self.children - n.ours.bench.children // raw fork/exec baselines
	}
	// Backends and autovacuum workers that exited meanwhile: the
	// postmaster reaped them. Server-wide, but mostly the bench's.
	if n.postmaster > 0 {
		if c, err := n.b.procs.cpu(n.postmaster); err == nil {
			ours += c.children - n.exited
		}
	}
	// Kernel threads (block I/O, writeback, journaling) mostly work for
	// Postgres's writes here: they count as no one's.
	for pid, c := range n.b.procs.kernelThreads() {
		ours += c - n.kernel[pid]
	}
	if time.Since(n.start) < time.Second {
		return 0 // too short to tell at /proc's 10 ms resolution
	}
	capacity := time.Since(n.start).Seconds() * float64(runtime.NumCPU())
	return max(0, 100*((m-n.machine)-ours).Seconds()/capacity)
}
