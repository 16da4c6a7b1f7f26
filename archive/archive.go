// Package archive validates, inspects, unpacks and packs project archives:
// the .tar.gz or .zip bodies that `POST /api/v1/projects/{name}/versions`
// receives, that workers unpack into their local cache, and that
// `scrapethis deploy` builds from a project directory.
//
// Every archive is read in full before it is trusted: entry names, entry
// types, links, the entry count and the real decompressed size (never the
// sizes its headers claim). Every refusal is a scrapethis.Error with code
// EInvalid (ETooLarge for a body over Limits.MaxArchiveBytes) whose message
// names the problem and the entry.
//
// Rules, beyond the obvious ones:
//   - names are slash-separated and relative; "./" prefixes are dropped; a
//     component "..", a backslash, a NUL or another control character, a
//     component over 255 bytes or a name over 1024 bytes is refused;
//   - a symlink must resolve inside the project, followed the way the kernel
//     does (relative to the link's directory, through other links, at most 40
//     hops); no entry may sit below a symlink ("symlink then write through
//     it"), whichever comes first in the archive; a hardlink must name an
//     earlier regular file;
//   - devices, fifos, sockets, encrypted zip entries and zip entries whose
//     data overlaps another's are refused;
//   - entries under a top-level "__MACOSX/" folder (Finder's resource forks)
//     are validated but neither unpacked nor counted as a top-level folder;
//   - the project is at the archive's root or inside its one top-level
//     folder, and holds scrapy.cfg or scrapethis.json (not both).
package archive

import (
	"context"
	"fmt"
	"io"
	"mime"
	"regexp"

	"github.com/scrapethis/scrapethis"
)

// Defaults of Limits' zero fields.
const (
	DefaultMaxArchiveBytes  = 50 << 20
	DefaultMaxUnpackedBytes = 200 << 20
	DefaultMaxEntries       = 10000
)

// Limits bound what an archive may hold. A zero (or negative) field takes
// its default.
type Limits struct {
	MaxArchiveBytes  int64 // the archive's own size (SCRAPETHIS_UPLOAD_MAX_MB)
	MaxUnpackedBytes int64 // real decompressed bytes of all entries (SCRAPETHIS_UNPACK_MAX_MB)
	MaxEntries       int   // files, directories and links (SCRAPETHIS_ARCHIVE_MAX_ENTRIES)
}

func (l Limits) withDefaults() Limits {
	if l.MaxArchiveBytes <= 0 {
		l.MaxArchiveBytes = DefaultMaxArchiveBytes
	}
	if l.MaxUnpackedBytes <= 0 {
		l.MaxUnpackedBytes = DefaultMaxUnpackedBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	return l
}

// Format is an archive's container format.
type Format string

// Formats.
const (
	FormatTarGz Format = "tar.gz"
	FormatZip   Format = "zip"
)

// ContentType is the canonical Content-Type of the format, the one to store
// with an archive and to pass back to Open or Extract.
func (f Format) ContentType() string {
	if f == FormatZip {
		return "application/zip"
	}
	return "application/gzip"
}

// Kind is what a project archive holds.
type Kind string

// Kinds.
const (
	KindScrapy Kind = "scrapy" // a scrapy.cfg project, run with `scrapy crawl NAME`
	KindBundle Kind = "bundle" // executables named by a scrapethis.json manifest
)

// Project is what a validated archive holds.
type Project struct {
	Format Format
	Kind   Kind
	// Root is the archive's one top-level folder that holds the project,
	// stripped by Extract, or "" when the project is at the archive's root.
	Root string
	// SettingsModule and ScrapyProject are scrapy.cfg's [settings] default
	// and [deploy] project, "" when absent. Scrapy projects only.
	SettingsModule string
	ScrapyProject  string
	// Spiders maps each manifest spider name to its executable, a slash-
	// separated path relative to the project root. Bundles only.
	Spiders map[string]string
	// Requirements: requirements.txt is a file at the project root.
	Requirements bool
	// Wheels: wheels/ is a directory at the project root.
	Wheels bool

	Entries       int   // entries in the archive, counting directories and links
	UnpackedBytes int64 // real decompressed bytes of its files
}

// namePattern is the pattern of spider names in a bundle manifest, the same
// as project names in the API: a letter or digit, then up to 63 letters,
// digits, dots, underscores or hyphens.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether s is a valid bundle spider name (the pattern of
// project names too).
func ValidName(s string) bool { return namePattern.MatchString(s) }

// Archive is an archive that Open validated in full.
type Archive struct {
	r           io.ReaderAt
	size        int64
	contentType string
	lim         Limits
	project     Project
}

// Open validates the whole archive of size bytes at r, sent with
// contentType, and detects its project. Nothing is written anywhere.
func Open(ctx context.Context, r io.ReaderAt, size int64, contentType string, lim Limits) (*Archive, error) {
	lim = lim.withDefaults()
	p, _, err := scanArchive(ctx, r, size, contentType, lim, nil)
	if err != nil {
		return nil, err
	}
	return &Archive{r: r, size: size, contentType: contentType, lim: lim, project: p}, nil
}

// Check is Open for callers that want only the verdict and the project.
func Check(ctx context.Context, r io.ReaderAt, size int64, contentType string, lim Limits) (Project, error) {
	a, err := Open(ctx, r, size, contentType, lim)
	if err != nil {
		return Project{}, err
	}
	return a.project, nil
}

// Project returns what the archive holds.
func (a *Archive) Project() Project { return a.project }

// Extract unpacks the archive into dest (see the package-level Extract),
// validating it again as it goes, and also refuses (leaving dest alone) an
// archive whose content no longer matches what Open saw.
func (a *Archive) Extract(ctx context.Context, dest string) error {
	_, err := extract(ctx, a.r, a.size, a.contentType, a.lim, dest, &a.project)
	return err
}

// sniffFormat picks the format from the Content-Type and checks that the
// body's magic bytes agree.
func sniffFormat(r io.ReaderAt, size int64, contentType string) (Format, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	var want Format
	switch {
	case err != nil:
	case mt == "application/gzip" || mt == "application/x-gzip" || mt == "application/x-tar+gzip":
		want = FormatTarGz
	case mt == "application/zip" || mt == "application/x-zip-compressed":
		want = FormatZip
	}
	if want == "" {
		return "", invalidf("Content-Type %q is not accepted: send application/gzip (a .tar.gz) or application/zip", contentType)
	}
	var head [4]byte
	n, err := r.ReadAt(head[:], 0)
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("read archive: %w", err)
	}
	var got Format
	switch {
	case n >= 3 && head[0] == 0x1f && head[1] == 0x8b && head[2] == 8:
		got = FormatTarGz
	case n == 4 && string(head[:]) == "PK\x03\x04", n == 4 && string(head[:]) == "PK\x05\x06":
		got = FormatZip
	case size == 0:
		return "", invalidf("the archive is empty")
	default:
		return "", invalidf("the body is neither a tar.gz nor a zip archive")
	}
	if got != want {
		return "", invalidf("Content-Type is %s but the body is a %s archive", mt, got)
	}
	return got, nil
}

func invalidf(format string, args ...any) error {
	return scrapethis.Errorf(scrapethis.EInvalid, format, args...)
}

// mib renders a byte limit for messages.
func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

func sameProject(a, b Project) bool {
	if a.Format != b.Format || a.Kind != b.Kind || a.Root != b.Root || a.SettingsModule != b.SettingsModule ||
		a.ScrapyProject != b.ScrapyProject || a.Requirements != b.Requirements || a.Wheels != b.Wheels ||
		a.Entries != b.Entries || a.UnpackedBytes != b.UnpackedBytes || len(a.Spiders) != len(b.Spiders) {
		return false
	}
	for k, v := range a.Spiders {
		if b.Spiders[k] != v {
			return false
		}
	}
	return true
}
