package api_test

import (
	"io"
	"log/slog"

	"github.com/scrapethis/scrapethis"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newJob(userID, spiderID string) scrapethis.NewJob {
	return scrapethis.NewJob{UserID: userID, SpiderID: spiderID}
}
