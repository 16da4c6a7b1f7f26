package archive

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/scrapethis/scrapethis"
)

const (
	maxNameBytes      = 1024
	maxComponentBytes = 255
	maxLinkBytes      = 1024
	maxCapturedBytes  = 1 << 20 // scrapy.cfg and scrapethis.json
	macOSFolder       = "__MACOSX"
)

type entryType uint8

const (
	typeDir entryType = iota + 1
	typeFile
	typeSymlink
	typeHardlink
)

// entry is one validated archive entry.
type entry struct {
	name    string // cleaned: relative, slash-separated, no "." or ".." or trailing slash
	typ     entryType
	exec    bool   // regular file with an execute bit
	link    string // symlink target as written, or hardlink target (cleaned)
	ignored bool   // under __MACOSX/: validated, never unpacked
}

// visitFunc receives each directory (body nil) and regular file as soon as
// it is validated; body yields the file's content within the size budget.
// Links are not visited: they can only be judged once the whole archive is
// known (see extract).
type visitFunc func(e *entry, body io.Reader) error

// scanner validates entries one by one and then the archive as a whole.
type scanner struct {
	ctx      context.Context
	lim      Limits
	visit    visitFunc
	entries  []entry
	index    map[string]int      // name -> position in entries
	parents  map[string]struct{} // names that some entry is inside
	unpacked int64
	captured map[string][]byte // scrapy.cfg and scrapethis.json candidates
	src      *sourceReader
}

// scanArchive reads and validates the whole archive, calling visit (if not
// nil) for each directory and file, and returns the project and the entries.
func scanArchive(ctx context.Context, r io.ReaderAt, size int64, contentType string, lim Limits, visit visitFunc) (Project, []entry, error) {
	if size > lim.MaxArchiveBytes {
		return Project{}, nil, scrapethis.Errorf(scrapethis.ETooLarge, "the archive is larger than %s", mib(lim.MaxArchiveBytes))
	}
	format, err := sniffFormat(r, size, contentType)
	if err != nil {
		return Project{}, nil, err
	}
	s := &scanner{
		ctx:      ctx,
		lim:      lim,
		visit:    visit,
		index:    make(map[string]int),
		parents:  make(map[string]struct{}),
		captured: make(map[string][]byte),
		src:      &sourceReader{r: io.NewSectionReader(r, 0, size)},
	}
	if format == FormatZip {
		err = s.scanZip(r, size)
	} else {
		err = s.scanTarGz()
	}
	if err != nil {
		return Project{}, nil, err
	}
	p, err := s.project(format)
	if err != nil {
		return Project{}, nil, err
	}
	return p, s.entries, nil
}

func (s *scanner) scanTarGz() error {
	gz, err := gzip.NewReader(s.src)
	if err != nil {
		return s.streamError(err)
	}
	// Headers, padding and the end blocks come on top of the entries' bytes;
	// no honest archive needs more than this of gzip output.
	stream := &capReader{r: gz, left: s.lim.MaxUnpackedBytes + int64(s.lim.MaxEntries)*(8<<10) + 8<<20}
	tr := tar.NewReader(stream)
	for {
		if err := s.ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return s.streamError(err)
		}
		if len(s.entries) >= s.lim.MaxEntries {
			return s.tooManyEntries()
		}
		mode := h.FileInfo().Mode()
		var typ entryType
		switch {
		case mode&fs.ModeSocket != 0:
			return invalidf("entry %q is a socket", h.Name)
		case mode&fs.ModeNamedPipe != 0 || h.Typeflag == tar.TypeFifo:
			return invalidf("entry %q is a fifo", h.Name)
		case mode&fs.ModeDevice != 0 || h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock:
			return invalidf("entry %q is a device", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeReg, '\x00', tar.TypeGNUSparse:
			typ = typeFile
		case tar.TypeDir:
			typ = typeDir
		case tar.TypeSymlink:
			typ = typeSymlink
		case tar.TypeLink:
			typ = typeHardlink
		default:
			return invalidf("entry %q has an unsupported type %q", h.Name, string(h.Typeflag))
		}
		if err := s.add(h.Name, typ, h.Mode&0o111 != 0, h.Linkname, h.Size, tr); err != nil {
			return err
		}
	}
	// Read gzip's output to its end: that checks its checksum, and the cap
	// stops a bomb hidden after the tar's end.
	if _, err := io.Copy(io.Discard, stream); err != nil {
		return s.streamError(err)
	}
	return nil
}

func (s *scanner) scanZip(r io.ReaderAt, size int64) error {
	zr, err := zip.NewReader(&sourceAt{s: s.src, r: r}, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		if s.src.err != nil {
			return fmt.Errorf("read archive: %w", s.src.err)
		}
		return invalidf("not a valid zip archive: %v", err)
	}
	if len(zr.File) > s.lim.MaxEntries {
		return s.tooManyEntries()
	}
	if err := checkZipSpans(zr.File, size); err != nil {
		return s.sourceOr(err)
	}
	for _, f := range zr.File {
		if err := s.ctx.Err(); err != nil {
			return err
		}
		mode := f.Mode()
		var typ entryType
		switch {
		case mode&fs.ModeSocket != 0:
			return invalidf("entry %q is a socket", f.Name)
		case mode&fs.ModeNamedPipe != 0:
			return invalidf("entry %q is a fifo", f.Name)
		case mode&fs.ModeDevice != 0:
			return invalidf("entry %q is a device", f.Name)
		case mode&fs.ModeIrregular != 0:
			return invalidf("entry %q has an unsupported file type", f.Name)
		case mode&fs.ModeSymlink != 0 && mode.IsDir():
			return invalidf("entry %q is both a directory and a symlink", f.Name)
		case mode&fs.ModeSymlink != 0:
			typ = typeSymlink
		case mode.IsDir():
			typ = typeDir
		default:
			typ = typeFile
		}
		if f.Flags&0x1 != 0 {
			return invalidf("entry %q is encrypted", f.Name)
		}
		if typ == typeDir {
			if err := s.add(f.Name, typ, false, "", 0, nil); err != nil {
				return err
			}
			continue
		}
		if f.Method != zip.Store && f.Method != zip.Deflate {
			return invalidf("entry %q uses compression method %d; only stored and deflated entries are accepted", f.Name, f.Method)
		}
		if err := s.zipEntry(f, typ, mode); err != nil {
			return err
		}
	}
	return nil
}

func (s *scanner) zipEntry(f *zip.File, typ entryType, mode fs.FileMode) error {
	if typ == typeFile && f.UncompressedSize64 > uint64(s.lim.MaxUnpackedBytes-s.unpacked) {
		return s.tooBig(f.Name)
	}
	rc, err := f.Open()
	if err != nil {
		return s.sourceOr(invalidf("entry %q: %v", f.Name, err))
	}
	defer rc.Close()
	var body io.Reader = rc // add counts a file's bytes
	link := ""
	if typ == typeSymlink {
		b, err := io.ReadAll(io.LimitReader(&entryReader{s: s, r: rc, name: f.Name}, maxLinkBytes+1))
		if err != nil {
			return s.bodyError(f.Name, err)
		}
		link, body = string(b), nil
	}
	return s.add(f.Name, typ, mode&0o111 != 0, link, int64(f.UncompressedSize64), body)
}

// checkZipSpans refuses entries whose data lies past the archive's end or
// overlaps another entry's: the trick of zip bombs that reuse one
// compressed kernel for many entries.
func checkZipSpans(files []*zip.File, size int64) error {
	type span struct {
		start, end int64
		name       string
	}
	spans := make([]span, 0, len(files))
	for _, f := range files {
		off, err := f.DataOffset()
		if err != nil {
			return invalidf("entry %q: %v", f.Name, err)
		}
		if f.CompressedSize64 > uint64(size) || off+int64(f.CompressedSize64) > size {
			return invalidf("entry %q: its data runs past the end of the archive", f.Name)
		}
		if f.CompressedSize64 > 0 {
			spans = append(spans, span{off, off + int64(f.CompressedSize64), f.Name})
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	for i := 1; i < len(spans); i++ {
		if spans[i].start < spans[i-1].end {
			return invalidf("entries %q and %q overlap (a zip bomb?)", spans[i-1].name, spans[i].name)
		}
	}
	return nil
}

// add validates one entry against those before it and, for a directory or
// a regular file, hands it to visit and reads its body to the end.
func (s *scanner) add(raw string, typ entryType, exec bool, link string, declared int64, body io.Reader) error {
	name, err := cleanName(raw)
	if err != nil {
		return err
	}
	if name == "" {
		if typ != typeDir {
			return invalidf("entry %q has no name", raw)
		}
		return nil // the archive's root, "./"
	}
	if _, dup := s.index[name]; dup {
		return invalidf("duplicate entry %q", raw)
	}
	for i := strings.IndexByte(name, '/'); i >= 0; i = nextSlash(name, i) {
		parent := name[:i]
		if j, ok := s.index[parent]; ok && s.entries[j].typ != typeDir {
			if s.entries[j].typ == typeSymlink {
				return invalidf("entry %q is written through symlink %q", raw, parent)
			}
			return invalidf("entry %q is inside %q, which is not a directory", raw, parent)
		}
		s.parents[parent] = struct{}{}
	}
	if _, ok := s.parents[name]; ok && typ != typeDir {
		if typ == typeSymlink {
			return invalidf("symlink %q replaces a directory that earlier entries are written into", raw)
		}
		return invalidf("entry %q is not a directory, but earlier entries are inside it", raw)
	}
	e := entry{name: name, typ: typ, ignored: name == macOSFolder || strings.HasPrefix(name, macOSFolder+"/")}
	switch typ {
	case typeFile:
		e.exec = exec
		if declared > s.lim.MaxUnpackedBytes-s.unpacked {
			return s.tooBig(raw)
		}
	case typeSymlink:
		if err := checkSymlinkTarget(raw, name, link); err != nil {
			return err
		}
		e.link = link
	case typeHardlink:
		target, err := cleanName(link)
		if err != nil || target == "" {
			return invalidf("hardlink %q points outside the archive (target %q)", raw, link)
		}
		if j, ok := s.index[target]; !ok || s.entries[j].typ != typeFile {
			return invalidf("hardlink %q: its target %q is not an earlier regular file of the archive", raw, link)
		}
		e.link = target
	}
	s.index[name] = len(s.entries)
	s.entries = append(s.entries, e)
	if typ != typeFile && typ != typeDir {
		return nil
	}
	if typ == typeFile {
		body = s.capture(&e, &entryReader{s: s, r: body, name: raw})
	}
	if s.visit != nil && !e.ignored {
		if err := s.visit(&e, body); err != nil {
			return s.bodyError(raw, err)
		}
	}
	if body != nil {
		if _, err := io.Copy(io.Discard, body); err != nil {
			return s.bodyError(raw, err)
		}
	}
	return nil
}

func nextSlash(name string, i int) int {
	j := strings.IndexByte(name[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// capture keeps a copy of the files project detection reads: scrapy.cfg
// and scrapethis.json at the root or one folder down.
func (s *scanner) capture(e *entry, body io.Reader) io.Reader {
	base := path.Base(e.name)
	if e.ignored || (base != "scrapy.cfg" && base != "scrapethis.json") || strings.Count(e.name, "/") > 1 {
		return body
	}
	buf := &cappedBuffer{max: maxCapturedBytes + 1}
	s.captured[e.name] = nil
	return io.TeeReader(body, captureSink{s: s, name: e.name, buf: buf})
}

type cappedBuffer struct {
	bytes.Buffer
	max int
}

type captureSink struct {
	s    *scanner
	name string
	buf  *cappedBuffer
}

func (c captureSink) Write(p []byte) (int, error) {
	if room := c.buf.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	c.s.captured[c.name] = c.buf.Bytes()
	return len(p), nil
}

// cleanName validates an entry's name and returns it cleaned ("" for the
// archive's root).
func cleanName(raw string) (string, error) {
	if raw == "" {
		return "", invalidf("an entry has an empty name")
	}
	if len(raw) > maxNameBytes {
		return "", invalidf("entry %q: name longer than %d bytes", raw, maxNameBytes)
	}
	for i := 0; i < len(raw); i++ {
		switch b := raw[i]; {
		case b < 0x20 || b == 0x7f:
			return "", invalidf("entry %q: name contains a control character", raw)
		case b == '\\':
			return "", invalidf("entry %q: name contains a backslash", raw)
		}
	}
	if raw[0] == '/' {
		return "", invalidf("entry %q: absolute path", raw)
	}
	parts := strings.Split(raw, "/")
	out := parts[:0]
	for _, c := range parts {
		switch {
		case c == "" || c == ".":
			continue
		case c == "..":
			return "", invalidf("entry %q: path contains \"..\"", raw)
		case len(c) > maxComponentBytes:
			return "", invalidf("entry %q: a name component is longer than %d bytes", raw, maxComponentBytes)
		}
		out = append(out, c)
	}
	return strings.Join(out, "/"), nil
}

// checkSymlinkTarget refuses what is outside on its face: an absolute
// target, or one whose ".." climb above the archive's root. Links through
// links are resolved once the whole archive is known (resolveLinks).
func checkSymlinkTarget(raw, name, target string) error {
	switch {
	case target == "":
		return invalidf("symlink %q has an empty target", raw)
	case len(target) > maxLinkBytes || strings.IndexByte(target, 0) >= 0:
		return invalidf("symlink %q has an invalid target", raw)
	case target[0] == '/':
		return invalidf("symlink %q points outside the archive (absolute target %q)", raw, target)
	}
	depth := strings.Count(name, "/")
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			if depth--; depth < 0 {
				return invalidf("symlink %q points outside the archive (target %q)", raw, target)
			}
		default:
			depth++
		}
	}
	return nil
}

func (s *scanner) tooManyEntries() error {
	return invalidf("the archive has more than %d entries", s.lim.MaxEntries)
}

func (s *scanner) tooBig(name string) error {
	return invalidf("the archive unpacks to more than %s (entry %q)", mib(s.lim.MaxUnpackedBytes), name)
}

// bodyError classifies an error met while reading or writing an entry.
func (s *scanner) bodyError(name string, err error) error {
	var e *scrapethis.Error
	switch {
	case s.src.err != nil:
		return fmt.Errorf("read archive: %w", s.src.err)
	case errors.As(err, &e), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, errStreamCap):
		return s.streamError(err)
	case errors.Is(err, errWrite):
		return err
	case errors.Is(err, zip.ErrFormat), errors.Is(err, zip.ErrChecksum):
		return invalidf("entry %q is corrupt: its data does not match its header (%v)", name, err)
	}
	return invalidf("entry %q is corrupt: %v", name, err)
}

// streamError classifies an error of the gzip or tar stream.
func (s *scanner) streamError(err error) error {
	var e *scrapethis.Error
	switch {
	case s.src.err != nil:
		return fmt.Errorf("read archive: %w", s.src.err)
	case errors.As(err, &e), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, errStreamCap):
		return invalidf("the archive unpacks to more than %s (a gzip bomb?)", mib(s.lim.MaxUnpackedBytes))
	}
	return invalidf("not a valid tar.gz archive: %v", err)
}

// sourceOr returns the source's read error if there was one, else err.
func (s *scanner) sourceOr(err error) error {
	if s.src.err != nil {
		return fmt.Errorf("read archive: %w", s.src.err)
	}
	return err
}

var (
	errStreamCap = errors.New("decompressed stream over its cap")
	// errWrite marks failures to write the extracted tree: internal, not the
	// archive's fault.
	errWrite = errors.New("write")
)

// sourceReader reads the archive and remembers a read error of its own, so
// that a failing disk is not blamed on the archive.
type sourceReader struct {
	r   *io.SectionReader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// sourceAt is the io.ReaderAt side of sourceReader, for zip.
type sourceAt struct {
	s *sourceReader
	r io.ReaderAt
}

func (a *sourceAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := a.r.ReadAt(p, off)
	if err != nil && err != io.EOF && a.s.err == nil {
		a.s.err = err
	}
	return n, err
}

// capReader fails once more than left bytes were read.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errStreamCap
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// entryReader counts an entry's real bytes against the archive's budget.
type entryReader struct {
	s    *scanner
	r    io.Reader
	name string
}

func (r *entryReader) Read(p []byte) (int, error) {
	if err := r.s.ctx.Err(); err != nil {
		return 0, err
	}
	if room := r.s.lim.MaxUnpackedBytes - r.s.unpacked + 1; int64(len(p)) > room {
		p = p[:room] // one byte past the budget is enough to know
	}
	n, err := r.r.Read(p)
	r.s.unpacked += int64(n)
	if r.s.unpacked > r.s.lim.MaxUnpackedBytes {
		return n, r.s.tooBig(r.name)
	}
	return n, err
}
