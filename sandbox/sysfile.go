package sandbox

import (
	"os"

	"golang.org/x/sys/unix"
)

// readSmall reads a small file of /proc or a cgroup in open, read and
// close: os.ReadFile adds an fstat, the poller's registration and its
// removal, which for the few such files a job's start and end read are
// most of the cost.
func readSmall(path string) ([]byte, error) { return readAt(unix.AT_FDCWD, path) }

// readAt is readSmall of name in the directory dir (an fd): a cgroup's
// files are looked up from its directory, not along the whole path.
func readAt(dir int, path string) ([]byte, error) {
	fd, err := openRetry(dir, path, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// writeSmall writes data to a cgroup or /proc file in one write, as
// readSmall reads.
func writeSmall(path, data string) error { return writeAt(unix.AT_FDCWD, path, data) }

// writeAt is writeSmall of name in the directory dir, as readAt.
func writeAt(dir int, path, data string) error {
	fd, err := openRetry(dir, path, unix.O_WRONLY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Write(fd, []byte(data))
		if err == unix.EINTR {
			continue
		}
		if err == nil && n != len(data) {
			err = unix.EIO
		}
		if err != nil {
			return &os.PathError{Op: "write", Path: path, Err: err}
		}
		return nil
	}
}

func openRetry(dir int, path string, mode int) (int, error) {
	for {
		fd, err := unix.Openat(dir, path, mode|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}
