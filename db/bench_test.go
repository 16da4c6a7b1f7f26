package db_test

// Micro-benchmarks of the API key lookup every request makes, against a
// real Postgres (TEST_DATABASE_URL), beside raw round trips that bound it
// from below:
//
//	go test -run '^$' -bench . -benchmem ./db
//
// SELECT 1 is the simple-protocol round trip; SELECT $1 is the least a
// parameterised statement costs with lib/pq (a parse round trip, then a
// bind/execute one). UserByKey is one parameterised statement, so its gap
// to SELECT $1 is Postgres's work, not the network's.

import (
	"context"
	"fmt"
	"testing"

	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/internal/testenv"
)

// keyStore is a store with 1000 users' keys, and one key to look up.
func keyStore(b *testing.B) (*db.DB, string) {
	b.Helper()
	dsn := testenv.DatabaseDSN(b)
	store := testenv.Open(b, dsn)
	ctx := context.Background()
	var key string
	for i := range 1000 {
		u, err := store.EnsureUser(ctx, fmt.Sprintf("bench-%d@scrapethis.local", i))
		if err != nil {
			b.Fatal(err)
		}
		_, k, err := store.CreateAPIKey(ctx, u.ID, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if i == 500 {
			key = k
		}
	}
	if _, err := testenv.SQL(b, dsn).ExecContext(ctx, `ANALYZE api_keys`); err != nil {
		b.Fatal(err)
	}
	return store, key
}

func BenchmarkUserByKey(b *testing.B) {
	store, key := keyStore(b)
	ctx := context.Background()
	b.Run("hit", func(b *testing.B) {
		for b.Loop() {
			if _, err := store.UserByKey(ctx, key); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		for b.Loop() {
			if _, err := store.UserByKey(ctx, db.KeyPrefix+"no-such-key"); err == nil {
				b.Fatal("found a key that does not exist")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := store.UserByKey(ctx, key); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkRoundTripRaw is the raw baseline: the cheapest statements
// Postgres can answer, over a plain pool of the same driver.
func BenchmarkRoundTripRaw(b *testing.B) {
	store := testenv.SQL(b, testenv.DatabaseDSN(b))
	ctx := context.Background()
	b.Run("select1", func(b *testing.B) {
		var n int
		for b.Loop() {
			if err := store.QueryRowContext(ctx, `SELECT 1`).Scan(&n); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("select_param", func(b *testing.B) {
		hash := db.HashKey("x")
		var out []byte
		for b.Loop() {
			if err := store.QueryRowContext(ctx, `SELECT $1::bytea`, hash).Scan(&out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel_select1", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			var n int
			for pb.Next() {
				if err := store.QueryRowContext(ctx, `SELECT 1`).Scan(&n); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
