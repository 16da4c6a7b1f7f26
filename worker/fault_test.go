package worker_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"golang.org/x/sys/unix"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/tasks"
	"github.com/scrapethis/scrapethis/worker"
)

// childWorkerProcess starts this test binary as a standalone worker.
func (b *bundle) childWorkerProcess() *exec.Cmd {
	b.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// A cache directory of its own: a worker locks its cache.
	cmd.Env = append(os.Environ(), "WORKER_CHILD_DSN="+b.dsn, "WORKER_CHILD_REDIS="+b.redisDSN, "WORKER_CHILD_SPIDERS="+b.spiders,
		"WORKER_CHILD_CACHE="+b.t.TempDir())
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func TestWorkerKilledMidJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pidFile := filepath.Join(t.TempDir(), "pids")
	runs := filepath.Join(t.TempDir(), "runs")
	id := b.script("sleep.sh", "#!/bin/sh\necho run >> "+runs+"\n"+strings.TrimPrefix(sleeper(pidFile, false), "#!/bin/sh\n"))
	child := b.childWorkerProcess()
	jobID := b.start(id, `{}`, nil)
	j := b.waitStatus(jobID, scrapethis.StatusRunning)
	pids := b.readPids(pidFile, 2)
	b.waitFor("the first item", 30*time.Second, func() bool { return b.job(jobID).ItemsScraped == 1 })

	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	// The spider dies with its worker.
	b.waitFor("spider processes to die with the worker", 10*time.Second, func() bool {
		return !pidAlive(pids[0]) && !pidAlive(pids[1])
	})
	// A surviving worker ends the job within LostAfter plus one reap.
	killed := time.Now()
	b.startWorker(nil)
	j = b.waitStatus(jobID, scrapethis.StatusError)
	if deref(j.Error) != scrapethis.ReasonWorkerLost || j.ItemsScraped != 1 {
		t.Fatalf("lost job %+v", j)
	}
	t.Logf("worker lost detected %s after the kill (LostAfter %s)", time.Since(killed).Round(time.Millisecond), testConfig("").LostAfter)
	// asynq re-delivers the task once the dead worker's lease runs out (a
	// minute later): do it now. The job must not run again.
	b.redeliver(j)
	if d, _ := os.ReadFile(runs); strings.Count(string(d), "run") != 1 {
		t.Fatalf("lost job ran %d times", strings.Count(string(d), "run"))
	}
}

func TestShutdownHandsBackJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	marker := filepath.Join(t.TempDir(), "marker")
	id := b.script("twice.sh", `#!/bin/sh
if [ -e `+marker+` ]; then echo '{"attempt":2}'; exit 0; fi
touch `+marker+`
echo '{"attempt":1}'
exec sleep 300
`)
	stop := b.startWorker(nil)
	jobID := b.start(id, `{}`, nil)
	b.waitFor("first attempt's item", 30*time.Second, func() bool { return b.job(jobID).ItemsScraped == 1 })
	stop()
	j := b.job(jobID)
	if j.Status != scrapethis.StatusPending || j.ItemsScraped != 0 || j.WorkerID != nil {
		t.Fatalf("after shutdown: %+v", j)
	}
	b.startWorker(nil)
	j = b.waitStatus(jobID, scrapethis.StatusFinished)
	if items := b.items(jobID); len(items) != 1 || items[0] != `{"attempt":2}` || j.Attempts != 2 {
		t.Fatalf("re-run: attempts %d items %v", j.Attempts, items)
	}
	if logs := b.logs(jobID); !strings.Contains(logs, "handed back") || !strings.Contains(logs, "attempt 2 started") {
		t.Errorf("log:\n%s", logs)
	}
}

func TestShutdownLetsShortJobsFinish(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("short.sh", "#!/bin/sh\nsleep 1\necho '{\"done\":1}'\n")
	stop := b.startWorker(func(c *worker.Config) { c.ShutdownTimeout = 20 * time.Second })
	jobID := b.start(id, `{}`, nil)
	b.waitStatus(jobID, scrapethis.StatusRunning)
	stop()
	if j := b.job(jobID); j.Status != scrapethis.StatusFinished || j.ItemsScraped != 1 {
		t.Fatalf("after graceful stop: %+v", j)
	}
}

func TestRedisFlushedLosesNoJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	runs := filepath.Join(t.TempDir(), "runs")
	id := b.script("run.sh", "#!/bin/sh\necho $SCRAPETHIS_JOB_ID >> "+runs+"\necho '{}'\n")
	var ids []string
	for i := 0; i < 20; i++ {
		ids = append(ids, b.start(id, `{}`, nil))
	}
	if err := b.rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	b.startWorker(nil)
	for _, id := range ids {
		if j := b.waitStatus(id, scrapethis.StatusFinished); j.Attempts != 1 {
			t.Fatalf("job %s attempts %d", id, j.Attempts)
		}
	}
	data, _ := os.ReadFile(runs)
	for _, id := range ids {
		if n := strings.Count(string(data), id); n != 1 {
			t.Errorf("job %s ran %d times", id, n)
		}
	}
}

func TestPostgresOutageLosesNoItem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("trickle.sh", "#!/bin/sh\ni=0\nwhile [ $i -lt 300 ]; do i=$((i+1)); echo \"{\\\"i\\\":$i}\"; sleep 0.01; done\n")
	b.startWorker(nil)
	jobID := b.start(id, `{}`, nil)
	b.waitFor("some items", 30*time.Second, func() bool { return b.job(jobID).ItemsScraped > 20 })

	u, _ := url.Parse(b.dsn)
	name := strings.TrimPrefix(u.Path, "/")
	admin := testenv.SQL(t, testenv.DatabaseDSN(t)) // a connection to another database
	if _, err := admin.Exec(fmt.Sprintf(`ALTER DATABASE %s ALLOW_CONNECTIONS false`, name)); err != nil {
		t.Fatal(err)
	}
	admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, name)
	time.Sleep(3 * time.Second)
	if _, err := admin.Exec(fmt.Sprintf(`ALTER DATABASE %s ALLOW_CONNECTIONS true`, name)); err != nil {
		t.Fatal(err)
	}
	j := b.waitStatus(jobID, scrapethis.StatusFinished)
	items := b.items(jobID)
	if j.ItemsScraped != 300 || len(items) != 300 {
		t.Fatalf("items_scraped %d, stored %d", j.ItemsScraped, len(items))
	}
	for i, it := range items {
		if it != fmt.Sprintf(`{"i":%d}`, i+1) {
			t.Fatalf("item %d is %s", i, it)
		}
	}
}

// TestHugeOutputBoundedMemory: four spiders at once, each printing items
// of 7 MiB, keep a worker process's peak RSS under the documented bound;
// every item is stored.
func TestHugeOutputBoundedMemory(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const items = 25 // 175 MiB a spider, 700 MiB in all
	id := b.script("huge.sh", fmt.Sprintf(`#!/bin/sh
i=0
while [ $i -lt %d ]; do
  i=$((i+1))
  printf '{"i":%%d,"blob":"' $i
  head -c 7340032 /dev/zero | tr '\0' 'a'
  printf '"}\n'
done
`, items))
	child := b.childWorkerProcess()
	var jobs []string
	for i := 0; i < 4; i++ {
		jobs = append(jobs, b.start(id, `{}`, nil))
	}
	for _, j := range jobs {
		b.waitFor("job "+j+" to finish", 5*time.Minute, func() bool {
			st := b.job(j).Status
			if st.Final() && st != scrapethis.StatusFinished {
				t.Fatalf("job %s ended %s: %s", j, st, b.logs(j))
			}
			return st == scrapethis.StatusFinished
		})
		if n := b.job(j).ItemsScraped; n != items {
			t.Fatalf("job %s stored %d items, want %d", j, n, items)
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", child.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var peakKB int64
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:")), "%d", &peakKB)
		}
	}
	t.Logf("worker peak RSS %d MiB for 4 x %d MiB of output (bound %d MiB)", peakKB>>10, items*7, worker.MaxWorkerRSSMB)
	// Reported, not asserted: how much of it the runtime gives back.
	rss := func() int64 {
		st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", child.Process.Pid))
		for _, line := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:")), "%d", &kb)
				return kb >> 10
			}
		}
		return 0
	}
	t.Logf("worker RSS right after the jobs: %d MiB", rss())
	// Under -race the bound is the documented one times rssFactor.
	if bound := int64(float64(worker.MaxWorkerRSSMB) * rssFactor); peakKB == 0 || peakKB>>10 > bound {
		t.Fatalf("worker peak RSS %d MiB, over the bound of %d MiB (%d MiB times %.1f)", peakKB>>10, bound, worker.MaxWorkerRSSMB, rssFactor)
	}
}

// TestStartFailuresAreRetried: a worker short of file descriptors hands
// back the jobs it cannot start and runs them later; none ends in error.
func TestStartFailuresAreRetried(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("quick.sh", "#!/bin/sh\necho '{\"ok\":1}'\nsleep 0.2\n")
	child := b.childWorkerProcess()
	warm := b.start(id, `{}`, nil)
	b.waitStatus(warm, scrapethis.StatusFinished)
	// Leave the worker a few descriptors over what it holds idle: one
	// spider's pipes fit, four at once do not.
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", child.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var old unix.Rlimit
	if err := unix.Prlimit(child.Process.Pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		t.Fatal(err)
	}
	lim := &unix.Rlimit{Cur: uint64(len(fds) + 8), Max: old.Max}
	if err := unix.Prlimit(child.Process.Pid, unix.RLIMIT_NOFILE, lim, nil); err != nil {
		t.Skipf("cannot lower the child's file limit: %v", err)
	}
	var jobs []string
	for i := 0; i < 12; i++ {
		jobs = append(jobs, b.start(id, `{}`, nil))
	}
	// The shortage passes: once a job has been handed back, the limit is
	// restored, and every job must then finish.
	b.waitFor("a job to be handed back", time.Minute, func() bool {
		for _, j := range jobs {
			if strings.Contains(b.logs(j), "handed back and tried again") {
				return true
			}
		}
		return false
	})
	if err := unix.Prlimit(child.Process.Pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
		t.Fatal(err)
	}
	retried := 0
	for _, j := range jobs {
		b.waitFor("job "+j, 3*time.Minute, func() bool {
			st := b.job(j).Status
			if st.Final() && st != scrapethis.StatusFinished {
				t.Fatalf("job %s ended %s (%s):\n%s", j, st, deref(b.job(j).Error), b.logs(j))
			}
			return st == scrapethis.StatusFinished
		})
		if strings.Contains(b.logs(j), "handed back and tried again") {
			retried++
		}
	}
	if retried == 0 {
		t.Fatal("no job hit the file limit: the test did not test anything")
	}
	t.Logf("%d of %d jobs were handed back at least once", retried, len(jobs))
}

// TestTaskStuckBetweenPullAndStart: a worker that dies after pulling a
// task and before starting its job leaves the task active in Redis until
// asynq's lease recovery (about a minute); the reconciler of a live worker
// sees that no live worker holds it and runs the job well before.
func TestTaskStuckBetweenPullAndStart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.script("held.sh", "#!/bin/sh\necho '{\"ran\":1}'\n")
	holder := exec.Command(os.Args[0], "-test.run=^$")
	holder.Env = append(os.Environ(), "WORKER_CHILD_HOLD="+b.redisDSN)
	holder.Stderr = os.Stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	jobID := b.start(id, `{}`, nil)
	b.waitFor("the holder to pull the task", 30*time.Second, func() bool {
		info, err := b.queuer.Inspector().GetTaskInfo(tasks.Queue, jobID)
		return err == nil && info.State == asynq.TaskStateActive
	})
	holder.Process.Kill()
	holder.Wait()
	b.startWorker(nil)
	b.waitStatus(jobID, scrapethis.StatusFinished)
	// asynq has not recovered the dead holder's task yet: the job ran
	// through the reconciler's second task.
	info, err := b.queuer.Inspector().GetTaskInfo(tasks.Queue, jobID)
	if err != nil || info.State != asynq.TaskStateActive {
		t.Fatalf("the original task is %v (%v): asynq recovered it before the reconciler did", info, err)
	}
	if n := len(b.items(jobID)); n != 1 {
		t.Fatalf("job stored %d items, want 1 (it ran once)", n)
	}
}
