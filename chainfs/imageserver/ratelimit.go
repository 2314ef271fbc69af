package imageserver

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimit is a token bucket: PerSecond requests per second on average,
// bursts of up to Burst.
type RateLimit struct {
	PerSecond float64
	Burst     int
}

// ipLimiter keeps one token bucket per client IP. Idle buckets are dropped
// so the map cannot grow without bound; when it is full of active clients
// new clients are refused (a flood from many addresses is refused rather
// than allowed to exhaust memory).
type ipLimiter struct {
	limit     RateLimit
	maxIPs    int
	idle      time.Duration
	mu        sync.Mutex
	buckets   map[string]*ipBucket
	lastSweep time.Time
}

type ipBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newIPLimiter(l RateLimit, maxIPs int) *ipLimiter {
	return &ipLimiter{
		limit:   l,
		maxIPs:  maxIPs,
		idle:    10 * time.Minute,
		buckets: make(map[string]*ipBucket),
	}
}

// allow reports whether a request from ip may proceed at now, and if not,
// how long until it may.
func (l *ipLimiter) allow(ip string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > time.Minute || len(l.buckets) >= l.maxIPs {
		l.sweep(now)
	}
	b, ok := l.buckets[ip]
	if !ok {
		if len(l.buckets) >= l.maxIPs {
			return false, l.idle
		}
		b = &ipBucket{lim: rate.NewLimiter(rate.Limit(l.limit.PerSecond), l.limit.Burst)}
		l.buckets[ip] = b
	}
	b.seen = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Minute
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

func (l *ipLimiter) sweep(now time.Time) {
	l.lastSweep = now
	for ip, b := range l.buckets {
		if now.Sub(b.seen) > l.idle {
			delete(l.buckets, ip)
		}
	}
}
