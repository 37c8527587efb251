package bigquery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/bigquery"
	"cloud.google.com/go/bigquery/storage/apiv1/storagepb"
	"cloud.google.com/go/bigquery/storage/managedwriter"
	"cloud.google.com/go/bigquery/storage/managedwriter/adapt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/platform/iam"
	"github.com/skyjoin/skyjoin/internal/retry"
	"github.com/skyjoin/skyjoin/internal/store"
)

var _ store.Writer = (*Writer)(nil)

// Writer appends records to the table through the BigQuery Storage Write
// API's default stream. It is safe for concurrent use.
//
// The default stream is at-least-once: an append that failed in a way that
// leaves its outcome unknown (the connection broke after the server took the
// rows) is sent again, and a Write that returns an error may have stored some
// of its records, which the caller then redelivers. The table can therefore
// hold several copies of an event; the view Config.View keeps the latest
// (by processed_at) and the Reader reads only the view.
//
// # Schema changes
//
// The writer encodes rows with the table's schema as it finds it (the
// default stream's table schema, GetWriteStream with the FULL view), not
// with this build's: a build that knows a column the table does not have
// yet (properties, before `skyjoin migrate` adds it) keeps writing, and
// picks the column up once it exists, without reopening:
//
//   - BigQuery reports a schema change in the response of an append
//     (AppendRowsResponse.updated_schema); the writer adopts it and sends
//     the new descriptor with its next append (UpdateSchemaDescriptor);
//   - a record with a value for a column the writer's schema lacks makes it
//     fetch the table's schema again (at most once per SchemaRefresh); if
//     the column is there, the batch is encoded with the new schema; if not,
//     Write fails as a whole, without writing, naming the column: the
//     caller does not ack, and the records come back after migrate. A
//     record is never written without its properties.
type Writer struct {
	cfg    Config
	client *managedwriter.Client
	stream *managedwriter.ManagedStream
	log    *slog.Logger
	sleep  func(ctx context.Context, d time.Duration) error // for tests

	mu          sync.Mutex
	enc         *encoder // the table's schema as last seen
	lastRefresh time.Time
	// schemaRefresh is the least time between two fetches of the table's
	// schema for a record the writer's schema cannot hold.
	schemaRefresh time.Duration
}

// SchemaRefresh is the least time between two fetches of the table's
// schema when a record holds a value for a column the writer's schema
// lacks (see Writer).
const SchemaRefresh = 10 * time.Second

// NewWriter connects to the table's default stream. The table must exist
// (see Migrate). The writer keeps its connection until Close, independent of
// ctx.
func NewWriter(ctx context.Context, cfg Config, log *slog.Logger) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The client and stream keep their context for their connections.
	bg := context.WithoutCancel(ctx)
	client, err := managedwriter.NewClient(bg, cfg.Project, cfg.WriteOptions...)
	if err != nil {
		return nil, fmt.Errorf("bigquery: writer: new client: %w", err)
	}
	w := &Writer{cfg: cfg, client: client, log: log, sleep: retry.Sleep, schemaRefresh: SchemaRefresh}
	ts, err := w.tableSchema(ctx)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("bigquery: writer: %w", err)
	}
	enc, err := newEncoderFor(ts)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("bigquery: writer: %w", err)
	}
	w.enc, w.lastRefresh = enc, time.Now()
	stream, err := client.NewManagedStream(bg,
		managedwriter.WithDestinationTable(cfg.tablePath()),
		managedwriter.WithType(managedwriter.DefaultStream),
		managedwriter.WithSchemaDescriptor(w.enc.dp),
		managedwriter.EnableWriteRetries(true),
	)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("bigquery: writer: open the default stream of %s: %w", cfg.tablePath(), err)
	}
	w.stream = stream
	return w, nil
}

// tableSchema fetches the table's schema, as the Storage Write API sees it.
// A server that does not report it (an old emulator) gets this build's.
func (w *Writer) tableSchema(ctx context.Context) (*storagepb.TableSchema, error) {
	ws, err := w.client.GetWriteStream(ctx, &storagepb.GetWriteStreamRequest{
		Name: w.cfg.tablePath() + "/streams/_default", View: storagepb.WriteStreamView_FULL,
	})
	if err != nil {
		return nil, fmt.Errorf("get the schema of %s: %w", w.cfg.tablePath(), err)
	}
	if ts := ws.GetTableSchema(); ts != nil && len(ts.GetFields()) > 0 {
		return ts, nil
	}
	schema, err := tableSchema()
	if err != nil {
		return nil, err
	}
	return adapt.BQSchemaToStorageTableSchema(schema)
}

// encoder returns the current encoder.
func (w *Writer) encoder() *encoder {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.enc
}

// adopt switches to the table schema ts if it differs from the current one
// (an updated_schema in an append's response, or a fetch).
func (w *Writer) adopt(ts *storagepb.TableSchema) {
	enc, err := newEncoderFor(ts)
	if err != nil {
		if w.log != nil {
			w.log.Warn("bigquery: cannot use the table's new schema", "error", err)
		}
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if enc.key == w.enc.key {
		return
	}
	if w.log != nil {
		w.log.Info("bigquery: table schema changed; writing with it", "table", w.cfg.tablePath(), "columns", len(ts.GetFields()), "missing", enc.missing)
	}
	w.enc = enc
}

// refresh fetches the table's schema again, unless it did so within
// schemaRefresh, and returns the current encoder.
func (w *Writer) refresh(ctx context.Context) *encoder {
	w.mu.Lock()
	due := time.Since(w.lastRefresh) >= w.schemaRefresh
	if due {
		w.lastRefresh = time.Now()
	}
	w.mu.Unlock()
	if due {
		ts, err := w.tableSchema(ctx)
		if err != nil {
			if w.log != nil {
				w.log.WarnContext(ctx, "bigquery: refresh the table schema", "error", err)
			}
		} else {
			w.adopt(ts)
		}
	}
	return w.encoder()
}

// Close closes the stream and the client.
func (w *Writer) Close() error {
	err := w.stream.Close()
	if errors.Is(err, io.EOF) { // what a stream closed normally reports
		err = nil
	}
	return errors.Join(err, w.client.Close())
}

// RowError is one record that BigQuery (or the encoder, before sending)
// rejected.
type RowError struct {
	Index   int    // position in the slice passed to Write
	EventID string // the record's event id
	Code    string // FIELDS_ERROR and the like from BigQuery; ENCODE or TOO_LARGE before sending
	Message string
}

// RowErrors is returned by Write when some records were rejected row by row
// (a value BigQuery refuses, a record that cannot be encoded). Every record
// not listed in Rows is stored: Write returns a *RowErrors only when all the
// other appends succeeded; when anything else failed it returns that error
// instead, and nothing can be assumed stored.
//
// A caller that gets a *RowErrors (errors.As) must dead-letter the listed
// records with their messages, and may then treat the rest as stored (ack
// them). Resending a rejected record fails the same way. Records are never
// dropped silently: *RowErrors is a store.RejectedRows, and the enrich
// worker dead-letters the named records with their reasons and acks the
// rest.
type RowErrors struct {
	Rows  []RowError // sorted by Index
	Total int        // records passed to Write
}

var _ store.RejectedRows = (*RowErrors)(nil)

func (e *RowErrors) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bigquery: write: %d of %d records rejected", len(e.Rows), e.Total)
	for i, r := range e.Rows {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Rows)-i)
			break
		}
		fmt.Fprintf(&b, "; record %d (%s): %s: %s", r.Index, r.EventID, r.Code, r.Message)
	}
	return b.String()
}

// Reasons maps the index of each rejected record to why it was rejected:
// what a dead-letter route needs.
func (e *RowErrors) Reasons() map[int]string {
	m := make(map[int]string, len(e.Rows))
	for _, r := range e.Rows {
		m[r.Index] = r.Code + ": " + r.Message
	}
	return m
}

// Write appends records to the table and returns nil once BigQuery has
// acknowledged every one of them: an append to the default stream is
// committed when acknowledged. It sends as many requests as the
// MaxRequestBytes limit requires, in parallel. Retryable failures
// (Unavailable, Internal, Aborted, DeadlineExceeded, ResourceExhausted,
// a dropped connection) are retried up to MaxAttempts with backoff. Rows
// that BigQuery rejects one by one are taken out, the rest resent, and a
// *RowErrors reports them.
//
// Unlike DuckDB, a Write of an event_id already stored stores another copy;
// the view shows one, the copy with the latest processed_at. Each stored
// record's Seq is set to processed_at in microseconds (see Reader);
// duplicates are not detected, so none gets 0, and none is replaced by an
// earlier copy. The store.Writer contract (recs holds what the store holds)
// holds through the view: a redelivery is enriched again with a later
// processed_at, so the copy just written is the one readers see, and the
// caller passes that one on. (Two copies with the same processed_at, such
// as repeats within one call, leave the view's choice between them open.)
// WriterGrants are the IAM grants of a process that writes: appends to
// the table's default stream (bigquery.tables.updateData) and reads its
// schema (bigquery.tables.get), both in roles/bigquery.dataEditor on the
// dataset.
var WriterGrants = []iam.Grant{{Role: "roles/bigquery.dataEditor", On: iam.Dataset}}

func (w *Writer) Write(ctx context.Context, recs []event.Record) error {
	if len(recs) == 0 {
		return nil
	}
	enc := w.encoder()
	// A record with a value for a column the table did not have when the
	// writer last looked: look again (migrate may have added it).
	for i := range recs {
		if col := enc.lacks(&recs[i]); col != "" {
			if enc = w.refresh(ctx); enc.lacks(&recs[i]) != "" {
				return fmt.Errorf("bigquery: write %d records: record %d (%s) has %s, and table %s has no column %s: run skyjoin migrate; nothing was written",
					len(recs), i, recs[i].EventID, col, w.cfg.tablePath(), col)
			}
		}
	}
	var rejected []RowError
	type row struct {
		index int
		data  []byte
	}
	limit := w.cfg.maxRequestBytes()
	var batches [][]row
	var cur []row
	size := 0
	for i := range recs {
		b, err := enc.encode(&recs[i])
		if err != nil {
			rejected = append(rejected, RowError{Index: i, EventID: recs[i].EventID, Code: "ENCODE", Message: err.Error()})
			continue
		}
		n := len(b) + 8 // the row's tag and length in the request
		if n > limit {
			rejected = append(rejected, RowError{Index: i, EventID: recs[i].EventID, Code: "TOO_LARGE",
				Message: fmt.Sprintf("encoded row is %d bytes, more than one request may carry (%d)", len(b), limit)})
			continue
		}
		if size+n > limit && len(cur) > 0 {
			batches = append(batches, cur)
			cur, size = nil, 0
		}
		cur = append(cur, row{i, b})
		size += n
	}
	if len(cur) > 0 {
		batches = append(batches, cur)
	}

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, batch := range batches {
		wg.Go(func() {
			idx := make([]int, len(batch))
			data := make([][]byte, len(batch))
			for i, r := range batch {
				idx[i], data[i] = r.index, r.data
			}
			rej, err := w.appendBatch(ctx, enc, recs, idx, data)
			mu.Lock()
			defer mu.Unlock()
			rejected = append(rejected, rej...)
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bigquery: write %d records: %w", len(recs), err)
	}
	// As the store contract asks, each stored record gets its Seq: the one
	// the Reader synthesises (BigQuery cannot tell a duplicate here).
	bad := make(map[int]bool, len(rejected))
	for _, r := range rejected {
		bad[r.Index] = true
	}
	for i := range recs {
		if !bad[i] {
			recs[i].Seq = max(recs[i].ProcessedAt.UnixMicro(), 0)
		}
	}
	if len(rejected) > 0 {
		sort.Slice(rejected, func(i, j int) bool { return rejected[i].Index < rejected[j].Index })
		return &RowErrors{Rows: rejected, Total: len(recs)}
	}
	return nil
}

// appendBatch appends one request's rows (idx are their record indexes),
// taking out rows BigQuery rejects and retrying retryable failures.
func (w *Writer) appendBatch(ctx context.Context, enc *encoder, recs []event.Record, idx []int, data [][]byte) ([]RowError, error) {
	var rejected []RowError
	attempt := 0
	for len(idx) > 0 {
		resp, err := w.append(ctx, enc, data)
		if err == nil {
			if us := resp.GetUpdatedSchema(); us != nil {
				w.adopt(us)
			}
			return rejected, nil
		}
		if rowErrs := resp.GetRowErrors(); len(rowErrs) > 0 {
			// BigQuery took none of the request's rows: drop the bad ones
			// and send the rest again.
			bad := map[int]bool{}
			for _, re := range rowErrs {
				i := int(re.GetIndex())
				if i < 0 || i >= len(idx) || bad[i] {
					return rejected, fmt.Errorf("append: row error for row %d of %d: %w", i, len(idx), err)
				}
				bad[i] = true
				rejected = append(rejected, RowError{Index: idx[i], EventID: recs[idx[i]].EventID, Code: re.GetCode().String(), Message: re.GetMessage()})
			}
			keptIdx, keptData := idx[:0:0], data[:0:0]
			for i := range idx {
				if !bad[i] {
					keptIdx, keptData = append(keptIdx, idx[i]), append(keptData, data[i])
				}
			}
			idx, data = keptIdx, keptData
			continue
		}
		attempt++
		if !retryable(err) || attempt >= w.cfg.maxAttempts() || ctx.Err() != nil {
			return rejected, fmt.Errorf("append %d rows (attempt %d): %w", len(idx), attempt, err)
		}
		pause := appendBackoff.Delay(attempt)
		if w.log != nil {
			w.log.WarnContext(ctx, "bigquery append failed, retrying", "rows", len(idx), "attempt", attempt, "pause", pause, "error", err)
		}
		if err := w.sleep(ctx, pause); err != nil {
			return rejected, fmt.Errorf("append %d rows: %w", len(idx), err)
		}
	}
	return rejected, nil
}

// append sends one request, with the descriptor its rows were encoded
// with (the stream sends it only when it changed), and waits for its
// response.
func (w *Writer) append(ctx context.Context, enc *encoder, data [][]byte) (*storagepb.AppendRowsResponse, error) {
	res, err := w.stream.AppendRows(ctx, data, managedwriter.UpdateSchemaDescriptor(enc.dp))
	if err != nil {
		return nil, err
	}
	return res.FullResponse(ctx)
}

// retryable reports whether an append may succeed if sent again.
func retryable(err error) bool {
	if errors.Is(err, io.EOF) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	s, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch s.Code() {
	case codes.Unavailable, codes.Internal, codes.Aborted, codes.DeadlineExceeded, codes.ResourceExhausted:
		return true
	}
	return false
}

// appendBackoff is the pause after a failed append: full jitter under a
// ceiling from 200 ms doubling up to 10 s.
var appendBackoff = retry.Backoff{Initial: 200 * time.Millisecond, Max: 10 * time.Second}

// encoder turns a Record into the serialized proto2 message the Storage
// Write API takes, with a descriptor built from the table's schema (which
// migrate makes deploy/bigquery/events.schema.json): a column of the
// record the table lacks has no field, and a record with a value there
// cannot be encoded (see lacks).
type encoder struct {
	md      protoreflect.MessageDescriptor
	dp      *descriptorpb.DescriptorProto
	fields  []protoreflect.FieldDescriptor // in the order of event.Columns; nil where the table lacks the column
	missing []string                       // columns the table lacks
	key     string                         // the table's column names: equal keys, equal encoders
}

// tableSchema is the table's schema as the bigquery client models it.
func tableSchema() (bigquery.Schema, error) {
	s, err := bigquery.SchemaFromJSON(event.BigQuerySchema())
	if err != nil {
		return nil, fmt.Errorf("table schema: %w", err)
	}
	return s, nil
}

// newEncoder returns the encoder of this build's schema.
func newEncoder() (*encoder, error) {
	schema, err := tableSchema()
	if err != nil {
		return nil, err
	}
	ts, err := adapt.BQSchemaToStorageTableSchema(schema)
	if err != nil {
		return nil, fmt.Errorf("storage schema: %w", err)
	}
	return newEncoderFor(ts)
}

// newEncoderFor returns the encoder of a table's schema.
func newEncoderFor(ts *storagepb.TableSchema) (*encoder, error) {
	d, err := adapt.StorageSchemaToProto2Descriptor(ts, "skyjoin_event")
	if err != nil {
		return nil, fmt.Errorf("row descriptor: %w", err)
	}
	md, ok := d.(protoreflect.MessageDescriptor)
	if !ok {
		return nil, fmt.Errorf("row descriptor is a %T, not a message", d)
	}
	dp, err := adapt.NormalizeDescriptor(md)
	if err != nil {
		return nil, fmt.Errorf("normalize row descriptor: %w", err)
	}
	cols := event.Columns()
	e := &encoder{md: md, dp: dp, fields: make([]protoreflect.FieldDescriptor, len(cols))}
	names := make([]string, 0, len(ts.GetFields()))
	for _, f := range ts.GetFields() {
		names = append(names, strings.ToLower(f.GetName()))
	}
	e.key = strings.Join(names, ",")
	for i, c := range cols {
		f := md.Fields().ByName(protoreflect.Name(c.Name))
		if f == nil {
			if c.Required {
				return nil, fmt.Errorf("the table has no column %s, which every record has: run skyjoin migrate", c.Name)
			}
			e.missing = append(e.missing, c.Name)
			continue
		}
		e.fields[i] = f
	}
	return e, nil
}

// lacks returns the name of a column r has a value for and the encoder's
// table does not have, or "".
func (e *encoder) lacks(r *event.Record) string {
	if len(e.missing) == 0 {
		return ""
	}
	for i, v := range r.Values() {
		if v != nil && e.fields[i] == nil {
			return event.Columns()[i].Name
		}
	}
	return ""
}

// encode serializes a record. A missing required value (a record that
// failed validation) is an error.
func (e *encoder) encode(r *event.Record) ([]byte, error) {
	m := dynamicpb.NewMessage(e.md)
	for i, v := range r.Values() {
		var pv protoreflect.Value
		switch x := v.(type) {
		case nil:
			continue
		case string:
			pv = protoreflect.ValueOfString(x)
		case float64:
			pv = protoreflect.ValueOfFloat64(x)
		case int32:
			pv = protoreflect.ValueOfInt64(int64(x))
		case int64:
			pv = protoreflect.ValueOfInt64(x)
		case time.Time:
			pv = protoreflect.ValueOfInt64(x.UnixMicro()) // TIMESTAMP: microseconds since the epoch
		default:
			return nil, fmt.Errorf("column %s: unsupported value %T", event.Columns()[i].Name, v)
		}
		if e.fields[i] == nil {
			return nil, fmt.Errorf("column %s: the table has no such column", event.Columns()[i].Name)
		}
		m.Set(e.fields[i], pv)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %q: %w", r.EventID, err)
	}
	return b, nil
}
