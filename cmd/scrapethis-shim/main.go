// Command scrapethis-shim stands between a worker and a spider so that a
// worker killed outright (SIGKILL, OOM) still takes every process of its
// spider with it, grandchildren included.
//
// The worker starts it as the leader of a new process group with a parent
// death signal of SIGTERM; it runs the spider in the same group and exits
// as the spider did. On SIGTERM it looks at its parent: if the worker is
// gone it SIGKILLs the whole group at once; otherwise the SIGTERM is the
// worker stopping the group and the worker escalates in its own time. It
// imports nothing heavy, so that it starts in about a millisecond.
//
// Usage: scrapethis-shim -- /path/to/spider args...
package main

import (
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		os.Stderr.WriteString("usage: scrapethis-shim -- SPIDER [ARG...]\n")
		os.Exit(2)
	}
	parent := os.Getppid()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.Stderr.WriteString("scrapethis-shim: " + err.Error() + "\n")
		os.Exit(127)
	}
	// A parent that died before we asked for notice leaves us orphaned now.
	if os.Getppid() != parent {
		syscall.Kill(0, syscall.SIGKILL)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-sigs:
				if os.Getppid() != parent {
					syscall.Kill(0, syscall.SIGKILL) // the worker is gone: take everything down
				}
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	if err == nil {
		os.Exit(0)
	}
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			// End the way the spider ended, so that the worker reports it.
			signal.Reset()
			syscall.Kill(os.Getpid(), ws.Signal())
			select {}
		}
		os.Exit(ee.ExitCode())
	}
	os.Exit(1)
}
