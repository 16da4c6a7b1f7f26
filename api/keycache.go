package api

import (
	"crypto/sha256"
	"sync"
	"time"
)

// keyCache remembers which user a key belongs to, so that most requests
// skip the key lookup. It is only used while a watch on key revocations is
// live (see db.WatchKeys): every revocation clears it, and so does losing
// the watch, so a revoked key is refused at once, never up to a TTL later.
type keyCache struct {
	mu   sync.Mutex
	live bool
	gen  uint64
	ttl  time.Duration
	m    map[[32]byte]keyEntry
}

type keyEntry struct {
	userID  string
	expires time.Time
}

// maxCachedKeys bounds the cache; past it, it starts over.
const maxCachedKeys = 100_000

func newKeyCache(ttl time.Duration) *keyCache {
	return &keyCache{ttl: ttl, m: map[[32]byte]keyEntry{}}
}

// get returns the cached user of key, or the generation to pass to put.
func (c *keyCache) get(key string) (userID string, gen uint64, ok bool) {
	h := sha256.Sum256([]byte(key))
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live {
		return "", c.gen, false
	}
	e, ok := c.m[h]
	if !ok || time.Now().After(e.expires) {
		return "", c.gen, false
	}
	return e.userID, c.gen, true
}

// put caches a lookup made at generation gen, unless the cache was cleared
// since: then the lookup may predate a revocation.
func (c *keyCache) put(key, userID string, gen uint64) {
	h := sha256.Sum256([]byte(key))
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || gen != c.gen {
		return
	}
	if len(c.m) >= maxCachedKeys {
		c.m = map[[32]byte]keyEntry{}
	}
	c.m[h] = keyEntry{userID: userID, expires: time.Now().Add(c.ttl)}
}

// clear forgets everything; lookups in flight will not be cached.
func (c *keyCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.m)
}

// setLive turns the cache on or off (off also clears it).
func (c *keyCache) setLive(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live = live
	c.gen++
	clear(c.m)
}

func (c *keyCache) isLive() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}
