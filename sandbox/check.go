package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// Check verifies that this machine can provide the sandbox, by building one
// (namespaces, mounts, cgroups, rlimits, the switch to a job uid) and
// running nothing in it. Its error is one sentence saying what is missing.
func (l *Launcher) Check(ctx context.Context) error {
	if !l.cfg.Enabled {
		return nil
	}
	p, err := l.Policy("check", nil, 0)
	if err != nil {
		return err
	}
	p.Probe = true
	p.Limits.DiskMB = 1
	errR, errW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox check: %w", err)
	}
	defer errR.Close()
	proc, err := l.Start(p, Command{Stderr: errW})
	errW.Close()
	if err != nil {
		return fmt.Errorf("the spider sandbox cannot start (%v); set SCRAPETHIS_SANDBOX=off to run spiders unprotected", err)
	}
	done := make(chan Result, 1)
	go func() { done <- proc.Wait() }()
	var res Result
	select {
	case res = <-done:
	case <-ctx.Done():
		proc.cmd.Process.Kill()
		<-done
		return ctx.Err()
	case <-time.After(30 * time.Second):
		proc.cmd.Process.Kill()
		<-done
		return fmt.Errorf("the spider sandbox did not start within 30s")
	}
	if res.Err != nil {
		msg, _ := io.ReadAll(io.LimitReader(errR, 2048))
		why := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(msg)), "[sandbox] "))
		if why == "" {
			why = res.Err.Error()
		}
		return fmt.Errorf("this machine cannot provide the spider sandbox (%s); set SCRAPETHIS_SANDBOX=off to run spiders unprotected", why)
	}
	return nil
}
