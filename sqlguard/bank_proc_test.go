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
// moments (several at once), so a stopped holder's lease runs out as a real
// stall's would. A guarded run counts only when a stop caught a holder and
// the guard refused it: up to 5 rounds are played until one does.
const bankWorkerEnv = "SQLGUARD_BANK_WORKER"

func TestBank_processesSIGSTOPped(t *testing.T) {
	if os.Getenv(bankWorkerEnv) != "" {
		t.Skip("worker process")
	}
	srv := redistest.Start(t)
	eachWriteDBParallel(t, func(t *testing.T, db *testDB) {
		for _, guarded := range []bool{true, false} {
			name := "guarded"
			if !guarded {
				name = "unguarded (negative control)"
			}
			t.Run(name, func(t *testing.T) { processRounds(t, db, srv, guarded) })
		}
	})
}

// processRounds plays rounds of the workload until it shows something:
// where a stop lands is up to the scheduler. A guarded round must conserve
// the sum and match the journal, and the test needs one in which the guard
// refused a stopped holder; the negative control needs one that loses or
// makes money.
func processRounds(t *testing.T, db *testDB, srv *redistest.Server, guarded bool) {
	const rounds = 5
	want := int64(bankAccounts * bankStart)
	for round := 1; round <= rounds; round++ {
		b := newBank(t, db, srv, guarded)
		stale := runWorkers(t, b)
		sum, off := b.audit(t)
		t.Logf("round %d: refused as stale %d, sum %d (want %d), %d accounts off their journal", round, stale, sum, want, off)
		switch {
		case t.Failed():
			return
		case guarded && (sum != want || off != 0):
			t.Fatalf("sum of balances %d (want %d), %d accounts off their journal: a stale write was accepted", sum, want, off)
		case guarded && stale > 0, !guarded && sum != want:
			return
		}
	}
	if guarded {
		t.Fatalf("in %d rounds no stopped holder was refused: the stops never exercised the guard", rounds)
	}
	t.Fatalf("negative control: the sum survived %d rounds without the guard", rounds)
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
			"BANK_FENCES="+b.fences, "BANK_ACCOUNTS="+b.accounts, "BANK_JOURNAL="+b.journal, "BANK_GUARD="+strconv.FormatBool(b.guarded), "BANK_SEED="+strconv.Itoa(i))
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

// stopper SIGSTOPs a random running worker for 2 TTL every 10 to 50 ms
// until done is closed, so that several are stopped at once, and always
// continues each one (done cannot close while a worker is stopped).
func stopper(done <-chan struct{}, procs []*exec.Cmd, exited []bool, mu *sync.Mutex) {
	var wg sync.WaitGroup
	defer wg.Wait()
	stopped := make([]bool, len(procs)) // guarded by mu
	for {
		select {
		case <-done:
			return
		case <-time.After(time.Duration(10+rand.IntN(40)) * time.Millisecond):
		}
		i := rand.IntN(len(procs))
		mu.Lock()
		if exited[i] || stopped[i] {
			mu.Unlock()
			continue
		}
		stopped[i] = true
		_ = procs[i].Process.Signal(syscall.SIGSTOP)
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(2 * bankTTL)
			mu.Lock()
			defer mu.Unlock()
			stopped[i] = false
			if !exited[i] {
				_ = procs[i].Process.Signal(syscall.SIGCONT)
			}
		}()
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
		accounts: accounts, journal: os.Getenv("BANK_JOURNAL"), prefix: "bank:" + accounts + ":"}
	seed, _ := strconv.Atoi(os.Getenv("BANK_SEED"))
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(time.Now().UnixNano())))
	for i := range 2 * bankTransfers {
		if err := b.transfer(c, rng, int64(seed*1000+i)); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Printf("BANK-STALE %d\n", b.stale.Load())
}
