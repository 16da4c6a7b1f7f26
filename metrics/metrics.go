// Package metrics is the operators' view of a process: Prometheus metrics
// on a registry of its own, and the /healthz and /readyz probes. The API
// server and the worker each hold one Metrics; `scrapethis dev` shares one
// between them.
package metrics

import (
	"context"
	"database/sql"
	"net/http"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics records what the API, the worker and the scheduler do. It
// implements api.Metrics, worker.Metrics and schedule.Metrics; its methods
// are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec

	jobsCreated    prometheus.Counter
	jobsStarted    prometheus.Counter
	jobsFinished   *prometheus.CounterVec
	itemsStored    prometheus.Counter
	cancelLatency  prometheus.Histogram
	spidersRunning prometheus.Gauge
	jobsReaped     prometheus.Counter

	jobsScheduled prometheus.Counter
	firesSkipped  prometheus.Counter
	enqueueFailed prometheus.Counter

	jobsHeld         prometheus.Counter
	jobsLetGo        prometheus.Counter
	retentionDeleted *prometheus.CounterVec
	webhookLag       prometheus.Histogram
}

// New registers the platform's metrics, with the Go runtime's and the
// process's, on reg.
func New(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scrapethis_http_requests_total",
			Help: "HTTP requests answered, by method, route pattern and status code.",
		}, []string{"method", "route", "status"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "scrapethis_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by method and route pattern (followed log streams count their whole length).",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route"}),
		jobsCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scrapethis_jobs_created_total",
			Help: "Jobs created through the API.",
		}),
		jobsStarted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scrapethis_jobs_started_total",
			Help: "Spider processes started (a job run again after a hand-back counts again).",
		}),
		jobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scrapethis_jobs_finished_total",
			Help: "Job runs ended, by the status stored: finished, error, cancelled, or pending when handed back to the queue.",
		}, []string{"status"}),
		itemsStored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scrapethis_items_stored_total",
			Help: "Items written to Postgres.",
		}),
		cancelLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "scrapethis_job_cancel_latency_seconds",
			Help:    "Time from a running job's cancel reaching the worker to its spider's process group being gone.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60},
		}),
		spidersRunning: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "scrapethis_spider_processes_running",
			Help: "Spider processes running now.",
		}),
		jobsReaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scrapethis_jobs_reaped_total",
			Help: "Running jobs ended because their worker stopped heartbeating.",
		}),
		jobsScheduled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scrapethis_jobs_scheduled_total",
			Help: "Jobs created by schedules.",
		}),
		firesSkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scrapethis_schedule_fires_skipped_total",
			Help: "Schedule fires that started no job because the previous job was still pending or running (no_overlap).",
		}),
		enqueueFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scrapethis_schedule_enqueue_failures_total",
			Help: "Scheduled jobs committed but not handed to Redis at once (the reconciler enqueues them later).",
		}),
		jobsHeld: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scrapethis_jobs_held_total",
			Help: "Jobs held back by a concurrency cap (SCRAPETHIS_USER_MAX_RUNNING or a spider's max_running), when created or when a worker took them.",
		}),
		jobsLetGo: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scrapethis_jobs_let_go_total",
			Help: "Held jobs let go to the queue because a cap allowed them.",
		}),
		retentionDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scrapethis_retention_deleted_total",
			Help: "What retention removed: jobs purged (rows kept), items, log_lines, and expired idempotency_keys.",
		}, []string{"kind"}),
		webhookLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "scrapethis_webhook_delivery_lag_seconds",
			Help:    "Time from a job becoming final to its webhook delivery's 2xx (retries included).",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400},
		}),
	}
	for _, k := range []string{"jobs", "items", "log_lines", "idempotency_keys"} {
		m.retentionDeleted.WithLabelValues(k)
	}
	// Every status from the start, so that rate() and alerts see a zero
	// rather than no series; "pending" counts jobs handed back to the queue.
	for _, s := range []string{"finished", "error", "cancelled", "pending"} {
		m.jobsFinished.WithLabelValues(s)
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.requestDuration,
		m.jobsCreated, m.jobsStarted, m.jobsFinished, m.itemsStored,
		m.cancelLatency, m.spidersRunning, m.jobsReaped,
		m.jobsScheduled, m.firesSkipped, m.enqueueFailed,
		m.jobsHeld, m.jobsLetGo,
		m.retentionDeleted, m.webhookLag,
	)
	return m
}

// CollectQueues adds asynq's queue metrics (asynq_queue_size,
// asynq_queue_latency_seconds, asynq_tasks_processed_total, ...), read from
// Redis at each scrape. These are what asynqmon's charts query; register
// them on one kind of process only (the API), so that they are not scraped
// twice.
func (m *Metrics) CollectQueues(inspector *asynq.Inspector) error {
	return m.reg.Register(asynqmetrics.NewQueueMetricsCollector(inspector))
}

// CollectHeld adds scrapethis_jobs_held, the jobs held back by a cap now,
// read from Postgres by count at each scrape. Like the queue metrics,
// register it on one kind of process only (the API).
func (m *Metrics) CollectHeld(count func(context.Context) (int, error)) error {
	return m.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "scrapethis_jobs_held",
		Help: "Pending jobs held back now by a concurrency cap (SCRAPETHIS_USER_MAX_RUNNING or a spider's max_running); -1 when Postgres did not answer.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := count(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	}))
}

// PoolStats is what a connection pool reports; *db.DB has it.
type PoolStats interface{ Stats() sql.DBStats }

// CollectDBStats adds the Postgres connection pool's statistics
// (go_sql_*, labelled db_name="scrapethis", as Prometheus' own database/sql
// collector names them).
func (m *Metrics) CollectDBStats(pool PoolStats) error {
	return m.reg.Register(newPoolCollector(pool, "scrapethis"))
}

// Handler serves the registry in Prometheus' exposition formats. A
// collector that fails (Redis down for the queue metrics) leaves the rest
// served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:            m.reg,
		ErrorHandling:       promhttp.ContinueOnError,
		Timeout:             10 * time.Second,
		MaxRequestsInFlight: 4,
	})
}

// RequestServed counts an HTTP request. route is the pattern it matched
// ("/api/v1/jobs/:id"), never the raw path, so that ids do not become labels.
func (m *Metrics) RequestServed(method, route string, status int, d time.Duration) {
	method = knownMethod(method)
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.requestDuration.WithLabelValues(method, route).Observe(d.Seconds())
}

// JobCreated counts a job created through the API.
func (m *Metrics) JobCreated() { m.jobsCreated.Inc() }

// SpiderStarted counts a spider process started.
func (m *Metrics) SpiderStarted() {
	m.jobsStarted.Inc()
	m.spidersRunning.Inc()
}

// SpiderEnded counts a spider process gone.
func (m *Metrics) SpiderEnded() { m.spidersRunning.Dec() }

// ItemsStored counts items written.
func (m *Metrics) ItemsStored(n int) { m.itemsStored.Add(float64(n)) }

// Cancelled records how long a cancelled spider took to stop.
func (m *Metrics) Cancelled(latency time.Duration) { m.cancelLatency.Observe(latency.Seconds()) }

// JobFinished counts a job run ended with the status stored.
func (m *Metrics) JobFinished(status string) { m.jobsFinished.WithLabelValues(status).Inc() }

// JobsReaped counts jobs ended because their worker was lost.
func (m *Metrics) JobsReaped(n int) { m.jobsReaped.Add(float64(n)) }

// JobsScheduled counts jobs created by schedules.
func (m *Metrics) JobsScheduled(n int) { m.jobsScheduled.Add(float64(n)) }

// FiresSkipped counts schedule fires skipped.
func (m *Metrics) FiresSkipped(n int) { m.firesSkipped.Add(float64(n)) }

// RetentionDeleted counts what a retention sweep removed.
func (m *Metrics) RetentionDeleted(kind string, n int64) {
	m.retentionDeleted.WithLabelValues(kind).Add(float64(n))
}

// WebhookDelivered observes a delivery's lag from its event.
func (m *Metrics) WebhookDelivered(lag time.Duration) { m.webhookLag.Observe(lag.Seconds()) }

// EnqueueFailed counts a scheduled job not enqueued at once.
func (m *Metrics) EnqueueFailed() { m.enqueueFailed.Inc() }

// knownMethod is the method label: one of HTTP's own methods, "other" for
// anything a client made up, so that no client can grow the series.
func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// JobsHeld counts jobs held back by a cap.
func (m *Metrics) JobsHeld(n int) { m.jobsHeld.Add(float64(n)) }

// JobsLetGo counts held jobs let go.
func (m *Metrics) JobsLetGo(n int) { m.jobsLetGo.Add(float64(n)) }
