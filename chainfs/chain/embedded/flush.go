package embedded

import (
	"bytes"
	"fmt"
	"reflect"
	"time"
	"unsafe"

	"github.com/btcsuite/btcd/database"
)

// flushDB forces ffldb to write its metadata cache (UTXO set, indexes, best
// state, block locations) to leveldb and sync the block files now.
//
// ffldb keeps that metadata in memory for up to 300 s or 100 MiB and, after
// a crash, truncates the block files back to its last flush; an embedded
// chain has no peer to fetch those blocks from again. ffldb exposes no
// flush call, but it flushes inside any write transaction that finds its
// flush interval elapsed. So: set the interval to zero inside a write
// transaction (we then hold the database write lock that guards the field),
// let that transaction's commit flush, and restore the interval in a second
// one. The crash test in this package proves the effect.
func (c *Chain) flushDB() error {
	if err := c.db.Update(func(database.Tx) error { return setFlushInterval(c.db, 0) }); err != nil {
		return fmt.Errorf("embedded chain: flush database: %w", err)
	}
	if err := c.db.Update(func(database.Tx) error { return setFlushInterval(c.db, ffldbFlushInterval) }); err != nil {
		return fmt.Errorf("embedded chain: flush database: %w", err)
	}
	return nil
}

// setFlushInterval sets ffldb's unexported db.cache.flushInterval. It checks
// every step so that a btcd whose layout differs fails loudly at Open rather
// than silently losing durability.
func setFlushInterval(db database.DB, d time.Duration) error {
	v := reflect.ValueOf(db)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("unsupported database type %T", db)
	}
	cache := v.Elem().FieldByName("cache")
	if !cache.IsValid() || cache.Kind() != reflect.Pointer || cache.IsNil() || cache.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("unsupported ffldb layout: no cache in %T", db)
	}
	fi := cache.Elem().FieldByName("flushInterval")
	if !fi.IsValid() || fi.Type() != reflect.TypeOf(time.Duration(0)) {
		return fmt.Errorf("unsupported ffldb layout: no flushInterval in %s", cache.Elem().Type())
	}
	reflect.NewAt(fi.Type(), unsafe.Pointer(fi.UnsafeAddr())).Elem().Set(reflect.ValueOf(d))
	return nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
