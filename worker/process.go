package worker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/sandbox"
)

// resolveSpider returns the absolute path of the spider file under root.
// The path may not leave root, not even through a symbolic link.
func resolveSpider(root, repoPath string) (string, error) {
	if !filepath.IsLocal(repoPath) {
		return "", fmt.Errorf("spider path %q leaves the spiders directory", repoPath)
	}
	absRoot, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("spiders directory: %w", err)
	}
	realRoot, err := filepath.EvalSymlinks(absRoot)
	if err != nil {
		return "", fmt.Errorf("spiders directory %s: %w", root, err)
	}
	full, err := filepath.EvalSymlinks(filepath.Join(realRoot, repoPath))
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("spider file %s not found in the spiders directory", repoPath)
	}
	if err != nil {
		return "", fmt.Errorf("spider file %s: %w", repoPath, err)
	}
	if rel, err := filepath.Rel(realRoot, full); err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("spider path %q leaves the spiders directory", repoPath)
	}
	st, err := os.Stat(full)
	if err != nil {
		return "", fmt.Errorf("spider file %s: %w", repoPath, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("spider path %s is not a regular file", repoPath)
	}
	return full, nil
}

// spiderArgs turns a job's arguments into "-a key=value" pairs, in key
// order: strings as they are, other JSON values JSON-encoded.
func spiderArgs(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("arguments: %w", err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		if !scrapethis.ValidArgumentKey(k) {
			return nil, fmt.Errorf("argument key %q is not an identifier", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, 2*len(keys))
	for _, k := range keys {
		v := m[k]
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			// Not a string: its compact JSON text.
			var buf bytes.Buffer
			if err := json.Compact(&buf, v); err != nil {
				return nil, fmt.Errorf("argument %q: %w", k, err)
			}
			s = buf.String()
		}
		out = append(out, "-a", k+"="+s)
	}
	return out, nil
}

// spiderEnv is the whole environment a spider sees: its job, its name, and
// the few variables a program needs to run. Nothing else of the worker's
// environment (database URLs, keys) reaches it. Sandboxed, HOME and TMPDIR
// are its job directory.
func spiderEnv(jobID, spider string, sandboxed bool) []string {
	env := []string{
		"SCRAPETHIS_JOB_ID=" + jobID,
		"SCRAPETHIS_SPIDER=" + spider,
		"PYTHONUNBUFFERED=1",
	}
	pass := []string{"PATH", "HOME", "LANG"}
	if sandboxed {
		env = append(env, "HOME="+sandbox.JobDir, "TMPDIR=/tmp")
		pass = []string{"PATH", "LANG"}
	}
	for _, k := range pass {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	if _, ok := os.LookupEnv("PATH"); !ok {
		env = append(env, "PATH=/usr/local/bin:/usr/bin:/bin")
	}
	return env
}

// zygoteEnv is a warm parent's environment: a spider's, less what names
// its job.
func zygoteEnv(sandboxed bool) []string {
	var out []string
	for _, kv := range spiderEnv("", "", sandboxed) {
		if !strings.HasPrefix(kv, "SCRAPETHIS_") {
			out = append(out, kv)
		}
	}
	return out
}

// signalGroup sends sig to every process of the spider's process group.
func signalGroup(pgid int, sig syscall.Signal) error {
	if pgid <= 0 {
		return nil
	}
	err := syscall.Kill(-pgid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// groupAlive reports whether any process of the group still exists.
func groupAlive(pgid int) bool {
	return pgid > 0 && syscall.Kill(-pgid, 0) == nil
}

// exitReason describes how a process ended, for the job's error field.
func exitReason(err error) string {
	var ee interface{ Sys() any }
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
			switch {
			case ws.Signaled():
				return "killed by signal " + ws.Signal().String()
			case ws.Exited():
				return fmt.Sprintf("exit status %d", ws.ExitStatus())
			}
		}
	}
	return err.Error()
}
