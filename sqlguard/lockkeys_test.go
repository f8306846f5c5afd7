package sqlguard_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/fencedlock/fencedlock/sqlguard"
)

// Issue 15, point 2, as a user meets it: a transfer route under
// httpmw.LockKeys guards both accounts' locks, and each row carries the
// fence of its own account's lock.
func TestBeginTx_underLockKeys(t *testing.T) {
	eachWriteDB(t, func(t *testing.T, db *testDB) {
		fences, accounts := db.fenceTable(t), db.accounts(t)
		db.exec(t, "INSERT INTO "+accounts+" (id, balance, fence) VALUES (2, 0, 0)")
		locks := locktest.New()
		defer locks.Close()
		from, to := "acct:"+accounts+":1", "acct:"+accounts+":2"
		for range 3 { // bump from's fence so the two locks' fences differ
			mustAcquire(t, locks, from).Release(context.Background())
		}
		var resources []string
		var fenceFrom, fenceTo uint64
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			tx, err := sqlguard.BeginTx(ctx, db.db, nil, sqlguard.WithTable(fences))
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			defer tx.Rollback()
			resources = tx.Resources()
			fenceFrom, _ = tx.FenceFor(from)
			fenceTo, _ = tx.FenceFor(to)
			_, err = tx.Update(accounts).Add("balance", -10).Where("id", 1).For(from).Exec(ctx)
			if err == nil {
				_, err = tx.Update(accounts).Add("balance", 10).Where("id", 2).For(to).Exec(ctx)
			}
			if err == nil {
				err = tx.Commit()
			}
			if err != nil {
				http.Error(w, err.Error(), 500)
			}
		})
		mux := http.NewServeMux()
		mux.Handle("POST /transfer/{from}/{to}", httpmw.LockKeys(locks, []httpmw.KeyFunc{
			httpmw.Template("acct:" + accounts + ":{from}"), httpmw.Template("acct:" + accounts + ":{to}"),
		})(h))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("POST", "/transfer/2/1", nil))
		if rec.Code != 200 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		if len(resources) != 2 || fenceFrom == 0 || fenceTo == 0 || fenceFrom == fenceTo {
			t.Fatalf("resources %q, fences %d %d: want both locks guarded", resources, fenceFrom, fenceTo)
		}
		if uint64(db.storedFence(t, fences, from)) != fenceFrom || uint64(db.storedFence(t, fences, to)) != fenceTo {
			t.Fatal("the fence table does not hold both locks' fences")
		}
		if _, f := db.row(t, accounts, 1); uint64(f) != fenceFrom {
			t.Fatalf("row 1 carries fence %d, want its own lock's %d", f, fenceFrom)
		}
		if _, f := db.row(t, accounts, 2); uint64(f) != fenceTo {
			t.Fatalf("row 2 carries fence %d, want its own lock's %d", f, fenceTo)
		}
	})
}
