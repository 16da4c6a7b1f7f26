package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/archive"
)

// pollInterval is how soon deploy first asks whether a version is still
// building (then less often, see waitVersion).
const pollInterval = 300 * time.Millisecond

const deployUsage = `usage: scrapethis deploy [DIR] [--project NAME] [--label L] [--timeout D]

Packs the Scrapy project (scrapy.cfg) or bundle (scrapethis.json) in DIR
(default .), leaving out .git, __pycache__, *.pyc, .scrapy and virtualenvs,
checks it as the API will, uploads it as a new version and waits until the
version is ready (printing its spiders) or failed (exit 1, with the reason).
Reads SCRAPETHIS_URL (default http://127.0.0.1:8080) and SCRAPETHIS_API_KEY.

flags:
`

// deployment is what one deploy asks for.
type deployment struct {
	dir      string
	project  string // "" for scrapy.cfg's [deploy] project, else DIR's name
	label    string // "" for the API's v1, v2, ...
	timeout  time.Duration
	interval time.Duration
}

func cmdDeploy(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	d := deployment{dir: ".", interval: pollInterval}
	fs := newDeployFlags(&d, stderr)
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	switch len(pos) {
	case 0:
	case 1:
		d.dir = pos[0]
	default:
		fs.Usage()
		return fmt.Errorf("deploy takes one directory, got %d arguments", len(pos))
	}
	if d.timeout <= 0 {
		return errors.New("--timeout must be positive")
	}
	data, name, err := packProject(ctx, d.dir, d.project)
	if err != nil {
		return err
	}
	c, err := clientFromEnv(getenv)
	if err != nil {
		return err
	}
	v, created, err := deployArchive(ctx, c, name, d.label, data, d.timeout, d.interval)
	if err != nil {
		return err
	}
	printVersion(stdout, name, v, created)
	return nil
}

func newDeployFlags(d *deployment, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("deploy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, deployUsage); fs.PrintDefaults() }
	fs.StringVar(&d.project, "project", "", "project name (default: scrapy.cfg's [deploy] project, else DIR's name)")
	fs.StringVar(&d.label, "label", "", "version label (default: v1, v2, ... in upload order)")
	fs.DurationVar(&d.timeout, "timeout", 10*time.Minute, "how long to wait for the version to be ready or failed")
	return fs
}

// parseInterleaved parses flags that may come before and after positional
// arguments (`deploy DIR --label x`), returning the positional ones;
// everything after "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for i, a := range args {
		if a == "--" {
			args, rest = args[:i], args[i+1:]
			break
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if args = fs.Args(); len(args) == 0 {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// packProject packs dir with archive.Pack and checks the archive exactly as
// the API will (archive.Check, default limits), so that a bad project fails
// here with the API's message and nothing is sent. It returns the archive
// and the project's name: name when not "", else scrapy.cfg's [deploy]
// project, else the directory's base name.
func packProject(ctx context.Context, dir, name string) ([]byte, string, error) {
	if name != "" && !archive.ValidName(name) {
		return nil, "", fmt.Errorf("project name %q is not valid: %s", name, nameRule)
	}
	data, err := archive.Pack(ctx, dir)
	if err != nil {
		return nil, "", err
	}
	p, err := archive.Check(ctx, bytes.NewReader(data), int64(len(data)), archive.FormatTarGz.ContentType(), archive.Limits{})
	if err != nil {
		if scrapethis.ErrorCode(err) == scrapethis.EInternal {
			return nil, "", fmt.Errorf("check %s: %w", dir, err)
		}
		return nil, "", fmt.Errorf("%s cannot be deployed: %s", dir, scrapethis.ErrorMessage(err))
	}
	if name != "" {
		return data, name, nil
	}
	name, err = projectName(dir, p)
	return data, name, err
}

const nameRule = "a letter or digit, then up to 63 letters, digits, '.', '_' or '-'"

// projectName is the name a project deploys under when --project is not
// given: scrapy.cfg's [deploy] project, else the directory's base name.
func projectName(dir string, p archive.Project) (string, error) {
	if n := p.ScrapyProject; n != "" {
		if !archive.ValidName(n) {
			return "", fmt.Errorf("scrapy.cfg's [deploy] project %q is not a valid project name (%s): pass --project NAME", n, nameRule)
		}
		return n, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("project name: %w", err)
	}
	if n := filepath.Base(abs); archive.ValidName(n) {
		return n, nil
	}
	return "", fmt.Errorf("cannot name the project after directory %q (%s) and scrapy.cfg has no [deploy] project: pass --project NAME", filepath.Base(abs), nameRule)
}

// deployArchive uploads a .tar.gz as a version of project name and waits,
// at most timeout, until it is ready. A version that failed is an error
// with the API's reason.
func deployArchive(ctx context.Context, c *apiClient, name, label string, data []byte, timeout, interval time.Duration) (version, bool, error) {
	v, created, err := c.uploadVersion(ctx, name, label, data, archive.FormatTarGz.ContentType())
	if err != nil {
		return v, false, err
	}
	wctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("not ready after --timeout %s", timeout))
	defer cancel()
	v, err = c.waitVersion(wctx, name, v, interval)
	if err != nil {
		return v, created, err
	}
	if v.Status != versionReady {
		reason := "(no reason given)"
		if v.Error != nil && *v.Error != "" {
			reason = *v.Error
		}
		again := ""
		if !created {
			again = " (deployed before with the same sha256)"
		}
		return v, created, fmt.Errorf("version %s of %s%s %s: %s", v.Label, name, again, v.Status, reason)
	}
	return v, created, nil
}

func printVersion(w io.Writer, name string, v version, created bool) {
	if created {
		fmt.Fprintf(w, "deployed %s %s\n", name, v.Label)
	} else {
		fmt.Fprintf(w, "%s %s is already deployed (same sha256): nothing new stored\n", name, v.Label)
	}
	spiders := "(none)"
	if len(v.Spiders) > 0 {
		spiders = strings.Join(v.Spiders, " ")
	}
	fmt.Fprintf(w, "  id       %s\n  sha256   %s\n  spiders  %s\n", v.ID, v.SHA256, spiders)
}
