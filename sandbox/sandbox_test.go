package sandbox_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/scrapethis/scrapethis/sandbox"
)

// TestMain doubles as the sandbox init: the launcher re-executes this test
// binary with InitCommand.
func TestMain(m *testing.M) {
	sandbox.Init()
	os.Exit(m.Run())
}

func testConfig(t *testing.T) sandbox.Config {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the sandbox needs root")
	}
	cfg := sandbox.DefaultConfig()
	cfg.InitArgv = []string{os.Args[0], sandbox.InitCommand}
	cfg.Defaults.MemoryMB = 128
	cfg.Defaults.DiskMB = 16
	cfg.Defaults.Procs = 64
	cfg.LockDir = filepath.Join(os.TempDir(), "scrapethis-test-uids")
	return cfg
}

func newLauncher(t *testing.T, edit func(*sandbox.Config)) *sandbox.Launcher {
	t.Helper()
	cfg := testConfig(t)
	if edit != nil {
		edit(&cfg)
	}
	l, err := sandbox.NewLauncher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// output is what a sandboxed run printed and how it ended.
type output struct {
	stdout, stderr string
	res            sandbox.Result
}

// script writes a shell script into its own code directory and returns the
// bind that makes it visible at /spider/NAME.
func script(t *testing.T, name, body string) (sandbox.Mount, string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return sandbox.Mount{Source: file, Target: sandbox.CodeDir + "/" + name}, sandbox.CodeDir + "/" + name
}

// start starts the script in a sandbox and returns its process and a
// function that waits for its end.
func start(t *testing.T, l *sandbox.Launcher, name, body string, env ...string) (*sandbox.Process, func() output) {
	t.Helper()
	m, path := script(t, name, body)
	p, err := l.Policy("test-"+strings.ReplaceAll(t.Name(), "/", "-"), []sandbox.Mount{m}, 0)
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	proc, err := l.Start(p, sandbox.Command{Path: path, Args: []string{path}, Env: append([]string{"PATH=/usr/bin:/bin"}, env...), Stdout: outW, Stderr: errW})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		t.Fatal(err)
	}
	var o output
	var wg sync.WaitGroup
	wg.Add(2)
	read := func(r *os.File, dst *string) {
		defer wg.Done()
		var b bytes.Buffer
		io.Copy(&b, r)
		r.Close()
		*dst = b.String()
	}
	go read(outR, &o.stdout)
	go read(errR, &o.stderr)
	return proc, func() output {
		o.res = proc.Wait()
		wg.Wait()
		return o
	}
}

func run(t *testing.T, l *sandbox.Launcher, name, body string, env ...string) output {
	t.Helper()
	_, wait := start(t, l, name, body, env...)
	return wait()
}

func TestCheck(t *testing.T) {
	l := newLauncher(t, nil)
	if err := l.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRunsAsJobUser(t *testing.T) {
	l := newLauncher(t, nil)
	o := run(t, l, "id.sh", `id -u; id -g; id -G; pwd; echo "$HOME $TMPDIR"; hostname; ls /; echo '{"ok":1}'`, "HOME=/job", "TMPDIR=/tmp")
	if o.res.Err != nil {
		t.Fatalf("%v\nstderr: %s", o.res.Err, o.stderr)
	}
	t.Logf("stdout:\n%s", o.stdout)
	lines := strings.Split(o.stdout, "\n")
	if lines[0] == "0" || lines[0] == "" {
		t.Fatalf("uid inside %q", lines[0])
	}
}
