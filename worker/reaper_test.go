package worker

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReaperSweepsAdoptedDaemons: a daemon that left its parent's session
// (setsid) and then ended is the worker's zombie to reap, while a child
// the worker waits for itself (os/exec, its own process group as pip has)
// keeps its exit status for its Wait.
func TestReaperSweepsAdoptedDaemons(t *testing.T) {
	t.Parallel()
	r, err := newReaper()
	if err != nil {
		t.Skip(err)
	}
	// The shell exits at once; its setsid child is adopted by this process.
	out, err := exec.Command("/bin/sh", "-c", "setsid sleep 0.2 </dev/null >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	own := exec.Command("/bin/sh", "-c", "exit 3")
	own.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := own.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		state, _, _ := procState(own.Process.Pid)
		if state == "Z" || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	for {
		r.sweep()
		if _, err := os.Stat("/proc/" + strconv.Itoa(orphan)); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			state, _, _ := procState(orphan)
			t.Fatalf("the adopted daemon %d is still there (state %s)", orphan, state)
		}
		time.Sleep(time.Millisecond)
	}
	err = own.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
		t.Fatalf("the worker's own child's Wait: %v, want exit status 3", err)
	}
}
