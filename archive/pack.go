package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Pack makes a .tar.gz of the project directory dir for `scrapethis deploy`,
// with the project at the archive's root. It leaves out .git, __pycache__,
// *.pyc and *.pyo, .scrapy, virtualenvs (venv, .venv and any directory
// holding a pyvenv.cfg). It is deterministic: entries sorted by name, mode
// 0644 or 0755 (any execute bit), mtimes and owners zeroed, so the same tree
// gives the same bytes and the same sha256 and re-deploying unchanged code
// finds the existing version. A symlink is kept as a relative link to its
// target, and refused if that target is outside dir (a dangling link is kept as it
// is when it stays inside); any other kind of file
// (socket, fifo, device) is refused.
func Pack(ctx context.Context, dir string) ([]byte, error) {
	top, err := filepath.Abs(dir)
	if err == nil {
		top, err = filepath.EvalSymlinks(top)
	}
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", dir, err)
	}
	if fi, err := os.Stat(top); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("pack %s: not a directory", dir)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf) // no name, no mtime in its header
	tw := tar.NewWriter(gz)
	epoch := time.Unix(0, 0)
	err = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == top {
			return nil
		}
		rel, err := filepath.Rel(top, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if skip, err := excluded(p, d); skip || err != nil {
			if err == nil && d.IsDir() {
				return fs.SkipDir
			}
			return err
		}
		h := &tar.Header{Name: name, ModTime: epoch, Format: tar.FormatPAX}
		switch t := d.Type(); {
		case t.IsDir():
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, name+"/", 0o755
			return tw.WriteHeader(h)
		case t.IsRegular():
			return packFile(tw, h, p)
		case t&fs.ModeSymlink != 0:
			target, err := packLink(top, p)
			if err != nil {
				return err
			}
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, target, 0o777
			return tw.WriteHeader(h)
		default:
			return fmt.Errorf("%s is not a regular file, directory or symlink (%s)", name, t)
		}
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = gz.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", dir, err)
	}
	return buf.Bytes(), nil
}

// excluded reports whether p stays out of the archive.
func excluded(p string, d fs.DirEntry) (bool, error) {
	name := d.Name()
	switch name {
	case ".git", "__pycache__", ".scrapy", "venv", ".venv":
		return true, nil
	}
	if !d.IsDir() {
		return strings.HasSuffix(name, ".pyc") || strings.HasSuffix(name, ".pyo"), nil
	}
	_, err := os.Lstat(filepath.Join(p, "pyvenv.cfg"))
	switch {
	case err == nil:
		return true, nil // a virtualenv
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

func packFile(tw *tar.Writer, h *tar.Header, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s changed while packing", h.Name)
	}
	h.Typeflag, h.Size, h.Mode = tar.TypeReg, fi.Size(), 0o644
	if fi.Mode()&0o111 != 0 {
		h.Mode = 0o755
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	return nil
}

func inside(top, p string) bool {
	rel, err := filepath.Rel(top, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// packLink returns the symlink at p as a relative link to its final target,
// refusing one whose target is outside top or missing.
func packLink(top, p string) (string, error) {
	rel, _ := filepath.Rel(top, p)
	raw, err := os.Readlink(p)
	if err != nil {
		return "", err
	}
	resolved, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) && !filepath.IsAbs(raw) && inside(top, filepath.Join(filepath.Dir(p), raw)) {
		return filepath.ToSlash(raw), nil // dangling but inside, as editors' lock files
	}
	if err != nil {
		return "", fmt.Errorf("symlink %s: %w", filepath.ToSlash(rel), err)
	}
	if !inside(top, resolved) {
		return "", fmt.Errorf("symlink %s points outside %s (to %s); copy the file in instead", filepath.ToSlash(rel), top, resolved)
	}
	target, err := filepath.Rel(filepath.Dir(p), resolved)
	if err != nil {
		return "", fmt.Errorf("symlink %s: %w", filepath.ToSlash(rel), err)
	}
	return filepath.ToSlash(target), nil
}
