package api

import (
	"bytes"
	"encoding/json"
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
	Spider            spiderRef       `json:"spider"`
}

func toJobJSON(j scrapethis.Job) jobJSON {
	args := j.Arguments
	if len(bytes.TrimSpace(args)) == 0 {
		args = json.RawMessage(`{}`)
	}
	return jobJSON{
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
		Spider:            spiderRef{ID: j.SpiderID, Name: j.SpiderName, RepoPath: j.SpiderRepoPath},
	}
}

type spiderJSON struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	RepoPath  string  `json:"repo_path"`
	UserID    string  `json:"user_id"`
	CreatedAt apiTime `json:"created_at"`
}

func toSpiderJSON(s scrapethis.Spider) spiderJSON {
	return spiderJSON{ID: s.ID, Name: s.Name, RepoPath: s.RepoPath, UserID: s.UserID, CreatedAt: apiTime(s.CreatedAt)}
}
