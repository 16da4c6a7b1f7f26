// Command benchspider is the executable spider the benchmark runs where a
// shell script would not be accurate or fast enough. It follows the spider
// process contract: arguments arrive as `-a key=value`, items go to stdout
// as JSON lines, the log to stderr.
//
//	-a mode=stamp -a out=FILE   write this process's start time (Unix ns) to FILE
//	-a mode=items -a n=N        print N small JSON items
//
// It imports nothing beyond the standard library's basics and the bench's
// item encoder, so that it starts fast; the benchmark measures that start
// cost in-process as the baseline.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/scrapethis/scrapethis/internal/bench/itemgen"
)

// start is taken in package initialisation, before main, as close to the
// exec as a Go program gets.
var start = time.Now()

func main() {
	if err := run(arguments(os.Args[1:])); err != nil {
		fmt.Fprintln(os.Stderr, "benchspider:", err)
		os.Exit(1)
	}
}

func arguments(argv []string) map[string]string {
	args := map[string]string{}
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] == "-a" {
			k, v, _ := strings.Cut(argv[i+1], "=")
			args[k] = v
			i++
		}
	}
	return args
}

func run(args map[string]string) error {
	switch args["mode"] {
	case "stamp":
		return stamp(args["out"])
	case "items":
		n, err := strconv.Atoi(args["n"])
		if err != nil || n < 0 {
			return fmt.Errorf("items: n must be a whole number, not %q", args["n"])
		}
		return items(n)
	}
	return fmt.Errorf("unknown mode %q (stamp or items)", args["mode"])
}

// stamp writes the start time to out atomically (write, then rename), so a
// reader polling for out never sees a partial file.
func stamp(out string) error {
	if out == "" {
		return fmt.Errorf("stamp: no out argument")
	}
	tmp := out + ".tmp"
	if err := os.WriteFile(tmp, strconv.AppendInt(nil, start.UnixNano(), 10), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// items prints n items, the ones the raw COPY baseline stores.
func items(n int) error {
	w := bufio.NewWriterSize(os.Stdout, 64<<10)
	buf := make([]byte, 0, 128)
	for i := 0; i < n; i++ {
		buf = append(itemgen.Append(buf[:0], i), '\n')
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "printed %d items in %s\n", n, time.Since(start).Round(time.Millisecond))
	return w.Flush()
}
