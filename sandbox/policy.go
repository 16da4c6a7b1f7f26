// Package sandbox runs untrusted spider code: one Policy (data: namespaces,
// mounts, uid, limits, network) built in one place, and one Launcher that
// every way of starting a spider goes through.
//
// With the sandbox on, the launcher re-executes the worker's own binary as a
// small init (`scrapethis sandbox-init`, see RunInit) in new PID, mount, IPC
// and UTS namespaces. The init, PID 1 of its namespace and still root,
// builds a fresh read-only root (system directories, a curated /etc, a
// minimal /dev, its own /proc, the spider's code read-only, and a private
// size-limited tmpfs as the job directory), sets rlimits, drops to the job's
// own uid for good and runs the spider. It forwards SIGTERM/SIGINT to every
// process of the namespace, reaps them all, and exits as soon as the spider
// does, which makes the kernel kill whatever the spider left behind. The
// launcher puts the init in the job's memory and pids cgroups before the
// spider starts and reads the OOM-kill counter when it ends.
package sandbox

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
)

// Network is what network a sandboxed process gets.
type Network string

const (
	// NetworkHost shares the host's network (the default).
	NetworkHost Network = "host"
	// NetworkIsolated is a network namespace per job with NAT to the
	// outside and no way to the host's own addresses, the denied prefixes
	// or other jobs (see network.go).
	NetworkIsolated Network = "isolated"
)

// Limits bound one job.
type Limits struct {
	MemoryMB   int // hard memory limit (cgroup); the job directory's tmpfs pages count against it
	DiskMB     int // size of the job directory (a tmpfs): all a job can write
	Procs      int // processes and threads of the job's uid (RLIMIT_NPROC, and the pids cgroup)
	NoFile     int // open files per process (RLIMIT_NOFILE)
	CPUSeconds int // CPU seconds per process (RLIMIT_CPU), a backstop; 0 is none
}

// Config is the operator's sandbox configuration, shared by every job of a
// worker. Its zero value is a disabled sandbox.
type Config struct {
	Enabled bool
	// InitArgv runs RunInit: `scrapethis sandbox-init` for the shipped
	// binary. Needed when Enabled.
	InitArgv []string
	// UIDFirst..UIDLast is the range of uids (and gids) jobs run as; each
	// running job on the host holds one of its own.
	UIDFirst, UIDLast int
	Network           Network
	Defaults          Limits // for a job that asks for nothing
	MaxMemoryMB       int    // the most memory a job may ask for; 0 is Defaults.MemoryMB
	// Binds are host paths every sandbox sees read-only at the same path
	// (a virtualenv outside /usr, say).
	Binds []string
	// LockDir holds the uid locks that keep two jobs of the host off one
	// uid; "" is /run/scrapethis/uids, or the temp dir if /run is not
	// writable.
	LockDir string

	// The isolated network (Network = NetworkIsolated). NetworkRange is
	// where each job's /30 comes from (by its uid); invalid is
	// DefaultNetworkRange. NetworkDeny are prefixes no job may reach (the
	// platform's Postgres and Redis, the operator's list); the host's own
	// addresses are always denied. DNS are the nameservers of the jobs'
	// resolv.conf; none is the host's that a job can reach.
	NetworkRange netip.Prefix
	NetworkDeny  []netip.Prefix
	DNS          []netip.Addr
	// PlatformPorts are the TCP ports of the platform's Postgres and
	// Redis. With the host's network, jobs cannot connect to them on any
	// address of this host, nor to NetworkDeny's prefixes but loopback
	// (see guard_host.go).
	PlatformPorts []uint16
	// Warm keeps spare sandboxes built ahead and reuses each across jobs
	// (see warm.go); jobs it cannot serve start their own init.
	Warm bool
	// Log receives the launcher's notes (IPv4 forwarding turned on, no
	// DNS for isolated jobs); nil is slog.Default().
	Log *slog.Logger
}

// DefaultConfig is the documented default: on, uids 200000-200999, host
// network, 1 GiB of memory (4 GiB at most), 1 GiB of disk, 512 processes,
// 1024 files, 24 h of CPU.
func DefaultConfig() Config {
	return Config{
		Enabled:     true,
		UIDFirst:    200000,
		UIDLast:     200999,
		Network:     NetworkHost,
		Warm:        true,
		Defaults:    Limits{MemoryMB: 1024, DiskMB: 1024, Procs: 512, NoFile: 1024, CPUSeconds: 86400},
		MaxMemoryMB: 4096,
	}
}

// Mount is a read-only bind mount of a host path.
type Mount struct {
	Source string // absolute path on the host
	Target string // absolute path inside the sandbox
}

// Policy is everything one sandboxed process tree gets. It is data: the
// launcher sends it to the init, which applies it.
type Policy struct {
	Name    string // names the job's cgroups; the job id
	UID     int    // set by Launcher.Start from the configured range
	GID     int
	Network Network
	Limits  Limits
	Binds   []Mount // read-only: the spider's own code and the configured binds
	Dir     string  // the job directory inside: cwd, HOME; its tmp/ is /tmp and TMPDIR
	// Probe builds everything and drops privileges, then exits 0 without
	// running anything: Check uses it.
	Probe bool
	// ResolvConf, when set, is the sandbox's /etc/resolv.conf instead of
	// the host's (the isolated network: the host's loopback resolver is
	// out of reach).
	ResolvConf string `json:",omitempty"`
}

// JobDir is where the job directory is inside every sandbox.
const JobDir = "/job"

// CodeDir is where a spider's own code is bound inside every sandbox.
const CodeDir = "/spider"

// Policy is the one place a job's policy is built: the operator's
// configuration, the job's code bound read-only, and its memory (0 for the
// operator default; more than the maximum is an error).
func (l *Launcher) Policy(name string, code []Mount, memoryMB int) (Policy, error) {
	lim := l.cfg.Defaults
	if memoryMB != 0 {
		if memoryMB < 0 || memoryMB > l.maxMemoryMB() {
			return Policy{}, fmt.Errorf("memory_mb %d is outside 1..%d", memoryMB, l.maxMemoryMB())
		}
		lim.MemoryMB = memoryMB
	}
	p := Policy{Name: name, Network: l.cfg.Network, Limits: lim, Dir: JobDir}
	if l.net != nil {
		p.ResolvConf = l.net.resolvConf
	}
	for _, m := range code {
		if !filepath.IsAbs(m.Source) || !filepath.IsAbs(m.Target) {
			return Policy{}, fmt.Errorf("bind %s -> %s: paths must be absolute", m.Source, m.Target)
		}
		p.Binds = append(p.Binds, m)
	}
	for _, b := range l.cfg.Binds {
		p.Binds = append(p.Binds, Mount{Source: b, Target: b})
	}
	return p, nil
}

func (l *Launcher) maxMemoryMB() int {
	if l.cfg.MaxMemoryMB > 0 {
		return l.cfg.MaxMemoryMB
	}
	return l.cfg.Defaults.MemoryMB
}

func (c Config) validate() error {
	if !c.Enabled {
		return nil
	}
	var errs []error
	if len(c.InitArgv) == 0 {
		errs = append(errs, errors.New("no init command (InitArgv)"))
	}
	if c.UIDFirst <= 0 || c.UIDLast < c.UIDFirst {
		errs = append(errs, fmt.Errorf("uid range %d-%d is empty or includes root", c.UIDFirst, c.UIDLast))
	}
	switch c.Network {
	case "", NetworkHost:
	case NetworkIsolated:
		errs = append(errs, c.validateNetwork()...)
	default:
		errs = append(errs, fmt.Errorf("network mode %q is neither host nor isolated", c.Network))
	}
	d := c.Defaults
	if d.MemoryMB <= 0 || d.DiskMB <= 0 || d.Procs <= 0 || d.NoFile <= 0 || d.CPUSeconds < 0 {
		errs = append(errs, fmt.Errorf("limits %+v: memory, disk, processes and files must be positive", d))
	}
	for _, b := range c.Binds {
		if !filepath.IsAbs(b) {
			errs = append(errs, fmt.Errorf("bind %q is not an absolute path", b))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sandbox configuration: %w", err)
	}
	return nil
}
