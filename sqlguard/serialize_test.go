package sqlguard_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/sqlguard"
)

// While one holder's guarded transaction is open, the next holder's BeginTx
// waits for it (the fence row is locked), and the reads it then makes see
// what the first one committed: read-modify-write across holders loses no
// update, at every isolation level the database offers. Where the database
// answers the wait with a serialization failure (PostgreSQL REPEATABLE READ
// and SERIALIZABLE), BeginTx starts over, which this also exercises.
func TestBeginTx_serializesHolders(t *testing.T) {
	levels := map[string][]sql.IsolationLevel{
		"sqlite":   {sql.LevelDefault},
		"postgres": {sql.LevelDefault, sql.LevelRepeatableRead, sql.LevelSerializable},
		"mariadb":  {sql.LevelDefault, sql.LevelReadCommitted, sql.LevelSerializable},
	}
	eachDB(t, func(t *testing.T, db *testDB) {
		for _, level := range levels[db.name] {
			for _, existing := range []bool{false, true} {
				name := level.String() + "/new resource"
				if existing {
					name = level.String() + "/existing resource"
				}
				t.Run(name, func(t *testing.T) { serialized(t, db, level, existing) })
			}
		}
	})
}

func serialized(t *testing.T, db *testDB, level sql.IsolationLevel, existing bool) {
	ctx := context.Background()
	fences, accounts := db.fenceTable(t), db.accounts(t)
	opts := &sql.TxOptions{Isolation: level}
	if existing {
		if err := guarded(ctx, db, fences, tok("acct", base, "first")); err != nil {
			t.Fatal(err)
		}
	}
	sel := db.rebind("SELECT balance FROM " + accounts + " WHERE id = ?")
	readModifyWrite := func(tx *sqlguard.Tx, add int64) (int64, error) {
		var bal int64
		if err := tx.QueryRowContext(ctx, sel, 1).Scan(&bal); err != nil {
			return 0, err
		}
		_, err := tx.Update(accounts).Set("balance", bal+add).Where("id", 1).Exec(ctx)
		return bal, err
	}

	a, err := sqlguard.BeginTx(ctx, db.db, opts, sqlguard.WithTable(fences), sqlguard.WithFence(tok("acct", base+10, "a")))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Rollback()
	if _, err := readModifyWrite(a, 100); err != nil {
		t.Fatal(err)
	}

	type result struct {
		read int64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		b, err := sqlguard.BeginTx(ctx, db.db, opts, sqlguard.WithTable(fences), sqlguard.WithFence(tok("acct", base+11, "b")))
		if err != nil {
			done <- result{err: err}
			return
		}
		defer b.Rollback()
		read, err := readModifyWrite(b, 5)
		if err == nil {
			err = b.Commit()
		}
		done <- result{read, err}
	}()

	select {
	case r := <-done:
		t.Fatalf("B finished while A's transaction was open: %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	if err := a.Commit(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("B: %v", r.err)
	}
	if r.read != 100 {
		t.Fatalf("B read balance %d, want A's committed 100", r.read)
	}
	if got := db.int64(t, "SELECT balance FROM "+accounts+" WHERE id = 1"); got != 105 {
		t.Fatalf("balance %d, want 105", got)
	}

	// An older holder arriving now is refused, at this level too.
	_, err = sqlguard.BeginTx(ctx, db.db, opts, sqlguard.WithTable(fences), sqlguard.WithFence(tok("acct", base+10, "a")))
	if !errors.Is(err, sqlguard.ErrStaleFence) {
		t.Fatalf("older holder: %v", err)
	}
}
