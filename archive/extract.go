package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// TempInfix is in the name of the directories Extract unpacks into before
// renaming them to dest ("<dest>.tmp-<random>"); one left by a crash can be
// removed.
const TempInfix = ".tmp-"

// Extract validates the archive again while it unpacks it, and puts the
// project (its top-level folder stripped) at dest, which must not exist or be
// an empty directory; dest's parent must exist. It unpacks into a temporary
// sibling directory and renames it to dest only once the whole archive was
// judged safe, so dest holds a whole project or nothing. Files get mode 0644,
// or 0755 when the archive gives them any execute bit; directories 0755; no
// setuid, setgid, sticky bit or ownership is ever applied. Writes go through
// an os.Root, and links are created last, once every link is known to stay
// inside the project. If dest appears meanwhile (another process unpacked the
// same archive), the error matches fs.ErrExist and dest is left alone.
func Extract(ctx context.Context, r io.ReaderAt, size int64, contentType string, lim Limits, dest string) (Project, error) {
	return extract(ctx, r, size, contentType, lim.withDefaults(), dest, nil)
}

func extract(ctx context.Context, r io.ReaderAt, size int64, contentType string, lim Limits, dest string, expect *Project) (Project, error) {
	dest = filepath.Clean(dest)
	if err := checkDest(dest); err != nil {
		return Project{}, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dest), filepath.Base(dest)+TempInfix)
	if err != nil {
		return Project{}, fmt.Errorf("extract: %w", err)
	}
	defer os.RemoveAll(tmp) // gone already once renamed to dest
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return Project{}, fmt.Errorf("extract: %w", err)
	}
	defer root.Close()
	w := &treeWriter{root: root, dirs: map[string]bool{}}
	p, entries, err := scanArchive(ctx, r, size, contentType, lim, w.visit)
	if err != nil {
		return Project{}, err
	}
	if expect != nil && !sameProject(p, *expect) {
		return Project{}, fmt.Errorf("extract %s: the archive changed since it was opened", dest)
	}
	for _, typ := range []entryType{typeHardlink, typeSymlink} {
		for _, e := range entries {
			if e.typ != typ || e.ignored {
				continue
			}
			if err := w.link(e); err != nil {
				return Project{}, err
			}
		}
	}
	src := tmp
	if p.Root != "" {
		src = filepath.Join(tmp, filepath.FromSlash(p.Root))
		if err := w.mkdirs(p.Root); err != nil { // a top folder of links only
			return Project{}, err
		}
	}
	if err := os.Chmod(src, 0o755); err != nil {
		return Project{}, fmt.Errorf("extract: %w", err)
	}
	// syscall.Rename, not os.Rename: os.Rename refuses to replace an empty
	// directory, which rename(2) does atomically.
	if err := syscall.Rename(src, dest); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return Project{}, fmt.Errorf("extract: %s already exists: %w", dest, fs.ErrExist)
		}
		return Project{}, fmt.Errorf("extract: rename %s to %s: %w", src, dest, err)
	}
	return p, nil
}

func checkDest(dest string) error {
	fi, err := os.Lstat(dest)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("extract: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("extract: %s already exists: %w", dest, fs.ErrExist)
	}
	f, err := os.Open(dest)
	if err != nil {
		return fmt.Errorf("extract: %w", err)
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); err != io.EOF {
		return fmt.Errorf("extract: %s already exists and is not empty: %w", dest, fs.ErrExist)
	}
	return nil
}

// treeWriter writes validated entries under root, with modes of its own.
type treeWriter struct {
	root *os.Root
	dirs map[string]bool // directories made so far
}

func (w *treeWriter) visit(e *entry, body io.Reader) error {
	if e.typ == typeDir {
		return w.mkdirs(e.name)
	}
	if dir, _, ok := cutLast(e.name); ok {
		if err := w.mkdirs(dir); err != nil {
			return err
		}
	}
	f, err := w.root.OpenFile(e.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w %s: %v", errWrite, e.name, err)
	}
	defer f.Close()
	if _, err := io.Copy(fileWriter{f}, body); err != nil {
		return err
	}
	mode := fs.FileMode(0o644)
	if e.exec {
		mode = 0o755
	}
	if err := f.Chmod(mode); err != nil { // fchmod: the umask does not apply
		return fmt.Errorf("%w %s: %v", errWrite, e.name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%w %s: %v", errWrite, e.name, err)
	}
	return nil
}

// mkdirs makes name and its parents, each 0755 whatever the umask.
func (w *treeWriter) mkdirs(name string) error {
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '/' {
			continue
		}
		p := name[:i]
		if w.dirs[p] {
			continue
		}
		if err := w.root.Mkdir(p, 0o755); err != nil {
			return fmt.Errorf("%w %s: %v", errWrite, p, err)
		}
		if err := w.root.Chmod(p, 0o755); err != nil {
			return fmt.Errorf("%w %s: %v", errWrite, p, err)
		}
		w.dirs[p] = true
	}
	return nil
}

func (w *treeWriter) link(e entry) error {
	if dir, _, ok := cutLast(e.name); ok {
		if err := w.mkdirs(dir); err != nil {
			return err
		}
	}
	var err error
	if e.typ == typeHardlink {
		err = w.root.Link(e.link, e.name)
	} else {
		err = w.root.Symlink(e.link, e.name)
	}
	if err != nil {
		return fmt.Errorf("extract: link %s: %w", e.name, err)
	}
	return nil
}

// fileWriter marks write errors as the extractor's, not the archive's.
type fileWriter struct{ f *os.File }

func (w fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		err = fmt.Errorf("%w %s: %v", errWrite, w.f.Name(), err)
	}
	return n, err
}
