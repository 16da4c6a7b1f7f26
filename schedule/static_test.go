package schedule_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/schedule"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "schedules.json")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExampleFileParses(t *testing.T) {
	t.Parallel()
	list, err := schedule.ReadFile("../configs/schedules.example.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) == 0 {
		t.Fatal("the example declares no schedules")
	}
}

// TestReadFileRejects: a bad file is an error naming the file, the entry
// and the problem, so that the scheduler refuses to start with it.
func TestReadFileRejects(t *testing.T) {
	t.Parallel()
	entry := func(fields string) string {
		return `{"schedules":[{"name":"n","user_email":"u@example.com","spider_name":"s","cron":"@daily"` + fields + `}]}`
	}
	cases := map[string]string{
		`not json`:                       "not a valid schedules file",
		`[]`:                             "not a valid schedules file",
		`{"schedules":[]} {}`:            "trailing data",
		`{"schedule":[]}`:                "unknown field",
		entry(`,"crone":"@daily"`):       "unknown field",
		entry(`,"cron":"@every 100ms"`):  "@every 100ms",
		entry(`,"cron":"61 * * * *"`):    "61 * * * *",
		entry(`,"timezone":"Mars/Base"`): "Mars/Base",
		entry(`,"timezone":"Local"`):     "Local",
		entry(`,"name":""`):              "missing name",
		entry(`,"user_email":""`):        "missing user_email",
		entry(`,"spider_name":""`):       "missing spider_name",
		entry(`,"arguments":[1]`):        "arguments must be a JSON object",
		entry(`,"arguments":{"a-b":1}`):  "not an identifier",
		entry(`,"timeout_seconds":0`):    "timeout_seconds",
		// Postgres cannot store NUL in jsonb: refused here, not by LoadFile's upsert.
		entry(`,"arguments":{"a":"x\u0000y"}`):       "arguments.a: NUL characters are not allowed",
		entry(`,"arguments":{"a":[{"b":"\u0000"}]}`): "arguments.a: NUL characters are not allowed",
		entry(`,"enabled":"yes"`):                    "not a valid schedules file",
		`{"schedules":[{"name":"n","user_email":"u","spider_name":"s","cron":"@daily"},{"name":"n","user_email":"u","spider_name":"t","cron":"@hourly"}]}`: "already used by schedule 1",
	}
	for body, want := range cases {
		path := writeFile(t, body)
		_, err := schedule.ReadFile(path)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want an error naming %s and containing %q", body, err, path, want)
		}
	}
	if _, err := schedule.ReadFile(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("a missing file loaded")
	}
}

// TestLoadFile upserts static schedules by (user, name): loading the same
// file again changes nothing, an edit updates in place, a changed spec
// gets a new next_run_at and an unchanged one keeps it.
func TestLoadFile(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	ctx := context.Background()
	file := func(cron, extra string) string {
		return writeFile(t, `{"schedules":[
			{"name":"nightly","user_email":"sched@example.com","spider_name":"quotes","cron":"`+cron+`","timezone":"Europe/Paris","arguments":{"page":1}`+extra+`},
			{"name":"hourly","user_email":"sched@example.com","spider_name":"quotes","cron":"@hourly","enabled":false}
		]}`)
	}
	first, err := schedule.LoadFile(ctx, b.db, file("30 2 * * *", ""))
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 2 || *first[0].Name != "nightly" || first[0].NextRunAt == nil || !first[0].Enabled || first[0].Timezone != "Europe/Paris" {
		t.Fatalf("loaded %+v", first)
	}
	if first[1].Enabled || first[1].NextRunAt != nil {
		t.Fatalf("a disabled static schedule: %+v", first[1])
	}
	// Make the stored next_run_at distinguishable, as if it were due.
	b.setDue(first[0].ID, first[0].NextRunAt.Add(-24*time.Hour))
	kept := *b.schedule(first[0].ID).NextRunAt

	again, err := schedule.LoadFile(ctx, b.db, file("30 2 * * *", ""))
	if err != nil {
		t.Fatal(err)
	}
	if again[0].ID != first[0].ID || !again[0].UpdatedAt.Equal(first[0].UpdatedAt) || !again[0].NextRunAt.Equal(kept) {
		t.Fatalf("reloading the same file changed the schedule: %+v, was %+v", again[0], first[0])
	}
	edited, err := schedule.LoadFile(ctx, b.db, file("30 2 * * *", `,"no_overlap":true`))
	if err != nil {
		t.Fatal(err)
	}
	if edited[0].ID != first[0].ID || !edited[0].NoOverlap || !edited[0].NextRunAt.Equal(kept) {
		t.Fatalf("an edit other than the spec: %+v", edited[0])
	}
	respec, err := schedule.LoadFile(ctx, b.db, file("45 3 * * *", ""))
	if err != nil {
		t.Fatal(err)
	}
	if respec[0].ID != first[0].ID || respec[0].Cron != "45 3 * * *" || respec[0].NextRunAt.Equal(kept) {
		t.Fatalf("a new spec: %+v", respec[0])
	}
	list, err := b.db.Schedules(ctx, b.user.ID)
	if err != nil || len(list) != 2 {
		t.Fatalf("schedules after four loads: %d %v", len(list), err)
	}

	// Schedulers starting at once load the same file at once.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	path := file("0 4 * * *", "")
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := schedule.LoadFile(ctx, b.db, path)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent load: %v", err)
		}
	}
}

// TestLoadFileNeedsUserAndSpider: a file naming a user or spider that does
// not exist is refused, and nothing of it is stored.
func TestLoadFileNeedsUserAndSpider(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	ctx := context.Background()
	for body, want := range map[string]string{
		`{"schedules":[{"name":"a","user_email":"sched@example.com","spider_name":"quotes","cron":"@daily"},
			{"name":"b","user_email":"nobody@example.com","spider_name":"quotes","cron":"@daily"}]}`: `no user with email "nobody@example.com"`,
		`{"schedules":[{"name":"a","user_email":"sched@example.com","spider_name":"quotes","cron":"@daily"},
			{"name":"b","user_email":"sched@example.com","spider_name":"nope","cron":"@daily"}]}`: `no spider named "nope"`,
	} {
		_, err := schedule.LoadFile(ctx, b.db, writeFile(t, body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v, want %q", err, want)
		}
	}
	if list, err := b.db.Schedules(ctx, b.user.ID); err != nil || len(list) != 0 {
		t.Fatalf("a refused file stored %d schedules (%v)", len(list), err)
	}
}
