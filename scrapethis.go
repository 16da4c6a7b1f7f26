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

// Spider is what jobs run: a file under the spiders directory, or a spider
// of a deployed project (Project set, RepoPath the file inside it).
type Spider struct {
	ID       string  `json:"id"`
	UserID   string  `json:"user_id"`
	Name     string  `json:"name"`
	RepoPath string  `json:"repo_path"`
	Project  *string `json:"project"`
	// MaxRunning caps the spider's running jobs, all workers together; nil
	// is no cap, 0 holds every job back until it is raised.
	MaxRunning *int      `json:"max_running"`
	CreatedAt  time.Time `json:"created_at"`
}

// VersionStatus is where a deployed version is in its inspection.
type VersionStatus string

// Version statuses.
const (
	VersionBuilding VersionStatus = "building"
	VersionReady    VersionStatus = "ready"
	VersionFailed   VersionStatus = "failed"
)

// Kinds of deployed code.
const (
	KindScrapy = "scrapy" // a Scrapy project: spiders run with scrapy crawl
	KindBundle = "bundle" // executables named by a scrapethis.json manifest
)

// Project is a user's deployed code, a series of immutable versions.
type Project struct {
	ID            string
	UserID        string
	Name          string
	CreatedAt     time.Time
	LatestVersion *Version // the newest ready version, if any
}

// Version is one uploaded archive of a project, immutable.
type Version struct {
	ID             string
	ProjectID      string
	Project        string
	UserID         string
	Label          string
	SHA256         string
	SizeBytes      int64
	ContentType    string
	Kind           string
	SettingsModule string
	Status         VersionStatus
	Error          *string
	// Spiders maps each spider's name to its file in the project, once ready.
	Spiders   map[string]string
	CreatedAt time.Time
	ReadyAt   *time.Time
}

// JobVersion is the deployed code a job runs.
type JobVersion struct {
	ID             string
	Label          string
	Project        string
	SHA256         string
	ContentType    string
	Kind           string
	SettingsModule string
	// Path is the spider's file inside the version: the module that
	// defines it (Scrapy) or its executable (bundle).
	Path string
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
	Version           *JobVersion // nil for a spiders-directory spider
	Settings          json.RawMessage
	MemoryMB          *int
	Stats             json.RawMessage // Scrapy's stats; nil until reported
	WorkerID          *string
	Attempts          int
	CancelRequestedAt *time.Time
	CreatedAt         time.Time
	StartedAt         *time.Time
	FinishedAt        *time.Time
	// Priority is 0 (lowest) to 4 (highest): a free slot goes to the
	// highest priority waiting, equal priorities in creation order.
	Priority int
	// Held means the job is pending because a cap holds it back: it is not
	// queued in Redis, and is let go when a job of its user ends.
	Held bool
	// SpiderMaxRunning is the cap of the job's spider when the job was read.
	SpiderMaxRunning *int
	PurgedAt         *time.Time // when retention deleted its items and logs
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
	// Version is a version id or label of the spider's project; "" is its
	// latest ready version when the job is created.
	Version  string
	Settings json.RawMessage // Scrapy settings on top of the project's
	MemoryMB *int
	Priority *int // nil is PriorityDefault
	// IdempotencyKey, when set, is stored with the job in the same
	// transaction, with RequestHash (the SHA-256 of the request body): a
	// key its user used in the last 24 hours refuses the job.
	IdempotencyKey string
	RequestHash    []byte
}

// Job priorities: 0 lowest, 4 highest.
const (
	PriorityMin     = 0
	PriorityMax     = 4
	PriorityDefault = 2
)

// ErrPriority is the 400 for a priority out of range or not a whole number.
var ErrPriority = Errorf(EInvalid, "priority must be a whole number from %d (lowest) to %d (highest)", PriorityMin, PriorityMax)

// ValidatePriority checks an optional priority.
func ValidatePriority(p *int) error {
	if p != nil && (*p < PriorityMin || *p > PriorityMax) {
		return ErrPriority
	}
	return nil
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
	Priority       *int // of the jobs it starts; nil on create is PriorityDefault
	NextRunAt      *time.Time
	LastRunAt      *time.Time
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

var argKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidArgumentKey reports whether k may name a spider argument.
func ValidArgumentKey(k string) bool { return argKey.MatchString(k) }
