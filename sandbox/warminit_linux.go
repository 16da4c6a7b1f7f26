package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// A warm init (see warm.go) talks to the launcher over a SOCK_SEQPACKET
// socket on fd 3, one message each way at a time:
//
//	launcher: warmStart                init: "ready" | "error MSG"
//	launcher: warmJob (+ fds)          init: "started NSPID" | "error MSG"
//	launcher: "go"                     init: "exit N" | "signal N"
//	                                   init: "clean" | "retire MSG"
//
// and again from warmJob, until the launcher closes the socket. "error"
// and "retire" end the init.

// warmStart is a warm init's first message: the system part of the root
// and the operator's binds, the same for every job (no tenant data).
type warmStart struct {
	Root   []source
	Policy Policy // Binds: the configured ones only; no uid, no job
}

// warmJob is one job for a warm init. The fds come with the message:
// Stdout and Stderr index them (-1 is /dev/null), as do Trees.
type warmJob struct {
	Policy         Policy
	Path           string
	Args, Env      []string
	Stdout, Stderr int
	Trees          []warmTree
}

// warmTree is one of the job's code binds: a detached, read-only mount
// (open_tree) the launcher made on the host, to move to Target.
type warmTree struct {
	FD     int
	Target string
	Dir    bool
}

// maxWarmMessage bounds a message to or from a warm init.
const maxWarmMessage = 256 << 10

// isSocket reports whether fd is a socket: a warm init's fd 3.
func isSocket(fd int) bool {
	_, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	return err == nil
}

// runWarm is the init of a warm sandbox: it builds the system part of the
// root once, then runs the launcher's jobs one after another, each in a
// fresh job directory, /tmp and /spider, with the job's code, limits, uid
// and a new IPC namespace, and after each kills and reaps everything and
// unmounts what the job had before it takes the next.
func runWarm(sock int) int {
	send := func(format string, args ...any) bool {
		return unix.Sendmsg(sock, fmt.Appendf(nil, format, args...), nil, nil, 0) == nil
	}
	fail := func(step string, err error) int {
		send("error %s: %v", step, err)
		unix.Kill(-1, unix.SIGKILL)
		return 125
	}
	buf := make([]byte, maxWarmMessage)
	n, _, _, _, err := unix.Recvmsg(sock, buf, nil, 0)
	if err != nil || n == 0 {
		return 125
	}
	var ws warmStart
	if err := json.Unmarshal(buf[:n], &ws); err != nil {
		return fail("read start", err)
	}
	if os.Getpid() != 1 {
		return fail("start", errors.New("the init is not PID 1 of a new PID namespace"))
	}
	if err := buildRoot(ws.Policy, ws.Root, true); err != nil {
		return fail("build sandbox", err)
	}
	if err := lockDown(); err != nil {
		return fail("drop privileges", err)
	}
	// Each job's mounts are made in a copy of this mount namespace (see
	// setUpJob), which goes with the job: this one stays as built.
	base, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("mount namespace", err)
	}
	if !send("ready") {
		return 125
	}
	oob := make([]byte, unix.CmsgSpace(64*4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil || n == 0 {
			return 0 // the launcher is done with this init
		}
		fds, err := rights(oob[:oobn])
		if err != nil {
			return fail("read job", err)
		}
		files := make([]*os.File, len(fds))
		for i, fd := range fds {
			files[i] = os.NewFile(uintptr(fd), "job")
		}
		ok, why := runWarmJob(sock, buf[:n], files, send)
		for _, f := range files {
			f.Close()
		}
		if !ok {
			return fail("job", errors.New(why))
		}
		if why := cleanUp(base); why != "" {
			send("retire %s", why)
			unix.Kill(-1, unix.SIGKILL)
			return 0
		}
		if !send("clean") {
			return 0
		}
	}
}

// rights are the fds of a message's SCM_RIGHTS.
func rights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		f, err := unix.ParseUnixRights(&m)
		if err != nil {
			return nil, err
		}
		fds = append(fds, f...)
	}
	return fds, nil
}

// runWarmJob sets up one job, runs it and reports how it ended. false is
// an error before the spider ran (said as "error"), or a broken socket.
func runWarmJob(sock int, msg []byte, files []*os.File, send func(string, ...any) bool) (bool, string) {
	var job warmJob
	if err := json.Unmarshal(msg, &job); err != nil {
		return false, "decode: " + err.Error()
	}
	fd := func(i int) (*os.File, error) {
		if i < 0 {
			return nil, nil
		}
		if i >= len(files) {
			return nil, fmt.Errorf("fd %d of %d", i, len(files))
		}
		return files[i], nil
	}
	p := job.Policy
	if err := setUpJob(p, job.Trees, files); err != nil {
		return false, err.Error()
	}
	stdout, err := fd(job.Stdout)
	if err != nil {
		return false, err.Error()
	}
	stderr, err := fd(job.Stderr)
	if err != nil {
		return false, err.Error()
	}
	cmd := &exec.Cmd{
		Path: job.Path,
		Args: job.Args,
		Env:  job.Env,
		Dir:  p.Dir,
		SysProcAttr: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(p.UID), Gid: uint32(p.GID), Groups: []uint32{}},
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
			// SysV IPC and POSIX message queues of its own: nothing of
			// the last job's, nothing left for the next.
			Cloneflags: syscall.CLONE_NEWIPC,
		},
	}
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if stderr != nil {
		cmd.Stderr = stderr
	}
	if err := cmd.Start(); err != nil {
		// As the cold init: the job ran and failed to start.
		if stderr != nil {
			fmt.Fprintln(stderr, "[sandbox] start failed:", err)
		}
		if !send("started 0") {
			return false, "socket"
		}
		if !awaitGo(sock) {
			return false, "socket"
		}
		send("exit 127")
		return true, ""
	}
	spider := cmd.Process.Pid
	// The spider's pid with the message's credentials: the kernel gives
	// the launcher its pid in the launcher's PID namespace.
	creds := unix.UnixCredentials(&unix.Ucred{Pid: int32(spider)})
	if unix.Sendmsg(sock, []byte("started "+strconv.Itoa(spider)), creds, nil, 0) != nil || !awaitGo(sock) {
		return false, "socket"
	}
	ws, err := reapUntil(spider)
	if err != nil {
		return false, "wait: " + err.Error()
	}
	if ws.Signaled() {
		send("signal %d", int(ws.Signal()))
	} else {
		send("exit %d", ws.ExitStatus())
	}
	return true, ""
}

func awaitGo(sock int) bool {
	var b [8]byte
	n, _, _, _, err := unix.Recvmsg(sock, b[:], nil, 0)
	return err == nil && string(b[:n]) == "go"
}

// setUpJob gives a warm sandbox one job's parts: its limits, a new session
// keyring, a fresh job directory and /tmp, its passwd and group, and its
// code moved to /spider (a fresh read-only tmpfs) from the detached
// mounts the launcher made.
func setUpJob(p Policy, trees []warmTree, files []*os.File) error {
	// A mount namespace for the job, copied from the warm one, for this
	// thread (the spider is forked from it): every mount below is made
	// there, and goes when the job's last process and this thread have
	// left it (cleanUp).
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("job mount namespace: %w", err)
	}
	if err := limit(p.Limits); err != nil {
		return fmt.Errorf("set limits: %w", err)
	}
	// The spider inherits this thread's session keyring: a new one, so
	// nothing of the last job's keys is reachable.
	if _, _, e := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); e != 0 {
		return fmt.Errorf("session keyring: %w", e)
	}
	if err := jobDir(p); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", CodeDir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=0755"); err != nil {
		return fmt.Errorf("mount %s: %w", CodeDir, err)
	}
	for _, f := range []struct{ name, content string }{{"passwd", passwdFor(p)}, {"group", groupFor(p)}} {
		stage := CodeDir + "/." + f.name
		if err := os.WriteFile(stage, []byte(f.content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
		t := "/etc/" + f.name
		if err := unix.Mount(stage, t, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", t, err)
		}
		if err := unix.MountSetattr(unix.AT_FDCWD, t, 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}); err != nil {
			return fmt.Errorf("make %s read-only: %w", t, err)
		}
		if err := unix.Unlink(stage); err != nil {
			return fmt.Errorf("unlink %s: %w", stage, err)
		}
	}
	for _, t := range trees {
		if t.FD < 0 || t.FD >= len(files) {
			return fmt.Errorf("tree fd %d of %d", t.FD, len(files))
		}
		if t.Target != CodeDir {
			rel, ok := strings.CutPrefix(t.Target, CodeDir+"/")
			if !ok || rel == "" || filepath.Clean(t.Target) != t.Target {
				return fmt.Errorf("bind target %s is not below %s", t.Target, CodeDir)
			}
			if err := os.MkdirAll(filepath.Dir(t.Target), 0o755); err != nil {
				return err
			}
			var err error
			if t.Dir {
				err = unix.Mkdir(t.Target, 0o755)
			} else {
				err = unix.Mknod(t.Target, unix.S_IFREG|0o644, 0)
			}
			if err != nil {
				return fmt.Errorf("mount point %s: %w", t.Target, err)
			}
		}
		if err := unix.MoveMount(int(files[t.FD].Fd()), "", unix.AT_FDCWD, t.Target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("bind %s: %w", t.Target, err)
		}
	}
	ro := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(unix.AT_FDCWD, CodeDir, unix.AT_RECURSIVE, ro); err != nil {
		return fmt.Errorf("make %s read-only: %w", CodeDir, err)
	}
	return nil
}

// cleanUp ends what is left of a job: every process of the namespace but
// this init is killed and reaped, and the init goes back to the warm mount
// namespace base, which the job never touched. A non-empty answer says
// why the sandbox is not as built (the init retires).
func cleanUp(base int) string {
	for {
		// Again after every reap: a process forked while the last kill
		// went round is caught by the next.
		unix.Kill(-1, unix.SIGKILL)
		var ws unix.WaitStatus
		_, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.ECHILD) {
			break
		}
		if err != nil {
			return "reap: " + err.Error()
		}
	}
	// No child left: every process of the namespace descends from this
	// init, orphans included. (The launcher checks too: the job's
	// cgroups must be empty before this init takes another job.)
	// Back to the warm mount namespace (root and cwd its root): the
	// job's, with all its mounts, is freed as this thread leaves it.
	if err := unix.Setns(base, unix.CLONE_NEWNS); err != nil {
		return "back to the warm mount namespace: " + err.Error()
	}
	if ents, err := os.ReadDir(JobDir); err != nil || len(ents) > 0 {
		return fmt.Sprintf("%s is not as built (%d entries, %v)", JobDir, len(ents), err)
	}
	return ""
}
