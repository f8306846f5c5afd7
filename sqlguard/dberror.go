package sqlguard

import (
	"errors"
	"reflect"
	"strings"
)

// Driver errors are classified without importing the drivers (importing one
// would register it with database/sql in every program using sqlguard): pgx
// and lib/pq errors have a SQLState method, go-sql-driver/mysql's MySQLError
// has Number and SQLState fields, modernc.org/sqlite's Error a Code method.

// sqlState returns the SQLSTATE of the first driver error in err's chain
// that has one, or "".
func sqlState(err error) string {
	var s string
	walk(err, func(e error) bool {
		if x, ok := e.(interface{ SQLState() string }); ok {
			s = x.SQLState()
			return true
		}
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		if v.Kind() == reflect.Struct {
			f := v.FieldByName("SQLState")
			if f.IsValid() && f.Kind() == reflect.Array && f.Len() == 5 && f.Type().Elem().Kind() == reflect.Uint8 {
				b := make([]byte, 5)
				for i := range b {
					b[i] = byte(f.Index(i).Uint())
				}
				s = string(b)
				return true
			}
		}
		return false
	})
	return s
}

// sqliteCode returns the primary SQLite result code in err's chain, or -1.
func sqliteCode(err error) int {
	code := -1
	walk(err, func(e error) bool {
		if x, ok := e.(interface{ Code() int }); ok {
			code = x.Code() & 0xff
			return true
		}
		return false
	})
	return code
}

// walk visits err's tree depth first until f returns true.
func walk(err error, f func(error) bool) bool {
	for err != nil {
		if f(err) {
			return true
		}
		switch x := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				if walk(e, f) {
					return true
				}
			}
			return false
		default:
			err = errors.Unwrap(err)
		}
	}
	return false
}

// transient reports whether the guard statement lost a deadlock or
// serialization conflict, after which a fresh transaction may succeed.
func transient(d Dialect, err error) bool {
	if errors.Is(err, ErrStaleFence) {
		return false
	}
	switch d {
	case Postgres:
		s := sqlState(err)
		return s == "40001" || s == "40P01" // serialization_failure, deadlock_detected
	case MySQL:
		return sqlState(err) == "40001" // ER_LOCK_DEADLOCK (1213)
	case SQLite:
		c := sqliteCode(err)
		return c == 5 || c == 6 // SQLITE_BUSY, SQLITE_LOCKED
	}
	return false
}

// missingTableHint points at Migrate when the fence table does not exist.
func missingTableHint(d Dialect, err error) string {
	const hint = " (run sqlguard.Migrate to create the fence table)"
	switch s := sqlState(err); {
	case d == Postgres && s == "42P01", d == MySQL && s == "42S02":
		return hint
	case d == SQLite && strings.Contains(err.Error(), "no such table"):
		return hint
	}
	return ""
}
