package bigquery

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/api/option"

	"github.com/skyjoin/skyjoin/internal/platform"
)

// Config configures the BigQuery store. ParseURL builds one from a store URL.
type Config struct {
	Project string // Google Cloud project of the dataset (and billed for queries)
	Dataset string
	Table   string // default DefaultTable
	// Location of the dataset (EU, US, europe-west1, ...): used when migrate
	// creates the dataset, and for queries. Empty: BigQuery's default (US)
	// on create, and the dataset's location for queries.
	Location string
	// Retention is the partition expiration: a day's partition of
	// occurred_at is deleted Retention after the end of that day. Zero keeps
	// data forever.
	Retention time.Duration

	// MaxBytesBilled caps the bytes each query of the Reader (List, Get,
	// LatestForUser, Stats) may bill: a query that would read more fails
	// before it runs, and costs nothing. Zero means
	// DefaultMaxBytesBilled; NoMaxBytesBilled (-1) sets no cap (the
	// project's custom quota, if any, still applies).
	MaxBytesBilled int64

	// MaxRequestBytes bounds the serialized rows of one AppendRows request;
	// default DefaultMaxRequestBytes (the API's limit is 10 MB per request).
	MaxRequestBytes int
	// MaxAttempts bounds the attempts of one append that fails with a
	// retryable error (Unavailable, Internal, Aborted, DeadlineExceeded,
	// append quota), on top of managedwriter's own retries; default 5.
	MaxAttempts int

	// WriteOptions and QueryOptions are passed to the Storage Write API
	// (gRPC) and the BigQuery REST clients: tests point them at in-process
	// fakes. Not flags.
	WriteOptions []option.ClientOption
	QueryOptions []option.ClientOption
}

// Defaults.
const (
	DefaultTable = "events"
	// DefaultMaxRequestBytes leaves 1 MB of the API's 10 MB request limit for
	// the request's framing and the writer schema sent on a connection's
	// first request.
	DefaultMaxRequestBytes = 9 << 20
	DefaultMaxAttempts     = 5
	// DefaultMaxBytesBilled is 10 GiB: a day of about 15 million events
	// at 700 bytes a row. A query the API makes reads the partitions of its
	// time range, or a user's or a country's clusters, so far less.
	DefaultMaxBytesBilled int64 = 10 << 30
	// NoMaxBytesBilled in Config.MaxBytesBilled (max_bytes_billed=none)
	// sets no cap.
	NoMaxBytesBilled int64 = -1
	// minBytesBilled is what BigQuery bills at least for a query that
	// reads a table: a smaller cap would refuse every query.
	minBytesBilled int64 = 10 << 20
)

// ViewSuffix names the deduplicating view: the table name plus this suffix
// (events -> events_latest).
const ViewSuffix = "_latest"

// View returns the name of the deduplicating view.
func (c Config) View() string { return c.table() + ViewSuffix }

func (c Config) table() string {
	if c.Table == "" {
		return DefaultTable
	}
	return c.Table
}

func (c Config) maxRequestBytes() int {
	if c.MaxRequestBytes <= 0 {
		return DefaultMaxRequestBytes
	}
	return c.MaxRequestBytes
}

// maxBytesBilled is the value of the query jobs' MaxBytesBilled: 0 (the
// client sends none) for no cap.
func (c Config) maxBytesBilled() int64 {
	switch c.MaxBytesBilled {
	case 0:
		return DefaultMaxBytesBilled
	case NoMaxBytesBilled:
		return 0
	}
	return c.MaxBytesBilled
}

func (c Config) maxAttempts() int {
	if c.MaxAttempts <= 0 {
		return DefaultMaxAttempts
	}
	return c.MaxAttempts
}

var (
	// https://cloud.google.com/resource-manager/docs/creating-managing-projects
	// (plus the legacy domain-scoped form example.com:project).
	projectRE = regexp.MustCompile(`^([a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	// Datasets and the tables we create: letters, digits, underscores. The
	// names are put into SQL text (as quoted identifiers, never values), so
	// they are held to this.
	datasetRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	tableRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	locationRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{1,40}$`)
)

// Validate reports every problem with the configuration at once.
func (c Config) Validate() error {
	var errs []error
	if !projectRE.MatchString(c.Project) {
		errs = append(errs, fmt.Errorf("bigquery: project %q is not a project id (6-30 lower-case letters, digits, dashes)", c.Project))
	}
	if !datasetRE.MatchString(c.Dataset) || len(c.Dataset) > 1024 {
		errs = append(errs, fmt.Errorf("bigquery: dataset %q must be letters, digits and underscores", c.Dataset))
	}
	if !tableRE.MatchString(c.table()) || len(c.table()) > 1000 {
		errs = append(errs, fmt.Errorf("bigquery: table %q must be letters, digits and underscores", c.Table))
	}
	if c.Location != "" && !locationRE.MatchString(c.Location) {
		errs = append(errs, fmt.Errorf("bigquery: location %q is not a BigQuery location such as EU or europe-west1", c.Location))
	}
	if c.Retention < 0 {
		errs = append(errs, fmt.Errorf("bigquery: retention must not be negative, got %s", c.Retention))
	} else if c.Retention > 0 && c.Retention < 24*time.Hour {
		errs = append(errs, fmt.Errorf("bigquery: retention must be at least 1d (partitions are days), got %s", c.Retention))
	}
	if c.MaxBytesBilled != 0 && c.MaxBytesBilled != NoMaxBytesBilled && c.MaxBytesBilled < minBytesBilled {
		errs = append(errs, fmt.Errorf("bigquery: max bytes billed %d is under 10MiB, the least BigQuery bills a query: every query would fail", c.MaxBytesBilled))
	}
	if c.MaxRequestBytes > 10_000_000 {
		errs = append(errs, fmt.Errorf("bigquery: max request bytes %d is over the API's 10 MB limit", c.MaxRequestBytes))
	}
	return errors.Join(errs...)
}

// ParseURL parses a store URL:
//
//	bigquery://PROJECT/DATASET[?table=events&location=EU&retention=400d&max_bytes_billed=10GiB]
//
// retention is a number of days (400d) or a Go duration (9600h); 0 keeps
// data forever. max_bytes_billed caps each read query (ParseBytes; none:
// no cap; default 10GiB). Unknown parameters are an error. The result is
// validated.
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text quotes the URL
		}
		return Config{}, fmt.Errorf("bigquery: store URL %q: %w", platform.RedactURL(raw), err)
	}
	raw = platform.RedactURL(raw) // for the errors below
	if u.Scheme != "bigquery" {
		return Config{}, fmt.Errorf("bigquery: store URL %q: scheme must be bigquery", raw)
	}
	if u.User != nil || u.Fragment != "" || u.Port() != "" {
		return Config{}, fmt.Errorf("bigquery: store URL %q: want bigquery://PROJECT/DATASET[?table=...&location=...&retention=...&max_bytes_billed=...]", raw)
	}
	cfg := Config{Project: u.Hostname(), Dataset: strings.TrimPrefix(u.Path, "/")}
	var errs []error
	for k, vs := range u.Query() {
		v := vs[len(vs)-1]
		if len(vs) > 1 {
			errs = append(errs, fmt.Errorf("bigquery: store URL %q: parameter %q given %d times", raw, k, len(vs)))
		}
		switch k {
		case "table":
			cfg.Table = v
		case "location":
			cfg.Location = v
		case "max_bytes_billed":
			if v == "none" {
				cfg.MaxBytesBilled = NoMaxBytesBilled
				break
			}
			n, err := platform.ParseBytes(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("bigquery: store URL %q: max_bytes_billed: %w", raw, err))
			}
			cfg.MaxBytesBilled = n
		case "retention":
			d, err := ParseRetention(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("bigquery: store URL %q: %w", raw, err))
			}
			cfg.Retention = d
		default:
			errs = append(errs, fmt.Errorf("bigquery: store URL %q: unknown parameter %q (known: table, location, retention, max_bytes_billed)", raw, k))
		}
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// ParseRetention parses a retention: a whole number of days ("400d"), a Go
// duration ("9600h"), or "0" (forever).
func ParseRetention(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || days > 100_000 {
			return 0, fmt.Errorf("retention %q: want a number of days such as 400d", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("retention %q: want days (400d) or a duration (9600h)", s)
	}
	return d, nil
}

// tablePath is "projects/P/datasets/D/tables/T", the Storage Write API's name.
func (c Config) tablePath() string {
	return fmt.Sprintf("projects/%s/datasets/%s/tables/%s", c.Project, c.Dataset, c.table())
}

// viewSQLName is the view as a quoted SQL identifier.
func (c Config) viewSQLName() string {
	return fmt.Sprintf("`%s.%s.%s`", c.Project, c.Dataset, c.View())
}

func (c Config) tableSQLName() string {
	return fmt.Sprintf("`%s.%s.%s`", c.Project, c.Dataset, c.table())
}
