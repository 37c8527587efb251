package duckdb

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/skyjoin/skyjoin/internal/event"
)

// Write stores recs in one transaction and returns once DuckDB has committed
// it (see the package documentation on durability). Records whose event_id
// is already stored, or repeated within recs, are dropped: the first wins.
// The records' Seq fields are ignored; the store assigns seq.
func (s *Store) Write(ctx context.Context, recs []event.Record) error {
	if len(recs) == 0 {
		return nil
	}
	select {
	case s.wsem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("duckdb: write %d records: %w", len(recs), ctx.Err())
	}
	defer func() { <-s.wsem }()
	if s.closed {
		return fmt.Errorf("duckdb: write %d records: %w", len(recs), errClosed)
	}
	start := time.Now()
	if err := s.write(ctx, recs); err != nil {
		return fmt.Errorf("duckdb: write %d records: %w", len(recs), err)
	}
	if d := time.Since(start); d > slowWrite {
		s.log.WarnContext(ctx, "duckdb write slow (checkpoint?)", "records", len(recs), "duration_ms", d.Milliseconds())
	}
	return nil
}

// write runs under wsem.
func (s *Store) write(ctx context.Context, recs []event.Record) error {
	if err := s.stage(ctx, recs); err != nil {
		return err
	}
	// The batch's distinct event ids get lastSeq+1 ... lastSeq+distinct, in
	// batch order; those already stored are then dropped (gaps in seq).
	distinct := make(map[string]struct{}, len(recs))
	for i := range recs {
		distinct[recs[i].EventID] = struct{}{}
	}
	_, err := s.wconn.ExecContext(ctx, insertSQL, s.lastSeq)
	if isConstraint(err) {
		// A redelivery of a stored event: the statement stored nothing.
		_, err = s.wconn.ExecContext(ctx, insertNewSQL, s.lastSeq)
	}
	if err != nil {
		// If the statement failed after all (for instance a cancelled
		// context racing the commit), find out what was committed so that
		// seq values are never handed out twice.
		s.resyncSeq(ctx)
		return fmt.Errorf("insert: %w", err)
	}
	s.lastSeq += int64(len(distinct))
	s.maxSeq.Store(s.lastSeq)
	return nil
}

// stage replaces the staging table's contents with recs, through the Appender.
func (s *Store) stage(ctx context.Context, recs []event.Record) error {
	if _, err := s.wconn.ExecContext(ctx, `DELETE FROM staging`); err != nil {
		return fmt.Errorf("clear staging: %w", err)
	}
	err := s.wconn.Raw(func(dc any) error {
		conn, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("unexpected driver connection %T", dc)
		}
		a, err := duckdb.NewAppender(conn, "temp", "main", "staging")
		if err != nil {
			return fmt.Errorf("appender: %w", err)
		}
		row := s.row[:0]
		for i := range recs {
			row = row[:0]
			for _, v := range recs[i].Values() {
				row = append(row, v)
			}
			row = append(row, int64(i))
			if err := a.AppendRow(row...); err != nil {
				return errors.Join(fmt.Errorf("append record %d (event_id %q): %w", i, recs[i].EventID, err), a.Close())
			}
		}
		s.row = row
		if err := a.Close(); err != nil { // flushes
			return fmt.Errorf("flush appender: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	return ctx.Err()
}

// resyncSeq sets lastSeq from the table after a failed insert.
func (s *Store) resyncSeq(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var last int64
	if err := s.wconn.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM events`).Scan(&last); err != nil {
		// The failed insert may have committed after all; skip far ahead
		// rather than risk handing its seq values out again.
		s.lastSeq += 1 << 20
		s.maxSeq.Store(s.lastSeq)
		return
	}
	if last > s.lastSeq {
		s.lastSeq = last
		s.maxSeq.Store(last)
	}
}

// isConstraint reports whether err is a DuckDB constraint violation.
func isConstraint(err error) bool {
	var de *duckdb.Error
	return errors.As(err, &de) && de.Type == duckdb.ErrorTypeConstraint
}
