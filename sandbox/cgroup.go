package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroups creates the jobs' memory and pids cgroups, under the worker's own
// cgroup in a "scrapethis" folder, on cgroup v2 (one unified hierarchy) or
// v1 (a memory and a pids hierarchy).
type cgroups struct {
	v2 bool
	// parents: the unified parent on v2; the memory and pids parents on v1.
	parents []string
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
	return &cgroups{parents: parents}, nil
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
}

// create makes the job's cgroups with its limits. The pids limit leaves room
// for the init's own threads.
func (c *cgroups) create(name string, lim Limits) (*jobCgroup, error) {
	j := &jobCgroup{v2: c.v2}
	for _, p := range c.parents {
		d := filepath.Join(p, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			j.remove()
			return nil, fmt.Errorf("create cgroup: %w", err)
		}
		j.dirs = append(j.dirs, d)
	}
	mem := strconv.FormatInt(int64(lim.MemoryMB)<<20, 10)
	pids := strconv.Itoa(lim.Procs + 32)
	var writes [][2]string
	if c.v2 {
		d := j.dirs[0]
		writes = [][2]string{{d + "/memory.max", mem}, {d + "/memory.swap.max", "0"}, {d + "/pids.max", pids}}
	} else {
		m, p := j.dirs[0], j.dirs[1]
		writes = [][2]string{{m + "/memory.limit_in_bytes", mem}, {m + "/memory.memsw.limit_in_bytes", mem}, {p + "/pids.max", pids}}
	}
	for _, w := range writes {
		if err := os.WriteFile(w[0], []byte(w[1]), 0); err != nil {
			if strings.Contains(w[0], "swap") && errors.Is(err, os.ErrNotExist) {
				continue // no swap accounting on this kernel
			}
			j.remove()
			return nil, fmt.Errorf("cgroup limit %s: %w", filepath.Base(w[0]), err)
		}
	}
	return j, nil
}

// join moves pid into the job's cgroups.
func (j *jobCgroup) join(pid int) error {
	for _, d := range j.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
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
	data, err := os.ReadFile(filepath.Join(j.dirs[0], file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == key {
			n, _ := strconv.Atoi(f[1])
			return n
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
	data, err := os.ReadFile(filepath.Join(j.dirs[0], file))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return n
}

// remove deletes the job's cgroups once their processes are gone; a cgroup
// can stay busy for a moment after its last process is reaped.
func (j *jobCgroup) remove() error {
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
