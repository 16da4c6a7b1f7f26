package tasks_test

import (
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/scrapethis/scrapethis/tasks"
)

func TestRedisURLForms(t *testing.T) {
	t.Parallel()
	c, err := tasks.NewRedisClient("redis://:pw@127.0.0.1:6390/3")
	if err != nil {
		t.Fatal(err)
	}
	one, ok := c.(*redis.Client)
	if !ok || one.Options().Addr != "127.0.0.1:6390" || one.Options().DB != 3 || one.Options().PoolSize < 32 {
		t.Errorf("redis:// gave %T %+v", c, one.Options())
	}
	c.Close()

	c, err = tasks.NewRedisClient("redis-cluster://127.0.0.1:7000?addr=127.0.0.1:7001&addr=127.0.0.1:7002")
	if err != nil {
		t.Fatal(err)
	}
	cl, ok := c.(*redis.ClusterClient)
	if !ok || strings.Join(cl.Options().Addrs, ",") != "127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002" {
		t.Errorf("redis-cluster:// gave %T", c)
	}
	c.Close()

	c, err = tasks.NewRedisClient("redis-sentinel://127.0.0.1:26379/2?master_name=mymaster&addr=127.0.0.1:26380")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.(*redis.Client); !ok {
		t.Errorf("redis-sentinel:// gave %T", c)
	}
	c.Close()

	// A bad URL is reported without quoting it: it may hold a password.
	if _, err := tasks.NewRedisClient("redis://:hunter2@127.0.0.1:notaport/0"); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad port: %v", err)
	}

	for _, bad := range []string{
		"127.0.0.1:6379",
		"http://127.0.0.1:6379",
		"redis-sentinel://127.0.0.1:26379",  // no master_name
		"redis-replica://127.0.0.1:6379",    // no such kind
		"redis://127.0.0.1:6379?nonsense=1", // unknown option
	} {
		if c, err := tasks.NewRedisClient(bad); err == nil {
			c.Close()
			t.Errorf("%q accepted", bad)
		}
	}
}
