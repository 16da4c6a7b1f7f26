package testenv

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// Wheel writes a pure-Python wheel (py3-none-any) of distribution dist at
// version into dir and returns its path. files maps slash-separated paths
// inside the wheel (e.g. "hello/__init__.py") to their contents; Wheel adds
// NAME-VERSION.dist-info/{METADATA,WHEEL,RECORD}, RECORD with the sha256 and
// size of every file, as pip checks them. No setuptools is involved, and the
// same arguments give the same bytes.
func Wheel(t testing.TB, dir, dist, version string, files map[string]string) string {
	t.Helper()
	name := regexp.MustCompile(`[-_.]+`).ReplaceAllString(dist, "_") // the wheel file name's escaping
	info := name + "-" + version + ".dist-info/"
	all := map[string]string{
		info + "METADATA": fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\n", dist, version),
		info + "WHEEL":    "Wheel-Version: 1.0\nGenerator: scrapethis-testenv\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
	}
	for p, body := range files {
		if strings.HasPrefix(p, info) {
			t.Fatalf("wheel %s: %s is written by Wheel itself", dist, p)
		}
		all[p] = body
	}
	names := make([]string, 0, len(all))
	for p := range all {
		names = append(names, p)
	}
	slices.Sort(names)
	var record strings.Builder
	for _, p := range names {
		sum := sha256.Sum256([]byte(all[p]))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", p, base64.RawURLEncoding.EncodeToString(sum[:]), len(all[p]))
	}
	fmt.Fprintf(&record, "%sRECORD,,\n", info)
	all[info+"RECORD"] = record.String()
	names = append(names, info+"RECORD")

	path := filepath.Join(dir, fmt.Sprintf("%s-%s-py3-none-any.whl", name, version))
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("wheel %s: %v", dist, err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	epoch := time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC) // zip's first representable time
	for _, p := range names {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: p, Method: zip.Deflate, Modified: epoch})
		if err != nil {
			t.Fatalf("wheel %s: %v", dist, err)
		}
		if _, err := w.Write([]byte(all[p])); err != nil {
			t.Fatalf("wheel %s: %v", dist, err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("wheel %s: %v", dist, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("wheel %s: %v", dist, err)
	}
	return path
}
