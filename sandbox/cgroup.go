package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroups creates the jobs' memory and pids cgroups, under the worker's own
// cgroup in a "scrapethis" folder, on cgroup v2 (one unified hierarchy) or
// v1 (a memory and a pids hierarchy).
//
// On v1, where creating and removing a memory cgroup is the dear part of
// a sandboxed start (about 0.3 ms of CPU, and more in kernel workers), a
// job's cgroups are reused: once every process of the job is gone (the
// kernel has ended its PID namespace and cgroup.procs is empty), they go
// to a pool (see poolPrefix), and the next job gets its own
// limits written and the peak reset before its init joins. Close removes
// the pool; a worker that died leaves its pool to the next one to start.
type cgroups struct {
	v2 bool
	// parents: the unified parent on v2; the memory and pids parents on v1.
	parents []string

	mu     sync.Mutex
	free   []*jobCgroup // idle, empty, reusable (v1)
	made   int          // pool cgroups made so far: the next one's number
	closed bool
	prefix string // see poolPrefix
}

// maxPooled bounds the idle cgroups kept for reuse.
const maxPooled = 32

// poolPrefix names a launcher's pooled cgroups:
// pool-<pid>-<its start time>-<random>-, so that a launcher can tell the
// pools of processes that are gone (a pid reused later has another start
// time) from those of live ones, this process's other launchers included.
func poolPrefix() string {
	return fmt.Sprintf("pool-%d-%s-%08x-", os.Getpid(), startTime(os.Getpid()), rand.Uint32())
}

// startTime is the process's start time in clock ticks since boot, or ""
// if it is gone.
func startTime(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name, in parentheses, may hold anything.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return ""
	}
	return f[19] // field 22 of the whole line
}

// removeStalePools removes the idle pool cgroups of processes that are
// gone. A busy one cannot be removed, and is not touched; a live process's
// are not touched.
func (c *cgroups) removeStalePools() {
	for _, p := range c.parents {
		ents, err := os.ReadDir(p)
		if err != nil {
			continue
		}
		for _, e := range ents {
			rest, ok := strings.CutPrefix(e.Name(), "pool-")
			if !ok || !e.IsDir() {
				continue
			}
			f := strings.SplitN(rest, "-", 3)
			if len(f) < 3 {
				continue
			}
			pid, err := strconv.Atoi(f[0])
			if err != nil {
				continue
			}
			if startTime(pid) != f[1] {
				syscall.Rmdir(filepath.Join(p, e.Name()))
			}
		}
	}
}

const cgroupRoot = "/sys/fs/cgroup"

// detectCgroups finds the hierarchies and prepares the parent cgroups.
func detectCgroups() (*cgroups, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return setupV2(parentDir(cgroupRoot, own[""]))
	}
	var parents []string
	for _, ctl := range []string{"memory", "pids"} {
		mnt := filepath.Join(cgroupRoot, ctl)
		if _, err := os.Stat(filepath.Join(mnt, "cgroup.procs")); err != nil {
			return nil, fmt.Errorf("no cgroup v2 at %s and no cgroup v1 %s controller at %s", cgroupRoot, ctl, mnt)
		}
		p := filepath.Join(parentDir(mnt, own[ctl]), "scrapethis")
		if err := os.MkdirAll(p, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup v1 %s is not writable: %w", ctl, err)
		}
		parents = append(parents, p)
	}
	c := &cgroups{parents: parents, prefix: poolPrefix()}
	c.removeStalePools()
	return c, nil
}

// parentDir is the worker's own cgroup directory under mnt, or mnt itself
// when the worker's path is not visible there (a cgroup namespace).
func parentDir(mnt, own string) string {
	if own != "" && own != "/" {
		if st, err := os.Stat(filepath.Join(mnt, own)); err == nil && st.IsDir() {
			return filepath.Join(mnt, own)
		}
	}
	return mnt
}

// ownCgroups reads /proc/self/cgroup: controller -> path ("" for v2).
func ownCgroups() (map[string]string, error) {
	data, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroups: %w", err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, ctl := range strings.Split(f[1], ",") {
			out[ctl] = f[2]
		}
	}
	return out, nil
}

// setupV2 makes own/scrapethis with the memory and pids controllers. When
// the worker's cgroup has processes (the root of a container's cgroup
// namespace, typically), cgroup v2 forbids enabling controllers for its
// children: those processes move to a leaf own/worker first.
func setupV2(own string) (*cgroups, error) {
	enable := func(dir string) error {
		return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+memory +pids"), 0)
	}
	if err := enable(own); err != nil {
		if !errors.Is(err, syscall.EBUSY) {
			return nil, fmt.Errorf("cgroup v2: cannot enable the memory and pids controllers in %s: %w", own, err)
		}
		leaf := filepath.Join(own, "worker")
		if err := os.MkdirAll(leaf, 0o755); err != nil {
			return nil, fmt.Errorf("cgroup v2 is not writable: %w", err)
		}
		procs, _ := os.ReadFile(filepath.Join(own, "cgroup.procs"))
		for _, pid := range strings.Fields(string(procs)) {
			os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte(pid), 0)
		}
		if err := enable(own); err != nil {
			return nil, fmt.Errorf("cgroup v2: cannot enable the memory and pids controllers in %s: %w", own, err)
		}
	}
	p := filepath.Join(own, "scrapethis")
	if err := os.MkdirAll(p, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup v2 is not writable: %w", err)
	}
	if err := enable(p); err != nil {
		return nil, fmt.Errorf("cgroup v2: cannot enable the memory and pids controllers in %s: %w", p, err)
	}
	return &cgroups{v2: true, parents: []string{p}}, nil
}

// jobCgroup is one job's cgroups.
type jobCgroup struct {
	v2   bool
	dirs []string // v2: one; v1: memory, pids
	fds  []int    // the dirs, open (O_PATH): their files are opened from these
	// pooled: from and back to owner's pool (v1).
	pooled bool
	owner  *cgroups
	// mem and pids are the limits as written.
	mem, pids string
	// oomBase is the OOM-kill count before this job: a reused cgroup's
	// counter counts every job it has held.
	oomBase int
	// peak (v2, reused): memory.peak opened by reset, whose reads count
	// from the reset (Linux 6.12); nil: the cgroup's whole life.
	peak *os.File
}

// create gives a job its cgroups with its limits: a pooled pair on v1 (an
// idle one, or a new one), its own new cgroup named for it on v2.
func (c *cgroups) create(name string, lim Limits) (*jobCgroup, error) {
	if c.v2 {
		return c.make(name, lim)
	}
	c.mu.Lock()
	for len(c.free) > 0 {
		j := c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
		c.mu.Unlock()
		if err := j.reset(lim); err == nil {
			return j, nil
		}
		j.remove() // gone or broken: a new one instead
		c.mu.Lock()
	}
	c.made++
	name = c.prefix + strconv.Itoa(c.made)
	c.mu.Unlock()
	j, err := c.make(name, lim)
	if err != nil {
		return nil, err
	}
	j.pooled, j.owner = true, c
	return j, nil
}

// make creates new cgroups with the limits.
func (c *cgroups) make(name string, lim Limits) (*jobCgroup, error) {
	j := &jobCgroup{v2: c.v2}
	for _, p := range c.parents {
		d := filepath.Join(p, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			j.remove()
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		j.dirs = append(j.dirs, d)
		fd, err := unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			j.remove()
			return nil, fmt.Errorf("open cgroup: %w", err)
		}
		j.fds = append(j.fds, fd)
	}
	if err := j.setLimits(lim); err != nil {
		j.remove()
		return nil, err
	}
	return j, nil
}

// setLimits writes the limits that differ from those written before. The
// pids limit leaves room for the init's own threads.
func (j *jobCgroup) setLimits(lim Limits) error {
	mem := strconv.FormatInt(int64(lim.MemoryMB)<<20, 10)
	pids := strconv.Itoa(lim.Procs + 32)
	type write struct {
		dir         int // index of dirs
		file, value string
	}
	var writes []write
	if mem != j.mem {
		if j.v2 {
			writes = append(writes, write{0, "memory.max", mem}, write{0, "memory.swap.max", "0"})
		} else {
			// v1 wants memory <= memory+swap at every step.
			m := []write{{0, "memory.limit_in_bytes", mem}, {0, "memory.memsw.limit_in_bytes", mem}}
			if old, err := strconv.ParseInt(j.mem, 10, 64); err == nil && int64(lim.MemoryMB)<<20 > old {
				m[0], m[1] = m[1], m[0]
			}
			writes = append(writes, m...)
		}
	}
	if pids != j.pids {
		writes = append(writes, write{len(j.dirs) - 1, "pids.max", pids})
	}
	for _, w := range writes {
		if err := writeAt(j.fds[w.dir], w.file, w.value); err != nil {
			if strings.Contains(w.file, "sw") && errors.Is(err, os.ErrNotExist) {
				continue // no swap accounting on this kernel
			}
			j.mem, j.pids = "", "" // unknown now
			return fmt.Errorf("cgroup limit %s: %w", w.file, err)
		}
	}
	j.mem, j.pids = mem, pids
	return nil
}

// reset readies a pooled cgroup for a new job: its limits, and its peak
// memory back to the current use (v1).
func (j *jobCgroup) reset(lim Limits) error {
	if err := j.setLimits(lim); err != nil {
		return err
	}
	if j.v2 {
		// memory.peak resets only for reads of the fd written to.
		if j.peak != nil {
			j.peak.Close()
			j.peak = nil
		}
		if f, err := os.OpenFile(filepath.Join(j.dirs[0], "memory.peak"), os.O_RDWR, 0); err == nil {
			if _, err := f.Write([]byte("reset\n")); err == nil {
				j.peak = f
			} else {
				f.Close() // an older kernel: the peak of the cgroup's life
			}
		}
		return nil
	}
	if err := writeAt(j.fds[0], "memory.max_usage_in_bytes", "0"); err != nil {
		return fmt.Errorf("reset cgroup peak: %w", err)
	}
	return nil
}

// release gives the job's cgroups back once its processes are gone: to the
// pool, or removed. oomKills is the count Wait has read.
func (j *jobCgroup) release(oomKills int) error {
	c := j.owner
	if !j.pooled || c == nil {
		return j.remove()
	}
	if !j.empty() {
		return j.remove()
	}
	c.mu.Lock()
	if c.closed || len(c.free) >= maxPooled {
		c.mu.Unlock()
		return j.remove()
	}
	j.oomBase += oomKills
	c.free = append(c.free, j)
	c.mu.Unlock()
	return nil
}

// empty reports whether no process is left in the job's cgroups, waiting a
// little (as remove does) for one that is still exiting.
func (j *jobCgroup) empty() bool { return j.holds("") }

// close removes the idle pool; cgroups still in use are removed as their
// jobs end.
func (c *cgroups) close() error {
	c.mu.Lock()
	c.closed = true
	free := c.free
	c.free = nil
	c.mu.Unlock()
	var errs []error
	for _, j := range free {
		errs = append(errs, j.remove())
	}
	return errors.Join(errs...)
}

// join moves pid into the job's cgroups.
func (j *jobCgroup) join(pid int) error {
	for i, d := range j.dirs {
		if err := writeAt(j.fds[i], "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("join cgroup %s: %w", d, err)
		}
	}
	return nil
}

// oomKills is how many processes the kernel killed for the memory limit.
func (j *jobCgroup) oomKills() int {
	file, key := "memory.events", "oom_kill"
	if !j.v2 {
		file = "memory.oom_control"
	}
	data, err := readAt(j.fds[0], file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == key {
			n, _ := strconv.Atoi(f[1])
			return max(n-j.oomBase, 0)
		}
	}
	return 0
}

// memoryPeak is the most memory the job used, in bytes (0 if unknown).
func (j *jobCgroup) memoryPeak() int64 {
	file := "memory.peak"
	if !j.v2 {
		file = "memory.max_usage_in_bytes"
	}
	var data []byte
	var err error
	if j.peak != nil {
		buf := make([]byte, 32)
		var n int
		n, err = j.peak.ReadAt(buf, 0)
		data = buf[:n]
		if errors.Is(err, io.EOF) {
			err = nil
		}
	} else {
		data, err = readAt(j.fds[0], file)
	}
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return n
}

// remove deletes the job's cgroups once their processes are gone; a cgroup
// can stay busy for a moment after its last process is reaped.
func (j *jobCgroup) remove() error {
	if j.peak != nil {
		j.peak.Close()
		j.peak = nil
	}
	for _, fd := range j.fds {
		unix.Close(fd)
	}
	j.fds = nil
	var errs []error
	for _, d := range j.dirs {
		deadline := time.Now().Add(2 * time.Second)
		for {
			err := syscall.Rmdir(d)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// holdsOnly reports whether pid is the one process left in the cgroups.
func (j *jobCgroup) holdsOnly(pid int) bool { return j.holds(strconv.Itoa(pid)) }

// holds reports whether the cgroups' processes are exactly procs (a pid,
// or "" for none); a process that was just reaped may show for a moment,
// so it waits up to 2 s for that.
func (j *jobCgroup) holds(procs string) bool {
	deadline := time.Now().Add(2 * time.Second)
	for _, d := range j.fds {
		for {
			got, err := readAt(d, "cgroup.procs")
			if err != nil {
				return false
			}
			if string(bytes.TrimSpace(got)) == procs {
				break
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(time.Millisecond)
		}
	}
	return true
}
