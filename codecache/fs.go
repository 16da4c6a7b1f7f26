package codecache

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// settle makes the tree at root readable by any uid and writable by none
// but its owner (directories 0755; files 0755 when any execute bit is set,
// else 0644; links untouched), whatever the umask pip and venv ran with,
// and returns its size on disk: the blocks of every inode, hard links
// counted once.
func settle(root string) (int64, error) {
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var size int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat", p)
		}
		if st.Nlink > 1 && !fi.IsDir() {
			k := inode{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		size += st.Blocks * 512
		var want fs.FileMode
		switch {
		case fi.IsDir():
			want = 0o755
		case fi.Mode().IsRegular() && fi.Mode()&0o111 != 0:
			want = 0o755
		case fi.Mode().IsRegular():
			want = 0o644
		default: // symlinks: their mode means nothing
			return nil
		}
		if fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != want {
			if err := os.Chmod(p, want); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("settle %s: %w", root, err)
	}
	return size, nil
}
