package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// InitCommand is the argv[1] that makes the binary run RunInit.
const InitCommand = "sandbox-init"

// Init runs the sandbox init and exits if this process was started as one
// (argv[1] is InitCommand); otherwise it returns. main calls it first.
func Init() {
	if len(os.Args) > 1 && os.Args[1] == InitCommand {
		os.Exit(RunInit())
	}
}

// The init's pipes, as the launcher passes them.
const (
	policyFD = 3
	statusFD = 4
)

// systemPaths are bound read-only at their own paths (or recreated as the
// same symbolic link, as /bin is on merged-/usr systems).
var systemPaths = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// etcEntries is the curated /etc: what programs need to resolve names,
// verify TLS, find libraries and run Python, and nothing of the
// platform's own configuration.
var etcEntries = []string{
	"ssl", "ca-certificates", "ca-certificates.conf", "pki", "crypto-policies",
	"resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf",
	"localtime", "timezone", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
	"alternatives", "mime.types", "protocols", "services", "os-release", "debian_version",
	"python3*", "scrapy.cfg",
}

// RunInit is the sandbox's init. Started by the launcher in new namespaces,
// it reads its request on fd 3, builds the sandbox, runs the spider as the
// job's uid, forwards SIGTERM/SIGINT/SIGHUP to every process of the
// sandbox, reaps them all, and reports how the spider ended on fd 4 as soon
// as the spider itself ends. Its exit then ends the PID namespace: the
// kernel kills every process left in it.
func RunInit() int {
	// Privileges are dropped for this thread (no_new_privs, capability
	// bounding set), and the spider is forked from it.
	runtime.LockOSThread()
	syscall.CloseOnExec(policyFD)
	syscall.CloseOnExec(statusFD)
	status := os.NewFile(statusFD, "status")
	report := func(format string, args ...any) {
		fmt.Fprintf(status, format, args...)
	}
	fail := func(step string, err error) int {
		msg := fmt.Sprintf("%s: %v", step, err)
		fmt.Fprintln(os.Stderr, "[sandbox] "+msg)
		report("error %s", msg)
		return 125
	}
	var req request
	f := os.NewFile(policyFD, "policy")
	dec := json.NewDecoder(f)
	err := dec.Decode(&req)
	isolated := req.Policy.Network == NetworkIsolated
	if !req.Adopt && !isolated {
		f.Close()
	}
	if err != nil {
		return fail("read policy", err)
	}
	if os.Getpid() != 1 {
		return fail("start", errors.New("the init is not PID 1 of a new PID namespace"))
	}
	p := req.Policy
	if err := build(p); err != nil {
		return fail("build sandbox", err)
	}
	if err := limit(p.Limits); err != nil {
		return fail("set limits", err)
	}
	if err := lockDown(); err != nil {
		return fail("drop privileges", err)
	}
	if isolated {
		// Nothing of the job's runs before the launcher has wired its
		// network namespace.
		if err := awaitNetwork(io.MultiReader(dec.Buffered(), f)); err != nil {
			return fail("network", err)
		}
		if !req.Adopt {
			f.Close()
		}
	}
	if p.Probe {
		if err := becomeUser(p.UID, p.GID); err != nil {
			return fail("drop privileges", err)
		}
		report("exit 0")
		return 0
	}
	if req.Adopt {
		return adopt(f, report)
	}

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	cmd := &exec.Cmd{
		Path:   req.Path,
		Args:   req.Args,
		Env:    req.Env,
		Dir:    p.Dir,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(p.UID), Gid: uint32(p.GID), Groups: []uint32{}},
			// Its own group: the worker's SIGTERM to the init's group
			// reaches the init alone, which forwards it once to all.
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
		},
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "[sandbox] start failed:", err)
		report("exit 127")
		return 127
	}
	spider := cmd.Process.Pid
	go func() {
		for sig := range sigs {
			unix.Kill(-1, sig.(syscall.Signal)) // every process of the namespace but the init
		}
	}()
	// PID 1 reaps every orphan of the namespace; the spider's status is the
	// job's.
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fail("wait", err)
		}
		if pid != spider {
			continue
		}
		if ws.Signaled() {
			report("signal %d", int(ws.Signal()))
			return 128 + int(ws.Signal())
		}
		report("exit %d", ws.ExitStatus())
		return ws.ExitStatus()
	}
}

// source is a host path as the init sees it once the host's root is at
// /.old: resolved while the host root was still "/".
type source struct {
	path   string // real path on the host, no symbolic links
	link   string // a symbolic link to recreate instead of a bind
	isDir  bool
	target string
}

func resolve(host, target string, keepLink bool) (source, bool, error) {
	if keepLink {
		if fi, err := os.Lstat(host); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			l, err := os.Readlink(host)
			return source{link: l, target: target}, err == nil, err
		}
	}
	real, err := filepath.EvalSymlinks(host)
	if errors.Is(err, os.ErrNotExist) {
		return source{}, false, nil
	}
	if err != nil {
		return source{}, false, err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return source{}, false, err
	}
	return source{path: real, isDir: fi.IsDir(), target: target}, true, nil
}

// build makes the sandbox's root and pivots into it.
func build(p Policy) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	unix.Sethostname([]byte("scrapethis-job"))

	// Every source is resolved while "/" is still the host's.
	var srcs []source
	add := func(host, target string, keepLink, required bool) error {
		s, ok, err := resolve(host, target, keepLink)
		if err != nil {
			return err
		}
		if !ok && required {
			return fmt.Errorf("%s does not exist", host)
		}
		if ok {
			srcs = append(srcs, s)
		}
		return nil
	}
	for _, d := range systemPaths {
		if err := add(d, d, true, false); err != nil {
			return err
		}
	}
	for _, e := range etcEntries {
		if e == "resolv.conf" && p.ResolvConf != "" {
			continue // written below
		}
		matches, _ := filepath.Glob(filepath.Join("/etc", e))
		for _, m := range matches {
			if err := add(m, m, false, false); err != nil {
				return err
			}
		}
	}
	for _, b := range p.Binds {
		if err := add(b.Source, b.Target, false, true); err != nil {
			return fmt.Errorf("bind %s: %w", b.Source, err)
		}
	}
	devs := []string{"null", "zero", "full", "random", "urandom", "tty"}

	// The new root is a small tmpfs, mounted over /tmp for the moment:
	// pivot_root puts the host's root at /.old, with its /tmp uncovered.
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=4m,mode=0755"); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	if err := os.Mkdir("/tmp/.old", 0o700); err != nil {
		return err
	}
	if err := unix.PivotRoot("/tmp", "/tmp/.old"); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	for _, s := range srcs {
		if err := place(s); err != nil {
			return err
		}
	}
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nspider:x:%d:%d:spider:%s:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", p.UID, p.GID, p.Dir)
	group := fmt.Sprintf("root:x:0:\nspider:x:%d:\nnogroup:x:65534:\n", p.GID)
	if err := os.WriteFile("/etc/passwd", []byte(passwd), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile("/etc/group", []byte(group), 0o644); err != nil {
		return err
	}
	if p.ResolvConf != "" {
		if err := os.WriteFile("/etc/resolv.conf", []byte(p.ResolvConf), 0o644); err != nil {
			return err
		}
	}

	// A minimal /dev.
	if err := mkdirMount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
		return err
	}
	for _, d := range devs {
		t := "/dev/" + d
		if err := os.WriteFile(t, nil, 0o666); err != nil {
			return err
		}
		if err := unix.Mount("/.old/dev/"+d, t, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", t, err)
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "shm": "/tmp"} {
		if err := os.Symlink(target, "/dev/"+name); err != nil {
			return err
		}
	}
	// Its own /proc: only the processes of this PID namespace.
	if err := mkdirMount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	// The job directory: private, size-limited, the only writable place.
	opts := fmt.Sprintf("size=%dm,mode=0700,uid=%d,gid=%d", p.Limits.DiskMB, p.UID, p.GID)
	if err := mkdirMount("tmpfs", p.Dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return err
	}
	jobTmp := filepath.Join(p.Dir, "tmp")
	if err := os.Mkdir(jobTmp, 0o700); err != nil {
		return err
	}
	if err := os.Chown(jobTmp, p.UID, p.GID); err != nil {
		return err
	}
	if err := mkdirMount(jobTmp, "/tmp", "", unix.MS_BIND, ""); err != nil {
		return err
	}

	if err := unix.Unmount("/.old", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's root: %w", err)
	}
	if err := os.Remove("/.old"); err != nil {
		return err
	}
	for _, d := range []string{"/dev", "/"} {
		if err := unix.Mount("", d, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", d, err)
		}
	}
	return os.Chdir(p.Dir)
}

func mkdirMount(src, dst, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, dst, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype+src, dst, err)
	}
	return nil
}

// place recreates a symbolic link, or binds a host path read-only.
func place(s source) error {
	if err := os.MkdirAll(filepath.Dir(s.target), 0o755); err != nil {
		return err
	}
	if s.link != "" {
		return os.Symlink(s.link, s.target)
	}
	if s.isDir {
		if err := os.MkdirAll(s.target, 0o755); err != nil {
			return err
		}
	} else if err := os.WriteFile(s.target, nil, 0o644); err != nil {
		return err
	}
	if err := unix.Mount("/.old"+s.path, s.target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", s.path, err)
	}
	if err := unix.Mount("", s.target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make %s read-only: %w", s.target, err)
	}
	return nil
}

// limit sets the rlimits the spider inherits. RLIMIT_NPROC counts the
// processes of the job's uid, which no other job shares.
func limit(l Limits) error {
	set := func(res int, n uint64) error {
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
			return fmt.Errorf("rlimit %d: %w", res, err)
		}
		return nil
	}
	lims := [][2]uint64{
		{unix.RLIMIT_NPROC, uint64(l.Procs)},
		{unix.RLIMIT_NOFILE, uint64(l.NoFile)},
		{unix.RLIMIT_FSIZE, uint64(l.DiskMB) << 20},
		{unix.RLIMIT_CORE, 0},
	}
	if l.CPUSeconds > 0 {
		lims = append(lims, [2]uint64{unix.RLIMIT_CPU, uint64(l.CPUSeconds)})
	}
	for _, x := range lims {
		if err := set(int(x[0]), x[1]); err != nil {
			return err
		}
	}
	return nil
}

// lockDown sets no_new_privs and empties the capability bounding set of
// this (locked) thread, which the spider is forked from: no setuid binary
// or file capability can give it back anything. Its own capabilities go
// when it switches to the job's uid.
func lockDown() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	for c := 0; c <= 63; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) {
				break // past the last capability of this kernel
			}
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	return nil
}

// becomeUser drops the whole init to uid:gid (Probe only).
func becomeUser(uid, gid int) error {
	if err := syscall.Setgroups(nil); err != nil {
		return err
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return err
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return err
	}
	if os.Getuid() != uid {
		return errors.New("uid " + strconv.Itoa(uid) + " did not stick")
	}
	return nil
}

// adopt holds a built sandbox for a spider forked into it from outside
// (see Launcher.StartForked): that spider is the worker's child, not the
// init's, and the worker waits for it. The init reaps what becomes its
// child (the spider's orphans), forwards SIGTERM/SIGINT/SIGHUP to every
// process of the sandbox, and ends when the launcher closes the policy
// pipe: then the kernel kills whatever is left in the namespace.
func adopt(policy *os.File, report func(string, ...any)) int {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGCHLD)
	report("ready\n")
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, policy)
		close(closed)
	}()
	for {
		select {
		case sig := <-sigs:
			if sig != syscall.SIGCHLD {
				unix.Kill(-1, sig.(syscall.Signal))
				continue
			}
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if err != nil || pid <= 0 {
					break
				}
			}
		case <-closed:
			report("exit 0")
			return 0
		}
	}
}

// awaitNetwork waits for the launcher's word that the job's network is up
// (the isolated network); the pipe's end instead means it gave up.
func awaitNetwork(policy io.Reader) error {
	var b [1]byte
	if _, err := io.ReadFull(policy, b[:]); err != nil {
		return fmt.Errorf("the launcher did not set up the job's network: %w", err)
	}
	if b[0] != netReady {
		return fmt.Errorf("unexpected %q on the policy pipe", b[0])
	}
	return nil
}
