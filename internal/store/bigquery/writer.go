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
type Writer struct {
	cfg    Config
	client *managedwriter.Client
	stream *managedwriter.ManagedStream
	enc    *encoder
	log    *slog.Logger
	sleep  func(ctx context.Context, d time.Duration) error // for tests
}

// NewWriter connects to the table's default stream. The table must exist
// (see Migrate). The writer keeps its connection until Close, independent of
// ctx.
func NewWriter(ctx context.Context, cfg Config, log *slog.Logger) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	enc, err := newEncoder()
	if err != nil {
		return nil, fmt.Errorf("bigquery: writer: %w", err)
	}
	// The client and stream keep their context for their connections.
	bg := context.WithoutCancel(ctx)
	client, err := managedwriter.NewClient(bg, cfg.Project, cfg.WriteOptions...)
	if err != nil {
		return nil, fmt.Errorf("bigquery: writer: new client: %w", err)
	}
	stream, err := client.NewManagedStream(bg,
		managedwriter.WithDestinationTable(cfg.tablePath()),
		managedwriter.WithType(managedwriter.DefaultStream),
		managedwriter.WithSchemaDescriptor(enc.dp),
		managedwriter.EnableWriteRetries(true),
	)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("bigquery: writer: open the default stream of %s: %w", cfg.tablePath(), err)
	}
	return &Writer{cfg: cfg, client: client, stream: stream, enc: enc, log: log, sleep: retry.Sleep}, nil
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
func (w *Writer) Write(ctx context.Context, recs []event.Record) error {
	if len(recs) == 0 {
		return nil
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
		b, err := w.enc.encode(&recs[i])
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
			rej, err := w.appendBatch(ctx, recs, idx, data)
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
func (w *Writer) appendBatch(ctx context.Context, recs []event.Record, idx []int, data [][]byte) ([]RowError, error) {
	var rejected []RowError
	attempt := 0
	for len(idx) > 0 {
		resp, err := w.append(ctx, data)
		if err == nil {
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

// append sends one request and waits for its response.
func (w *Writer) append(ctx context.Context, data [][]byte) (*storagepb.AppendRowsResponse, error) {
	res, err := w.stream.AppendRows(ctx, data)
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
// Write API takes, with a descriptor built from the generated table schema:
// so the rows always match deploy/bigquery/events.schema.json.
type encoder struct {
	md     protoreflect.MessageDescriptor
	dp     *descriptorpb.DescriptorProto
	fields []protoreflect.FieldDescriptor // in the order of event.Columns
}

// tableSchema is the table's schema as the bigquery client models it.
func tableSchema() (bigquery.Schema, error) {
	s, err := bigquery.SchemaFromJSON(event.BigQuerySchema())
	if err != nil {
		return nil, fmt.Errorf("table schema: %w", err)
	}
	return s, nil
}

func newEncoder() (*encoder, error) {
	schema, err := tableSchema()
	if err != nil {
		return nil, err
	}
	ts, err := adapt.BQSchemaToStorageTableSchema(schema)
	if err != nil {
		return nil, fmt.Errorf("storage schema: %w", err)
	}
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
	for i, c := range cols {
		f := md.Fields().ByName(protoreflect.Name(c.Name))
		if f == nil {
			return nil, fmt.Errorf("row descriptor has no field %s", c.Name)
		}
		e.fields[i] = f
	}
	return e, nil
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
			return nil, fmt.Errorf("column %s: unsupported value %T", e.fields[i].Name(), v)
		}
		m.Set(e.fields[i], pv)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %q: %w", r.EventID, err)
	}
	return b, nil
}
