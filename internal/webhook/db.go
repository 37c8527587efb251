package webhook

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// DB is what the webhook package needs of a SQL database: *sql.DB of the
// DuckDB store (duckdb.Store.DB).
type DB interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

var _ DB = (*sql.DB)(nil)

var ddl = []string{
	`CREATE TABLE IF NOT EXISTS webhooks (
  id VARCHAR PRIMARY KEY,
  url VARCHAR NOT NULL,
  filter VARCHAR NOT NULL,
  secret VARCHAR NOT NULL,
  batch_size INTEGER NOT NULL,
  max_wait_ms BIGINT NOT NULL,
  created_at TIMESTAMP NOT NULL
)`,
	`CREATE TABLE IF NOT EXISTS webhook_failures (
  id VARCHAR PRIMARY KEY,
  webhook_id VARCHAR NOT NULL,
  reason VARCHAR NOT NULL,
  attempts INTEGER NOT NULL,
  failed_at TIMESTAMP NOT NULL,
  count INTEGER NOT NULL,
  event_ids VARCHAR NOT NULL,
  records VARCHAR NOT NULL
)`,
}

// registration is a stored webhook, secret included.
type registration struct {
	Webhook
	secret string
}

type sqlStore struct{ db DB }

func (s sqlStore) migrate(ctx context.Context) error {
	for _, q := range ddl {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			first, _, _ := strings.Cut(q, "\n")
			return errorf("migrate: "+first, err)
		}
	}
	return nil
}

func (s sqlStore) insertWebhook(ctx context.Context, r *registration) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO webhooks (id, url, filter, secret, batch_size, max_wait_ms, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, r.ID, r.URL, r.Filter, r.secret, r.BatchSize, r.MaxWaitMS, r.CreatedAt.UTC())
	if err != nil {
		return errorf("store webhook "+r.ID, err)
	}
	return nil
}

func (s sqlStore) deleteWebhook(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM webhook_failures WHERE webhook_id = $1`, id); err != nil {
		return errorf("delete failures of webhook "+id, err)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM webhooks WHERE id = $1`, id); err != nil {
		return errorf("delete webhook "+id, err)
	}
	return nil
}

func (s sqlStore) loadWebhooks(ctx context.Context) ([]*registration, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, url, filter, secret, batch_size, max_wait_ms, created_at FROM webhooks ORDER BY created_at, id`)
	if err != nil {
		return nil, errorf("load webhooks", err)
	}
	defer rows.Close()
	var out []*registration
	for rows.Next() {
		r := &registration{}
		if err := rows.Scan(&r.ID, &r.URL, &r.Filter, &r.secret, &r.BatchSize, &r.MaxWaitMS, &r.CreatedAt); err != nil {
			return nil, errorf("load webhooks", err)
		}
		r.CreatedAt = r.CreatedAt.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("load webhooks", err)
	}
	return out, nil
}

func (s sqlStore) insertFailure(ctx context.Context, f *Failure) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO webhook_failures (id, webhook_id, reason, attempts, failed_at, count, event_ids, records)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		f.ID, f.WebhookID, f.Reason, f.Attempts, f.FailedAt.UTC(), f.Count, strings.Join(f.EventIDs, "\n"), string(f.records))
	if err != nil {
		return errorf("store failure "+f.ID+" of webhook "+f.WebhookID, err)
	}
	return nil
}

func (s sqlStore) updateFailure(ctx context.Context, f *Failure) error {
	_, err := s.db.ExecContext(ctx, `UPDATE webhook_failures SET reason = $1, attempts = $2, failed_at = $3 WHERE id = $4`,
		f.Reason, f.Attempts, f.FailedAt.UTC(), f.ID)
	if err != nil {
		return errorf("update failure "+f.ID, err)
	}
	return nil
}

func (s sqlStore) deleteFailure(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM webhook_failures WHERE id = $1`, id); err != nil {
		return errorf("delete failure "+id, err)
	}
	return nil
}

// failures lists a webhook's failures, oldest first; ids, if given, select
// some; withRecords loads the batches too.
func (s sqlStore) failures(ctx context.Context, webhookID string, ids []string, limit int, withRecords bool) ([]*Failure, error) {
	cols := `id, webhook_id, reason, attempts, failed_at, count, event_ids`
	if withRecords {
		cols += `, records`
	}
	q := `SELECT ` + cols + ` FROM webhook_failures WHERE webhook_id = $1`
	args := []any{webhookID}
	if len(ids) > 0 {
		ph := make([]string, len(ids))
		for i, id := range ids {
			args = append(args, id)
			ph[i] = fmt.Sprintf("$%d", len(args))
		}
		q += ` AND id IN (` + strings.Join(ph, ", ") + `)`
	}
	q += ` ORDER BY failed_at, id`
	if limit > 0 {
		q += fmt.Sprintf(` LIMIT %d`, limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, errorf("list failures of webhook "+webhookID, err)
	}
	defer rows.Close()
	out := []*Failure{}
	for rows.Next() {
		f := &Failure{}
		var ids string
		dest := []any{&f.ID, &f.WebhookID, &f.Reason, &f.Attempts, &f.FailedAt, &f.Count, &ids}
		var recs string
		if withRecords {
			dest = append(dest, &recs)
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, errorf("list failures of webhook "+webhookID, err)
		}
		f.FailedAt = f.FailedAt.UTC()
		f.EventIDs = strings.Split(ids, "\n")
		if ids == "" {
			f.EventIDs = []string{}
		}
		f.records = []byte(recs)
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("list failures of webhook "+webhookID, err)
	}
	return out, nil
}

// failureCounts counts each webhook's failures.
func (s sqlStore) failureCounts(ctx context.Context) (map[string]int64, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT webhook_id, count(*) FROM webhook_failures GROUP BY webhook_id`)
	if err != nil {
		return nil, errorf("count failures", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, errorf("count failures", err)
		}
		out[id] = n
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("count failures", err)
	}
	return out, nil
}

// now is the time stored in TIMESTAMP columns: UTC, microseconds.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
