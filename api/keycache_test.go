package api_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/scrapethis/scrapethis/api"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
	"github.com/scrapethis/scrapethis/tasks"
)

// TestKeyCacheRevocation: with the key cache on, lookups are cached, and a
// revocation still refuses the key at once (the trigger's NOTIFY clears the
// cache).
func TestKeyCacheRevocation(t *testing.T) {
	t.Parallel()
	dsn := testenv.DatabaseDSN(t)
	store, err := db.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	srv := api.New(store, tasks.NewQueuer(testenv.RedisClient(t)), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() { watched <- srv.CacheKeys(ctx) }()
	defer func() {
		cancel()
		if err := <-watched; err != nil {
			t.Errorf("key watch: %v", err)
		}
	}()
	b := &bundle{t: t, db: store, url: testenv.Serve(t, srv)}
	_, k1 := b.user("a@example.com")
	_, k2 := b.user("b@example.com")
	// Once the watch is live, lookups are cached.
	for i := 0; !srv.KeyCacheLive(); i++ {
		if i > 500 {
			t.Fatal("key revocation watch never went live")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.mustStatus(b.do("GET", "/api/v1/spiders", k1, ""), 200)
	b.mustStatus(b.do("GET", "/api/v1/spiders", k2, ""), 200)

	// A revocation that bypasses the trigger is not seen: proof of the cache.
	if _, err := testenv.SQL(t, dsn).Exec(`ALTER TABLE api_keys DISABLE TRIGGER api_keys_changed`); err != nil {
		t.Fatal(err)
	}
	store.RevokeAPIKey(context.Background(), k1)
	if _, err := testenv.SQL(t, dsn).Exec(`ALTER TABLE api_keys ENABLE TRIGGER api_keys_changed`); err != nil {
		t.Fatal(err)
	}
	b.mustStatus(b.do("GET", "/api/v1/spiders", k1, ""), 200)

	// A real revocation clears the cache: both revoked keys are refused.
	if n, err := store.RevokeAPIKey(context.Background(), k2); err != nil || n != 1 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.do("GET", "/api/v1/spiders", k2, "").status != 401 {
		if time.Now().After(deadline) {
			t.Fatal("revoked key still accepted")
		}
		time.Sleep(time.Millisecond)
	}
	b.mustStatus(b.do("GET", "/api/v1/spiders", k1, ""), 401)
}
