package bigquery

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/googleapi"
)

// Clustering columns of the table, in order: the API's country filter and
// the per-user reads.
var clusterBy = []string{"location_country", "user_id"}

// partitionColumn is the column the table is partitioned on, by day.
const partitionColumn = "occurred_at"

// MigrateOptions says what Migrate may do beyond the table and the view.
type MigrateOptions struct {
	// CreateDataset creates the dataset (in Config.Location) if it does not
	// exist; otherwise a missing dataset is an error.
	CreateDataset bool
}

// dedup is the condition that keeps one stored copy of each event: the
// one processed last. Its window is partitioned by event_id and by the
// columns every copy of an event shares (they come from the event itself,
// which a redelivery or a replay carries unchanged): occurred_at (the
// table's partitioning column) and the clustering columns. A filter on a
// column of a window's PARTITION BY keeps or drops whole window partitions,
// so a query engine may apply it below the window, before the dedup, where
// it prunes partitions and clusters; the Reader does not rely on that and
// puts its filters on the table itself (see Reader.from).
const dedup = "ROW_NUMBER() OVER (PARTITION BY event_id, " + partitionColumn + ", location_country, user_id ORDER BY processed_at DESC) = 1"

// ViewSQL is the query of the deduplicating view: every column of the
// table, one row per event_id, the copy with the latest processed_at.
func ViewSQL(cfg Config) string { return DedupSQL(cfg.tableSQLName()) }

// DedupSQL is the view's query on the rows of the table named from (a
// quoted SQL name): every column, one row per event_id, the copy with the
// latest processed_at. Tests run it on the rows an in-process fake received
// (in DuckDB, which reads the same SQL), to check what readers see.
func DedupSQL(from string) string {
	return "SELECT " + selectColumns + "\nFROM " + from + "\nWHERE TRUE\nQUALIFY " + dedup
}

// Migrate brings the dataset to the schema of this build, and reports what
// it changed (nothing on a second run). It creates the table (partitioned by
// day on occurred_at with Config.Retention as the partition expiration,
// clustered by location_country and user_id) and the view, or updates them:
// new columns are added when they are NULLABLE (BigQuery cannot add REQUIRED
// columns to a table), REQUIRED columns the schema now allows to be null are
// relaxed, the partition expiration and clustering follow the
// configuration, and the view's query is replaced when it differs. A change
// it cannot make (a column's type, partitioning of an existing table, a new
// REQUIRED column) is an error naming it, and changes nothing.
func Migrate(ctx context.Context, cfg Config, opts MigrateOptions) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := bigquery.NewClient(ctx, cfg.Project, cfg.QueryOptions...)
	if err != nil {
		return nil, fmt.Errorf("bigquery: migrate: new client: %w", err)
	}
	defer c.Close()
	m := &migration{cfg: cfg, ds: c.Dataset(cfg.Dataset)}
	if err := m.dataset(ctx, opts.CreateDataset); err != nil {
		return m.changes, fmt.Errorf("bigquery: migrate: dataset %s.%s: %w", cfg.Project, cfg.Dataset, err)
	}
	if err := m.table(ctx); err != nil {
		return m.changes, fmt.Errorf("bigquery: migrate: table %s: %w", cfg.tableSQLName(), err)
	}
	if err := m.view(ctx); err != nil {
		return m.changes, fmt.Errorf("bigquery: migrate: view %s: %w", cfg.viewSQLName(), err)
	}
	return m.changes, nil
}

type migration struct {
	cfg     Config
	ds      *bigquery.Dataset
	changes []string
}

func (m *migration) changef(format string, args ...any) {
	m.changes = append(m.changes, fmt.Sprintf(format, args...))
}

func httpCode(err error) int {
	var e *googleapi.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func (m *migration) dataset(ctx context.Context, create bool) error {
	md, err := m.ds.Metadata(ctx)
	switch {
	case httpCode(err) == http.StatusNotFound && create:
		err := m.ds.Create(ctx, &bigquery.DatasetMetadata{
			Location:    m.cfg.Location,
			Description: "skyjoin: user events enriched with the weather",
		})
		if httpCode(err) == http.StatusConflict { // created meanwhile
			return nil
		}
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		m.changef("created dataset %s.%s in %s", m.cfg.Project, m.cfg.Dataset, orDefault(m.cfg.Location, "the default location"))
		return nil
	case httpCode(err) == http.StatusNotFound:
		return fmt.Errorf("does not exist (create it, or run migrate with --create-dataset): %w", err)
	case err != nil:
		return fmt.Errorf("get: %w", err)
	}
	if m.cfg.Location != "" && !strings.EqualFold(md.Location, m.cfg.Location) {
		return fmt.Errorf("is in %s, not in the configured location %s", md.Location, m.cfg.Location)
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (m *migration) table(ctx context.Context) error {
	want, err := tableSchema()
	if err != nil {
		return err
	}
	t := m.ds.Table(m.cfg.table())
	md, err := t.Metadata(ctx)
	if httpCode(err) == http.StatusNotFound {
		err := t.Create(ctx, &bigquery.TableMetadata{
			Description: "skyjoin enriched events, one row per stored copy (the Storage Write API's default stream is at-least-once); query the view " + m.cfg.View() + " for one row per event.",
			Schema:      want,
			TimePartitioning: &bigquery.TimePartitioning{
				Type: bigquery.DayPartitioningType, Field: partitionColumn, Expiration: m.cfg.Retention,
			},
			Clustering: &bigquery.Clustering{Fields: clusterBy},
		})
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		m.changef("created table %s (partitioned by day on %s, expiration %s, clustered by %s)",
			m.cfg.table(), partitionColumn, retentionText(m.cfg), strings.Join(clusterBy, ", "))
		return nil
	}
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if md.Type != bigquery.RegularTable {
		return fmt.Errorf("is a %s, not a table", md.Type)
	}
	var upd bigquery.TableMetadataToUpdate
	changed := false

	schema, schemaChanges, err := mergeSchema(md.Schema, want)
	if err != nil {
		return err
	}
	if len(schemaChanges) > 0 {
		upd.Schema = schema
		changed = true
		for _, c := range schemaChanges {
			m.changef("table %s: %s", m.cfg.table(), c)
		}
	}
	tp := md.TimePartitioning
	if tp == nil || tp.Field != partitionColumn || (tp.Type != "" && tp.Type != bigquery.DayPartitioningType) {
		return fmt.Errorf("is not partitioned by day on %s (partitioning cannot be changed: recreate the table)", partitionColumn)
	}
	if tp.Expiration != m.cfg.Retention {
		upd.TimePartitioning = &bigquery.TimePartitioning{Type: bigquery.DayPartitioningType, Field: partitionColumn, Expiration: m.cfg.Retention}
		changed = true
		m.changef("table %s: partition expiration %s -> %s", m.cfg.table(), orDefault(durText(tp.Expiration), "none"), retentionText(m.cfg))
	}
	if md.Clustering == nil || !slices.Equal(md.Clustering.Fields, clusterBy) {
		upd.Clustering = &bigquery.Clustering{Fields: clusterBy}
		changed = true
		m.changef("table %s: clustering -> %s", m.cfg.table(), strings.Join(clusterBy, ", "))
	}
	if !changed {
		return nil
	}
	if _, err := t.Update(ctx, upd, md.ETag); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	return nil
}

// mergeSchema returns have with the columns of want added or relaxed, and
// describes the changes; it refuses changes BigQuery cannot make in place.
func mergeSchema(have, want bigquery.Schema) (bigquery.Schema, []string, error) {
	byName := map[string]*bigquery.FieldSchema{}
	for _, f := range have {
		byName[strings.ToLower(f.Name)] = f
	}
	out := make(bigquery.Schema, 0, len(have)+len(want))
	for _, f := range have {
		c := *f
		out = append(out, &c)
	}
	var changes []string
	var errs []error
	for _, w := range want {
		h, ok := byName[strings.ToLower(w.Name)]
		if !ok {
			if w.Required {
				errs = append(errs, fmt.Errorf("new column %s is REQUIRED: BigQuery adds only NULLABLE columns; migrate by hand", w.Name))
				continue
			}
			c := *w
			out = append(out, &c)
			changes = append(changes, fmt.Sprintf("added column %s %s", w.Name, w.Type))
			continue
		}
		if h.Type != w.Type || h.Repeated != w.Repeated {
			errs = append(errs, fmt.Errorf("column %s is %s in the table, %s in the schema: types cannot change in place", w.Name, h.Type, w.Type))
			continue
		}
		if h.Required && !w.Required {
			for _, c := range out {
				if c.Name == h.Name {
					c.Required = false
				}
			}
			changes = append(changes, fmt.Sprintf("column %s REQUIRED -> NULLABLE", w.Name))
		}
		// NULLABLE in the table but REQUIRED in the schema is harmless: the
		// writer always sends a value.
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return out, changes, nil
}

func (m *migration) view(ctx context.Context) error {
	v := m.ds.Table(m.cfg.View())
	query := ViewSQL(m.cfg)
	md, err := v.Metadata(ctx)
	if httpCode(err) == http.StatusNotFound {
		err := v.Create(ctx, &bigquery.TableMetadata{
			Description: "skyjoin enriched events, one row per event_id (the copy processed last): connect analysts and Looker Studio here.",
			ViewQuery:   query,
		})
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		m.changef("created view %s", m.cfg.View())
		return nil
	}
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	if md.Type != bigquery.ViewTable {
		return fmt.Errorf("is a %s, not a view", md.Type)
	}
	if strings.TrimSpace(md.ViewQuery) == query {
		return nil
	}
	if _, err := v.Update(ctx, bigquery.TableMetadataToUpdate{ViewQuery: query}, md.ETag); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	m.changef("updated the query of view %s", m.cfg.View())
	return nil
}

func retentionText(cfg Config) string {
	if cfg.Retention == 0 {
		return "none"
	}
	return durText(cfg.Retention)
}

func durText(d time.Duration) string {
	if d == 0 {
		return ""
	}
	if d%(24*3600e9) == 0 {
		return fmt.Sprintf("%dd", d/(24*3600e9))
	}
	return d.String()
}
