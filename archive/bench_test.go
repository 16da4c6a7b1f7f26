package archive_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/scrapethis/scrapethis/archive"
)

// benchArchive is a 20 MiB tar.gz: a Scrapy project with 300 small Python
// files and 160 files of 128 KiB of random (incompressible) data.
func benchArchive(b *testing.B) []byte {
	b.Helper()
	rng := rand.New(rand.NewChaCha8([32]byte{1}))
	files := scrapyFiles()
	for i := range 300 {
		files = append(files, reg(fmt.Sprintf("shop/spiders/s%03d.py", i), "import scrapy\n\nclass S(scrapy.Spider):\n    name = 's"+strconv.Itoa(i)+"'\n"))
	}
	blob := make([]byte, 128<<10)
	for i := range 160 {
		for j := range blob {
			blob[j] = byte(rng.Uint32())
		}
		files = append(files, reg(fmt.Sprintf("data/d%03d.bin", i), string(blob)))
	}
	body := tgz(b, files)
	b.Logf("archive: %d entries, %.1f MiB", len(files), float64(len(body))/(1<<20))
	return body
}

func BenchmarkArchive(b *testing.B) {
	body := benchArchive(b)
	ctx := context.Background()
	size := int64(len(body))
	extractRun := func(b *testing.B, run func(dest string) error) {
		b.SetBytes(size)
		parent := b.TempDir()
		for i := 0; b.Loop(); i++ {
			dest := filepath.Join(parent, strconv.Itoa(i))
			if err := run(dest); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			os.RemoveAll(dest)
			b.StartTimer()
		}
	}
	b.Run("baseline-read", func(b *testing.B) { // gzip and tar alone, to io.Discard
		b.SetBytes(size)
		for b.Loop() {
			gz, _ := gzip.NewReader(bytes.NewReader(body))
			tr := tar.NewReader(gz)
			for {
				if _, err := tr.Next(); err == io.EOF {
					break
				} else if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, tr)
			}
		}
	})
	b.Run("Check", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if _, err := archive.Check(ctx, bytes.NewReader(body), size, "application/gzip", archive.Limits{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-untar", func(b *testing.B) { // naive: no checks, os.WriteFile per entry
		extractRun(b, func(dest string) error {
			gz, _ := gzip.NewReader(bytes.NewReader(body))
			tr := tar.NewReader(gz)
			for {
				h, err := tr.Next()
				if err == io.EOF {
					return nil
				} else if err != nil {
					return err
				}
				p := filepath.Join(dest, h.Name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				data, _ := io.ReadAll(tr)
				if err := os.WriteFile(p, data, 0o644); err != nil {
					return err
				}
			}
		})
	})
	b.Run("Extract", func(b *testing.B) { // one pass: validates while it writes
		extractRun(b, func(dest string) error {
			_, err := archive.Extract(ctx, bytes.NewReader(body), size, "application/gzip", archive.Limits{}, dest)
			return err
		})
	})
	b.Run("Check+Extract", func(b *testing.B) { // Open, then Extract: the archive read twice
		extractRun(b, func(dest string) error {
			a, err := archive.Open(ctx, bytes.NewReader(body), size, "application/gzip", archive.Limits{})
			if err != nil {
				return err
			}
			return a.Extract(ctx, dest)
		})
	})
}
