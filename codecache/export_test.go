package codecache

// Waiters is how many Acquires wait for the build of sha in flight.
func (c *Cache) Waiters(sha string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.builds[sha]; b != nil {
		return b.waiters
	}
	return 0
}
