//go:build unix

package sqlguard_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// The bank workload with real processes: each of bankWorkers workers is this
// test binary re-executed (TestBankWorker), with its own lock Client, its
// watchdog on, and the parent SIGSTOPs random workers for 2 TTL at random
// moments, so a stopped holder's lease runs out as a real stall's would.
const bankWorkerEnv = "SQLGUARD_BANK_WORKER"

func TestBank_processesSIGSTOPped(t *testing.T) {
	if os.Getenv(bankWorkerEnv) != "" {
		t.Skip("worker process")
	}
	srv := redistest.Start(t)
	eachDBParallel(t, func(t *testing.T, db *testDB) {
		for _, guarded := range []bool{true, false} {
			name := "guarded"
			if !guarded {
				name = "unguarded (negative control)"
			}
			t.Run(name, func(t *testing.T) {
				// Where a stop lands is up to the scheduler: the negative
				// control gets up to 5 rounds to show a loss.
				var sum int64
				for round := 1; round <= 5; round++ {
					b := newBank(t, db, srv, guarded)
					stale := runWorkers(t, b)
					sum = db.int64(t, "SELECT SUM(balance) FROM "+b.accounts)
					t.Logf("round %d: refused as stale %d, sum %d (want %d)", round, stale, sum, bankAccounts*bankStart)
					if guarded || sum != bankAccounts*bankStart || t.Failed() {
						break
					}
				}
				switch {
				case guarded && sum != bankAccounts*bankStart:
					t.Fatalf("sum of balances %d, want %d: money was lost or made", sum, bankAccounts*bankStart)
				case !guarded && sum == bankAccounts*bankStart:
					t.Fatal("negative control: the sum survived 5 rounds without the guard")
				}
			})
		}
	})
}

// runWorkers starts the worker processes, stops and continues them at
// random until all have exited, and returns the stale refusals they report.
func runWorkers(t *testing.T, b *bank) (stale int) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	procs := make([]*exec.Cmd, bankWorkers)
	outs := make([]*bytes.Buffer, bankWorkers)
	var wg sync.WaitGroup
	var mu sync.Mutex // serializes signals with Wait's reaping
	exited := make([]bool, bankWorkers)
	for i := range procs {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestBankWorker$", "-test.count=1")
		cmd.Env = append(os.Environ(), bankWorkerEnv+"="+b.db.name, "BANK_DSN="+b.db.dsn, "BANK_REDIS="+b.srv.Addr(),
			"BANK_FENCES="+b.fences, "BANK_ACCOUNTS="+b.accounts, "BANK_GUARD="+strconv.FormatBool(b.guarded), "BANK_SEED="+strconv.Itoa(i))
		outs[i] = new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = outs[i], outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = cmd
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := cmd.Wait()
			mu.Lock()
			exited[i] = true
			mu.Unlock()
			if err != nil {
				t.Errorf("worker %d: %v\n%s", i, err, outs[i])
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	stopper(done, procs, exited, &mu)
	<-done
	for _, out := range outs {
		sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
		for sc.Scan() {
			var n int
			if _, err := fmt.Sscanf(sc.Text(), "BANK-STALE %d", &n); err == nil {
				stale += n
			}
		}
	}
	return stale
}

// stopper SIGSTOPs a random live worker for 2 TTL every few tens of
// milliseconds until done is closed, and always continues it.
func stopper(done <-chan struct{}, procs []*exec.Cmd, exited []bool, mu *sync.Mutex) {
	signal := func(i int, sig syscall.Signal) {
		mu.Lock()
		defer mu.Unlock()
		if !exited[i] {
			_ = procs[i].Process.Signal(sig)
		}
	}
	for {
		select {
		case <-done:
			return
		case <-time.After(time.Duration(20+rand.IntN(60)) * time.Millisecond):
		}
		i := rand.IntN(len(procs))
		signal(i, syscall.SIGSTOP)
		time.Sleep(2 * bankTTL)
		signal(i, syscall.SIGCONT)
	}
}

// TestBankWorker is one worker process of TestBank_processesSIGSTOPped.
func TestBankWorker(t *testing.T) {
	name := os.Getenv(bankWorkerEnv)
	if name == "" {
		t.Skip("run by TestBank_processesSIGSTOPped")
	}
	driver, _, d := dsnFor(t, name)
	db := openDSN(t, name, driver, os.Getenv("BANK_DSN"), d)
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("BANK_REDIS")})
	defer rdb.Close()
	c := core.New(rdb, core.WithTTL(bankTTL), core.WithAutoRefresh(), core.WithWait(time.Minute))
	defer c.Close()
	accounts := os.Getenv("BANK_ACCOUNTS")
	b := &bank{db: db, guarded: os.Getenv("BANK_GUARD") == "true", fences: os.Getenv("BANK_FENCES"),
		accounts: accounts, prefix: "bank:" + accounts + ":"}
	seed, _ := strconv.Atoi(os.Getenv("BANK_SEED"))
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(time.Now().UnixNano())))
	for range 2 * bankTransfers {
		if err := b.transfer(c, rng); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Printf("BANK-STALE %d\n", b.stale.Load())
}
