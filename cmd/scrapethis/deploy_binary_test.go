package main_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeployBinaryFails: the built program exits 1 with the reason on
// stderr and nothing on stdout.
func TestDeployBinaryFails(t *testing.T) {
	t.Parallel()
	bin := build(t)
	notProject := t.TempDir()
	if err := os.WriteFile(filepath.Join(notProject, "spider.py"), []byte("import scrapy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"deploy", notProject}, []string{"SCRAPETHIS_API_KEY=st_x"},
			"scrapethis: " + notProject + " cannot be deployed: neither scrapy.cfg nor scrapethis.json at the archive's root or inside its one top-level folder\n"},
		{[]string{"deploy", filepath.Join("..", "..", "demo", "quotes")}, nil,
			"scrapethis: SCRAPETHIS_API_KEY is not set"},
		{[]string{"deploy", filepath.Join("..", "..", "demo", "quotes")}, []string{"SCRAPETHIS_API_KEY=st_x", "SCRAPETHIS_URL=http://127.0.0.1:1"},
			"scrapethis: POST /api/v1/projects/quotes/versions: Post \"http://127.0.0.1:1/api/v1/projects/quotes/versions\": dial tcp 127.0.0.1:1: connect: connection refused\n"},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, tc.env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || stdout.Len() != 0 || !strings.HasPrefix(stderr.String(), tc.want) {
			t.Errorf("%v: %v, stdout %q, stderr %q; want exit 1 and %q", tc.args, err, stdout.String(), stderr.String(), tc.want)
		}
	}
}
