package codecache

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// pip builds and runs code at install time for more than sdists from an
// index: --only-binary=:all: does not stop it from building a local
// directory, an editable install or a direct reference to an sdist, and a
// requirements file may lift the flag itself (--no-binary, --only-binary
// :none:) or add indexes and find-links of its own. So requirements.txt is
// read before pip is: a line may name a requirement (a name with extras,
// version specifiers and environment markers), or a .whl file inside the
// project, with --hash options; the only file-wide options allowed are
// --pre, --prefer-binary and --require-hashes. Anything else is refused with
// the line that holds it. pip runs in the project root, where a relative
// .whl path is resolved and where a bare name that looks like an archive
// ("x.tar.gz") would be installed from a file, so such names are refused.

var (
	// reqSpec is a PEP 508 name, extras and version specifiers, without a
	// direct reference; markers are cut off before it is matched.
	reqSpec = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\s*` +
		`(?:\[\s*(?:[A-Za-z0-9][A-Za-z0-9._-]*\s*(?:,\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*)*)?\])?\s*` +
		`(?:\(?\s*(?:~=|===|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*(?:,\s*(?:~=|===|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*)*\)?)?$`)
	// wheelPath is a relative path to a wheel, resolved in the project root.
	wheelPath = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_./+-]*\.whl$`)
	reqHash   = regexp.MustCompile(`^--hash[= ][A-Za-z0-9]+:[A-Fa-f0-9]+$`)
)

// fileOptions are the options a requirements file may set for all its lines.
var fileOptions = map[string]bool{"--pre": true, "--prefer-binary": true, "--require-hashes": true}

// checkRequirements returns nil when pip can install what text asks for
// without running any of its code, or an error naming the first line that
// could.
func checkRequirements(text, projectDir string) error {
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		n := i + 1
		line := lines[i]
		for strings.HasSuffix(line, `\`) && i+1 < len(lines) { // a continued line
			i++
			line = strings.TrimSuffix(line, `\`) + lines[i]
		}
		if err := checkRequirementLine(stripComment(line), projectDir); err != nil {
			return fmt.Errorf("requirements.txt line %d: %w", n, err)
		}
	}
	return nil
}

// stripComment cuts a "#" that starts the line or follows whitespace, as pip
// does, and trims the rest.
func stripComment(line string) string {
	for i := 0; i < len(line); i++ {
		if line[i] == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t') {
			line = line[:i]
			break
		}
	}
	return strings.TrimSpace(line)
}

func checkRequirementLine(line, projectDir string) error {
	if line == "" {
		return nil
	}
	if strings.Contains(line, "${") {
		return fmt.Errorf("environment variables (${...}) are not expanded here")
	}
	if strings.HasPrefix(line, "-") {
		opt, _, _ := strings.Cut(line, " ")
		opt, _, _ = strings.Cut(opt, "=")
		if fileOptions[line] {
			return nil
		}
		return fmt.Errorf("option %s is not allowed: dependencies are wheels, from the project's wheels/ or the platform's index, and only --pre, --prefer-binary and --require-hashes may be set", opt)
	}
	// The requirement runs up to its first per-requirement option, which pip
	// recognises as a whitespace-separated token starting with "-".
	req, opts := line, ""
	for i := 1; i < len(line); i++ {
		if line[i] == '-' && (line[i-1] == ' ' || line[i-1] == '\t') {
			req, opts = strings.TrimSpace(line[:i]), strings.TrimSpace(line[i:])
			break
		}
	}
	if opts != "" {
		for _, o := range splitOptions(opts) {
			if !reqHash.MatchString(o) {
				return fmt.Errorf("%q: only --hash options may follow a requirement", o)
			}
		}
	}
	spec, _, _ := strings.Cut(req, ";") // environment markers select, they never fetch
	spec = strings.TrimSpace(spec)
	switch {
	case reqSpec.MatchString(spec) && !looksLikeArchive(spec):
		return nil
	case strings.Contains(spec, "@") || strings.Contains(spec, "://"):
		return fmt.Errorf("%q: direct references (NAME @ URL) are not allowed; ship the wheel under wheels/ or name the requirement", spec)
	case wheelPath.MatchString(spec):
		// pip would build a directory that happens to be named x.whl.
		fi, err := os.Stat(filepath.Join(projectDir, filepath.FromSlash(spec)))
		if strings.Contains("/"+spec+"/", "/../") || err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("%q is not a wheel file of the project", spec)
		}
		return nil
	case looksLikeArchive(spec):
		return fmt.Errorf("%q names an archive file: only a .whl file inside the project may be named by path; a source archive would be built, which runs its code", spec)
	case strings.ContainsAny(spec, `/\`) || strings.HasPrefix(spec, "."):
		return fmt.Errorf("%q: only a .whl file inside the project may be named by path; a directory or a source archive would be built, which runs its code", spec)
	}
	return fmt.Errorf("%q is not a requirement (NAME[extras] with version specifiers) or a .whl path", spec)
}

// looksLikeArchive reports whether pip would take a requirement for an
// archive file name (its ARCHIVE_EXTENSIONS).
func looksLikeArchive(spec string) bool {
	s := strings.ToLower(spec)
	for _, ext := range []string{".zip", ".whl", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tlz", ".tar.lz", ".tar.lzma", ".tar.gz", ".tgz", ".tar"} {
		if strings.HasSuffix(s, ext) {
			return true
		}
	}
	return false
}

// splitOptions splits "--hash=a:1 --hash b:2" into ["--hash=a:1", "--hash b:2"].
func splitOptions(s string) []string {
	var out []string
	fields := strings.Fields(s)
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if f == "--hash" && i+1 < len(fields) {
			i++
			f += " " + fields[i]
		}
		out = append(out, f)
	}
	return out
}
