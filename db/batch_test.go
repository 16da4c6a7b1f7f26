package db_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/internal/testenv"
)

func TestCreateJobsAndUsersByKeys(t *testing.T) {
	t.Parallel()
	store := testenv.DB(t)
	ctx := context.Background()
	alice, _ := store.EnsureUser(ctx, "alice@example.com")
	bob, _ := store.EnsureUser(ctx, "bob@example.com")
	sa, err := store.CreateSpider(ctx, alice.ID, "a", "a.py")
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := store.CreateSpider(ctx, bob.ID, "b", "b.py")
	five := 5
	jobs, errs, err := store.CreateJobs(ctx, []scrapethis.NewJob{
		{UserID: alice.ID, SpiderID: sa.ID, Arguments: json.RawMessage(`{"x":1}`), TimeoutSeconds: &five},
		{UserID: alice.ID, SpiderID: sb.ID}, // bob's spider: not alice's
		{UserID: alice.ID, SpiderID: "not-a-uuid"},
		{UserID: bob.ID, SpiderID: sb.ID},
		{UserID: alice.ID, SpiderID: sa.ID},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, wantErr := range []bool{false, true, true, false, false} {
		if (errs[i] != nil) != wantErr {
			t.Fatalf("job %d: err %v", i, errs[i])
		}
		if wantErr && scrapethis.ErrorCode(errs[i]) != scrapethis.ENotFound {
			t.Fatalf("job %d: %v", i, errs[i])
		}
	}
	if j := jobs[0]; j.Status != scrapethis.StatusPending || j.SpiderName != "a" || *j.TimeoutSeconds != 5 || string(j.Arguments) != `{"x": 1}` {
		t.Fatalf("job 0 %+v (%s)", j, j.Arguments)
	}
	if jobs[3].UserID != bob.ID || jobs[4].TimeoutSeconds != nil {
		t.Fatalf("jobs %+v", jobs)
	}
	// Newest first keeps the order the batch was asked in.
	list, _ := store.Jobs(ctx, scrapethis.JobFilter{UserID: alice.ID})
	if len(list) != 2 || list[0].ID != jobs[4].ID || list[1].ID != jobs[0].ID {
		t.Fatalf("list %v", list)
	}

	_, k1, _ := store.CreateAPIKey(ctx, alice.ID, "")
	_, k2, _ := store.CreateAPIKey(ctx, bob.ID, "")
	_, k3, _ := store.CreateAPIKey(ctx, bob.ID, "")
	store.RevokeAPIKey(ctx, k3)
	users, err := store.UsersByKeys(ctx, []string{k1, "st_unknown", k2, k3, k1})
	if err != nil {
		t.Fatal(err)
	}
	if users[0] != alice.ID || users[1] != "" || users[2] != bob.ID || users[3] != "" || users[4] != alice.ID {
		t.Fatalf("users %v", users)
	}
}

func TestRevokeAPIKeyByKeyOrID(t *testing.T) {
	t.Parallel()
	store := testenv.DB(t)
	ctx := context.Background()
	u, _ := store.EnsureUser(ctx, "r@example.com")
	id1, k1, _ := store.CreateAPIKey(ctx, u.ID, "")
	_, k2, _ := store.CreateAPIKey(ctx, u.ID, "")
	for _, c := range []struct {
		arg  string
		want int64
	}{{id1, 1}, {k1, 0}, {k2, 1}, {k2, 0}, {"st_unknown", 0}} {
		if n, err := store.RevokeAPIKey(ctx, c.arg); err != nil || n != c.want {
			t.Fatalf("revoke %q: %d %v, want %d", c.arg, n, err, c.want)
		}
	}
	if users, _ := store.UsersByKeys(ctx, []string{k1, k2}); users[0] != "" || users[1] != "" {
		t.Fatalf("revoked keys still resolve: %v", users)
	}
}
