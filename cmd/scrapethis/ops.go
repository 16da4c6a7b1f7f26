package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/metrics"
	"github.com/scrapethis/scrapethis/monitor"
	"github.com/scrapethis/scrapethis/tasks"
)

// newMetrics returns a process's metrics on a registry of its own, with
// the Postgres pool's statistics.
func newMetrics(d *deps) *metrics.Metrics {
	m := metrics.New(prometheus.NewRegistry())
	if err := m.CollectDBStats(d.db); err != nil {
		d.log.Warn("postgres pool metrics unavailable", "err", err)
	}
	return m
}

// apiOps builds an API server's operators' endpoints: /metrics with asynq's
// queue metrics, /readyz, and the monitoring UI when an admin password is
// set. The returned func closes the UI's Redis connections.
func apiOps(d *deps, m *metrics.Metrics, queuer *tasks.Queuer) (api.Ops, func(), error) {
	if err := m.CollectQueues(queuer.Inspector()); err != nil {
		return api.Ops{}, nil, fmt.Errorf("queue metrics: %w", err)
	}
	if err := m.CollectHeld(d.db.HeldJobCount); err != nil {
		return api.Ops{}, nil, fmt.Errorf("held jobs metric: %w", err)
	}
	ops := api.Ops{
		Metrics:       m,
		Prometheus:    m.Handler(),
		Ready:         metrics.Readyz(d.db, d.rdb),
		AdminUser:     d.cfg.AdminUser,
		AdminPassword: d.cfg.AdminPassword,
	}
	if d.cfg.AdminPassword == "" {
		d.log.Info("monitoring UI off: set SCRAPETHIS_ADMIN_PASSWORD to serve it at " + api.MonitoringPath)
		return ops, func() {}, nil
	}
	mon, err := monitor.New(d.cfg.RedisURL, monitor.Options{
		RootPath:      api.MonitoringPath,
		ReadOnly:      d.cfg.MonitoringReadOnly,
		PrometheusURL: d.cfg.PrometheusURL,
	})
	if err != nil {
		return api.Ops{}, nil, err
	}
	ops.Monitoring = mon
	d.log.Info("monitoring UI on", "path", api.MonitoringPath, "admin_user", d.cfg.AdminUser,
		"read_only", d.cfg.MonitoringReadOnly, "prometheus", d.cfg.PrometheusURL != "")
	return ops, func() { mon.Close() }, nil
}

// serveOps serves /metrics, /healthz and /readyz on addr (from the variable
// named env; "off" for none) while run runs, and keeps them up until run
// returns, so that probes answer during a worker's drain.
func serveOps(ctx context.Context, d *deps, m *metrics.Metrics, addr, env string, run func(context.Context) error) error {
	if strings.EqualFold(addr, "off") {
		return run(ctx)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s (%s; \"off\" for none): %w", addr, env, err)
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := serveListener(sctx, d.log, ln, metrics.Ops(m, d.db, d.rdb)); err != nil {
			d.log.Error("metrics server stopped", "addr", addr, "err", err)
		}
	}()
	err = run(ctx)
	stop()
	<-done
	return err
}

// adminPassword returns a random password for `scrapethis dev`.
func adminPassword() string {
	return rand.Text()
}
