package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// memory: the peak resident set (VmHWM) of the API and the worker over the
// whole run, read from /proc before they stop; the bench process's own is
// shown apart, as it is not the product.
func (b *bench) memory(ctx context.Context) error {
	for _, c := range []*child{b.api, b.worker} {
		if c == nil || c.exited() {
			return fmt.Errorf("%v is not running", c)
		}
		hwm, err := procStatusKB(c.pid(), "VmHWM")
		if err != nil {
			return err
		}
		rss, _ := procStatusKB(c.pid(), "VmRSS")
		b.res.add(fmt.Sprintf("peak RSS: %s (bin/scrapethis %s)", c.name, c.name), float64(hwm)/1024, "MiB", nil, false, nil,
			fmt.Sprintf("%.1f MiB resident at the end", float64(rss)/1024))
	}
	// The worker's spider guard, if it runs one, is a process of its own.
	for _, pid := range childPIDs(b.worker.pid()) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !strings.Contains(string(cmdline), "spider-guard") {
			continue
		}
		if hwm, err := procStatusKB(pid, "VmHWM"); err == nil {
			b.res.add("peak RSS: spider guard (the worker's helper process)", float64(hwm)/1024, "MiB", nil, false, nil, "")
		}
	}
	hwm, err := procStatusKB(0, "VmHWM")
	if err != nil {
		return err
	}
	b.res.add("peak RSS: bench process (not the product)", float64(hwm)/1024, "MiB", nil, false, nil, "")
	return nil
}

// childPIDs lists the processes whose parent is pid.
func childPIDs(pid int) []int {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			if c, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}
