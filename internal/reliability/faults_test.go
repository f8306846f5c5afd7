//go:build linux

package reliability_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// base is the worker every scenario starts from: three steps per
// acquisition, fenced writes, a holder that stops at the loss notice.
func base() workerConfig {
	return workerConfig{
		Prefix: "lock:", TTL: time.Second, Wait: 5 * time.Second,
		Steps: 3, Gap: 3 * time.Millisecond,
		Fence: true, WatchLoss: true,
	}
}

func jitter(max time.Duration) time.Duration {
	return time.Duration(rand.Int64N(int64(max) + 1))
}

// TestPause_holderStoppedPastTTL freezes the lock holder's process with
// SIGSTOP, at a random moment of its critical section, for 1.5 TTL: its
// lease runs out, another worker takes the lock, and the frozen one wakes
// up mid-write. A frozen process cannot hear the loss notice, so the
// holders here are deaf to it and the fence alone must stop the late write;
// the control writes without it.
func TestPause_holderStoppedPastTTL(t *testing.T) {
	w := base()
	w.TTL, w.Auto, w.WatchLoss = 300*time.Millisecond, true, false
	pause := pauses(w.TTL)
	ctrl := w
	ctrl.Fence = false
	runScenario(t, scenario{
		Name:      "holder paused (SIGSTOP) past its TTL",
		Unit:      "pauses",
		Claims:    claims{Lock: true, Store: true},
		Switched:  "fence",
		Protected: spec{Workers: 3, Keys: []string{"coupon:1"}, Worker: w, Inject: pause},
		Control:   spec{Workers: 3, Keys: []string{"coupon:1"}, Worker: ctrl, Inject: pause},
	})
}

// pauses freezes a holder (SIGSTOP) a few ms after it acquired, at a
// random moment of its critical section, for 1.5 ttl, and lets it go on.
func pauses(ttl time.Duration) func(r *run) { return pausesOf(ttl, "") }

// pausesOf pauses only holders in role ("" any; the rw register's r or w).
func pausesOf(ttl time.Duration, role string) func(r *run) {
	return func(r *run) {
		for {
			e, ok := r.nextAcq(5 * time.Millisecond)
			if !ok {
				return
			}
			if role != "" && e.Role != role {
				continue
			}
			p := r.procs[e.W]
			if !r.sleep(jitter(15 * time.Millisecond)) {
				return
			}
			p.stop()
			r.faults.Add(1)
			time.Sleep(ttl * 3 / 2)
			p.cont()
			if !r.sleep(150 * time.Millisecond) {
				return
			}
			r.drainAcqs()
		}
	}
}

// TestPartition_holderCutOff cuts the holder's link to Redis (its proxy
// holds every byte) for 2 TTL while it works; its database link stays up.
// Its renewals fail, the loss notice fires at the validity deadline, the
// lease runs out and another worker takes over. Protected holders stop at
// the notice and write through the fence; the control's holder is deaf to
// the notice and writes unfenced, so it keeps writing beside the new holder.
func TestPartition_holderCutOff(t *testing.T) {
	w := base()
	w.TTL, w.Auto = 300*time.Millisecond, true
	w.Steps, w.Hold = 0, 2*w.TTL // work past the lease if nobody stops us
	partition := func(r *run) {
		for {
			e, ok := r.nextAcq(5 * time.Millisecond)
			if !ok {
				return
			}
			if !r.sleep(jitter(50 * time.Millisecond)) {
				return
			}
			p := r.proxies[e.W]
			p.Block()
			r.faults.Add(1)
			time.Sleep(2 * w.TTL)
			p.Unblock()
			if !r.sleep(100 * time.Millisecond) {
				return
			}
			r.drainAcqs()
		}
	}
	ctrl := w
	ctrl.Fence, ctrl.WatchLoss = false, false
	runScenario(t, scenario{
		Name:      "holder partitioned from Redis (proxy blocks) for 2 TTL",
		Unit:      "partitions",
		Claims:    claims{Lock: true, Store: true},
		Switched:  "loss notice and fence",
		Protected: spec{Workers: 3, Keys: []string{"coupon:1"}, Proxies: true, Worker: w, Inject: partition},
		Control:   spec{Workers: 3, Keys: []string{"coupon:1"}, Proxies: true, Worker: ctrl, Inject: partition},
	})
}

// TestDelay_slowLink puts one worker behind a link to Redis that delays
// every byte by 80 ms each way; the others have fast links and think a
// while between acquisitions, so the slow worker gets the lock often and a
// fast one takes over the moment Redis lets the key expire. Holders keep the
// lock without a watchdog until they believe the lease is over, then let it
// run out. The Client times the lease from when the acquire was sent, so the
// delay only shortens it; the control times it from the reply, as a naive
// client would, and believes in it 80 ms longer than Redis keeps the key.
func TestDelay_slowLink(t *testing.T) {
	w := base()
	w.TTL, w.UntilDeadline, w.Steps = 250*time.Millisecond, true, 0
	const d = 80 * time.Millisecond
	tweak := func(i int, c *workerConfig) {
		if i > 0 {
			c.Think = 1500 * time.Millisecond
		}
	}
	slow := func(r *run) {
		r.proxies[0].Delay(d)
		<-r.ctx.Done()
		r.proxies[0].Delay(0)
		for _, e := range r.snapshot() {
			if e.K == "acq" && e.Res == "ok" && e.W == 0 {
				r.faults.Add(1) // an acquisition over the slow link
			}
		}
	}
	ctrl := w
	ctrl.WatchLoss, ctrl.NaiveDeadline = false, true
	runScenario(t, scenario{
		Name:      "slow link (one client's proxy delays 80 ms each way)",
		Unit:      "acquisitions over the slow link",
		Claims:    claims{Lock: true, Store: true},
		Switched:  "lease timed from the send",
		Protected: spec{Workers: 3, Keys: []string{"coupon:1"}, Proxies: true, Worker: w, Tweak: tweak, Inject: slow},
		Control:   spec{Workers: 3, Keys: []string{"coupon:1"}, Proxies: true, Worker: ctrl, Tweak: tweak, Inject: slow},
	})
}

// restarts kills Redis (SIGKILL) shortly after a worker acquired, starts it
// again on the same port, and lets the workers recover.
func restarts(r *run) {
	for {
		if _, ok := r.nextAcq(5 * time.Millisecond); !ok {
			return
		}
		if !r.sleep(jitter(30 * time.Millisecond)) {
			return
		}
		r.srv.Restart()
		r.faults.Add(1)
		if !r.sleep(400 * time.Millisecond) {
			return
		}
		r.drainAcqs()
	}
}

// TestRestart_noPersistence kills and restarts Redis without persistence
// while a holder works (300 ms of writes per acquisition; the watchdog
// renews every 400 ms of a 1 s lease).
// The restarted server is empty, so the next worker gets the lock at once
// and two holders overlap until the first one's next renewal finds the key
// gone: a single Redis is a single point of truth, and the mutex model is
// broken by design here. What must hold is the data: fences keep
// increasing (a new counter starts from the server clock) and the fence
// refuses the older holder's writes. The control writes unfenced.
func TestRestart_noPersistence(t *testing.T) {
	w := base()
	w.TTL, w.Auto, w.Every, w.Steps, w.Hold = time.Second, true, 400*time.Millisecond, 0, 300*time.Millisecond
	ctrl := w
	ctrl.Fence = false
	runScenario(t, scenario{
		Name:      "Redis killed and restarted, no persistence",
		Unit:      "restarts",
		Claims:    claims{Store: true},
		Switched:  "fence",
		Protected: spec{Workers: 3, Keys: []string{"coupon:1"}, Worker: w, Inject: restarts},
		Control:   spec{Workers: 3, Keys: []string{"coupon:1"}, Worker: ctrl, Inject: restarts},
	})
}

// TestRestart_aofAlways does the same with AOF and appendfsync always:
// every acquisition and renewal is on disk before the client hears of it,
// and the lease deadline survives as an absolute time, so the restarted
// server still knows the holder and nobody else gets the lock. The control
// is the same run without persistence.
func TestRestart_aofAlways(t *testing.T) {
	w := base()
	w.TTL, w.Auto, w.Every, w.Steps, w.Hold = time.Second, true, 400*time.Millisecond, 0, 300*time.Millisecond
	aof := redistest.WithArgs("--appendonly", "yes", "--appendfsync", "always")
	runScenario(t, scenario{
		Name:      "Redis killed and restarted, AOF with appendfsync always",
		Unit:      "restarts",
		Claims:    claims{Lock: true, Store: true},
		Switched:  "persistence",
		Protected: spec{Workers: 3, Keys: []string{"coupon:1"}, Worker: w, Server: []redistest.Option{aof}, Inject: restarts},
		Control:   spec{Workers: 3, Keys: []string{"coupon:1"}, Worker: w, Inject: restarts},
	})
}

// TestAmbiguous_resetAfterArrival makes replies ambiguous: each worker
// resets its own connections after a random quarter of its script calls
// have reached Redis and before their replies are back. go-redis retries
// the call on a new connection. The acquire script recognises its own
// token (the retry is success with the same fence), the release script
// compares the token, so the retry of a release that did land cannot touch
// the next holder. The control releases with a plain DEL: its retry
// deletes whoever took the lock in between, and a third holder walks in.
func TestAmbiguous_resetAfterArrival(t *testing.T) {
	w := base()
	w.TTL, w.Steps, w.Hold = time.Second, 0, 100*time.Millisecond
	w.ResetProb, w.ResetDelay = 0.25, 30*time.Millisecond
	ctrl := w
	ctrl.NaiveRelease = true
	runScenario(t, scenario{
		Name:      "ambiguous replies (connection reset after the command reached Redis)",
		Unit:      "resets",
		Claims:    claims{Lock: true, Store: true},
		Switched:  "token compare on release",
		Protected: spec{Workers: 3, Keys: []string{"coupon:1"}, Worker: w},
		Control:   spec{Workers: 3, Keys: []string{"coupon:1"}, Worker: ctrl},
	})
}

// fill writes 32 KB values into Redis as fast as it can, as a cache
// sharing the server would, until the window closes. Under noeviction a
// full server refuses it (OOM) and it deletes its keys and starts over.
// It counts evictions (INFO evicted_keys) and refusals as faults, and asks
// core.CheckServer what it thinks of the server.
func fill(r *run) {
	ctx := context.Background()
	var ce *core.ServerCheckError
	if err := core.CheckServer(ctx, r.rdb); errors.As(err, &ce) {
		r.note("core.CheckServer warns (%s=%s)", ce.Warnings[0].Setting, ce.Warnings[0].Value)
	} else if err != nil {
		r.t.Errorf("CheckServer: %v", err)
	} else {
		r.note("core.CheckServer: no warning")
	}
	evicted := func() int64 {
		info, err := r.rdb.Info(ctx, "stats").Result()
		if err != nil {
			r.t.Errorf("INFO stats: %v", err)
			return 0
		}
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "evicted_keys:"); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		return 0
	}
	before := evicted()
	val := strings.Repeat("x", 32<<10)
	var mine []string
	refused := 0
	for i := 0; r.ctx.Err() == nil; i++ {
		k := "cache:" + strconv.Itoa(i)
		err := r.rdb.Set(ctx, k, val, 0).Err()
		switch {
		case err == nil:
			mine = append(mine, k)
		case strings.HasPrefix(err.Error(), "OOM"):
			refused++
			if len(mine) > 0 {
				_ = r.rdb.Unlink(ctx, mine...).Err()
				mine = mine[:0]
			}
		default:
			r.t.Errorf("filler: %v", err)
			return
		}
	}
	r.faults.Add(evicted() - before + int64(refused))
	r.note("%d keys evicted, %d writes refused with OOM", evicted()-before, refused)
}

// TestEviction_memoryPressure runs the lock on a Redis with maxmemory 3 MB
// that a cache fills continuously. With allkeys-lru (the control) Redis
// evicts lock keys of live holders and grants them again: the kit is not
// safe on an evicting Redis, and core.CheckServer warns about it. With
// noeviction Redis refuses writes when full instead; acquisitions fail
// (ErrUnavailable) until memory frees up, and no lock is granted twice.
// Holders keep their lock 400 ms without a watchdog, like a slow request.
func TestEviction_memoryPressure(t *testing.T) {
	w := base()
	w.TTL, w.Steps, w.Hold = 2*time.Second, 0, 400*time.Millisecond
	mem := func(policy string) []redistest.Option {
		return []redistest.Option{redistest.WithArgs("--maxmemory", "3mb", "--maxmemory-policy", policy)}
	}
	runScenario(t, scenario{
		Name:      "memory pressure: maxmemory 3 MB filled by a cache",
		Unit:      "evictions or OOM refusals",
		Claims:    claims{Lock: true, Store: true},
		Switched:  "noeviction (allkeys-lru instead)",
		Protected: spec{Workers: 3, Keys: []string{"coupon:1", "coupon:2"}, Worker: w, Server: mem("noeviction"), Inject: fill},
		Control:   spec{Workers: 3, Keys: []string{"coupon:1", "coupon:2"}, Worker: w, Server: mem("allkeys-lru"), Inject: fill},
	})
}

// TestSQL_fencedRegister checks sqlguard on every reachable database
// (SQLite always; PostgreSQL and MariaDB when reachable): holders that
// sleep past their lease (a simulated pause, deaf to the loss notice) in a
// fifth of their steps, before or inside the transaction, race the holders
// that took over. Writes go through sqlguard.BeginTx, which records the
// fence before the caller's statements; the control writes without it.
func TestSQL_fencedRegister(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres", "mariadb"} {
		t.Run(db, func(t *testing.T) {
			w := base()
			// No watchdog: a sleeping process would keep renewing (its
			// watchdog goroutine runs); the lease must run out as it
			// does for a stopped process.
			w.TTL, w.WatchLoss = 200*time.Millisecond, false
			w.Steps, w.Gap = 2, 2*time.Millisecond
			w.SleepProb, w.SleepFor = 0.2, 300*time.Millisecond
			ctrl := w
			ctrl.Fence = false
			runScenario(t, scenario{
				Name:      "sqlguard on " + db + ": holders sleeping past their lease",
				Unit:      "late writers",
				Claims:    claims{Store: true},
				Switched:  "sqlguard",
				Protected: spec{Workers: 3, Keys: []string{"coupon:1"}, Worker: w, DB: db},
				Control:   spec{Workers: 3, Keys: []string{"coupon:1"}, Worker: ctrl, DB: db},
			})
		})
	}
}

// TestFailover_sentinel runs the lock on a Sentinel group (master, one
// replica, three sentinels) and, a second into the run, holds back
// replication, lets the workers go on for 600 ms, and kills the master.
// Sentinel promotes the replica, which never saw those lock writes nor the
// fence increments that came with them. With core.WithReplicaAck(1, 100ms)
// nothing is granted or renewed unless the replica has it, so the promoted
// replica knows every live lock and every issued fence. The control, without
// replica acknowledgement, hands out fences the old master already issued
// (and, when the holder is still working, the lock itself) again.
func TestFailover_sentinel(t *testing.T) {
	w := base()
	w.TTL, w.Auto, w.Steps, w.Hold = time.Second, true, 0, 300*time.Millisecond
	prot := w
	prot.ReplicaAck, prot.AckTimeout = 1, 100*time.Millisecond
	failover := func(r *run) {
		if !r.sleep(time.Second) {
			return
		}
		r.sg.Link.Block()
		time.Sleep(600 * time.Millisecond)
		r.sg.Master.Kill()
		r.faults.Add(1)
		start := time.Now()
		r.sg.WaitFailover(20 * time.Second)
		r.note("failover took %v", time.Since(start).Round(100*time.Millisecond))
		r.sg.Link.Unblock()
		<-r.ctx.Done()
	}
	runScenario(t, scenario{
		Name:      "Sentinel failover to a replica that missed the last writes",
		Unit:      "failover",
		Claims:    claims{Lock: true, Store: true},
		Switched:  "replica acknowledgement",
		Protected: spec{Workers: 3, Keys: []string{"coupon:1"}, Topology: "sentinel", MinRun: 6 * time.Second, Worker: prot, Inject: failover},
		Control:   spec{Workers: 3, Keys: []string{"coupon:1"}, Topology: "sentinel", MinRun: 6 * time.Second, Worker: w, Inject: failover},
	})
}

// TestRedlock_nodeCrash runs the lock on five independent Redis nodes
// (Redlock, majority 3), each worker with its own link (proxy) to each
// node. Each cycle crashes two nodes, waits for an acquisition (granted by
// the other three alone), crashes one of those three too, and brings all
// three back empty (no persistence); meanwhile one worker is cut off from
// one of the surviving nodes. Three nodes then have no trace of the live
// lock: a majority. Antirez's rule for Redlock without persistence is to
// keep a crashed node down for longer than the longest lease; the
// protected run does, the control restarts the nodes at once and grants
// the lock a second time. Holders work 2 s of a 3 s lease; workers wait
// at most 50 ms per Acquire and try again at once, so a waiter asks the
// restarted nodes while the holder still works (a node restart publishes
// no release notice).
func TestRedlock_nodeCrash(t *testing.T) {
	w := base()
	w.TTL, w.Steps, w.Hold, w.Wait = 3*time.Second, 0, 2*time.Second, 50*time.Millisecond
	crash := func(delayed bool) func(r *run) {
		return func(r *run) {
			for c := 0; ; c++ {
				a, b, victim, cut := c%5, (c+1)%5, (c+2)%5, (c+3)%5
				kill := func(n int) {
					if debug() {
						r.t.Logf("kill node %d at %d", n, mono()/1e6%100000)
					}
					r.nodes[n].Kill()
					r.down[n] = true
					r.faults.Add(1)
				}
				kill(a)
				kill(b)
				crashed := time.Now()
				r.drainAcqs()
				_, ok := r.nextAcq(5 * time.Millisecond)
				if ok {
					kill(victim) // it granted the live lock
					p := r.nodeProx[c%len(r.nodeProx)][cut]
					p.Block()
					if delayed {
						// Down for longer than any lease any of them granted.
						time.Sleep(w.TTL + 100*time.Millisecond)
					} else {
						// Long enough for the holder's calls to the dead
						// nodes to have given up (the node timeout is
						// 200 ms): otherwise go-redis's retry of its acquire
						// lands on the restarted node and grants it there.
						time.Sleep(300 * time.Millisecond)
					}
					p.Unblock()
				}
				for _, n := range []int{a, b, victim} {
					if r.down[n] {
						if delayed {
							time.Sleep(time.Until(crashed.Add(w.TTL + 100*time.Millisecond)))
						}
						r.nodes[n].Restart()
						if debug() {
							r.t.Logf("node %d up at %d", n, mono()/1e6%100000)
						}
						delete(r.down, n)
					}
				}
				if !ok || !r.sleep(300*time.Millisecond) {
					return
				}
			}
		}
	}
	runScenario(t, scenario{
		Name:      "Redlock (5 nodes): 3 nodes crash and restart empty, one link partitioned",
		Unit:      "node crashes",
		Claims:    claims{Lock: true, Store: true},
		Switched:  "delayed restart",
		Protected: spec{Workers: 3, Keys: []string{"coupon:1"}, Topology: "redlock", Proxies: true, Worker: w, Inject: crash(true)},
		Control:   spec{Workers: 3, Keys: []string{"coupon:1"}, Topology: "redlock", Proxies: true, Worker: w, Inject: crash(false)},
	})
}
