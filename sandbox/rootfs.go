package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
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

// devices are the sandbox's /dev nodes: name, major, minor.
var devices = []struct {
	name         string
	major, minor uint32
}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}

// source is one entry of the sandbox's root: a host path to bind
// read-only, or a symbolic link to recreate. The launcher resolves the
// system part once (systemRoot) and sends it with every request; the
// init resolves a policy's binds itself, while its "/" is still the host's.
type source struct {
	Path   string `json:",omitempty"` // real path on the host, no symbolic links
	Link   string `json:",omitempty"` // a symbolic link to recreate instead of a bind
	Dir    bool   `json:",omitempty"`
	Target string
	// Optional: a system entry, skipped if it has gone since it was
	// resolved (a policy's bind must exist).
	Optional bool `json:",omitempty"`
}

// systemRoot resolves the system directories and the curated /etc, once
// per launcher: the init binds them by path at every start, so a file
// replaced since (a new resolv.conf) is the new one; an entry created
// since (a new /etc/python3.x) appears at the worker's next start.
func systemRoot() ([]source, error) {
	var out []source
	add := func(host string, keepLink bool) error {
		s, ok, err := resolve(host, host, keepLink)
		if err != nil {
			return err
		}
		if ok {
			s.Optional = true
			out = append(out, s)
		}
		return nil
	}
	for _, d := range systemPaths {
		if err := add(d, true); err != nil {
			return nil, err
		}
	}
	for _, e := range etcEntries {
		matches, _ := filepath.Glob(filepath.Join("/etc", e))
		for _, m := range matches {
			if err := add(m, false); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func resolve(host, target string, keepLink bool) (source, bool, error) {
	if keepLink {
		if fi, err := os.Lstat(host); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			l, err := os.Readlink(host)
			return source{Link: l, Target: target}, err == nil, err
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
	return source{Path: real, Dir: fi.IsDir(), Target: target}, true, nil
}

// build makes the sandbox's root from system (the launcher's systemRoot)
// and the policy, and pivots into it. Everything but /job, /tmp and /proc
// is read-only, nosuid and nodev (/dev: its nodes work, nothing executes).
func build(p Policy, system []source) error { return buildRoot(p, system, false) }

// buildRoot builds the root; warm, only its system part: mount points
// instead of the job directory, /tmp, /spider and the passwd and group
// files, which every job of a warm init gets afresh (see setUpJob).
func buildRoot(p Policy, system []source, warm bool) error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	unix.Sethostname([]byte("scrapethis-job"))
	// mount_setattr (Linux 5.12) makes the whole tree read-only in one
	// call once it is built; without it every bind is remounted read-only
	// as it is made.
	b := &rootBuilder{setattr: unix.MountSetattr(unix.AT_FDCWD, "/", 0, &unix.MountAttr{}) == nil}

	// The policy's binds are resolved while "/" is still the host's.
	srcs := make([]source, 0, len(system)+len(p.Binds))
	for _, s := range system {
		if s.Target == "/etc/resolv.conf" && p.ResolvConf != "" {
			continue // written below
		}
		srcs = append(srcs, s)
	}
	for _, m := range p.Binds {
		s, ok, err := resolve(m.Source, m.Target, false)
		if err != nil {
			return fmt.Errorf("bind %s: %w", m.Source, err)
		}
		if !ok {
			return fmt.Errorf("bind %s: %s does not exist", m.Source, m.Source)
		}
		srcs = append(srcs, s)
	}

	// The new root is a small tmpfs, mounted over /tmp for the moment:
	// pivot_root puts the host's root at /.old, with its /tmp uncovered.
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=4m,mode=0755"); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	if err := unix.Mkdir("/tmp/.old", 0o700); err != nil {
		return fmt.Errorf("mkdir /.old: %w", err)
	}
	if err := unix.PivotRoot("/tmp", "/tmp/.old"); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	for _, s := range srcs {
		if err := b.place(s); err != nil {
			return err
		}
	}
	for _, f := range []struct{ path, content string }{{"/etc/passwd", passwdFor(p)}, {"/etc/group", groupFor(p)}} {
		var err error
		if warm {
			err = b.mkfile(f.path)
		} else {
			err = b.writeFile(f.path, f.content)
		}
		if err != nil {
			return err
		}
	}
	if p.ResolvConf != "" {
		if err := b.writeFile("/etc/resolv.conf", p.ResolvConf); err != nil {
			return err
		}
	}
	// Mount points of what stays writable, made while "/" still is.
	points := []string{"/dev", "/proc", p.Dir, "/tmp"}
	if warm {
		points = append(points, CodeDir)
	}
	for _, d := range points {
		if err := b.mkdirs(d); err != nil {
			return err
		}
	}

	// A minimal /dev: its own nodes (or, where this init may not make
	// device nodes, binds of the host's).
	if err := unix.Mount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, d := range devices {
		t := "/dev/" + d.name
		err := unix.Mknod(t, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor)))
		if err == nil {
			err = unix.Chmod(t, 0o666) // past the umask
		} else if errors.Is(err, unix.EPERM) {
			err = b.bindDevice(d.name)
		}
		if err != nil {
			return fmt.Errorf("/dev/%s: %w", d.name, err)
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2", "shm": "/tmp"} {
		if err := unix.Symlink(target, "/dev/"+name); err != nil {
			return fmt.Errorf("symlink /dev/%s: %w", name, err)
		}
	}

	if err := unix.Unmount("/.old", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the host's root: %w", err)
	}
	if err := unix.Rmdir("/.old"); err != nil {
		return fmt.Errorf("rmdir /.old: %w", err)
	}
	if err := b.readOnly(); err != nil {
		return err
	}

	// Its own /proc: only the processes of this PID namespace.
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if warm {
		return unix.Chdir("/")
	}
	return jobDir(p)
}

// passwdFor and groupFor are the sandbox's /etc/passwd and /etc/group.
func passwdFor(p Policy) string {
	return fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nspider:x:%d:%d:spider:%s:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", p.UID, p.GID, p.Dir)
}

func groupFor(p Policy) string {
	return fmt.Sprintf("root:x:0:\nspider:x:%d:\nnogroup:x:65534:\n", p.GID)
}

// jobDir mounts the job directory and its tmp/ at /tmp, and goes there.
func jobDir(p Policy) error {
	// The job directory: private, size-limited, the only writable place.
	opts := fmt.Sprintf("size=%dm,mode=0700,uid=%d,gid=%d", p.Limits.DiskMB, p.UID, p.GID)
	if err := unix.Mount("tmpfs", p.Dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount the job directory: %w", err)
	}
	jobTmp := filepath.Join(p.Dir, "tmp")
	if err := unix.Mkdir(jobTmp, 0o700); err != nil {
		return fmt.Errorf("mkdir %s: %w", jobTmp, err)
	}
	if err := unix.Chown(jobTmp, p.UID, p.GID); err != nil {
		return fmt.Errorf("chown %s: %w", jobTmp, err)
	}
	if err := unix.Mount(jobTmp, "/tmp", "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind /tmp: %w", err)
	}
	return unix.Chdir(p.Dir)
}

// rootBuilder makes the new root, after the pivot.
type rootBuilder struct {
	setattr bool
	// binds are the targets bound so far: nothing is ever created below
	// one (that would write to the host while it is not read-only yet).
	binds []string
}

const roFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV

// place recreates a symbolic link, or binds a host path read-only.
func (b *rootBuilder) place(s source) error {
	if s.Link != "" {
		if err := b.mkdirs(filepath.Dir(s.Target)); err != nil {
			return err
		}
		if err := b.inBind(s.Target); err != nil {
			if err == errExists {
				err = fmt.Errorf("symlink %s: inside a bind", s.Target)
			}
			return err
		}
		if err := unix.Symlink(s.Link, s.Target); err != nil {
			return fmt.Errorf("symlink %s: %w", s.Target, err)
		}
		return nil
	}
	var err error
	if s.Dir {
		err = b.mkdirs(s.Target)
	} else {
		err = b.mkfile(s.Target)
	}
	if err != nil {
		return err
	}
	if err := unix.Mount("/.old"+s.Path, s.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		if s.Optional && errors.Is(err, unix.ENOENT) {
			return nil // gone from the host since the launcher looked
		}
		return fmt.Errorf("bind %s: %w", s.Path, err)
	}
	b.binds = append(b.binds, s.Target)
	if !b.setattr {
		if err := unix.Mount("", s.Target, "", unix.MS_REMOUNT|unix.MS_BIND|roFlags, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", s.Target, err)
		}
	}
	return nil
}

// bindDevice binds the host's /dev/name: for an init that may not make
// device nodes (a user namespace's root).
func (b *rootBuilder) bindDevice(name string) error {
	t := "/dev/" + name
	if err := b.mkfile(t); err != nil {
		return err
	}
	return unix.Mount("/.old/dev/"+name, t, "", unix.MS_BIND, "")
}

// readOnly makes the whole root read-only, nosuid and nodev, then lets
// /dev's nodes work again (its tmpfs stays noexec).
func (b *rootBuilder) readOnly() error {
	if !b.setattr {
		for d, flags := range map[string]uintptr{"/dev": unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NOEXEC, "/": roFlags} {
			if err := unix.Mount("", d, "", unix.MS_REMOUNT|unix.MS_BIND|flags, ""); err != nil {
				return fmt.Errorf("make %s read-only: %w", d, err)
			}
		}
		return nil
	}
	ro := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", unix.AT_RECURSIVE, ro); err != nil {
		return fmt.Errorf("make the root read-only: %w", err)
	}
	dev := &unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(unix.AT_FDCWD, "/dev", unix.AT_RECURSIVE, dev); err != nil {
		return fmt.Errorf("allow /dev's nodes: %w", err)
	}
	return nil
}

// inBind reports whether path lies below a bind made so far: nothing may
// be created there (it would be made on the host, whose files the bind
// shows before the tree goes read-only); it must exist already.
func (b *rootBuilder) inBind(path string) error {
	for _, t := range b.binds {
		if strings.HasPrefix(path, t+"/") {
			if _, err := os.Lstat(path); err != nil {
				return fmt.Errorf("%s is inside the bind of %s and does not exist there", path, t)
			}
			return errExists
		}
	}
	return nil
}

var errExists = errors.New("exists")

// mkdirs makes dir and its missing parents on the new root.
func (b *rootBuilder) mkdirs(dir string) error {
	if err := b.inBind(dir); err != nil {
		return ignoreExists(err)
	}
	err := unix.Mkdir(dir, 0o755)
	if err == nil || errors.Is(err, unix.EEXIST) {
		return nil
	}
	if !errors.Is(err, unix.ENOENT) || dir == "/" {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	if err := b.mkdirs(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := unix.Mkdir(dir, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("mkdir %s: %w", dir, err)
	}
	return nil
}

func ignoreExists(err error) error {
	if err == errExists {
		return nil
	}
	return err
}

// mkfile makes an empty file to bind a file over.
func (b *rootBuilder) mkfile(path string) error {
	if err := b.inBind(path); err != nil {
		return ignoreExists(err)
	}
	if err := b.mkdirs(filepath.Dir(path)); err != nil {
		return err
	}
	if err := unix.Mknod(path, unix.S_IFREG|0o644, 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return nil
}

// writeFile writes a small file of the new root (not below a bind).
func (b *rootBuilder) writeFile(path, content string) error {
	if err := b.inBind(path); err != nil {
		if err == errExists {
			err = fmt.Errorf("%s is inside a bind", path)
		}
		return err
	}
	if err := b.mkdirs(filepath.Dir(path)); err != nil {
		return err
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = unix.Write(fd, []byte(content))
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
