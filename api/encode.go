package api

import (
	"bytes"
	"encoding/json"
	"sort"
	"time"

	"github.com/scrapethis/scrapethis"
)

// apiTime is a timestamp as the API shows it: RFC 3339 in UTC, to the second.
type apiTime time.Time

func (t apiTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format("2006-01-02T15:04:05Z") + `"`), nil
}

func optTime(t *time.Time) *apiTime {
	if t == nil {
		return nil
	}
	v := apiTime(*t)
	return &v
}

type spiderRef struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	RepoPath string `json:"repo_path"`
}

// jobJSON is a job as the API shows it, the same in lists and alone. A
// field with no value yet is null, never omitted.
type jobJSON struct {
	ID                string          `json:"id"`
	SpiderID          string          `json:"spider_id"`
	Status            string          `json:"status"`
	UserID            string          `json:"user_id"`
	Arguments         json.RawMessage `json:"arguments"`
	ItemsScraped      int64           `json:"items_scraped"`
	Error             *string         `json:"error"`
	ScheduleID        *string         `json:"schedule_id"`
	TimeoutSeconds    *int            `json:"timeout_seconds"`
	Attempts          int             `json:"attempts"`
	CreatedAt         apiTime         `json:"created_at"`
	StartedAt         *apiTime        `json:"started_at"`
	FinishedAt        *apiTime        `json:"finished_at"`
	CancelRequestedAt *apiTime        `json:"cancel_requested_at"`
	PurgedAt          *apiTime        `json:"purged_at"`
	Spider            spiderRef       `json:"spider"`
	Project           *string         `json:"project"`
	Version           *versionRef     `json:"version"`
	Settings          json.RawMessage `json:"settings"`
	MemoryMB          *int            `json:"memory_mb"`
	Stats             json.RawMessage `json:"stats"`
	Priority          int             `json:"priority"`
}

type versionRef struct {
	ID    string `json:"id"`
	Label string `json:"label"`
}

func toJobJSON(j scrapethis.Job) jobJSON {
	args := j.Arguments
	if len(bytes.TrimSpace(args)) == 0 {
		args = json.RawMessage(`{}`)
	}
	settings := j.Settings
	if len(bytes.TrimSpace(settings)) == 0 {
		settings = json.RawMessage(`{}`)
	}
	stats := j.Stats
	if len(bytes.TrimSpace(stats)) == 0 {
		stats = json.RawMessage(`null`)
	}
	var project *string
	var version *versionRef
	if v := j.Version; v != nil {
		project = &v.Project
		version = &versionRef{ID: v.ID, Label: v.Label}
	}
	return jobJSON{
		Project:           project,
		Version:           version,
		Settings:          settings,
		MemoryMB:          j.MemoryMB,
		Stats:             stats,
		Priority:          j.Priority,
		ID:                j.ID,
		SpiderID:          j.SpiderID,
		Status:            string(j.Status),
		UserID:            j.UserID,
		Arguments:         args,
		ItemsScraped:      j.ItemsScraped,
		Error:             j.Error,
		ScheduleID:        j.ScheduleID,
		TimeoutSeconds:    j.TimeoutSeconds,
		Attempts:          j.Attempts,
		CreatedAt:         apiTime(j.CreatedAt),
		StartedAt:         optTime(j.StartedAt),
		FinishedAt:        optTime(j.FinishedAt),
		CancelRequestedAt: optTime(j.CancelRequestedAt),
		PurgedAt:          optTime(j.PurgedAt),
		Spider:            spiderRef{ID: j.SpiderID, Name: j.SpiderName, RepoPath: j.SpiderRepoPath},
	}
}

type spiderJSON struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	RepoPath   string  `json:"repo_path"`
	Project    *string `json:"project"`
	MaxRunning *int    `json:"max_running"`
	UserID     string  `json:"user_id"`
	CreatedAt  apiTime `json:"created_at"`
}

func toSpiderJSON(s scrapethis.Spider) spiderJSON {
	return spiderJSON{ID: s.ID, Name: s.Name, RepoPath: s.RepoPath, Project: s.Project, MaxRunning: s.MaxRunning,
		UserID: s.UserID, CreatedAt: apiTime(s.CreatedAt)}
}

// versionJSON is a deployed version as the API shows it.
type versionJSON struct {
	ID        string   `json:"id"`
	Project   string   `json:"project"`
	Label     string   `json:"label"`
	SHA256    string   `json:"sha256"`
	SizeBytes int64    `json:"size_bytes"`
	Kind      string   `json:"kind"`
	Status    string   `json:"status"`
	Error     *string  `json:"error"`
	Spiders   []string `json:"spiders"`
	CreatedAt apiTime  `json:"created_at"`
	ReadyAt   *apiTime `json:"ready_at"`
}

func toVersionJSON(v scrapethis.Version) versionJSON {
	out := versionJSON{ID: v.ID, Project: v.Project, Label: v.Label, SHA256: v.SHA256, SizeBytes: v.SizeBytes,
		Kind: v.Kind, Status: string(v.Status), Error: v.Error, CreatedAt: apiTime(v.CreatedAt), ReadyAt: optTime(v.ReadyAt)}
	if v.Status == scrapethis.VersionReady {
		out.Spiders = make([]string, 0, len(v.Spiders))
		for name := range v.Spiders {
			out.Spiders = append(out.Spiders, name)
		}
		sort.Strings(out.Spiders)
	}
	return out
}

type projectJSON struct {
	ID            string       `json:"id"`
	Name          string       `json:"name"`
	UserID        string       `json:"user_id"`
	CreatedAt     apiTime      `json:"created_at"`
	LatestVersion *versionJSON `json:"latest_version"`
}

func toProjectJSON(p scrapethis.Project) projectJSON {
	out := projectJSON{ID: p.ID, Name: p.Name, UserID: p.UserID, CreatedAt: apiTime(p.CreatedAt)}
	if p.LatestVersion != nil {
		v := toVersionJSON(*p.LatestVersion)
		out.LatestVersion = &v
	}
	return out
}
