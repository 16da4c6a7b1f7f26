package codecache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// BuildError is a project whose dependencies could not be installed: its
// requirements.txt asks for something pip cannot install from wheels, or
// that this cache refuses to let pip build. It is the project's fault, not
// the worker's: the version fails with Error() as its reason, and trying
// again gives the same answer.
type BuildError struct {
	SHA256 string
	// Reason is pip's own reason (its ERROR lines), or the cache's for a
	// refused requirements.txt: one or a few lines.
	Reason string
	// Output is the tail of pip's output, at most outputTail bytes; "" when
	// pip did not run.
	Output string
}

func (e *BuildError) Error() string { return e.Reason }

// outputTail bounds the pip output kept for a BuildError and the log.
const outputTail = 64 << 10

// buildEnv makes venvDir, an environment for the project at projectDir that
// sees the machine's site-packages (so its Scrapy), and installs
// requirements.txt into it. The venv has no pip of its own: the
// interpreter's pip installs into it with --python (see the package doc for
// why). Only VENV/bin/python is meant to be run; it finds pyvenv.cfg next
// to itself wherever the entry is moved or mounted.
func (c *Cache) buildEnv(ctx context.Context, sha, projectDir, venvDir string) error {
	reqs := filepath.Join(projectDir, "requirements.txt")
	text, err := os.ReadFile(reqs)
	if err != nil {
		return fmt.Errorf("read requirements.txt: %w", err)
	}
	if err := checkRequirements(string(text), projectDir); err != nil {
		return &BuildError{SHA256: sha, Reason: err.Error()}
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.PipTimeout, errPipTimeout)
	defer cancel()
	home, err := os.MkdirTemp(filepath.Dir(venvDir), "home-")
	if err != nil {
		return fmt.Errorf("pip home: %w", err)
	}
	defer os.RemoveAll(home)

	wheels := ""
	if fi, err := os.Stat(filepath.Join(projectDir, "wheels")); err == nil && fi.IsDir() {
		wheels = filepath.Join(projectDir, "wheels")
	}
	env := c.pipEnv(home, wheels != "")

	out := &tailBuffer{max: outputTail}
	if err := c.run(ctx, env, projectDir, out, c.cfg.Python, "-m", "venv", "--system-site-packages", "--without-pip", venvDir); err != nil {
		if ctx.Err() == nil {
			return fmt.Errorf("create venv: %w: %s", err, strings.TrimSpace(out.String()))
		}
		return c.envEnded(ctx, sha, out)
	}
	args := []string{"-m", "pip", "--python", filepath.Join(venvDir, "bin", "python"), "install",
		"--no-input", "--disable-pip-version-check", "--no-cache-dir", "--progress-bar", "off",
		"--no-warn-script-location", "--only-binary=:all:"}
	if wheels != "" {
		args = append(args, "--no-index", "--find-links", wheels)
	}
	args = append(args, "-r", reqs)
	out.Reset()
	err = c.run(ctx, env, projectDir, out, c.cfg.Python, args...)
	var exit *exec.ExitError
	switch {
	case err == nil:
		c.log.Debug("codecache: pip install done", "sha256", sha, "output", out.String())
		return nil
	case ctx.Err() != nil:
		return c.envEnded(ctx, sha, out)
	case errors.As(err, &exit):
		be := &BuildError{SHA256: sha, Reason: pipReason(out.String()), Output: out.String()}
		c.log.Info("codecache: pip install failed", "sha256", sha, "reason", be.Reason, "output", be.Output)
		return be
	}
	return fmt.Errorf("run pip: %w", err)
}

// checkPython makes sure python can make environments as buildEnv does:
// it has the venv module and a pip that knows --python (22.3 or later).
func checkPython(python string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, python, "-c", "import venv, pip; print(pip.__version__)").Output()
	var major, minor int
	if err == nil {
		_, err = fmt.Sscanf(string(out), "%d.%d", &major, &minor)
	}
	switch {
	case err != nil:
		return fmt.Errorf("codecache: %s cannot make project environments: it needs the venv module and pip 22.3 or later: %v", python, err)
	case major < 22 || major == 22 && minor < 3:
		return fmt.Errorf("codecache: %s cannot make project environments: its pip is %s, and 22.3 or later is needed", python, strings.TrimSpace(string(out)))
	}
	return nil
}

// errPipTimeout is the cause of an env build's context when PipTimeout
// ended it.
var errPipTimeout = errors.New("pip timeout")

// envEnded is the error of an env build that its context ended: the
// caller's cancellation as it is, PipTimeout as the project's BuildError.
func (c *Cache) envEnded(ctx context.Context, sha string, out *tailBuffer) error {
	if context.Cause(ctx) != errPipTimeout {
		return fmt.Errorf("build environment: %w", context.Cause(ctx))
	}
	return &BuildError{SHA256: sha, Reason: fmt.Sprintf("installing requirements.txt took longer than %s", c.cfg.PipTimeout), Output: out.String()}
}

// pipEnv is the whole environment of venv and pip: PATH, LANG and HOME (an
// empty directory, so no user configuration; TMPDIR too), nothing else of
// the worker's.
// With wheels/ the install is isolated from the operator's pip settings
// too (PIP_CONFIG_FILE=/dev/null, no PIP_*), since pip adds find-links and
// indexes from its configuration to the command line's; without, the
// operator's PIP_* variables choose the index.
func (c *Cache) pipEnv(home string, wheels bool) []string {
	env := []string{"HOME=" + home, "TMPDIR=" + home, "PIP_NO_INPUT=1"}
	path := "PATH=/usr/local/bin:/usr/bin:/bin"
	for _, kv := range c.cfg.Environ {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH":
			path = kv
		case k == "LANG":
			env = append(env, kv)
		case strings.HasPrefix(k, "PIP_") && !wheels && k != "PIP_NO_INPUT":
			env = append(env, kv)
		}
	}
	if wheels {
		env = append(env, "PIP_CONFIG_FILE="+os.DevNull)
	}
	return append(env, path)
}

// run runs name with args in dir, its output into out, killing its whole
// process group when ctx ends (pip --python runs a second interpreter).
func (c *Cache) run(ctx context.Context, env []string, dir string, out *tailBuffer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	c.log.Debug("codecache: ran", "cmd", name+" "+strings.Join(args, " "), "took", time.Since(start), "err", err)
	return err
}

// pipReason picks pip's reason out of its output: its ERROR lines (at most
// a few), else its last lines; and says that source distributions are
// refused when pip found no distribution, the usual sign of one.
func pipReason(out string) string {
	var errs, last []string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if len(line) > 500 {
			line = line[:500] + "..."
		}
		if r, ok := strings.CutPrefix(line, "ERROR: "); ok && len(errs) < 4 {
			errs = append(errs, r)
		}
		last = append(last, line)
		if len(last) > 3 {
			last = last[1:]
		}
	}
	if len(errs) == 0 {
		errs = last
	}
	if len(errs) == 0 {
		return "pip install failed without saying why"
	}
	reason := strings.Join(errs, "\n")
	if strings.Contains(reason, "No matching distribution found") {
		reason += "\nOnly wheels are installed (--only-binary=:all:): a source distribution (.tar.gz, .zip) is refused; ship a wheel under wheels/."
	}
	return reason
}

// tailBuffer keeps the last max bytes written to it. exec writes to it from
// one goroutine at a time when it is both Stdout and Stderr.
type tailBuffer struct {
	max     int
	buf     []byte
	dropped bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > b.max {
		p, b.dropped = p[len(p)-b.max:], true
	}
	if over := len(b.buf) + len(p) - b.max; over > 0 {
		b.buf, b.dropped = append(b.buf[:0], b.buf[over:]...), true
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

func (b *tailBuffer) Reset() { b.buf, b.dropped = b.buf[:0], false }

func (b *tailBuffer) String() string {
	if b.dropped {
		return "...\n" + string(b.buf)
	}
	return string(b.buf)
}
