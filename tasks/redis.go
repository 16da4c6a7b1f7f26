package tasks

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// OpenRedis connects to the Redis at url (see NewRedisClient for the forms
// accepted) and checks that it answers.
func OpenRedis(ctx context.Context, url string) (redis.UniversalClient, error) {
	c, err := NewRedisClient(url)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect to Redis at %s: %w", redisAddrs(c), err)
	}
	return c, nil
}

// NewRedisClient returns a client for url without connecting. The forms are
// go-redis's, with a scheme prefix for Sentinel and Cluster:
//
//	redis://[user:password@]host:port[/db][?option=value...]   one server
//	rediss://...                                               the same over TLS
//	redis-sentinel://[user:password@]sentinel:26379[/db]?master_name=NAME[&addr=sentinel2:26379...][&password=MASTER_PASSWORD]
//	redis-cluster://[user:password@]node:6379[?addr=node2:6379...]
//
// rediss-sentinel:// and rediss-cluster:// use TLS. The userinfo of a
// Sentinel URL authenticates to the Sentinels; the master's own credentials
// go in the username and password options.
func NewRedisClient(url string) (redis.UniversalClient, error) {
	scheme, rest, ok := strings.Cut(url, "://")
	if !ok {
		return nil, fmt.Errorf("REDIS_URL: not a URL (want redis://host:port/db)")
	}
	base, kind, _ := strings.Cut(scheme, "-")
	if base != "redis" && base != "rediss" {
		return nil, fmt.Errorf("REDIS_URL: unsupported scheme %q (want redis, rediss, redis-sentinel or redis-cluster)", scheme)
	}
	url = base + "://" + rest
	switch kind {
	case "":
		opt, err := redis.ParseURL(url)
		if err != nil {
			return nil, urlError(err)
		}
		opt.PoolSize = max(opt.PoolSize, 32)
		return redis.NewClient(opt), nil
	case "sentinel":
		opt, err := redis.ParseFailoverURL(url)
		if err != nil {
			return nil, urlError(err)
		}
		if opt.MasterName == "" {
			return nil, fmt.Errorf("REDIS_URL: a redis-sentinel URL needs ?master_name=NAME")
		}
		opt.PoolSize = max(opt.PoolSize, 32)
		return redis.NewFailoverClient(opt), nil
	case "cluster":
		opt, err := redis.ParseClusterURL(url)
		if err != nil {
			return nil, urlError(err)
		}
		opt.PoolSize = max(opt.PoolSize, 32)
		return redis.NewClusterClient(opt), nil
	}
	return nil, fmt.Errorf("REDIS_URL: unsupported scheme %q (want redis, rediss, redis-sentinel or redis-cluster)", scheme)
}

// urlError reports a bad REDIS_URL without quoting it: it may hold a
// password.
func urlError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("REDIS_URL: %w", err)
}

// redisAddrs names the servers a client talks to, for error messages; it
// never includes credentials.
func redisAddrs(c redis.UniversalClient) string {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().Addr
	case *redis.ClusterClient:
		return strings.Join(c.Options().Addrs, ",")
	}
	return "REDIS_URL"
}
