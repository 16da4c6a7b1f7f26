package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
)

const mib = 1 << 20

// memory: the peak resident set (VmHWM) of the API and the worker over the
// whole run, read from /proc before they stop; the bench process's own is
// shown apart, as it is not the product.
func (b *Benchmarker) memory(ctx context.Context) error {
	for _, c := range []*child{b.api, b.worker} {
		if c == nil || c.exited() {
			return fmt.Errorf("%v is not running", c)
		}
		peak, now, err := b.procs.memory(c.pid())
		if err != nil {
			return err
		}
		b.res.add(fmt.Sprintf("peak RSS: %s (bin/scrapethis %s)", c.name, c.name), float64(peak)/mib, "MiB", nil, false, nil,
			fmt.Sprintf("%.1f MiB resident at the end", float64(now)/mib))
	}
	// The worker's spider guard, if it runs one, is a process of its own.
	for pid, cmdline := range b.procs.children(b.worker.pid()) {
		if !strings.Contains(strings.Join(cmdline, " "), "spider-guard") {
			continue
		}
		if peak, _, err := b.procs.memory(pid); err == nil {
			b.res.add("peak RSS: spider guard (the worker's helper process)", float64(peak)/mib, "MiB", nil, false, nil, "")
		}
	}
	peak, _, err := b.procs.memory(os.Getpid())
	if err != nil {
		return err
	}
	b.res.add("peak RSS: bench process (not the product)", float64(peak)/mib, "MiB", nil, false, nil, "")
	return nil
}
