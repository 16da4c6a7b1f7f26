package config

import "time"

// Worker is how a worker runs.
type Worker struct {
	SpidersDir      string
	Concurrency     int           // spider processes at most, counting ones still stopping
	CancelGrace     time.Duration // SIGTERM to SIGKILL
	DefaultTimeout  time.Duration // for jobs without timeout_seconds; 0 is none
	ShutdownTimeout time.Duration // how long a stopping worker lets jobs finish before handing them back
	// Python runs Scrapy spiders (through the worker's runner, see package
	// scrapyrun) and builds deployed versions' environments.
	Python string
	// CacheDir holds deployed versions, unpacked with their environments;
	// "" is /var/cache/scrapethis/versions for root, else the user's cache.
	CacheDir   string
	CacheMaxMB int // bound on the cache's size; least recently used versions go first
	// Guard is the argv of the spider guardian (see RunGuard), which takes
	// every spider's whole process group down if the worker is killed
	// outright; empty runs none (then only each spider itself, not its
	// children, dies with a killed worker). `scrapethis worker` uses
	// "scrapethis spider-guard".
	Guard          []string
	ScrapyLogLevel string
	// ScrapyRunner is how Scrapy spiders start: "fork" (a warm Python
	// parent per interpreter forks each one; see package scrapyrun,
	// Zygote) or "exec" (a fresh Python per job).
	ScrapyRunner string

	TaskCheckInterval time.Duration // asynq's poll of an empty queue
	Heartbeat         time.Duration // how often the worker says it is alive
	LostAfter         time.Duration // a worker silent this long is dead: its jobs are reaped
	ControlPoll       time.Duration // how often running jobs' rows are checked for cancels
	Reconcile         time.Duration // how often pending jobs are checked against Redis
	JobItemMaxMB      int           // all of one job's items; past it, items are dropped (and counted in its stats)
	ItemBatch         int
	ItemFlush         time.Duration
	LogFlush          time.Duration
}

// DefaultWorker returns the documented defaults of a worker.
func DefaultWorker() Worker {
	return Worker{
		SpidersDir:        "./spiders",
		Concurrency:       4,
		CancelGrace:       10 * time.Second,
		ShutdownTimeout:   30 * time.Second,
		Python:            "/usr/bin/python3",
		CacheMaxMB:        4096,
		ScrapyLogLevel:    "INFO",
		ScrapyRunner:      "fork",
		TaskCheckInterval: 5 * time.Millisecond,
		Heartbeat:         2 * time.Second,
		LostAfter:         15 * time.Second,
		ControlPoll:       time.Second,
		Reconcile:         5 * time.Second,
		JobItemMaxMB:      10240,
		ItemBatch:         5000,
		ItemFlush:         100 * time.Millisecond,
		LogFlush:          100 * time.Millisecond,
	}
}
