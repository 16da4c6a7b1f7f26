package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

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
	// KeepCode: the job's code is what the last job's was (the launcher
	// checked), still mounted: no Trees, nothing unmounted or moved.
	KeepCode bool
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
// fresh job directory, /tmp and /spider, with the job's code, limits and
// uid, and after each kills and reaps everything, unmounts what the job
// had and removes its IPC objects before it takes the next.
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
	st, err := newWarmState(ws.Policy.Limits.DiskMB)
	if err != nil {
		return fail("job directory", err)
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
		ok, why := runWarmJob(sock, buf[:n], files, send, st)
		for _, f := range files {
			f.Close()
		}
		if !ok {
			return fail("job", errors.New(why))
		}
		if why := st.cleanUp(); why != "" {
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
func runWarmJob(sock int, msg []byte, files []*os.File, send func(string, ...any) bool, st *warmState) (bool, string) {
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
	if err := st.setUpJob(p, &job, files); err != nil {
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
		Path:   job.Path,
		Args:   job.Args,
		Env:    job.Env,
		Dir:    p.Dir,
		Stdin:  st.null,
		Stdout: st.null,
		Stderr: st.null,
		// In the init's IPC namespace, which cleanUp empties of SysV IPC
		// and POSIX message queues after each job: a namespace per spider
		// cost about 0.7 ms of its start (made and torn down).
		SysProcAttr: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(p.UID), Gid: uint32(p.GID), Groups: []uint32{}},
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
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

// warmState is what a warm init keeps between jobs: its job directory, a
// tmpfs mounted once (with its tmp/ bound at /tmp) and emptied after each
// job, and what it made for the last job's code. A job changes no mount
// but its code's, so that no job needs a mount namespace of its own (whose
// copy and teardown cost more than the rest of a job's set-up).
type warmState struct {
	diskMB int
	tmp    uint64   // the inode of /job/tmp, bound at /tmp
	points []string // the code's mount points made in the root, in order
	mounts []string // the code's mounts, in order
	mq     int      // a detached mount of the namespace's mqueue fs, or -1
	null   *os.File // /dev/null, read-write: what a spider has of no fd
}

// newWarmState mounts the job directory, owned by root until a job comes.
func newWarmState(diskMB int) (*warmState, error) {
	if err := jobDir(Policy{Dir: JobDir, Limits: Limits{DiskMB: diskMB}}); err != nil {
		return nil, err
	}
	var fi unix.Stat_t
	if err := unix.Stat("/tmp", &fi); err != nil {
		return nil, err
	}
	mq, err := mqueueMount()
	if err != nil {
		return nil, err
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &warmState{diskMB: diskMB, tmp: fi.Ino, mq: mq, null: null}, unix.Chdir("/")
}

// mqueueMount mounts the IPC namespace's POSIX message queue filesystem
// detached (no job sees it), for cleanUp to list and remove queues: -1
// where the kernel has no message queues.
func mqueueMount() (int, error) {
	fs, err := unix.Fsopen("mqueue", unix.FSOPEN_CLOEXEC)
	if errors.Is(err, unix.ENODEV) {
		return -1, nil
	}
	if err != nil {
		return -1, fmt.Errorf("mqueue: %w", err)
	}
	defer unix.Close(fs)
	if err := unix.FsconfigCreate(fs); err != nil {
		return -1, fmt.Errorf("mqueue: %w", err)
	}
	mq, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return -1, fmt.Errorf("mqueue: %w", err)
	}
	return mq, nil
}

// setRootRO makes the root mount (not what is mounted on it) read-only
// again, or writable for a moment while no job's process runs.
func setRootRO(ro bool) error {
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if !ro {
		attr = &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}
	}
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", 0, attr); err != nil {
		return fmt.Errorf("root read-only %v: %w", ro, err)
	}
	return nil
}

// setUpJob gives a warm sandbox one job's parts: its limits, a new session
// keyring, the job directory sized for it and its own, its passwd and
// group, and its code: the last job's left mounted when the launcher says
// it is the same, else that unmounted and the job's moved under /spider
// from the detached read-only mounts the launcher made.
func (st *warmState) setUpJob(p Policy, job *warmJob, files []*os.File) error {
	if job.KeepCode && (len(job.Trees) > 0 || len(st.mounts) == 0) {
		return errors.New("asked to keep code with new code, or none")
	}
	if err := limit(p.Limits); err != nil {
		return fmt.Errorf("set limits: %w", err)
	}
	// The spider inherits this thread's session keyring: a new one, so
	// nothing of the last job's keys is reachable.
	if _, _, e := unix.Syscall(unix.SYS_KEYCTL, unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0); e != 0 {
		return fmt.Errorf("session keyring: %w", e)
	}
	if p.Limits.DiskMB != st.diskMB {
		opts := fmt.Sprintf("size=%dm", p.Limits.DiskMB)
		if err := unix.Mount("", JobDir, "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return fmt.Errorf("size the job directory: %w", err)
		}
		st.diskMB = p.Limits.DiskMB
	}
	for _, d := range []string{JobDir, JobDir + "/tmp"} {
		if err := unix.Chown(d, p.UID, p.GID); err != nil {
			return fmt.Errorf("chown %s: %w", d, err)
		}
	}
	if !job.KeepCode {
		if err := st.unmountCode(); err != nil {
			return err
		}
	}
	if err := setRootRO(false); err != nil {
		return err
	}
	err := writeIDs(p)
	if err == nil && !job.KeepCode {
		if err = st.removePoints(); err == nil {
			err = st.makePoints(job.Trees, files)
		}
	}
	if err2 := setRootRO(true); err == nil {
		err = err2
	}
	if err != nil {
		return err
	}
	if !job.KeepCode {
		for _, t := range job.Trees {
			if err := unix.MoveMount(int(files[t.FD].Fd()), "", unix.AT_FDCWD, t.Target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
				return fmt.Errorf("bind %s: %w", t.Target, err)
			}
			st.mounts = append(st.mounts, t.Target)
		}
	}
	return unix.Chdir(JobDir)
}

// writeIDs writes the job's passwd and group, while "/" is writable.
func writeIDs(p Policy) error {
	for _, f := range []struct{ name, content string }{{"/etc/passwd", passwdFor(p)}, {"/etc/group", groupFor(p)}} {
		if err := overwrite(f.name, f.content); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
	}
	return nil
}

// unmountCode unmounts the last job's code. An unmount waits for an
// expedited RCU grace period (IPIs to every CPU), which is why a job whose
// code is the last one's keeps it mounted.
func (st *warmState) unmountCode() error {
	for i := len(st.mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(st.mounts[i], unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", st.mounts[i], err)
		}
	}
	st.mounts = st.mounts[:0]
	return nil
}

// removePoints removes the last job's mount points, once unmounted, while
// "/" is writable. Each is an empty file or directory this init made (a
// mount point still in use would fail, not be emptied).
func (st *warmState) removePoints() error {
	for i := len(st.points) - 1; i >= 0; i-- {
		err := unix.Rmdir(st.points[i])
		if errors.Is(err, unix.ENOTDIR) {
			err = unix.Unlink(st.points[i])
		}
		if err != nil {
			return fmt.Errorf("remove %s: %w", st.points[i], err)
		}
	}
	st.points = st.points[:0]
	return nil
}

// makePoints makes the job's code's mount points (and their parents)
// below /spider, while "/" is writable.
func (st *warmState) makePoints(trees []warmTree, files []*os.File) error {
	for _, t := range trees {
		if t.FD < 0 || t.FD >= len(files) {
			return fmt.Errorf("tree fd %d of %d", t.FD, len(files))
		}
		if t.Target == CodeDir {
			continue
		}
		rel, ok := strings.CutPrefix(t.Target, CodeDir+"/")
		if !ok || rel == "" || filepath.Clean(t.Target) != t.Target {
			return fmt.Errorf("bind target %s is not below %s", t.Target, CodeDir)
		}
		parts := strings.Split(rel, "/")
		dir := CodeDir
		for _, part := range parts[:len(parts)-1] {
			dir += "/" + part
			if err := unix.Mkdir(dir, 0o755); err == nil {
				st.points = append(st.points, dir)
			} else if !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("mount point %s: %w", dir, err)
			}
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
		st.points = append(st.points, t.Target)
	}
	return nil
}

// overwrite writes content over the file at path, in place: a job's
// passwd is the last one's size (uids of the same width), and emptying a
// tmpfs file to write it again costs more than writing it.
func overwrite(path, content string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	n, err := unix.Pwrite(fd, []byte(content), 0)
	if err == nil && n != len(content) {
		err = io.ErrShortWrite
	}
	if err == nil {
		err = unix.Ftruncate(fd, int64(n))
	}
	return err
}

// cleanUp ends what is left of a job: every process of the namespace but
// this init is killed and reaped, its IPC objects are removed, and the job
// directory is emptied and given back to root (its code, read-only, stays
// mounted until a job with other code comes). A non-empty
// answer says why the sandbox is not as built (the init retires).
func (st *warmState) cleanUp() string {
	// No child at all: nothing is left to kill (a kill of -1 walks every
	// process of the host to find the namespace's).
	var ws unix.WaitStatus
	_, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
	for !errors.Is(err, unix.ECHILD) {
		// Again after every reap: a process forked while the last kill
		// went round is caught by the next.
		unix.Kill(-1, unix.SIGKILL)
		_, err = unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			err = nil
			continue
		}
		if err != nil && !errors.Is(err, unix.ECHILD) {
			return "reap: " + err.Error()
		}
	}
	// No child left: every process of the namespace descends from this
	// init, orphans included. (The launcher checks too: the init's
	// cgroups must hold it alone before it takes another job.)
	if err := unix.Chdir("/"); err != nil {
		return err.Error()
	}
	// The job's code stays mounted (read-only, nothing of the job's
	// writes): the next job unmounts it, unless it runs the same code.
	if why := st.sweepIPC(); why != "" {
		return why
	}
	return st.emptyJobDir()
}

// sysvIPC are the kinds of SysV IPC object: how many the namespace has
// (from the kind's *_INFO control call), the /proc/sysvipc file that lists
// them (an object's id in its second column), and how one is removed.
var sysvIPC = []struct {
	count func() (int, error)
	list  string
	rm    func(id int) error
}{
	{
		// struct shm_info: used_ids first.
		func() (int, error) { return ipcCount(unix.SYS_SHMCTL, shmInfo, 0) },
		"/proc/sysvipc/shm",
		func(id int) error { _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); return err },
	},
	{
		// struct seminfo: semusz, the eighth int.
		func() (int, error) { return ipcCount(unix.SYS_SEMCTL, semInfo, 7) },
		"/proc/sysvipc/sem",
		func(id int) error { return ipcctl(unix.SYS_SEMCTL, id, 0, unix.IPC_RMID) },
	},
	{
		// struct msginfo: msgpool first.
		func() (int, error) { return ipcCount(unix.SYS_MSGCTL, msgInfo, 0) },
		"/proc/sysvipc/msg",
		func(id int) error { return ipcctl(unix.SYS_MSGCTL, id, unix.IPC_RMID, 0) },
	},
}

// The *_INFO commands of shmctl, semctl and msgctl (linux/shm.h, sem.h,
// msg.h).
const (
	msgInfo = 12
	shmInfo = 14
	semInfo = 19
)

// ipcCount makes an *_INFO control call (id 0) and returns the int at index
// field of what it filled in.
func ipcCount(trap, cmd uintptr, field int) (int, error) {
	var buf [32]int32 // larger than shm_info, seminfo and msginfo
	var e unix.Errno
	if trap == unix.SYS_SEMCTL { // semctl(id, semnum, cmd, buf)
		_, _, e = unix.Syscall6(trap, 0, 0, cmd, uintptr(unsafe.Pointer(&buf)), 0, 0)
	} else { // shmctl(id, cmd, buf), msgctl(id, cmd, buf)
		_, _, e = unix.Syscall(trap, 0, cmd, uintptr(unsafe.Pointer(&buf)))
	}
	if e != 0 {
		return 0, fmt.Errorf("IPC info: %w", e)
	}
	return int(buf[field]), nil
}

func ipcctl(trap uintptr, id int, a, b uintptr) error {
	if _, _, e := unix.Syscall6(trap, uintptr(id), a, b, 0, 0, 0); e != 0 {
		return e
	}
	return nil
}

// sweepIPC removes what the job left in the init's IPC namespace, once no
// process of the job is left: every SysV shared memory segment, semaphore
// set and message queue, and every POSIX message queue. (The job's POSIX
// shared memory and semaphores are files in /dev/shm, its /tmp.)
func (st *warmState) sweepIPC() string {
	for _, k := range sysvIPC {
		if n, err := k.count(); err != nil {
			return err.Error()
		} else if n == 0 {
			continue
		}
		for pass := 0; ; pass++ {
			ids, err := sysvIDs(k.list)
			if err != nil {
				return err.Error()
			}
			if len(ids) == 0 {
				break
			}
			if pass > 0 {
				return fmt.Sprintf("%s still lists %d objects after their removal", k.list, len(ids))
			}
			for _, id := range ids {
				if err := k.rm(id); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
					return fmt.Sprintf("remove %s %d: %v", k.list, id, err)
				}
			}
		}
	}
	// An mqueue directory's size grows with each queue in it.
	var fi unix.Stat_t
	if st.mq < 0 {
		return ""
	} else if err := unix.Fstat(st.mq, &fi); err != nil {
		return "stat mqueue: " + err.Error()
	} else if fi.Size == 0 {
		return ""
	}
	dir, err := unix.Openat(st.mq, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "open mqueue: " + err.Error()
	}
	f := os.NewFile(uintptr(dir), "mqueue")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return "list mqueue: " + err.Error()
	}
	for _, name := range names {
		if err := unix.Unlinkat(st.mq, name, 0); err != nil {
			return "remove message queue " + name + ": " + err.Error()
		}
	}
	return ""
}

// sysvIDs are the ids of the objects a /proc/sysvipc file lists.
func sysvIDs(list string) ([]int, error) {
	b, err := os.ReadFile(list)
	if err != nil {
		return nil, err
	}
	var ids []int
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 2 {
			continue // the header
		}
		id, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %q", list, line)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// emptyJobDir removes everything the job left in its directory and /tmp,
// and gives both back to root as built: mode 0700, no extended attribute
// (nor ACL). Anything unexpected retires the init.
func (st *warmState) emptyJobDir() string {
	removed := false
	for _, d := range []string{JobDir + "/tmp", JobDir} {
		ents, err := os.ReadDir(d)
		if err != nil {
			return "read " + d + ": " + err.Error()
		}
		for _, e := range ents {
			if d == JobDir && e.Name() == "tmp" {
				continue
			}
			// RemoveAll neither follows symbolic links nor crosses into
			// what it cannot open as a directory of its own.
			if err := os.RemoveAll(filepath.Join(d, e.Name())); err != nil {
				return "empty " + d + ": " + err.Error()
			}
			removed = true
		}
		if d == JobDir && len(ents) != 1 {
			removed = true // no tmp/ (the check below says so)
		}
		if err := unix.Chown(d, 0, 0); err != nil {
			return "chown " + d + ": " + err.Error()
		}
		if err := unix.Chmod(d, 0o700); err != nil {
			return "chmod " + d + ": " + err.Error()
		}
		if why := dropXattrs(d); why != "" {
			return why
		}
	}
	// As built: tmp/ alone in the job directory, the very one at /tmp.
	// (Read again only after a removal: otherwise the lists above were
	// what is there, the job's processes all gone.)
	var a, b unix.Stat_t
	if unix.Lstat(JobDir+"/tmp", &a) != nil || unix.Stat("/tmp", &b) != nil || a.Ino != st.tmp || b.Ino != st.tmp {
		return fmt.Sprintf("%s/tmp is not the /tmp built", JobDir)
	}
	if !removed {
		return ""
	}
	ents, err := os.ReadDir(JobDir)
	if err != nil || len(ents) != 1 || ents[0].Name() != "tmp" {
		return fmt.Sprintf("%s is not as built (%d entries, %v)", JobDir, len(ents), err)
	}
	if ents, err := os.ReadDir("/tmp"); err != nil || len(ents) > 0 {
		return fmt.Sprintf("/tmp is not as built (%d entries, %v)", len(ents), err)
	}
	return ""
}

// dropXattrs removes every extended attribute of path (user ones a job may
// set on its own directory; POSIX ACLs are system.posix_acl_*).
func dropXattrs(path string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(path, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return ""
		}
		return "list xattrs of " + path + ": " + err.Error()
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		if err := unix.Lremovexattr(path, name); err != nil {
			return "remove xattr " + name + " of " + path + ": " + err.Error()
		}
	}
	return ""
}
