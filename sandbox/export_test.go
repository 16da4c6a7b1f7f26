package sandbox

// InitPID is the pid of the init that runs p (a warm init's, or a cold
// one's), for tests.
func (p *Process) InitPID() int {
	if p.warm != nil {
		return p.warm.cmd.Process.Pid
	}
	if p.cmd != nil {
		return p.cmd.Process.Pid
	}
	return 0
}

// IdleWarmInits are the pids of l's idle warm inits, for tests.
func IdleWarmInits(l *Launcher) []int {
	if l.warm == nil {
		return nil
	}
	l.warm.mu.Lock()
	defer l.warm.mu.Unlock()
	var out []int
	for _, wi := range l.warm.idle {
		out = append(out, wi.cmd.Process.Pid)
	}
	return out
}

// PreferWarmInit has the next job take l's idle warm init pid, for tests;
// false if pid is not idle.
func PreferWarmInit(l *Launcher, pid int) bool {
	if l.warm == nil {
		return false
	}
	l.warm.mu.Lock()
	defer l.warm.mu.Unlock()
	for _, wi := range l.warm.idle {
		if wi.cmd.Process.Pid == pid {
			l.warm.next = wi
			return true
		}
	}
	return false
}

// KeptCode reports whether p's warm init still had p's code mounted from
// its last job, for tests.
func (p *Process) KeptCode() bool { return p.keptCode }
