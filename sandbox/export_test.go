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

// PreferWarmInit puts l's idle warm init pid on top, so that the next job
// takes it (unless the filler adds one first), for tests; false if pid is
// not idle.
func PreferWarmInit(l *Launcher, pid int) bool {
	if l.warm == nil {
		return false
	}
	l.warm.mu.Lock()
	defer l.warm.mu.Unlock()
	idle := l.warm.idle
	for i, wi := range idle {
		if wi.cmd.Process.Pid == pid {
			idle[i], idle[len(idle)-1] = idle[len(idle)-1], idle[i]
			return true
		}
	}
	return false
}

// KeptCode reports whether p's warm init still had p's code mounted from
// its last job, for tests.
func (p *Process) KeptCode() bool { return p.keptCode }
