package worker

// Micro-benchmarks of the item path, from a spider's stdout to a batch
// ready for COPY, each beside a raw baseline that does the least the same
// job needs (bufio.Scanner + json.Valid, no channel). Compare the pairs:
//
//	go test -run '^$' -bench 'Item|Lines' -benchmem ./worker
//
// ns/item is the cost per stdout line; the worker's share of the ingestion
// rate in `make bench` is roughly 1e9 / ns/item of BenchmarkItemPath.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"
)

// benchItemLines is n item lines as a spider prints them. small is the
// item `make bench` uses; scrapy is a typical scraped item, with nesting,
// escapes and non-ASCII text.
func benchItemLines(n int, scrapy bool) []byte {
	var buf bytes.Buffer
	for i := range n {
		if scrapy {
			buf.WriteString(`{"url": "https://quotes.toscrape.com/page/` + strconv.Itoa(i) + `/", "text": "\u201cThe world as we have created it is a process of our thinking. It cannot be changed without changing our thinking.\u201d", "author": {"name": "Albert Einstein", "born": "1879-03-14"}, "tags": ["change", "deep-thoughts", "thinking", "world"], "score": ` + strconv.Itoa(i%97) + `.5, "seen": true}`)
		} else {
			buf.WriteString(`{"i":` + strconv.Itoa(i) + `,"name":"item-` + strconv.Itoa(i) + `","price":0.42}`)
		}
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

var benchShapes = []struct {
	name   string
	scrapy bool
}{{"small", false}, {"scrapy", true}}

const benchLinesPerOp = 10000

func reportPerItem(b *testing.B, items int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(items), "ns/item")
}

func BenchmarkParseItem(b *testing.B) {
	for _, shape := range benchShapes {
		line := bytes.TrimSuffix(benchItemLines(1, shape.scrapy), []byte("\n"))
		b.Run(shape.name, func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				if _, ok := parseItem(line); !ok {
					b.Fatal("not an item")
				}
			}
		})
	}
}

// BenchmarkParseItemRaw is json.Valid alone, the check parseItem must make.
func BenchmarkParseItemRaw(b *testing.B) {
	for _, shape := range benchShapes {
		line := bytes.TrimSuffix(benchItemLines(1, shape.scrapy), []byte("\n"))
		b.Run(shape.name, func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				if !json.Valid(line) {
					b.Fatal("not JSON")
				}
			}
		})
	}
}

func BenchmarkReadLines(b *testing.B) {
	for _, shape := range benchShapes {
		input := benchItemLines(benchLinesPerOp, shape.scrapy)
		b.Run(shape.name, func(b *testing.B) {
			b.SetBytes(int64(len(input)))
			n := 0
			for b.Loop() {
				if err := readLines(bytes.NewReader(input), func(line []byte, truncated bool) { n++ }); err != nil {
					b.Fatal(err)
				}
			}
			reportPerItem(b, n)
		})
	}
}

// BenchmarkReadLinesRaw is a bufio.Scanner over the same input.
func BenchmarkReadLinesRaw(b *testing.B) {
	for _, shape := range benchShapes {
		input := benchItemLines(benchLinesPerOp, shape.scrapy)
		b.Run(shape.name, func(b *testing.B) {
			b.SetBytes(int64(len(input)))
			n := 0
			for b.Loop() {
				sc := bufio.NewScanner(bytes.NewReader(input))
				sc.Buffer(make([]byte, 64<<10), MaxLineBytes)
				for sc.Scan() {
					n++
				}
				if err := sc.Err(); err != nil {
					b.Fatal(err)
				}
			}
			reportPerItem(b, n)
		})
	}
}

// BenchmarkItemPath is what the worker does with a spider's stdout:
// readLines, parseItem, then the batcher's channel and batches of
// DefaultConfig().ItemBatch, with a store that does nothing.
func BenchmarkItemPath(b *testing.B) {
	batch := DefaultConfig().ItemBatch
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, shape := range benchShapes {
		input := benchItemLines(benchLinesPerOp, shape.scrapy)
		b.Run(shape.name, func(b *testing.B) {
			b.SetBytes(int64(len(input)))
			stored := 0
			for b.Loop() {
				items := newBatcher(batch, itemBatchBytes, 100*time.Millisecond, 0, log, "items", func(ctx context.Context, first int64, batch []string) error {
					stored += len(batch)
					return nil
				})
				done := make(chan error, 1)
				go func() { done <- items.run(context.Background()) }()
				err := readLines(bytes.NewReader(input), func(line []byte, truncated bool) {
					if item, ok := parseItem(line); ok {
						items.put(item)
					}
				})
				items.close()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			if stored != benchLinesPerOp*b.N {
				b.Fatalf("stored %d items, want %d", stored, benchLinesPerOp*b.N)
			}
			reportPerItem(b, stored)
		})
	}
}

// BenchmarkItemPathRaw is the same work at its barest: bufio.Scanner,
// json.Valid, a string copy, and batches appended in the same goroutine.
func BenchmarkItemPathRaw(b *testing.B) {
	batchSize := DefaultConfig().ItemBatch
	for _, shape := range benchShapes {
		input := benchItemLines(benchLinesPerOp, shape.scrapy)
		b.Run(shape.name, func(b *testing.B) {
			b.SetBytes(int64(len(input)))
			stored := 0
			batch := make([]string, 0, batchSize)
			for b.Loop() {
				sc := bufio.NewScanner(bytes.NewReader(input))
				sc.Buffer(make([]byte, 64<<10), MaxLineBytes)
				for sc.Scan() {
					if line := sc.Bytes(); json.Valid(line) {
						batch = append(batch, string(line))
					}
					if len(batch) == batchSize {
						stored += len(batch)
						batch = batch[:0]
					}
				}
				stored += len(batch)
				batch = batch[:0]
			}
			reportPerItem(b, stored)
		})
	}
}
