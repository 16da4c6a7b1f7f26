// Package monitor is the operators' UI: asynqmon, the queue's web console,
// with its assets embedded (it works offline), set up for ScrapeThis' tasks.
// The API mounts it at /monitoring behind basic auth (see api.Ops).
package monitor

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/hibiken/asynqmon"

	"github.com/scrapethis/scrapethis/tasks"
)

// Options are how the UI runs.
type Options struct {
	// RootPath is where the handler is mounted; default "/monitoring".
	RootPath string
	// ReadOnly refuses every request that would change the queue (pause,
	// delete, run, archive, cancel): the UI's API answers 405 to them.
	ReadOnly bool
	// PrometheusURL, when set, is the Prometheus asynqmon queries for its
	// charts; it must scrape the API's /metrics (asynq_* series).
	PrometheusURL string
}

// New returns the UI for the Redis at redisURL (any form tasks.OpenRedis
// takes). Close the handler when done: it holds its own Redis connections.
func New(redisURL string, o Options) (*asynqmon.HTTPHandler, error) {
	// Validate once here; asynqmon opens its clients itself, and panics on
	// an option it cannot use.
	c, err := tasks.NewRedisClient(redisURL)
	if err != nil {
		return nil, err
	}
	c.Close()
	if o.RootPath == "" {
		o.RootPath = "/monitoring"
	}
	return asynqmon.New(asynqmon.Options{
		RootPath:          o.RootPath,
		RedisConnOpt:      redisConnOpt(redisURL),
		PayloadFormatter:  asynqmon.PayloadFormatterFunc(FormatPayload),
		PrometheusAddress: o.PrometheusURL,
		ReadOnly:          o.ReadOnly,
	}), nil
}

// redisConnOpt is an asynq.RedisConnOpt that opens clients the way the rest
// of ScrapeThis does, so that every REDIS_URL form works here too.
type redisConnOpt string

func (u redisConnOpt) MakeRedisClient() any {
	c, err := tasks.NewRedisClient(string(u))
	if err != nil {
		panic(fmt.Sprintf("monitor: %v", err)) // New validated the URL
	}
	return c
}

// FormatPayload shows a task's payload in the UI: a spider run reads as
// "job <id> spider <name> user <id>"; anything else as asynqmon shows it.
func FormatPayload(taskType string, payload []byte) string {
	if taskType == tasks.TypeRunSpider {
		var p tasks.RunSpiderPayload
		if err := json.Unmarshal(payload, &p); err == nil && p.JobID != "" {
			var b strings.Builder
			b.WriteString("job " + p.JobID)
			if p.Spider != "" {
				b.WriteString(" spider " + p.Spider)
			}
			if p.UserID != "" {
				b.WriteString(" user " + p.UserID)
			}
			return b.String()
		}
	}
	return asynqmon.DefaultPayloadFormatter.FormatPayload(taskType, payload)
}
