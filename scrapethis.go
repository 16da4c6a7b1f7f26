// Package scrapethis holds the domain types shared by every part of the
// platform: users, spiders, jobs, schedules, their statuses, and the error
// codes that the API maps to HTTP statuses.
package scrapethis

import (
	"encoding/json"
	"regexp"
	"time"
)

// Status is a job's place in its lifecycle.
type Status string

// Job statuses. Finished, Error and Cancelled are final.
const (
	StatusPending   Status = "pending"
	StatusRunning   Status = "running"
	StatusFinished  Status = "finished"
	StatusCancelled Status = "cancelled"
	StatusError     Status = "error"
)

// Statuses lists every status in lifecycle order.
var Statuses = []Status{StatusPending, StatusRunning, StatusFinished, StatusCancelled, StatusError}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	for _, v := range Statuses {
		if s == v {
			return true
		}
	}
	return false
}

// Final reports whether nothing may move a job out of s.
func (s Status) Final() bool {
	return s == StatusFinished || s == StatusCancelled || s == StatusError
}

// Close reasons recorded in a job's error field.
const (
	ReasonCancelled  = "cancelled"
	ReasonTimeout    = "timeout"
	ReasonWorkerLost = "worker lost"
)

// User owns spiders, jobs and schedules.
type User struct {
	ID        string
	Email     string
	CreatedAt time.Time
}

// Spider is a file under the spiders directory that jobs run.
type Spider struct {
	ID        string    `json:"id"`
	UserID    string    `json:"user_id"`
	Name      string    `json:"name"`
	RepoPath  string    `json:"repo_path"`
	CreatedAt time.Time `json:"created_at"`
}

// Job is one run of a spider.
type Job struct {
	ID                string
	UserID            string
	SpiderID          string
	SpiderName        string
	SpiderRepoPath    string
	Status            Status
	Arguments         json.RawMessage
	TimeoutSeconds    *int
	ItemsScraped      int64
	Error             *string
	ScheduleID        *string
	ScheduledFor      *time.Time
	WorkerID          *string
	Attempts          int
	CancelRequestedAt *time.Time
	CreatedAt         time.Time
	StartedAt         *time.Time
	FinishedAt        *time.Time
}

// JobFilter narrows a job listing. Zero values mean "any".
type JobFilter struct {
	UserID   string
	Status   Status
	SpiderID string
	Limit    int
	// Before is a keyset cursor: only jobs strictly older than it are listed.
	Before *JobCursor
}

// JobCursor is the position of a job in newest-first order.
type JobCursor struct {
	CreatedAt time.Time
	ID        string
}

// NewJob is what it takes to create a job.
type NewJob struct {
	UserID         string
	SpiderID       string
	Arguments      json.RawMessage
	TimeoutSeconds *int
	ScheduleID     *string
	ScheduledFor   *time.Time
}

// Schedule starts jobs of a spider on a cron-style spec.
type Schedule struct {
	ID             string
	UserID         string
	SpiderID       string
	SpiderName     string
	Name           *string
	Cron           string
	Timezone       string
	Arguments      json.RawMessage
	Enabled        bool
	TimeoutSeconds *int
	NoOverlap      bool
	NextRunAt      *time.Time
	LastRunAt      *time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

var argKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidArgumentKey reports whether k may name a spider argument.
func ValidArgumentKey(k string) bool { return argKey.MatchString(k) }
